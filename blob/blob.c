/*
 * blob.c: the backend-independent part of the store interface: choosing a backend
 * from the URL, whole-blob reads of small records, and listing helpers.
 */
#include "blob_private.h"
#include "log.h"

#include <errno.h>
#include <openssl/evp.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int blob_open(const char *url, const struct blob_options *opt, struct blob_store **out,
	      char *err, size_t errlen)
{
	static const struct blob_options defaults = { .timeout_s = 60 };

	*out = NULL;
	if (!opt)
		opt = &defaults;
	if (strncmp(url, "file://", 7) == 0)
		return blob_local_open(url, out, err, errlen);
	if (strncmp(url, "mlflow+", 7) == 0)
		return blob_mlflow_open(url, opt, out, err, errlen);
	if (strncmp(url, "s3://", 5) == 0)
		return blob_s3_open(url, opt, out, err, errlen);
	if (strncmp(url, "wasbs://", 8) == 0 || strncmp(url, "wasb://", 7) == 0 ||
	    strncmp(url, "https://", 8) == 0 || strncmp(url, "http://", 7) == 0)
		return blob_azure_open(url, opt, out, err, errlen);
	/* never echo a query (a SAS signature) or a password */
	char shown[256];
	blob_url_shown(url, shown, sizeof(shown));
	snprintf(err, errlen, "unsupported store URL '%s' (expected file:///abs/path, "
		 "wasbs://CONTAINER@ACCOUNT.blob.core.windows.net/PREFIX, "
		 "https://ACCOUNT.blob.core.windows.net/CONTAINER/PREFIX, s3://BUCKET/PREFIX or "
		 "mlflow+https://HOST[:PORT][/PATH])", shown);
	return -EINVAL;
}

const char *blob_ca_file(const struct blob_options *opt, const char *store_var,
			 const char **source)
{
	const char *v;

	*source = "the system's";
	if (opt && opt->ca_file && opt->ca_file[0]) {
		*source = "--ca-file";
		return opt->ca_file;
	}
	if (store_var && (v = getenv(store_var)) && v[0]) {
		*source = store_var;
		return v;
	}
	if ((v = getenv("CURL_CA_BUNDLE")) && v[0]) {
		*source = "CURL_CA_BUNDLE";
		return v;
	}
	if ((v = getenv("SSL_CERT_FILE")) && v[0]) {
		*source = "SSL_CERT_FILE";
		return v;
	}
	return NULL;
}

int blob_check(struct blob_store *s, unsigned deadline_s, char *err, size_t errlen)
{
	struct blob_list l;
	int ret;

	if (s->ops->check)
		return s->ops->check(s, deadline_s, err, errlen);

	blob_list_init(&l);
	ret = blob_list(s, "", &l);
	blob_list_release(&l);
	if (ret == -ENOENT)
		ret = 0; /* an empty store is a store */
	if (ret == -EACCES)
		snprintf(err, errlen, "store %s refused access: %s", s->id, strerror(-ret));
	else if (ret < 0)
		snprintf(err, errlen, "store %s is unreachable: %s", s->id, strerror(-ret));
	return ret;
}

void blob_destroy(struct blob_store *s)
{
	if (s)
		s->ops->destroy(s);
}

struct buf_sink {
	char *buf;
	size_t cap, len;
};

static int buf_put(void *ctx, const void *data, size_t len)
{
	struct buf_sink *b = ctx;

	if (!data) {
		b->len = 0; /* the read restarts */
		return 0;
	}
	if (len > b->cap - b->len)
		return -EIO; /* more than asked for */
	memcpy(b->buf + b->len, data, len);
	b->len += len;
	return 0;
}

ssize_t blob_read(struct blob_store *s, const char *key, const char *etag, uint64_t off,
		  size_t len, void *buf)
{
	struct buf_sink b = { buf, len, 0 };
	ssize_t n = blob_read_to(s, key, etag, off, len, buf_put, &b);

	return n < 0 ? n : (ssize_t)b.len;
}

int blob_get(struct blob_store *s, const char *key, size_t max, char **data, size_t *len,
	     char etag[BLOB_ETAG_MAX])
{
	struct blob_stat st;
	char *buf = NULL;
	ssize_t n = 0;
	int ret, tries;

	*data = NULL;
	*len = 0;
	/* The blob may be replaced between stat and read: the read is pinned to the
	 * etag, so a replacement shows as -ESTALE and the pair is tried again. */
	for (tries = 0; tries < 5; tries++) {
		ret = blob_stat(s, key, &st);
		if (ret < 0)
			goto out;
		if (st.size > max) {
			ret = -EFBIG;
			goto out;
		}
		free(buf);
		buf = malloc(st.size + 1);
		if (!buf) {
			ret = -ENOMEM;
			goto out;
		}
		n = st.size ? blob_read(s, key, st.etag, 0, st.size, buf) : 0;
		if (n != -ESTALE)
			break;
	}
	if (n < 0) {
		ret = (int)n;
		goto out;
	}
	if ((uint64_t)n != st.size) {
		ret = -ESTALE; /* shrank under us even with the etag pinned */
		goto out;
	}
	buf[n] = '\0';
	*data = buf;
	*len = (size_t)n;
	memcpy(etag, st.etag, BLOB_ETAG_MAX);
	buf = NULL;
	ret = 0;
out:
	free(buf);
	return ret;
}

void blob_list_init(struct blob_list *l)
{
	memset(l, 0, sizeof(*l));
}

int blob_list_add(struct blob_list *l, const struct blob_entry *e)
{
	if (l->count == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 16;
		struct blob_entry *n = realloc(l->entries, cap * sizeof(*n));
		if (!n)
			return -ENOMEM;
		l->entries = n;
		l->cap = cap;
	}
	struct blob_entry *d = &l->entries[l->count];
	*d = *e;
	d->name = strdup(e->name);
	if (!d->name)
		return -ENOMEM;
	l->count++;
	return 0;
}

void blob_list_release(struct blob_list *l)
{
	for (size_t i = 0; i < l->count; i++)
		free(l->entries[i].name);
	free(l->entries);
	blob_list_init(l);
}

int blob_name_ok(const char *name, size_t len)
{
	if (len == 0 || len > NAME_MAX)
		return 0;
	if ((len == 1 && name[0] == '.') || (len == 2 && name[0] == '.' && name[1] == '.'))
		return 0;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)name[i];
		if (c < 0x20 || c == 0x7f || c == '/')
			return 0;
	}
	return 1;
}

static int entry_cmp(const void *a, const void *b)
{
	const struct blob_entry *x = a, *y = b;
	int c = strcmp(x->name, y->name);
	/* folders first among equals, so the folder wins a name clash */
	return c ? c : (y->is_dir == 1) - (x->is_dir == 1);
}

void blob_list_clean(struct blob_list *l, const char *folder)
{
	size_t i, o = 0;

	if (l->count > 1)
		qsort(l->entries, l->count, sizeof(*l->entries), entry_cmp);
	for (i = 0; i < l->count; i++) {
		struct blob_entry *e = &l->entries[i];
		if (!blob_name_ok(e->name, strlen(e->name))) {
			LOG_WARN("skipping entry with an unusable name in '%s': '%.80s'", folder,
				 e->name);
			free(e->name);
			continue;
		}
		if (o > 0 && strcmp(l->entries[o - 1].name, e->name) == 0) {
			/* sorted folder-first: this is a blob (or a repeat) shadowed by the
			 * folder of the same name */
			if (e->is_dir == 1 || l->entries[o - 1].is_dir != 1)
				LOG_DEBUG("dropping repeated entry '%s' in '%s'", e->name, folder);
			else
				LOG_WARN("blob '%s%s' has the name of a folder; serving the folder",
					 folder, e->name);
			free(e->name);
			continue;
		}
		l->entries[o++] = *e;
	}
	l->count = o;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

void blob_pct_decode(char *s, int plus)
{
	char *o = s;

	for (char *i = s; *i; i++) {
		if (i[0] == '%' && hexval(i[1]) >= 0 && hexval(i[2]) >= 0) {
			*o++ = (char)(hexval(i[1]) << 4 | hexval(i[2]));
			i += 2;
		} else if (*i == '+' && plus) {
			*o++ = ' ';
		} else {
			*o++ = *i;
		}
	}
	*o = '\0';
}

void blob_md5_b64(const void *data, size_t len, char out[32])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;

	EVP_Digest(data, len, md, &mdlen, EVP_md5(), NULL);
	EVP_EncodeBlock((unsigned char *)out, md, (int)mdlen);
}

uint64_t blob_fnv(const void *p, size_t n, uint64_t h)
{
	const unsigned char *b = p;

	for (size_t i = 0; i < n; i++)
		h = (h ^ b[i]) * 1099511628211ull;
	return h;
}

int blob_mountinfo_line(const char *line, char *point, size_t psize, char *fstype,
			size_t tsize, char *dev, size_t dsize)
{
	/* ID PARENT MAJ:MIN ROOT POINT OPTIONS [OPTIONAL...] - TYPE SOURCE SUPER; a
	 * space, tab, newline or backslash in POINT is written \ooo */
	const char *p = line;
	size_t k = 0;

	for (int field = 0; field < 4 && p; field++) {
		if (field == 2 && dsize)
			snprintf(dev, dsize, "%.*s", (int)strcspn(p, " "), p);
		if ((p = strchr(p, ' ')))
			p++;
	}
	if (!p || psize == 0)
		return -1;
	for (; *p && *p != ' ' && *p != '\n' && k + 1 < psize; p++) {
		if (p[0] == '\\' && p[1] >= '0' && p[1] <= '3' && p[2] >= '0' && p[2] <= '7' &&
		    p[3] >= '0' && p[3] <= '7') {
			point[k++] = (char)((p[1] - '0') * 64 + (p[2] - '0') * 8 + (p[3] - '0'));
			p += 3;
		} else {
			point[k++] = *p;
		}
	}
	point[k] = '\0';
	if (*p && *p != ' ')
		return -1; /* longer than point holds: never a match by its prefix */
	const char *dash = strstr(p, " - ");
	if (!dash)
		return -1;
	dash += 3;
	size_t tlen = strcspn(dash, " \n");
	if (tsize)
		snprintf(fstype, tsize, "%.*s", (int)tlen, dash);
	return 0;
}

void blob_url_shown(const char *url, char *out, size_t size)
{
	size_t n = strcspn(url, "?#"), k = 0;
	const char *auth = strstr(url, "://");
	const char *from = NULL, *to = NULL;

	if (auth && (size_t)(auth - url) < n && strncmp(url, "wasb", 4) != 0) {
		auth += 3;
		const char *at = memrchr(auth, '@', strcspn(auth, "/?#"));
		if (at) {
			from = auth;
			to = at;
		}
	}
	if (size == 0)
		return;
	for (size_t i = 0; i < n && k + 4 < size; i++) {
		if (from && url + i == from) {
			memcpy(out + k, "***", 3);
			k += 3;
		}
		if (from && url + i >= from && url + i < to)
			continue;
		out[k++] = url[i];
	}
	out[k] = '\0';
}

