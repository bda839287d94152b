/*
 * mlflow_art.c: the artifacts of an MLflow server's runs and versions, read where
 * they are: in a store the mount opens itself (file, Azure, S3), or through the
 * server's proxy, which sends whole files only (no Range): one streaming request per
 * file, its size checked against the listing.
 */
#include "mlflow_store.h"
#include "log.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- artifacts ---- */

/* The store opened at root, opened now when new. */
int ml_sub_store(struct blob_mlflow *s, const char *root, struct blob_store **out)
{
	char err[512];
	struct blob_store *st = NULL;

	pthread_mutex_lock(&s->lock);
	for (size_t i = 0; i < s->nsubs; i++)
		if (strcmp(s->subs[i].root, root) == 0) {
			*out = s->subs[i].store;
			pthread_mutex_unlock(&s->lock);
			return 0;
		}
	pthread_mutex_unlock(&s->lock);
	int ret = blob_open(root, &s->opt, &st, err, sizeof(err));
	if (ret < 0) {
		char shown[256];
		blob_url_shown(root, shown, sizeof(shown)); /* no password in the log */
		LOG_ERROR("artifacts at %s cannot be read: %s", shown, err);
		return -EIO;
	}
	pthread_mutex_lock(&s->lock);
	for (size_t i = 0; i < s->nsubs; i++)
		if (strcmp(s->subs[i].root, root) == 0) {
			*out = s->subs[i].store; /* another thread's came first */
			pthread_mutex_unlock(&s->lock);
			blob_destroy(st);
			return 0;
		}
	struct ml_sub *ns = realloc(s->subs, (s->nsubs + 1) * sizeof(*ns));
	char *r = strdup(root);
	if (!ns || !r) {
		if (ns)
			s->subs = ns;
		pthread_mutex_unlock(&s->lock);
		free(r);
		blob_destroy(st);
		return -ENOMEM;
	}
	s->subs = ns;
	s->subs[s->nsubs].root = r;
	s->subs[s->nsubs].store = st;
	s->nsubs++;
	if (s->subs_stopped)
		blob_stop(st);
	pthread_mutex_unlock(&s->lock);
	LOG_INFO("artifacts at %s are read directly", st->id);
	*out = st;
	return 0;
}

/* A proxied artifact's etag: it has none, so its size and what it belongs to. */
static void proxied_etag(const char *tag, uint64_t size, char etag[BLOB_ETAG_MAX])
{
	snprintf(etag, BLOB_ETAG_MAX, "\"ml-%.80s-%" PRIu64 "\"", tag, size);
}

/* The size a proxied etag names; -1 when it is not one. */
int64_t ml_proxied_size(const char *etag)
{
	const char *dash = etag ? strrchr(etag, '-') : NULL;

	if (!etag || strncmp(etag, "\"ml-", 4) != 0 || !dash)
		return -1;
	return strtoll(dash + 1, NULL, 10);
}

int ml_warn_other(struct blob_mlflow *s, const char *where)
{
	pthread_mutex_lock(&s->lock);
	int first = !s->warned_other;
	s->warned_other = 1;
	pthread_mutex_unlock(&s->lock);
	if (first) {
		char shown[256];
		blob_url_shown(where, shown, sizeof(shown)); /* no password in the log */
		LOG_ERROR("artifacts at '%s' are in a store this mount cannot read (it reads "
			  "file, wasbs, https Azure, s3 and mlflow-artifacts locations); their "
			  "reads fail with EIO", shown);
	}
	return -EIO;
}

struct files_acc {
	struct ml_file *f;
	size_t n;
};

static int files_page(void *ctx, const char *json, size_t len, char **next)
{
	struct files_acc *a = ctx;

	return ml_parse_files(json, len, &a->f, &a->n, next) == -EBADMSG ? -EIO : 0;
}

int ml_loc_list(struct blob_mlflow *s, const struct ml_loc *loc, const char *rel,
		const char *tag, struct timespec mtime, struct blob_list *out)
{
	char *full = NULL;
	int ret;

	if (loc->kind == ML_LOC_OTHER || loc->kind == ML_LOC_RUN)
		return ml_warn_other(s, loc->root ? loc->root : "?");
	if (asprintf(&full, "%s%s", loc->prefix, rel) < 0)
		return -ENOMEM;
	if (loc->kind == ML_LOC_DIRECT) {
		struct blob_store *st;
		ret = ml_sub_store(s, loc->root, &st);
		if (ret == 0)
			ret = blob_list(st, full, out);
		if (ret == -ENOENT && !rel[0])
			ret = 0; /* a run with no artifacts yet */
		free(full);
		return ret;
	}
	/* proxied: one level, names in "path" */
	struct files_acc a = { 0 };
	size_t flen = strlen(full);
	if (flen && full[flen - 1] == '/')
		full[flen - 1] = '\0';
	char *esc = http_escape(full, 1), *pq = NULL;
	if (!esc || asprintf(&pq, "/api/2.0/mlflow-artifacts/artifacts?path=%s", esc) < 0)
		pq = NULL;
	free(esc);
	free(full);
	if (!pq)
		return -ENOMEM;
	ret = ml_pages(s, "GET", pq, NULL, files_page, &a);
	free(pq);
	for (size_t i = 0; ret == 0 && i < a.n; i++) {
		struct blob_entry e = { .name = a.f[i].name, .is_dir = a.f[i].is_dir };
		if (!e.is_dir) {
			e.size = a.f[i].size;
			e.mtime = mtime;
			proxied_etag(tag, e.size, e.etag);
		}
		ret = blob_list_add(out, &e);
	}
	if (ret == 0 && a.n == 0 && rel[0])
		ret = -ENOENT; /* a folder is there only with something in it */
	ml_files_free(a.f, a.n);
	return ret;
}

struct skip_sink {
	blob_sink_fn sink;
	void *ctx;
	uint64_t skip, seen;
	size_t len, given;
	int64_t size;		/* what the listing said, or -1 */
};

/* A whole file's answer handed on from off, len bytes. */
static int skip_put(void *ctx, const void *data, size_t len)
{
	struct skip_sink *k = ctx;
	const char *p = data;

	if (!data) {
		k->seen = 0;
		k->given = 0;
		return k->sink(k->ctx, NULL, 0);
	}
	k->seen += len;
	if (k->size >= 0 && k->seen > (uint64_t)k->size)
		return -EMSGSIZE; /* longer than listed */
	uint64_t start = k->seen - len;
	if (start + len <= k->skip)
		return 0;
	if (start < k->skip) {
		p += k->skip - start;
		len -= (size_t)(k->skip - start);
	}
	if (len > k->len - k->given)
		len = k->len - k->given;
	if (len == 0)
		return 0;
	k->given += len;
	return k->sink(k->ctx, p, len);
}

ssize_t ml_proxied_read(struct blob_mlflow *s, const char *key, const char *path,
			    const char *etag, uint64_t off, size_t len, blob_sink_fn sink,
			    void *ctx)
{
	struct skip_sink k = { .sink = sink, .ctx = ctx, .skip = off, .len = len,
			       .size = ml_proxied_size(etag) };
	
	struct ml_sign g = { .s = s };
	struct http_request hq = { 0 };
	struct http_response resp;
	char *esc = http_escape(path, 1), *url = NULL;
	ssize_t ret;

	if (!esc || asprintf(&url, "%s/api/2.0/mlflow-artifacts/artifacts/%s", s->api, esc) < 0)
		url = NULL;
	free(esc);
	if (!url)
		return -ENOMEM;
	/* the proxy sends whole files only (it ignores Range): one request, from 0 */
	hq.method = "GET";
	hq.url = url;
	hq.what = key;
	hq.sign = ml_sign;
	hq.sign_ctx = &g;
	hq.sink = skip_put;
	hq.sink_ctx = &k;
	hq.sink_max = UINT64_MAX > SIZE_MAX ? SIZE_MAX : (size_t)UINT64_MAX;
	hq.final_status = 500; /* a missing artifact: not worth retrying */
	if (k.size >= 0) {
		hq.has_expect_length = 1;
		hq.expect_length = (uint64_t)k.size;
	}
	ret = http_do(s->http, &hq, &resp);
	if (ret == -EMSGSIZE) {
		LOG_ERROR("%s: the server sends %s bytes than its listing says (%" PRId64 "); "
			  "not served", key, resp.content_length > (uint64_t)k.size ? "more" : "other",
			  k.size);
		ret = -EIO;
	} else if (ret == 0 && resp.status == 200) {
		ret = (ssize_t)k.given;
		if (k.size >= 0 && k.seen != (uint64_t)k.size) {
			LOG_ERROR("%s: the server sent %" PRIu64 " bytes, its listing says %" PRId64
				  "; not served", key, k.seen, k.size);
			ret = -EIO;
		}
	} else if (ret == 0 && resp.status == 500) {
		/* the proxy answers 500 for an artifact it does not have */
		LOG_ERROR("%s: the MLflow server could not send it (HTTP 500: a missing "
			  "artifact, or a failing server)", key);
		ret = -EIO;
	} else if (ret == 0) {
		ret = ml_errno(s, &resp, key);
		if (ret == 0) {
			LOG_ERROR("%s: the MLflow server could not send it (HTTP %ld)", key,
				  resp.status);
			ret = -EIO;
		}
		if (ret == -ENOENT && etag && *etag)
			ret = -ESTALE;
	}
	http_response_release(&resp);
	free(url);
	return ret;
}

