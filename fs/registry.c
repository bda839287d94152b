/*
 * registry.c: reading and writing the registry records of registry.h.
 *
 * Registration references the source's files where they are (no copy) and freezes
 * their sizes, etags and SHA-256 in the record. The version number comes from a
 * create-if-absent of registry/<name>/<n>.json: of concurrent registrations exactly
 * one gets each number, and a loser simply tries the next one.
 */
#include "registry.h"
#include "../blob/log.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define REG_READ_PIECE (8u << 20)
#define REG_MAX_FILES 1000000
#define REG_MAX_TRIES 100000

int reg_name_ok(const char *name)
{
	size_t len = strlen(name);

	if (len == 0 || len > REG_NAME_MAX || !isalnum((unsigned char)name[0]))
		return 0;
	for (size_t i = 1; i < len; i++) {
		unsigned char c = (unsigned char)name[i];
		if (!isalnum(c) && c != '.' && c != '_' && c != '-')
			return 0;
	}
	return 1;
}

int reg_alias_ok(const char *name)
{
	if (!reg_name_ok(name) || strcmp(name, "latest") == 0)
		return 0;
	for (const char *p = name; *p; p++)
		if (!isdigit((unsigned char)*p))
			return 1;
	return 0; /* all digits would shadow a version */
}

/* Parses the leading version number of s; *end is what follows it. */
static int version_prefix(const char *s, const char **end)
{
	long v = 0;
	const char *p = s;

	if (*p < '1' || *p > '9')
		return -1;
	for (; *p >= '0' && *p <= '9'; p++) {
		v = v * 10 + (*p - '0');
		if (v > REG_VERSION_MAX)
			return -1;
	}
	*end = p;
	return (int)v;
}

int reg_version_of(const char *filename)
{
	const char *end;
	int v = version_prefix(filename, &end);

	return v > 0 && strcmp(end, ".json") == 0 ? v : -1;
}

int reg_version_name(const char *name)
{
	const char *end;
	int v = version_prefix(name, &end);

	return v > 0 && *end == '\0' ? v : -1;
}

/* A relative path whose every segment is a plain name. */
static int path_ok(const char *path)
{
	const char *p = path;

	for (;;) {
		const char *slash = strchr(p, '/');
		size_t len = slash ? (size_t)(slash - p) : strlen(p);
		if (!blob_name_ok(p, len))
			return 0;
		if (!slash)
			return 1;
		p = slash + 1;
	}
}

static int hex64_ok(const char *s)
{
	if (strlen(s) != 64)
		return 0;
	for (; *s; s++)
		if (!isxdigit((unsigned char)*s))
			return 0;
	return 1;
}

/* Parses JSON that must be one value and nothing after it but white space. */
static cJSON *parse_whole(const char *text, size_t len)
{
	const char *end = NULL;
	cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);

	for (; root && end && end < text + len; end++) {
		if (*end != ' ' && *end != '\t' && *end != '\n' && *end != '\r') {
			cJSON_Delete(root);
			return NULL;
		}
	}
	return root;
}

static int file_cmp(const void *a, const void *b)
{
	return strcmp(((const struct reg_file *)a)->path, ((const struct reg_file *)b)->path);
}

const struct reg_file *reg_version_file(const struct reg_version *v, const char *path)
{
	struct reg_file key = { .path = (char *)path };

	return v->nfiles ? bsearch(&key, v->files, v->nfiles, sizeof(key), file_cmp) : NULL;
}

/* Drops repeated paths and files whose path is also a folder of another file ("a"
 * and "a/b"): the first pass only marks, so the searches see the whole sorted set. */
static int drop_clashes(struct reg_version *v, const char *name)
{
	char buf[PATH_MAX];
	char *bad = calloc(v->nfiles + 1, 1);
	size_t o = 0;

	if (!bad)
		return -ENOMEM;
	for (size_t i = 0; i < v->nfiles; i++) {
		const char *path = v->files[i].path;
		bad[i] = i > 0 && strcmp(v->files[i - 1].path, path) == 0;
		snprintf(buf, sizeof(buf), "%s", path);
		for (char *s = strchr(buf, '/'); !bad[i] && s; s = strchr(s + 1, '/')) {
			*s = '\0';
			bad[i] = reg_version_file(v, buf) != NULL;
			*s = '/';
		}
	}
	for (size_t i = 0; i < v->nfiles; i++) {
		if (bad[i]) {
			LOG_WARN("model %s version %d: file '%s' clashes with another entry; "
				 "skipped", name, v->version, v->files[i].path);
			free(v->files[i].path);
			continue;
		}
		v->files[o++] = v->files[i];
	}
	v->nfiles = o;
	free(bad);
	return 0;
}

static void parse_time(const char *s, struct timespec *out)
{
	struct tm tm = { 0 };
	const char *end = s ? strptime(s, "%Y-%m-%dT%H:%M:%S", &tm) : NULL;

	out->tv_sec = end ? timegm(&tm) : 0;
	out->tv_nsec = 0;
	if (out->tv_sec < 0)
		out->tv_sec = 0;
}

static int version_parse(const char *text, size_t len, const char *name, int version,
			 struct reg_version **out, int quiet);

int reg_version_parse(const char *text, size_t len, const char *name, int version,
		      struct reg_version **out)
{
	return version_parse(text, len, name, version, out, 0);
}

int reg_version_parse_quiet(const char *text, size_t len, const char *name, int version,
			    struct reg_version **out)
{
	return version_parse(text, len, name, version, out, 1);
}

static int version_parse(const char *text, size_t len, const char *name, int version,
			 struct reg_version **out, int quiet)
{
	struct reg_version *v = NULL;
	cJSON *root, *it, *files, *f;
	const char *why = NULL;
	int ret = -EBADMSG;

	*out = NULL;
	root = parse_whole(text, len);
	if (!cJSON_IsObject(root)) {
		why = "not a JSON object";
		goto out;
	}
	it = cJSON_GetObjectItemCaseSensitive(root, "name");
	if (!cJSON_IsString(it) || strcmp(it->valuestring, name) != 0) {
		why = "\"name\" does not match its folder";
		goto out;
	}
	it = cJSON_GetObjectItemCaseSensitive(root, "version");
	if (!cJSON_IsNumber(it) || it->valuedouble != (double)version) {
		why = "\"version\" does not match its file name";
		goto out;
	}
	v = calloc(1, sizeof(*v));
	if (!v) {
		ret = -ENOMEM;
		goto out;
	}
	v->version = version;
	it = cJSON_GetObjectItemCaseSensitive(root, "source");
	if (!cJSON_IsString(it)) {
		why = "no \"source\"";
		goto out;
	}
	size_t slen = strlen(it->valuestring);
	if (slen == 0 || slen > PATH_MAX - NAME_MAX - 2) {
		why = "bad \"source\"";
		goto out;
	}
	v->source = malloc(slen + 2);
	if (!v->source) {
		ret = -ENOMEM;
		goto out;
	}
	memcpy(v->source, it->valuestring, slen + 1);
	if (v->source[slen - 1] == '/')
		v->source[slen - 1] = '\0';
	if (!path_ok(v->source)) {
		why = "\"source\" is not a plain store folder";
		goto out;
	}
	memcpy(v->source + strlen(v->source), "/", 2); /* room reserved above */
	it = cJSON_GetObjectItemCaseSensitive(root, "created");
	parse_time(cJSON_IsString(it) ? it->valuestring : NULL, &v->created);
	files = cJSON_GetObjectItemCaseSensitive(root, "files");
	if (!cJSON_IsArray(files)) {
		why = "no \"files\" list";
		goto out;
	}
	int n = cJSON_GetArraySize(files);
	if (n > REG_MAX_FILES) {
		why = "too many files";
		goto out;
	}
	v->files = calloc(n ? (size_t)n : 1, sizeof(*v->files));
	if (!v->files) {
		ret = -ENOMEM;
		goto out;
	}
	cJSON_ArrayForEach(f, files)
	{
		cJSON *p = cJSON_GetObjectItemCaseSensitive(f, "path");
		cJSON *sz = cJSON_GetObjectItemCaseSensitive(f, "size");
		cJSON *et = cJSON_GetObjectItemCaseSensitive(f, "etag");
		cJSON *sh = cJSON_GetObjectItemCaseSensitive(f, "sha256");
		const char *fname = cJSON_IsString(p) ? p->valuestring : "?";
		if (!cJSON_IsString(p) || !path_ok(p->valuestring) ||
		    strlen(v->source) + strlen(p->valuestring) >= PATH_MAX) {
			LOG_WARN("model %s version %d: file path '%.100s' is not a plain relative "
				 "path; skipped", name, version, fname);
			continue;
		}
		if (!cJSON_IsNumber(sz) || sz->valuedouble < 0 || sz->valuedouble > 9.0e15 ||
		    sz->valuedouble != (double)(uint64_t)sz->valuedouble ||
		    !cJSON_IsString(et) || !et->valuestring[0] ||
		    strlen(et->valuestring) >= BLOB_ETAG_MAX ||
		    (sh && !cJSON_IsNull(sh) && !(cJSON_IsString(sh) && hex64_ok(sh->valuestring)))) {
			LOG_WARN("model %s version %d: file '%.100s' has a bad size, etag or "
				 "sha256; skipped", name, version, fname);
			continue;
		}
		struct reg_file *rf = &v->files[v->nfiles];
		rf->path = strdup(p->valuestring);
		if (!rf->path) {
			ret = -ENOMEM;
			goto out;
		}
		rf->size = (uint64_t)sz->valuedouble;
		snprintf(rf->etag, sizeof(rf->etag), "%s", et->valuestring);
		if (cJSON_IsString(sh))
			for (int i = 0; i < 65; i++)
				rf->sha256[i] = (char)tolower((unsigned char)sh->valuestring[i]);
		v->nfiles++;
	}
	if (v->nfiles > 1)
		qsort(v->files, v->nfiles, sizeof(*v->files), file_cmp);
	if (drop_clashes(v, name) < 0) {
		ret = -ENOMEM;
		goto out;
	}
	*out = v;
	v = NULL;
	ret = 0;
out:
	if (why && !quiet)
		LOG_WARN("registry record of model %s version %d is unusable (%s); skipped", name,
			 version, why);
	reg_version_free(v);
	cJSON_Delete(root);
	return ret;
}

void reg_version_free(struct reg_version *v)
{
	if (!v)
		return;
	for (size_t i = 0; i < v->nfiles; i++)
		free(v->files[i].path);
	free(v->files);
	free(v->source);
	free(v);
}

int reg_aliases_parse(const char *text, size_t len, const char *name,
		      struct reg_alias **out, size_t *n)
{
	cJSON *root = parse_whole(text, len), *it;
	struct reg_alias *a = NULL;
	int ret = 0;

	*out = NULL;
	*n = 0;
	if (!cJSON_IsObject(root)) {
		LOG_WARN("aliases of model %s are not a JSON object; ignored", name);
		ret = -EBADMSG;
		goto out;
	}
	a = calloc((size_t)cJSON_GetArraySize(root) + 1, sizeof(*a));
	if (!a) {
		ret = -ENOMEM;
		goto out;
	}
	cJSON_ArrayForEach(it, root)
	{
		if (!reg_alias_ok(it->string) || !cJSON_IsNumber(it) || it->valuedouble < 1 ||
		    it->valuedouble > REG_VERSION_MAX ||
		    it->valuedouble != (double)(int)it->valuedouble) {
			LOG_WARN("model %s: alias '%.100s' is not a name with a version; skipped",
				 name, it->string);
			continue;
		}
		size_t i = 0;
		while (i < *n && strcmp(a[i].name, it->string) != 0)
			i++; /* a name given twice: the last one counts, as in most readers */
		snprintf(a[i].name, sizeof(a[i].name), "%s", it->string);
		a[i].version = (int)it->valuedouble;
		if (i == *n)
			(*n)++;
	}
	*out = a;
	a = NULL;
out:
	free(a);
	cJSON_Delete(root);
	return ret;
}

/* ---- writing ---- */

struct src_file {
	char *rel;
	struct blob_stat st;
};

struct src_files {
	struct src_file *v;
	size_t n, cap;
};

static int src_add(struct src_files *sf, const char *rel, const struct blob_stat *st)
{
	if (sf->n == sf->cap) {
		size_t cap = sf->cap ? sf->cap * 2 : 16;
		struct src_file *nv = realloc(sf->v, cap * sizeof(*nv));
		if (!nv)
			return -ENOMEM;
		sf->v = nv;
		sf->cap = cap;
	}
	sf->v[sf->n].rel = strdup(rel);
	if (!sf->v[sf->n].rel)
		return -ENOMEM;
	sf->v[sf->n].st = *st;
	sf->n++;
	return 0;
}

/* Collects every blob below prefix (recursively), with paths relative to base. */
static int src_walk(struct blob_store *s, const char *prefix, size_t baselen,
		    struct src_files *sf)
{
	struct blob_list l;
	char sub[PATH_MAX];
	int ret;

	blob_list_init(&l);
	ret = blob_list(s, prefix, &l);
	if (ret < 0)
		goto out;
	blob_list_clean(&l, prefix);
	for (size_t i = 0; i < l.count && ret == 0; i++) {
		struct blob_entry *e = &l.entries[i];
		if ((size_t)snprintf(sub, sizeof(sub), "%s%s%s", prefix, e->name,
				     e->is_dir ? "/" : "") >= sizeof(sub))
			continue;
		if (e->is_dir) {
			ret = src_walk(s, sub, baselen, sf);
			if (ret == -ENOENT)
				ret = 0;
		} else {
			struct blob_stat st = { .size = e->size, .mtime = e->mtime };
			memcpy(st.etag, e->etag, sizeof(st.etag));
			ret = src_add(sf, sub + baselen, &st);
		}
		if (sf->n > REG_MAX_FILES)
			ret = -E2BIG;
	}
out:
	blob_list_release(&l);
	return ret;
}

/* What register says while it hashes (on stderr: stdout carries the version): on a
 * terminal one line redrawn, else a line per large file hashed; nothing when all the
 * files together are small. */
#define REG_PROGRESS_MIN (64u << 20)

struct reg_progress {
	uint64_t total, done;
	int show, tty;
	struct timespec t0, last;
};

static double secs_since(const struct timespec *t)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - t->tv_sec) + (double)(now.tv_nsec - t->tv_nsec) / 1e9;
}

static void progress_step(struct reg_progress *p, uint64_t n, int last)
{
	p->done += n;
	if (!p->show || !p->tty || (!last && secs_since(&p->last) < 0.2))
		return;
	clock_gettime(CLOCK_MONOTONIC, &p->last);
	double t = secs_since(&p->t0), mib = (double)p->done / (1 << 20);
	fprintf(stderr, "\r\033[Kregister: hashing %.0f / %.0f MiB (%.0f%%), %.0f MiB/s%s", mib,
		(double)p->total / (1 << 20), p->total ? 100.0 * (double)p->done / (double)p->total : 100,
		t > 0 ? mib / t : 0, last ? "\n" : "");
	fflush(stderr);
}

/* SHA-256 of one blob at its etag, read in pieces. */
static int blob_sha256(struct blob_store *s, const char *key, const struct blob_stat *st,
		       char hex[65], struct reg_progress *p)
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	unsigned char md[32];
	unsigned int mdlen;
	char *buf = malloc(REG_READ_PIECE);
	int ret = 0;

	if (!ctx || !buf) {
		ret = -ENOMEM;
		goto out;
	}
	EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
	for (uint64_t off = 0; off < st->size;) {
		size_t want = st->size - off < REG_READ_PIECE ? st->size - off : REG_READ_PIECE;
		ssize_t n = blob_read(s, key, st->etag, off, want, buf);
		if (n < 0) {
			ret = (int)n;
			goto out;
		}
		if (n == 0) {
			ret = -ESTALE;
			goto out;
		}
		EVP_DigestUpdate(ctx, buf, (size_t)n);
		off += (uint64_t)n;
		progress_step(p, (uint64_t)n, 0);
	}
	if (p->show && !p->tty && st->size >= REG_PROGRESS_MIN)
		fprintf(stderr, "register: hashed %s (%.0f MiB)\n", key,
			(double)st->size / (1 << 20));
	EVP_DigestFinal_ex(ctx, md, &mdlen);
	for (int i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
out:
	free(buf);
	EVP_MD_CTX_free(ctx);
	return ret;
}

static char *record_text(const struct reg_request *req, int version, const char *source,
			 const struct src_files *sf, char (*sha)[65], const char *nonce)
{
	cJSON *root = cJSON_CreateObject(), *tags, *files;
	char created[32], *text = NULL;
	time_t now = time(NULL);
	struct tm tm;

	if (!root)
		return NULL;
	gmtime_r(&now, &tm);
	strftime(created, sizeof(created), "%Y-%m-%dT%H:%M:%SZ", &tm);
	cJSON_AddStringToObject(root, "name", req->name);
	cJSON_AddNumberToObject(root, "version", version);
	cJSON_AddStringToObject(root, "source", source);
	cJSON_AddStringToObject(root, "created", created);
	cJSON_AddStringToObject(root, "description", req->description ? req->description : "");
	/* tells this registration's record from any other's, see reg_register */
	cJSON_AddStringToObject(root, "registration", nonce);
	tags = cJSON_AddObjectToObject(root, "tags");
	for (size_t i = 0; tags && i < req->ntags; i++) {
		const char *eq = strchr(req->tags[i], '=');
		char k[256];
		snprintf(k, sizeof(k), "%.*s", (int)(eq - req->tags[i]), req->tags[i]);
		cJSON_AddStringToObject(tags, k, eq + 1);
	}
	files = cJSON_AddArrayToObject(root, "files");
	for (size_t i = 0; files && i < sf->n; i++) {
		cJSON *f = cJSON_CreateObject();
		if (!f)
			break;
		cJSON_AddItemToArray(files, f);
		cJSON_AddStringToObject(f, "path", sf->v[i].rel);
		cJSON_AddNumberToObject(f, "size", (double)sf->v[i].st.size);
		cJSON_AddStringToObject(f, "etag", sf->v[i].st.etag);
		cJSON_AddStringToObject(f, "sha256", sha[i]);
	}
	text = cJSON_Print(root);
	cJSON_Delete(root);
	return text;
}

/* Whether the record at key is exactly text (same registration id and all). */
static int record_is(struct blob_store *s, const char *key, const char *text)
{
	char *data = NULL, etag[BLOB_ETAG_MAX];
	size_t len = 0;
	int same = blob_get(s, key, 64u << 20, &data, &len, etag) == 0 &&
		   len == strlen(text) && memcmp(data, text, len) == 0;

	free(data);
	return same;
}

/* Highest version recorded for name, 0 when none. */
static int highest_version(struct blob_store *s, const char *name, int *out)
{
	struct blob_list l;
	char prefix[PATH_MAX];
	int ret;

	*out = 0;
	snprintf(prefix, sizeof(prefix), "registry/%s/", name);
	blob_list_init(&l);
	ret = blob_list(s, prefix, &l);
	if (ret == -ENOENT)
		ret = 0;
	for (size_t i = 0; ret == 0 && i < l.count; i++) {
		int v = l.entries[i].is_dir ? -1 : reg_version_of(l.entries[i].name);
		if (v > *out)
			*out = v;
	}
	blob_list_release(&l);
	return ret;
}

static int records_register(struct blob_store *s, const struct reg_request *req, int *version,
			    char *err, size_t errlen)
{
	struct src_files sf = { 0 };
	char (*sha)[65] = NULL;
	char source[PATH_MAX], key[PATH_MAX];
	struct blob_stat st;
	char *text = NULL;
	int ret, v;

	if (!reg_name_ok(req->name)) {
		snprintf(err, errlen, "bad model name '%.200s' (expected "
			 "[A-Za-z0-9][A-Za-z0-9._-]{0,127})", req->name);
		return -EINVAL;
	}
	for (size_t i = 0; i < req->ntags; i++) {
		const char *eq = strchr(req->tags[i], '=');
		if (!eq || eq == req->tags[i] || eq - req->tags[i] > 255) {
			snprintf(err, errlen, "bad tag '%.200s' (expected KEY=VALUE)", req->tags[i]);
			return -EINVAL;
		}
	}
	/* SOURCE is a store folder (runs/exp/run/outputs/) or one blob in it */
	const char *src = req->source;
	while (*src == '/')
		src++;
	size_t len = strlen(src);
	while (len > 0 && src[len - 1] == '/')
		len--;
	if (len == 0 || len >= sizeof(source) - 2) {
		snprintf(err, errlen, "bad source '%.200s'", req->source);
		return -EINVAL;
	}
	snprintf(source, sizeof(source), "%.*s", (int)len, src);
	if (!path_ok(source) || strncmp(source, "registry/", 9) == 0 ||
	    strcmp(source, "registry") == 0) {
		snprintf(err, errlen, "bad source '%.200s' (expected a store folder such as "
			 "runs/EXPERIMENT/RUN/outputs/)", req->source);
		return -EINVAL;
	}
	ret = blob_stat(s, source, &st);
	if (ret == 0) {
		/* one blob: its folder is the source, the blob its one file */
		char *slash = strrchr(source, '/');
		const char *base = slash ? slash + 1 : source;
		ret = src_add(&sf, base, &st);
		if (slash)
			slash[1] = '\0';
		else
			source[0] = '\0';
	} else if (ret == -ENOENT) {
		memcpy(source + strlen(source), "/", 2); /* len < sizeof(source) - 2 */
		ret = src_walk(s, source, strlen(source), &sf);
		if (ret == -ENOENT || (ret == 0 && sf.n == 0)) {
			snprintf(err, errlen, "source '%.200s' has no files in store %s",
				 req->source, s->id);
			ret = -ENOENT;
			goto out;
		}
	}
	if (ret < 0) {
		snprintf(err, errlen, "cannot read source '%.200s': %s", req->source,
			 strerror(-ret));
		goto out;
	}
	if (source[0] == '\0') {
		snprintf(err, errlen, "bad source '%.200s' (expected a store folder)", req->source);
		ret = -EINVAL;
		goto out;
	}
	sha = calloc(sf.n, sizeof(*sha));
	if (!sha) {
		ret = -ENOMEM;
		goto out;
	}
	struct reg_progress prog = { .tty = isatty(2) };
	for (size_t i = 0; i < sf.n; i++)
		prog.total += sf.v[i].st.size;
	prog.show = prog.total >= REG_PROGRESS_MIN;
	clock_gettime(CLOCK_MONOTONIC, &prog.t0);
	prog.last = prog.t0;
	for (size_t i = 0; i < sf.n; i++) {
		snprintf(key, sizeof(key), "%s%s", source, sf.v[i].rel);
		ret = blob_sha256(s, key, &sf.v[i].st, sha[i], &prog);
		if (i + 1 == sf.n && ret == 0)
			progress_step(&prog, 0, 1);
		if (ret < 0) {
			snprintf(err, errlen, "cannot read %s: %s", key,
				 ret == -ESTALE ? "it changed while being registered"
						: strerror(-ret));
			goto out;
		}
	}
	ret = highest_version(s, req->name, &v);
	if (ret < 0) {
		snprintf(err, errlen, "cannot list the registry: %s", strerror(-ret));
		goto out;
	}
	unsigned char rnd[16];
	char nonce[33];
	if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
		snprintf(err, errlen, "no random bytes for the registration id");
		ret = -EIO;
		goto out;
	}
	for (int i = 0; i < 16; i++)
		snprintf(nonce + 2 * i, 3, "%02x", rnd[i]);
	for (int tries = 0; tries < REG_MAX_TRIES; tries++) {
		v++;
		free(text);
		text = record_text(req, v, source, &sf, sha, nonce);
		if (!text) {
			ret = -ENOMEM;
			goto out;
		}
		snprintf(key, sizeof(key), "registry/%s/%d.json", req->name, v);
		ret = blob_create(s, key, text, strlen(text));
		if (ret == -EEXIST && record_is(s, key, text)) {
			/* our own create succeeded but its answer was lost and the retry
			 * found the record: that version is ours */
			ret = 0;
		}
		if (ret != -EEXIST)
			break; /* taken: someone registered v first; try the next */
	}
	if (ret < 0) {
		snprintf(err, errlen, "cannot write %s: %s", key, strerror(-ret));
		goto out;
	}
	*version = v;
out:
	free(text);
	free(sha);
	for (size_t i = 0; i < sf.n; i++)
		free(sf.v[i].rel);
	free(sf.v);
	return ret;
}

static int records_alias_set(struct blob_store *s, const char *name, const char *alias,
			     int version, char *err, size_t errlen)
{
	char key[PATH_MAX], etag[BLOB_ETAG_MAX];
	struct blob_stat st;
	int ret;

	if (!reg_name_ok(name)) {
		snprintf(err, errlen, "bad model name '%.200s'", name);
		return -EINVAL;
	}
	if (!reg_alias_ok(alias)) {
		snprintf(err, errlen, "bad alias '%.200s' (a name, not all digits, not 'latest')",
			 alias);
		return -EINVAL;
	}
	if (version > 0) {
		snprintf(key, sizeof(key), "registry/%s/%d.json", name, version);
		ret = blob_stat(s, key, &st);
		if (ret < 0) {
			snprintf(err, errlen, "model %s has no version %d%s%s", name, version,
				 ret == -ENOENT ? "" : ": ", ret == -ENOENT ? "" : strerror(-ret));
			return ret == -ENOENT ? -EINVAL : ret;
		}
	}
	snprintf(key, sizeof(key), "registry/%s/aliases.json", name);
	/* read, change, write back only if unchanged: a lost race just goes round again */
	for (int tries = 0; tries < 1000; tries++) {
		char *data = NULL, *text = NULL;
		size_t len = 0;
		cJSON *root;
		ret = blob_get(s, key, 1 << 20, &data, &len, etag);
		if (ret < 0 && ret != -ENOENT) {
			snprintf(err, errlen, "cannot read %s: %s", key, strerror(-ret));
			return ret;
		}
		int exists = ret == 0;
		root = exists ? cJSON_ParseWithLength(data, len) : cJSON_CreateObject();
		free(data);
		if (!cJSON_IsObject(root)) {
			cJSON_Delete(root);
			LOG_WARN("%s was not a JSON object; starting it afresh", key);
			root = cJSON_CreateObject();
			if (!root)
				return -ENOMEM;
		}
		cJSON_DeleteItemFromObjectCaseSensitive(root, alias);
		if (version > 0)
			cJSON_AddNumberToObject(root, alias, version);
		text = cJSON_Print(root);
		cJSON_Delete(root);
		if (!text)
			return -ENOMEM;
		ret = exists ? blob_replace(s, key, etag, text, strlen(text))
			     : blob_create(s, key, text, strlen(text));
		free(text);
		if (ret != -ESTALE && ret != -EEXIST && ret != -ENOENT)
			break;
	}
	if (ret < 0)
		snprintf(err, errlen, "cannot write %s: %s", key, strerror(-ret));
	return ret;
}

/* ---- the two registries ---- */

static int mlflow_register(struct blob_store *s, const struct reg_request *req, int *version,
			   char *err, size_t errlen)
{
	return blob_mlflow_register(s, req->name, req->source, req->description, req->tags,
				    req->ntags, version, err, errlen);
}

static const struct reg_provider records_provider = {
	.name = "records",
	.register_version = records_register,
	.alias_set = records_alias_set,
};

static const struct reg_provider mlflow_provider = {
	.name = "mlflow",
	.register_version = mlflow_register,
	.alias_set = blob_mlflow_alias,
};

const struct reg_provider *reg_provider_of(const struct blob_store *s)
{
	return blob_is_mlflow(s) ? &mlflow_provider : &records_provider;
}

int reg_register(struct blob_store *s, const struct reg_request *req, int *version,
		 char *err, size_t errlen)
{
	return reg_provider_of(s)->register_version(s, req, version, err, errlen);
}

int reg_alias_set(struct blob_store *s, const char *name, const char *alias, int version,
		  char *err, size_t errlen)
{
	return reg_provider_of(s)->alias_set(s, name, alias, version, err, errlen);
}
