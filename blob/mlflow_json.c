/*
 * mlflow_json.c: the MLflow tracking server's answers parsed (cJSON), and artifact
 * URIs told apart. Pure functions: see mlflow.h.
 */
#include "mlflow.h"
#include "blob.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- cJSON helpers ---- */

static cJSON *parse(const char *json, size_t len)
{
	cJSON *root = cJSON_ParseWithLength(json, len);

	if (root && !cJSON_IsObject(root)) {
		cJSON_Delete(root);
		return NULL;
	}
	return root;
}

static const char *str_of(const cJSON *o, const char *name)
{
	const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, name);

	return cJSON_IsString(it) && it->valuestring ? it->valuestring : NULL;
}

/* A string field, or a number written as one ("experiment_id" is a string, but a
 * server may send a number). Into out; 0, or -1 when absent, too long or empty. */
static int id_of(const cJSON *o, const char *name, char *out, size_t size)
{
	const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, name);

	if (cJSON_IsString(it) && it->valuestring && it->valuestring[0] &&
	    strlen(it->valuestring) < size) {
		memcpy(out, it->valuestring, strlen(it->valuestring) + 1);
		return 0;
	}
	if (cJSON_IsNumber(it) && it->valuedouble >= 0 && it->valuedouble < 9e15) {
		snprintf(out, size, "%lld", (long long)it->valuedouble);
		return 0;
	}
	return -1;
}

static int64_t int_of(const cJSON *o, const char *name)
{
	const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, name);

	if (cJSON_IsNumber(it) && it->valuedouble >= 0 && it->valuedouble < 9e18)
		return (int64_t)it->valuedouble;
	if (cJSON_IsString(it) && it->valuestring) {
		char *end;
		long long v = strtoll(it->valuestring, &end, 10);
		if (end != it->valuestring && !*end && v >= 0)
			return v;
	}
	return 0;
}

/* A version number: "3" (MLflow's strings) or 3; -1 when not a positive int. */
static int version_of(const cJSON *o, const char *name)
{
	char buf[16], *end;

	if (id_of(o, name, buf, sizeof(buf)) < 0)
		return -1;
	if (buf[0] < '1' || buf[0] > '9')
		return -1;
	long v = strtol(buf, &end, 10);
	return *end || v <= 0 || v > 1000000000 ? -1 : (int)v;
}

static char *dup_or_empty(const char *s)
{
	return strdup(s ? s : "");
}

/* The page's token: NULL when absent or empty (the last page). */
static int next_of(const cJSON *root, char **next)
{
	const char *t = str_of(root, "next_page_token");

	*next = NULL;
	if (t && *t && !(*next = strdup(t)))
		return -ENOMEM;
	return 0;
}

/* Grows a heap array by one slot; the slot's address, or NULL. */
static void *grow(void **arr, size_t n, size_t size)
{
	void *a = realloc(*arr, (n + 1) * size);

	if (!a)
		return NULL;
	*arr = a;
	memset((char *)a + n * size, 0, size);
	return (char *)a + n * size;
}

/* ---- answers ---- */

/* Walks the array named array of the answer (under the object named in, when in is
 * not NULL), calling each on every element until one returns < 0; then, when next
 * is not NULL, takes the answer's page token into *next. 0, -EBADMSG (not JSON)
 * or each's error. */
static int walk(const char *json, size_t len, const char *in, const char *array,
		char **next, int (*each)(const cJSON *it, void *ctx), void *ctx)
{
	cJSON *root = parse(json, len), *it;
	int ret = 0;

	if (next)
		*next = NULL;
	if (!root)
		return -EBADMSG;
	const cJSON *o = in ? cJSON_GetObjectItemCaseSensitive(root, in) : root;
	cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(o, array)) {
		ret = each(it, ctx);
		if (ret < 0)
			break;
	}
	if (ret >= 0 && next)
		ret = next_of(root, next);
	cJSON_Delete(root);
	return ret < 0 ? ret : 0;
}

/* Where walk's callbacks append: a heap array and its count. */
struct into {
	void **arr;
	size_t *n;
};

static int one_experiment(const cJSON *it, void *ctx)
{
	struct into *to = ctx;
	struct ml_exp e = { 0 };
	const char *name = str_of(it, "name");

	if (!cJSON_IsObject(it) || !name || id_of(it, "experiment_id", e.id, sizeof(e.id)) < 0)
		return 0;
	struct ml_exp *slot = grow(to->arr, *to->n, sizeof(*slot));
	if (!slot || !(e.name = strdup(name)))
		return -ENOMEM;
	*slot = e;
	(*to->n)++;
	return 0;
}

int ml_parse_experiments(const char *json, size_t len, struct ml_exp **out, size_t *n,
			 char **next)
{
	struct into to = { (void **)out, n };

	return walk(json, len, NULL, "experiments", next, one_experiment, &to);
}

/* One run's "info". 0, or -1 when it lacks what the tree needs. */
static int run_info(const cJSON *info, struct ml_run *r)
{
	const char *uri = str_of(info, "artifact_uri"), *st = str_of(info, "status");

	memset(r, 0, sizeof(*r));
	if (!cJSON_IsObject(info) || !uri || id_of(info, "run_id", r->id, sizeof(r->id)) < 0)
		return -1;
	if (id_of(info, "experiment_id", r->exp_id, sizeof(r->exp_id)) < 0)
		r->exp_id[0] = '\0';
	snprintf(r->status, sizeof(r->status), "%s", st ? st : "");
	r->start_ms = int_of(info, "start_time");
	r->end_ms = int_of(info, "end_time");
	r->name = dup_or_empty(str_of(info, "run_name"));
	r->artifact_uri = strdup(uri);
	if (!r->name || !r->artifact_uri) {
		ml_run_release(r);
		return -ENOMEM;
	}
	return 0;
}

static int one_run(const cJSON *it, void *ctx)
{
	struct into *to = ctx;
	struct ml_run r;
	int got = run_info(cJSON_GetObjectItemCaseSensitive(it, "info"), &r);

	if (got < 0)
		return got == -ENOMEM ? got : 0;
	struct ml_run *slot = grow(to->arr, *to->n, sizeof(*slot));
	if (!slot) {
		ml_run_release(&r);
		return -ENOMEM;
	}
	*slot = r;
	(*to->n)++;
	return 0;
}

int ml_parse_runs(const char *json, size_t len, struct ml_run **out, size_t *n, char **next)
{
	struct into to = { (void **)out, n };

	return walk(json, len, NULL, "runs", next, one_run, &to);
}

int ml_parse_run(const char *json, size_t len, struct ml_run *out)
{
	cJSON *root = parse(json, len);
	int ret;

	memset(out, 0, sizeof(*out));
	if (!root)
		return -EBADMSG;
	const cJSON *run = cJSON_GetObjectItemCaseSensitive(root, "run");
	ret = run_info(cJSON_GetObjectItemCaseSensitive(run, "info"), out);
	cJSON_Delete(root);
	return ret == -1 ? -EBADMSG : ret;
}

static int one_file(const cJSON *it, void *ctx)
{
	struct into *to = ctx;
	const char *path = str_of(it, "path");
	const cJSON *d = cJSON_GetObjectItemCaseSensitive(it, "is_dir");

	if (!path)
		return 0;
	size_t plen = strlen(path);
	while (plen > 0 && path[plen - 1] == '/')
		plen--;
	const char *name = path;
	for (size_t i = 0; i < plen; i++)
		if (path[i] == '/')
			name = path + i + 1;
	size_t nlen = (size_t)(path + plen - name);
	if (!blob_name_ok(name, nlen))
		return 0;
	struct ml_file *slot = grow(to->arr, *to->n, sizeof(*slot));
	if (!slot || !(slot->name = strndup(name, nlen)))
		return -ENOMEM;
	slot->is_dir = cJSON_IsTrue(d);
	slot->size = slot->is_dir ? 0 : (uint64_t)int_of(it, "file_size");
	(*to->n)++;
	return 0;
}

int ml_parse_files(const char *json, size_t len, struct ml_file **out, size_t *n,
		   char **next)
{
	struct into to = { (void **)out, n };

	/* "files" is absent from an empty listing: no element */
	return walk(json, len, NULL, "files", next, one_file, &to);
}

static int one_model(const cJSON *it, void *ctx)
{
	struct into *to = ctx;
	const char *name = str_of(it, "name");

	if (!name || !*name)
		return 0;
	char **slot = grow(to->arr, *to->n, sizeof(*slot));
	if (!slot || !(*slot = strdup(name)))
		return -ENOMEM;
	(*to->n)++;
	return 0;
}

int ml_parse_models(const char *json, size_t len, char ***out, size_t *n, char **next)
{
	struct into to = { (void **)out, n };

	return walk(json, len, NULL, "registered_models", next, one_model, &to);
}

static int one_version(const cJSON *it, void *ctx)
{
	struct into *to = ctx;
	const char *src = str_of(it, "source"), *st = str_of(it, "status");
	const char *stage = str_of(it, "current_stage");
	int v = version_of(it, "version");

	if (v < 0 || !src)
		return 0;
	struct ml_version *slot = grow(to->arr, *to->n, sizeof(*slot));
	if (!slot || !(slot->source = strdup(src)))
		return -ENOMEM;
	slot->version = v;
	if (id_of(it, "run_id", slot->run_id, sizeof(slot->run_id)) < 0)
		slot->run_id[0] = '\0';
	snprintf(slot->status, sizeof(slot->status), "%s", st ? st : "");
	snprintf(slot->stage, sizeof(slot->stage), "%s", stage ? stage : "");
	slot->created_ms = int_of(it, "creation_timestamp");
	(*to->n)++;
	return 0;
}

int ml_parse_versions(const char *json, size_t len, struct ml_version **out, size_t *n,
		      char **next)
{
	struct into to = { (void **)out, n };

	return walk(json, len, NULL, "model_versions", next, one_version, &to);
}

static int one_alias(const cJSON *it, void *ctx)
{
	struct into *to = ctx;
	const char *a = str_of(it, "alias");
	int v = version_of(it, "version");

	if (!a || v < 0 || strlen(a) >= sizeof(((struct ml_alias *)0)->name))
		return 0;
	struct ml_alias *slot = grow(to->arr, *to->n, sizeof(*slot));
	if (!slot)
		return -ENOMEM;
	snprintf(slot->name, sizeof(slot->name), "%s", a);
	slot->version = v;
	(*to->n)++;
	return 0;
}

int ml_parse_aliases(const char *json, size_t len, struct ml_alias **out, size_t *n)
{
	struct into to = { (void **)out, n };

	return walk(json, len, "registered_model", "aliases", NULL, one_alias, &to);
}

int ml_parse_download_uri(const char *json, size_t len, char **out)
{
	cJSON *root = parse(json, len);
	const char *u;

	*out = NULL;
	if (!root)
		return -EBADMSG;
	u = str_of(root, "artifact_uri");
	int ret = !u || !*u ? -EBADMSG : (*out = strdup(u)) ? 0 : -ENOMEM;
	cJSON_Delete(root);
	return ret;
}

int ml_parse_created_version(const char *json, size_t len, int *version)
{
	cJSON *root = parse(json, len);

	if (!root)
		return -EBADMSG;
	*version = version_of(cJSON_GetObjectItemCaseSensitive(root, "model_version"), "version");
	cJSON_Delete(root);
	return *version > 0 ? 0 : -EBADMSG;
}

void ml_parse_error(const char *json, size_t len, char *code, size_t size)
{
	cJSON *root = json ? parse(json, len) : NULL;
	const char *c = root ? str_of(root, "error_code") : NULL;

	snprintf(code, size, "%.63s", c ? c : "");
	for (char *p = code; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '?';
	cJSON_Delete(root);
}

/* ---- freeing ---- */

void ml_exps_free(struct ml_exp *e, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(e[i].name);
	free(e);
}

void ml_run_release(struct ml_run *r)
{
	free(r->name);
	free(r->artifact_uri);
	r->name = r->artifact_uri = NULL;
}

void ml_runs_free(struct ml_run *r, size_t n)
{
	for (size_t i = 0; i < n; i++)
		ml_run_release(&r[i]);
	free(r);
}

void ml_files_free(struct ml_file *f, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(f[i].name);
	free(f);
}

void ml_names_free(char **names, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

void ml_versions_free(struct ml_version *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i].source);
	free(v);
}

/* ---- artifact URIs ---- */

/* path with its '/' runs squeezed and ending in '/' (or ""), refusing '.' and '..'
 * segments: heap, or NULL (*bad set when refused). */
static char *clean_prefix(const char *path, int *bad)
{
	size_t len = strlen(path);
	char *out = malloc(len + 2), *o = out;

	*bad = 0;
	if (!out)
		return NULL;
	for (const char *p = path; *p;) {
		while (*p == '/')
			p++;
		size_t seg = strcspn(p, "/");
		if (seg == 0)
			break;
		if ((seg == 1 && p[0] == '.') || (seg == 2 && p[0] == '.' && p[1] == '.')) {
			*bad = 1;
			free(out);
			return NULL;
		}
		memcpy(o, p, seg);
		o += seg;
		*o++ = '/';
		p += seg;
	}
	*o = '\0';
	return out;
}

/* The first n '/'-separated segments of path (after its leading '/') kept in the
 * root: how many bytes of path they take, or -1 when path has fewer. */
static long segs_len(const char *path, int n)
{
	const char *p = path;

	while (*p == '/')
		p++;
	for (int i = 0; i < n; i++) {
		size_t seg = strcspn(p, "/");
		if (seg == 0)
			return -1;
		p += seg;
		while (*p == '/')
			p++;
	}
	return (long)(p - path);
}

/* A location this mount cannot read: named by its URI. */
static int other(const char *uri, struct ml_loc *out)
{
	out->kind = ML_LOC_OTHER;
	out->root = strdup(uri);
	return out->root ? 0 : -ENOMEM;
}

int ml_loc_parse(const char *uri, struct ml_loc *out)
{
	const char *rest;
	int bad = 0;

	memset(out, 0, sizeof(*out));
	if (!uri || strpbrk(uri, "?#") || (!strchr(uri, ':') && uri[0] != '/'))
		return -EINVAL;
	for (const char *p = uri; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			return -EINVAL;
	if (strncmp(uri, "mlflow-artifacts:", 17) == 0) {
		rest = uri + 17;
		if (strncmp(rest, "//", 2) == 0) /* mlflow-artifacts://host:port/path */
			rest = strchr(rest + 2, '/') ? strchr(rest + 2, '/') : "";
		out->kind = ML_LOC_PROXIED;
		out->prefix = clean_prefix(rest, &bad);
	} else if (strncmp(uri, "runs:/", 6) == 0) {
		rest = uri + 6;
		while (*rest == '/')
			rest++;
		size_t idlen = strcspn(rest, "/");
		if (idlen == 0 || idlen >= sizeof(out->run_id))
			return -EINVAL;
		memcpy(out->run_id, rest, idlen);
		out->kind = ML_LOC_RUN;
		out->prefix = clean_prefix(rest + idlen, &bad);
	} else if (strncmp(uri, "file://", 7) == 0 || (uri[0] == '/' && uri[1] != '/')) {
		/* file:///abs or a bare absolute path (a server's local artifact root) */
		rest = uri[0] == '/' ? uri : uri + 7;
		if (rest[0] != '/')
			return -EINVAL; /* file://host/... */
		out->kind = ML_LOC_DIRECT;
		out->root = strdup("file:///");
		out->prefix = clean_prefix(rest, &bad);
	} else {
		long keep = -1;
		size_t slen = strcspn(uri, ":");
		const char *after = uri + slen + 3, *path;
		if (strncmp(uri + slen, "://", 3) != 0)
			return other(uri, out);
		path = strchr(after, '/');
		if (!path)
			path = after + strlen(after);
		if (path == after)
			return -EINVAL; /* no host */
		int https = slen == 5 && strncmp(uri, "https", 5) == 0;
		int http = slen == 4 && strncmp(uri, "http", 4) == 0;
		if ((slen == 5 && strncmp(uri, "wasbs", 5) == 0) ||
		    (slen == 4 && strncmp(uri, "wasb", 4) == 0) ||
		    (slen == 2 && strncmp(uri, "s3", 2) == 0)) {
			keep = 0; /* the container or bucket is in the host part */
		} else if (https || http) {
			/* ACCOUNT.blob.HOST/CONTAINER/...; an emulator's
			 * HOST:PORT/ACCOUNT/CONTAINER/... */
			size_t hlen = (size_t)(path - after);
			const char *dot = memchr(after, '.', hlen);
			int vhost = dot && (size_t)(after + hlen - dot) > 6 &&
				    strncmp(dot, ".blob.", 6) == 0;
			keep = segs_len(path, vhost ? 1 : 2);
			if (keep < 0)
				return -EINVAL;
		} else {
			return other(uri, out);
		}
		out->kind = ML_LOC_DIRECT;
		out->root = malloc((size_t)(path - uri) + (size_t)keep + 2);
		if (out->root) {
			size_t rl = (size_t)(path - uri) + (size_t)keep;
			memcpy(out->root, uri, rl);
			out->root[rl] = '\0';
			if (rl == 0 || out->root[rl - 1] != '/')
				memcpy(out->root + rl, "/", 2);
		}
		out->prefix = clean_prefix(path + keep, &bad);
	}
	if (bad) {
		ml_loc_release(out);
		return -EINVAL;
	}
	if (!out->prefix || (out->kind == ML_LOC_DIRECT && !out->root)) {
		ml_loc_release(out);
		return -ENOMEM;
	}
	return 0;
}

void ml_loc_release(struct ml_loc *l)
{
	free(l->root);
	free(l->prefix);
	l->root = l->prefix = NULL;
}

int ml_exp_name_ok(const char *name)
{
	return blob_name_ok(name, strlen(name));
}

static int id_cmp(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int ml_exps_place(struct ml_exp *e, size_t n)
{
	const char **ids = malloc((n ? n : 1) * sizeof(*ids));

	if (!ids)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++)
		ids[i] = e[i].id;
	qsort(ids, n, sizeof(*ids), id_cmp);
	for (size_t i = 0; i < n; i++) {
		const char *name = e[i].name;
		e[i].by_id = !ml_exp_name_ok(name) ||
			     (n && bsearch(&name, ids, n, sizeof(*ids), id_cmp) != NULL);
	}
	free(ids);
	return 0;
}

