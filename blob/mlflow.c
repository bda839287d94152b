/*
 * mlflow.c: an MLflow tracking server as a store (see mlflow_store.h for the layout
 * it shows): the REST calls, experiments, runs and their artifacts.
 *
 * Credentials as MLflow's own client takes them: MLFLOW_TRACKING_USERNAME and
 * MLFLOW_TRACKING_PASSWORD (Basic), else MLFLOW_TRACKING_TOKEN (Bearer);
 * MLFLOW_TRACKING_INSECURE_TLS=true, MLFLOW_TRACKING_SERVER_CERT_PATH.
 */
#include "mlflow_store.h"
#include "log.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* Answers of the API kept whole (a page of 1000 runs with their data is large). */
#define ML_BODY_MAX (64u << 20)
/* Page size asked of every search (the server may send fewer). */
#define ML_PAGE 1000

/* ---- the REST API ---- */

int ml_sign(void *ctx, struct curl_slist **headers)
{
	struct ml_sign *g = ctx;
	struct curl_slist *n;

	if (g->s->auth) {
		if (!(n = curl_slist_append(*headers, g->s->auth)))
			return -ENOMEM;
		*headers = n;
	}
	if (g->json) {
		if (!(n = curl_slist_append(*headers, "Content-Type: application/json")))
			return -ENOMEM;
		*headers = n;
	}
	return 0;
}

static int ml_errno_q(struct blob_mlflow *s, const struct http_response *resp,
		      const char *what, int quiet);

/* What a failed answer means, logged where the user must act. */
int ml_errno(struct blob_mlflow *s, const struct http_response *resp, const char *what)
{
	return ml_errno_q(s, resp, what, 0);
}

/* ml_errno, quiet: nothing logged (the caller says it in one line). */
static int ml_errno_q(struct blob_mlflow *s, const struct http_response *resp,
		      const char *what, int quiet)
{
	char code[64];

	if (resp->status >= 200 && resp->status < 300)
		return 0;
	ml_parse_error(resp->body, resp->body_len, code, sizeof(code));
	if (resp->status == 401 || resp->status == 403 || strcmp(code, "PERMISSION_DENIED") == 0 ||
	    strcmp(code, "UNAUTHENTICATED") == 0) {
		if (!quiet)
			LOG_ERROR("%s: the MLflow server refused access (HTTP %ld%s%s); "
				  "credentials used: %s", what, resp->status, code[0] ? " " : "",
				  code, s->auth_source);
		return -EACCES;
	}
	if (resp->status == 404 || strcmp(code, "RESOURCE_DOES_NOT_EXIST") == 0)
		return -ENOENT;
	if (strcmp(code, "RESOURCE_ALREADY_EXISTS") == 0)
		return -EEXIST;
	if (resp->status == 400)
		return -EINVAL;
	if (!quiet)
		LOG_ERROR("%s: unexpected answer HTTP %ld %s", what, resp->status, code);
	return -EIO;
}

/* Set while a thread may only use what it already knows (no request goes out). */
static _Thread_local int known_only;

static int call(struct blob_mlflow *s, const char *method, const char *path_query,
		const char *body, char **out, size_t *len, char *why, size_t whylen,
		unsigned deadline_ms)
{
	int quiet = why != NULL; /* the caller says why it failed */
	struct ml_sign g = { .s = s, .json = body != NULL };
	struct http_request hq = { .body_max = ML_BODY_MAX };
	struct http_response resp;
	char *url = NULL;
	int ret;

	*out = NULL;
	*len = 0;
	if (known_only)
		return -EAGAIN;
	if (asprintf(&url, "%s%s", s->api, path_query) < 0)
		return -ENOMEM;
	hq.method = method;
	hq.url = url;
	hq.what = path_query;
	hq.sign = ml_sign;
	hq.sign_ctx = &g;
	hq.body = body;
	hq.body_len = body ? strlen(body) : 0;
	hq.must_try = strcmp(method, "GET") != 0;
	hq.quiet = quiet;
	hq.deadline_ms = deadline_ms; /* 0: the store's */
	hq.errbuf = why;
	hq.errlen = whylen;
	ret = http_do(s->http, &hq, &resp);
	if (ret == 0) {
		if (why)
			*why = '\0'; /* answered: the answer says why */
		ret = ml_errno_q(s, &resp, path_query, quiet);
		if ((ret == 0 || ret == -EINVAL) && resp.body) {
			*out = resp.body;
			*len = resp.body_len;
			resp.body = NULL;
		} else if (ret == 0) {
			*out = strdup("{}");
			*len = 2;
			ret = *out ? 0 : -ENOMEM;
		}
	}
	http_response_release(&resp);
	free(url);
	return ret;
}

int ml_call(struct blob_mlflow *s, const char *method, const char *path_query,
	    const char *body, char **out, size_t *len)
{
	return call(s, method, path_query, body, out, len, NULL, 0, 0);
}

int ml_call_quiet(struct blob_mlflow *s, const char *method, const char *path_query,
		  const char *body, char **out, size_t *len, char *why)
{
	why[0] = '\0';
	return call(s, method, path_query, body, out, len, why, ML_WHY, 0);
}

const char *ml_failure(struct blob_mlflow *s, int err, const char *why, char *buf,
		       size_t size)
{
	if (err == -EACCES)
		snprintf(buf, size, "the MLflow server refused access (credentials used: %s)",
			 s->auth_source);
	else if (why && *why)
		snprintf(buf, size, "%s", why);
	else
		snprintf(buf, size, "%s", strerror(-err));
	return buf;
}

int ml_pages(struct blob_mlflow *s, const char *method, const char *path_query,
	     const char *body, ml_page_fn page, void *ctx)
{
	char *token = NULL;
	int ret = 0, pages = 0;

	do {
		char *pq = NULL, *b = NULL, *text = NULL;
		size_t len;
		if (body) {
			cJSON *o = cJSON_Parse(body);
			if (o && token)
				cJSON_AddStringToObject(o, "page_token", token);
			b = o ? cJSON_PrintUnformatted(o) : NULL;
			cJSON_Delete(o);
			pq = strdup(path_query);
		} else {
			char *t = token ? http_escape(token, 0) : NULL;
			if (asprintf(&pq, "%s%s%s", path_query, t ? "&page_token=" : "", t ? t : "") < 0)
				pq = NULL;
			free(t);
		}
		free(token);
		token = NULL;
		if (!pq || (body && !b)) {
			free(pq);
			free(b);
			return -ENOMEM;
		}
		ret = ml_call(s, method, pq, b, &text, &len);
		free(pq);
		free(b);
		if (ret == 0)
			ret = page(ctx, text, len, &token);
		free(text);
		if (ret == 0 && token && ++pages > 100000) {
			LOG_ERROR("%s: the server's pages do not end; stopped", path_query);
			ret = -EIO;
		}
	} while (ret == 0 && token);
	free(token);
	return ret;
}

/* ---- experiments ---- */

/* The folder name of an experiment: its name, or its id. */
static const char *exp_dir(const struct ml_exp *e)
{
	return e->by_id ? e->id : e->name;
}

struct exps_acc {
	struct ml_exp *e;
	size_t n;
};

static int exps_page(void *ctx, const char *json, size_t len, char **next)
{
	struct exps_acc *a = ctx;
	int ret = ml_parse_experiments(json, len, &a->e, &a->n, next);

	return ret == -EBADMSG ? -EIO : ret;
}

static int exps_refresh(struct blob_mlflow *s)
{
	struct exps_acc a = { 0 };
	char body[64];

	snprintf(body, sizeof(body), "{\"max_results\":%d}", ML_PAGE);
	int ret = ml_pages(s, "POST", "/api/2.0/mlflow/experiments/search", body, exps_page, &a);
	if (ret == 0)
		ret = ml_exps_place(a.e, a.n);
	if (ret < 0) {
		ml_exps_free(a.e, a.n);
		return ret;
	}
	pthread_mutex_lock(&s->lock);
	ml_exps_free(s->exps, s->nexps);
	s->exps = a.e;
	s->nexps = a.n;
	pthread_mutex_unlock(&s->lock);
	return 0;
}

/* The id of the experiment shown as dir into id; asks the server when not known. */
static int exp_id_of(struct blob_mlflow *s, const char *dir, char id[ML_ID_MAX])
{
	for (int round = 0; round < 2; round++) {
		int found = 0;
		pthread_mutex_lock(&s->lock);
		for (size_t i = 0; i < s->nexps && !found; i++)
			if (strcmp(exp_dir(&s->exps[i]), dir) == 0) {
				snprintf(id, ML_ID_MAX, "%s", s->exps[i].id);
				found = 1;
			}
		pthread_mutex_unlock(&s->lock);
		if (found)
			return 0;
		if (round == 0) {
			int ret = exps_refresh(s);
			if (ret < 0)
				return ret;
		}
	}
	return -ENOENT;
}

static int list_exps(struct blob_mlflow *s, struct blob_list *out)
{
	int ret = exps_refresh(s);

	if (ret < 0)
		return ret;
	pthread_mutex_lock(&s->lock);
	for (size_t i = 0; i < s->nexps && ret == 0; i++) {
		struct blob_entry e = { .name = (char *)exp_dir(&s->exps[i]), .is_dir = 1 };
		ret = blob_list_add(out, &e);
	}
	pthread_mutex_unlock(&s->lock);
	return ret;
}

/* ---- runs ---- */

static int run_keep(struct blob_mlflow *s, const struct ml_run *r)
{
	char *v = NULL;
	int ret;

	if (asprintf(&v, "%s\t%" PRId64 "\t%" PRId64 "\t%s\t%s", r->exp_id, r->start_ms,
		     r->end_ms, r->status, r->artifact_uri) < 0)
		return -ENOMEM;
	pthread_mutex_lock(&s->lock);
	ret = ml_map_put(s->runs, r->id, v);
	pthread_mutex_unlock(&s->lock);
	free(v);
	return ret;
}

/* What the tree needs of a run: from the last listing, else from the server. */
int ml_run_get(struct blob_mlflow *s, const char *run_id, struct ml_run *out)
{
	char *v, *text = NULL, *pq = NULL, *esc;
	size_t len;
	int ret;

	memset(out, 0, sizeof(*out));
	pthread_mutex_lock(&s->lock);
	v = ml_map_get(s->runs, run_id);
	pthread_mutex_unlock(&s->lock);
	if (v) {
		char *f[5], *p = v;
		for (int i = 0; i < 5; i++) {
			f[i] = p;
			p = i < 4 ? strchr(p, '\t') : NULL;
			if (i < 4 && !p) {
				free(v);
				return -EIO;
			}
			if (p)
				*p++ = '\0';
		}
		snprintf(out->id, sizeof(out->id), "%s", run_id);
		snprintf(out->exp_id, sizeof(out->exp_id), "%s", f[0]);
		out->start_ms = strtoll(f[1], NULL, 10);
		out->end_ms = strtoll(f[2], NULL, 10);
		snprintf(out->status, sizeof(out->status), "%s", f[3]);
		out->artifact_uri = strdup(f[4]);
		out->name = strdup("");
		free(v);
		if (!out->artifact_uri || !out->name) {
			ml_run_release(out);
			return -ENOMEM;
		}
		return 0;
	}
	if (strlen(run_id) >= ML_ID_MAX)
		return -ENOENT;
	esc = http_escape(run_id, 0);
	if (!esc || asprintf(&pq, "/api/2.0/mlflow/runs/get?run_id=%s", esc) < 0)
		pq = NULL;
	free(esc);
	if (!pq)
		return -ENOMEM;
	ret = ml_call(s, "GET", pq, NULL, &text, &len);
	free(pq);
	if (ret == -EINVAL)
		ret = -ENOENT; /* INVALID_PARAMETER_VALUE: no such run */
	if (ret == 0)
		ret = ml_parse_run(text, len, out) == 0 ? 0 : -EIO;
	free(text);
	if (ret == 0)
		ret = run_keep(s, out);
	return ret;
}

struct runs_acc {
	struct blob_mlflow *s;
	struct ml_run *runs;
	size_t n;
};

static int runs_page(void *ctx, const char *json, size_t len, char **next)
{
	struct runs_acc *a = ctx;
	size_t before = a->n;
	int ret = ml_parse_runs(json, len, &a->runs, &a->n, next);

	for (size_t i = before; ret == 0 && i < a->n; i++)
		ret = run_keep(a->s, &a->runs[i]);
	return ret == -EBADMSG ? -EIO : ret;
}

static int name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The runs of experiment dir: a folder per run id, a link per unique run name. */
static int list_runs(struct blob_mlflow *s, const char *dir, struct blob_list *out)
{
	struct runs_acc a = { .s = s };
	char id[ML_ID_MAX], **names = NULL;
	int ret = exp_id_of(s, dir, id);

	if (ret < 0)
		return ret;
	cJSON *o = cJSON_CreateObject(), *ids = cJSON_AddArrayToObject(o, "experiment_ids");
	cJSON_AddItemToArray(ids, cJSON_CreateString(id));
	cJSON_AddNumberToObject(o, "max_results", ML_PAGE);
	char *b = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	if (!b)
		return -ENOMEM;
	ret = ml_pages(s, "POST", "/api/2.0/mlflow/runs/search", b, runs_page, &a);
	free(b);
	if (ret < 0)
		goto out;
	names = calloc(a.n + 1, sizeof(*names));
	if (!names) {
		ret = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < a.n && ret == 0; i++) {
		struct blob_entry e = { .name = a.runs[i].id, .is_dir = 1 };
		if (blob_name_ok(a.runs[i].id, strlen(a.runs[i].id)))
			ret = blob_list_add(out, &e);
		names[i] = a.runs[i].name;
	}
	qsort(names, a.n, sizeof(*names), name_cmp);
	for (size_t i = 0; i < a.n && ret == 0; i++) {
		const char *nm = names[i];
		int dup = (i > 0 && strcmp(names[i - 1], nm) == 0) ||
			  (i + 1 < a.n && strcmp(names[i + 1], nm) == 0);
		int is_id = 0;
		for (size_t k = 0; k < a.n && !is_id; k++)
			is_id = strcmp(a.runs[k].id, nm) == 0;
		if (dup || is_id || !blob_name_ok(nm, strlen(nm)))
			continue;
		struct ml_run *r = NULL;
		for (size_t k = 0; k < a.n && !r; k++)
			if (a.runs[k].name == nm)
				r = &a.runs[k];
		if (!r)
			continue;
		struct blob_entry e = { .name = (char *)nm, .is_dir = BLOB_ENTRY_LINK };
		snprintf(e.etag, sizeof(e.etag), "%s", r->id);
		e.mtime.tv_sec = (time_t)(r->start_ms / 1000);
		ret = blob_list_add(out, &e);
	}
out:
	free(names);
	ml_runs_free(a.runs, a.n);
	return ret;
}

/* ---- routing keys ---- */

enum route_kind { R_TOP, R_EXPS, R_EXP, R_ART, R_REG, R_NONE };

struct route {
	enum route_kind kind;
	char dir[NAME_MAX + 1];		/* R_EXP */
	struct ml_loc loc;		/* R_ART */
	const char *rel;		/* R_ART: below loc, a pointer into the key */
	char tag[96];			/* R_ART: what a proxied file's etag names */
	struct timespec mtime;		/* R_ART: a proxied file's mtime */
};

static int seg(const char **p, char *out, size_t size)
{
	size_t n = strcspn(*p, "/");

	if (n == 0 || n >= size || (*p)[n] != '/')
		return -ENOENT;
	memcpy(out, *p, n);
	out[n] = '\0';
	*p += n + 1;
	return 0;
}

static void ms_to_ts(int64_t ms, struct timespec *ts)
{
	ts->tv_sec = (time_t)(ms / 1000);
	ts->tv_nsec = (long)(ms % 1000) * 1000000L;
}

/* Where key leads. R_ART routes hold loc (ml_loc_release). */
static int route(struct blob_mlflow *s, const char *key, struct route *r)
{
	char a[NAME_MAX + 1], b[NAME_MAX + 1];
	const char *p = key;
	int ret;

	memset(r, 0, sizeof(*r));
	if (!*key)
		return r->kind = R_TOP, 0;
	if (strncmp(key, "registry/", 9) == 0)
		return r->kind = R_REG, 0;
	if (strcmp(key, "runs/") == 0)
		return r->kind = R_EXPS, 0;
	if (strncmp(key, "runs/", 5) == 0) {
		p += 5;
		if (seg(&p, r->dir, sizeof(r->dir)) < 0)
			return -ENOENT;
		if (!*p)
			return r->kind = R_EXP, 0;
		if (seg(&p, a, sizeof(a)) < 0)
			return -ENOENT;
		char exp[ML_ID_MAX];
		struct ml_run run;
		ret = exp_id_of(s, r->dir, exp);
		if (ret == 0)
			ret = ml_run_get(s, a, &run);
		if (ret < 0)
			return ret;
		if (strcmp(run.exp_id, exp) != 0) {
			ml_run_release(&run);
			return -ENOENT;
		}
		ret = ml_loc_parse(run.artifact_uri, &r->loc);
		if (ret == -EINVAL)
			ret = ml_warn_other(s, run.artifact_uri);
		snprintf(r->tag, sizeof(r->tag), "r%" PRId64, run.end_ms);
		ms_to_ts(run.end_ms ? run.end_ms : run.start_ms, &r->mtime);
		ml_run_release(&run);
		r->rel = p;
		r->kind = R_ART;
		return ret;
	}
	if (strncmp(key, "versions/", 9) == 0) {
		p += 9;
		if (seg(&p, a, sizeof(a)) < 0 || seg(&p, b, sizeof(b)) < 0)
			return -ENOENT;
		char *end;
		long v = strtol(b, &end, 10);
		if (*end || v <= 0 || v > 1000000000)
			return -ENOENT;
		ret = ml_version_loc(s, a, (int)v, &r->loc);
		if (ret < 0)
			return ret;
		snprintf(r->tag, sizeof(r->tag), "v%ld", v);
		r->rel = p;
		r->kind = R_ART;
		return 0;
	}
	return r->kind = R_NONE, 0;
}

/* ---- the operations ---- */

static int ml_list(struct blob_store *bs, const char *prefix, struct blob_list *out)
{
	struct blob_mlflow *s = ml_of(bs);
	struct route r;
	int ret = route(s, prefix, &r);

	if (ret < 0)
		return ret;
	switch (r.kind) {
	case R_TOP: {
		struct blob_entry runs = { .name = "runs", .is_dir = 1 };
		struct blob_entry reg = { .name = "registry", .is_dir = 1 };
		ret = blob_list_add(out, &runs);
		return ret ? ret : blob_list_add(out, &reg);
	}
	case R_EXPS:
		return list_exps(s, out);
	case R_EXP:
		return list_runs(s, r.dir, out);
	case R_REG:
		return ml_reg_list(s, prefix, out);
	case R_ART:
		if (*r.rel && r.rel[strlen(r.rel) - 1] != '/')
			ret = -ENOENT;
		else
			ret = ml_loc_list(s, &r.loc, r.rel, r.tag, r.mtime, out);
		ml_loc_release(&r.loc);
		return ret;
	default:
		return -ENOENT;
	}
}

/* The entry of key's last segment in its folder's listing. */
static int stat_listed(struct blob_mlflow *s, const char *key, struct blob_stat *out)
{
	const char *slash = strrchr(key, '/');
	char *folder = slash ? strndup(key, (size_t)(slash - key + 1)) : strdup("");
	struct blob_list l;
	int ret;

	if (!folder)
		return -ENOMEM;
	blob_list_init(&l);
	ret = ml_list(&s->base, folder, &l);
	free(folder);
	if (ret == 0) {
		ret = -ENOENT;
		for (size_t i = 0; i < l.count; i++)
			if (!l.entries[i].is_dir && strcmp(l.entries[i].name, slash ? slash + 1 : key) == 0) {
				out->size = l.entries[i].size;
				out->mtime = l.entries[i].mtime;
				memcpy(out->etag, l.entries[i].etag, sizeof(out->etag));
				ret = 0;
			}
	}
	blob_list_release(&l);
	return ret;
}

/* A made text (a record) from the memo, else made now and kept there. */
static int text_of(struct blob_mlflow *s, const char *key, char **text)
{
	time_t now = time(NULL);
	pthread_mutex_lock(&s->lock);
	for (unsigned i = 0; i < ML_MEMO_MAX; i++)
		if (s->memo[i].key && strcmp(s->memo[i].key, key) == 0 &&
		    now - s->memo[i].made <= ML_MEMO_S) {
			*text = strdup(s->memo[i].text);
			pthread_mutex_unlock(&s->lock);
			return *text ? 0 : -ENOMEM;
		}
	pthread_mutex_unlock(&s->lock);
	int ret = ml_reg_text(s, key, text);
	if (ret < 0)
		return ret;
	char *k = strdup(key), *t = strdup(*text);
	pthread_mutex_lock(&s->lock);
	unsigned i = s->memo_next++ % ML_MEMO_MAX;
	free(s->memo[i].key);
	free(s->memo[i].text);
	s->memo[i].key = k && t ? k : NULL;
	s->memo[i].text = k && t ? t : NULL;
	s->memo[i].made = now;
	pthread_mutex_unlock(&s->lock);
	if (!k || !t) {
		free(k);
		free(t);
	}
	return 0;
}

/* Takes key's made text out of the memo (it was read). */
static void memo_drop(struct blob_mlflow *s, const char *key)
{
	pthread_mutex_lock(&s->lock);
	for (unsigned i = 0; i < ML_MEMO_MAX; i++)
		if (s->memo[i].key && strcmp(s->memo[i].key, key) == 0) {
			free(s->memo[i].key);
			free(s->memo[i].text);
			s->memo[i].key = s->memo[i].text = NULL;
		}
	pthread_mutex_unlock(&s->lock);
}

void ml_text_etag(const char *text, char etag[BLOB_ETAG_MAX])
{
	size_t n = strlen(text);
	snprintf(etag, BLOB_ETAG_MAX, "\"t-%016" PRIx64 "-%zu\"", blob_fnv(text, n, BLOB_FNV_INIT),
		 n);
}

static int ml_stat(struct blob_store *bs, const char *key, struct blob_stat *out)
{
	struct blob_mlflow *s = ml_of(bs);
	struct route r;
	int ret = route(s, key, &r);

	memset(out, 0, sizeof(*out));
	if (ret < 0)
		return ret;
	if (r.kind == R_REG) {
		char *text = NULL;
		ret = text_of(s, key, &text);
		if (ret == 0) {
			out->size = strlen(text);
			ml_text_etag(text, out->etag);
		}
		free(text);
		return ret;
	}
	if (r.kind != R_ART)
		return -ENOENT;
	if (r.loc.kind == ML_LOC_DIRECT) {
		struct blob_store *st;
		char *full = NULL;
		ret = ml_sub_store(s, r.loc.root, &st);
		if (ret == 0 && asprintf(&full, "%s%s", r.loc.prefix, r.rel) < 0)
			ret = -ENOMEM;
		if (ret == 0)
			ret = blob_stat(st, full, out);
		free(full);
	} else {
		ret = stat_listed(s, key, out);
	}
	ml_loc_release(&r.loc);
	return ret;
}

static ssize_t ml_read_to(struct blob_store *bs, const char *key, const char *etag,
			  uint64_t off, size_t len, blob_sink_fn sink, void *ctx)
{
	struct blob_mlflow *s = ml_of(bs);
	struct route r;
	ssize_t ret = route(s, key, &r);

	if (ret < 0)
		return ret;
	if (r.kind == R_REG) {
		char *text = NULL;
		char now[BLOB_ETAG_MAX];
		ret = text_of(s, key, &text);
		if (ret < 0)
			return ret;
		ml_text_etag(text, now);
		size_t tl = strlen(text);
		if (etag && *etag && strcmp(etag, now) != 0)
			ret = -ESTALE;
		else if (off >= tl)
			ret = 0;
		else {
			size_t n = tl - off < len ? tl - off : len;
			ret = sink(ctx, text + off, n);
			ret = ret < 0 ? ret : (ssize_t)n;
			if (off + n == tl)
				memo_drop(s, key);
		}
		free(text);
		return ret;
	}
	if (r.kind != R_ART)
		return -ENOENT;
	char *full = NULL;
	if (asprintf(&full, "%s%s", r.loc.prefix, r.rel) < 0) {
		ml_loc_release(&r.loc);
		return -ENOMEM;
	}
	if (r.loc.kind == ML_LOC_DIRECT) {
		struct blob_store *st;
		ret = ml_sub_store(s, r.loc.root, &st);
		if (ret == 0)
			ret = blob_read_to(st, full, etag, off, len, sink, ctx);
	} else if (r.loc.kind == ML_LOC_PROXIED) {
		ret = ml_proxied_read(s, key, full, etag, off, len, sink, ctx);
	} else {
		ret = ml_warn_other(s, r.loc.root ? r.loc.root : key);
	}
	free(full);
	ml_loc_release(&r.loc);
	return ret;
}

static unsigned ml_read_flags(struct blob_store *bs, const char *key, const char *etag)
{
	struct blob_mlflow *s = ml_of(bs);
	struct route r;
	unsigned flags = 0;

	if (ml_proxied_size(etag) >= 0)
		return BLOB_PINNED_READS | BLOB_WHOLE_READS;
	/* from what is known only: an open never waits on the server for this; not
	 * known, the reads are taken as not pinned (correct for every store) */
	known_only = 1;
	int ret = route(s, key, &r);
	known_only = 0;
	if (ret < 0)
		return 0;
	if (r.kind == R_ART && r.loc.kind == ML_LOC_DIRECT) {
		struct blob_store *st;
		char *full = NULL;
		if (ml_sub_store(s, r.loc.root, &st) == 0 &&
		    asprintf(&full, "%s%s", r.loc.prefix, r.rel) >= 0) {
			flags = blob_read_flags(st, full, etag);
			free(full);
		}
	} else if (r.kind == R_ART && r.loc.kind == ML_LOC_PROXIED) {
		flags = BLOB_PINNED_READS | BLOB_WHOLE_READS;
	}
	ml_loc_release(&r.loc);
	return flags;
}

static int ml_check(struct blob_store *bs, unsigned deadline_s, char *err, size_t errlen)
{
	struct blob_mlflow *s = ml_of(bs);
	char *text = NULL, why[200] = "";
	size_t len;
	int ret = call(s, "GET", "/api/2.0/mlflow/experiments/search?max_results=1", NULL,
		       &text, &len, why, sizeof(why), deadline_s * 1000u);

	free(text);
	if (ret == -EACCES)
		snprintf(err, errlen, "MLflow server %s refused access (credentials: %s)",
			 s->base.id, s->auth_source);
	else if (ret == -ENOENT || ret == -EINVAL)
		snprintf(err, errlen, "%s does not answer as an MLflow tracking server",
			 s->base.id);
	else if (ret < 0)
		snprintf(err, errlen, "MLflow server %s is unreachable: %s", s->base.id,
			 *why ? why : strerror(-ret));
	return ret == -ENOENT || ret == -EINVAL ? -EIO : ret;
}

static int ml_down(struct blob_store *bs)
{
	return http_down(ml_of(bs)->http);
}

static void ml_stop(struct blob_store *bs)
{
	struct blob_mlflow *s = ml_of(bs);

	http_stop(s->http);
	pthread_mutex_lock(&s->lock);
	s->subs_stopped = 1;
	for (size_t i = 0; i < s->nsubs; i++)
		blob_stop(s->subs[i].store);
	pthread_mutex_unlock(&s->lock);
}

/* The server's requests, and those to the stores its artifacts are in. */
static void ml_stats(struct blob_store *bs, struct blob_stats *out)
{
	struct blob_mlflow *s = ml_of(bs);

	http_add_stats(s->http, out);
	pthread_mutex_lock(&s->lock);
	for (size_t i = 0; i < s->nsubs; i++)
		if (s->subs[i].store->ops->stats)
			s->subs[i].store->ops->stats(s->subs[i].store, out);
	pthread_mutex_unlock(&s->lock);
}

static void ml_destroy(struct blob_store *bs)
{
	struct blob_mlflow *s = ml_of(bs);

	http_destroy(s->http);
	for (size_t i = 0; i < s->nsubs; i++) {
		blob_destroy(s->subs[i].store);
		free(s->subs[i].root);
	}
	free(s->subs);
	ml_exps_free(s->exps, s->nexps);
	ml_map_free(s->runs);
	ml_map_free(s->where);
	for (unsigned i = 0; i < ML_MEMO_MAX; i++) {
		free(s->memo[i].key);
		free(s->memo[i].text);
	}
	if (s->auth) {
		OPENSSL_cleanse(s->auth, strlen(s->auth));
		free(s->auth);
	}
	free(s->ca_file);
	free(s->api);
	free(s->base.id);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

static const struct blob_ops ml_ops = {
	.name = "mlflow",
	.flags = 0,
	.destroy = ml_destroy,
	.list = ml_list,
	.stat = ml_stat,
	.read_to = ml_read_to,
	.read_flags = ml_read_flags,
	.check = ml_check,
	.down = ml_down,
	.stop = ml_stop,
	.stats = ml_stats,
};

int blob_is_mlflow(const struct blob_store *s)
{
	return s->ops == &ml_ops;
}

/* The Authorization header from the environment, and where it came from. */
static int ml_auth(struct blob_mlflow *s)
{
	const char *user = getenv("MLFLOW_TRACKING_USERNAME");
	const char *pass = getenv("MLFLOW_TRACKING_PASSWORD");
	const char *token = getenv("MLFLOW_TRACKING_TOKEN");

	s->auth_source = "none";
	if (user && *user && pass) {
		size_t ul = strlen(user), pl = strlen(pass);
		unsigned char *raw = malloc(ul + pl + 2);
		char *b64 = malloc(4 * ((ul + pl + 1 + 2) / 3) + 1);
		if (!raw || !b64) {
			free(raw);
			free(b64);
			return -ENOMEM;
		}
		memcpy(raw, user, ul);
		raw[ul] = ':';
		memcpy(raw + ul + 1, pass, pl);
		EVP_EncodeBlock((unsigned char *)b64, raw, (int)(ul + pl + 1));
		OPENSSL_cleanse(raw, ul + pl + 1);
		free(raw);
		int ok = asprintf(&s->auth, "Authorization: Basic %s", b64) >= 0;
		OPENSSL_cleanse(b64, strlen(b64));
		free(b64);
		if (!ok)
			return s->auth = NULL, -ENOMEM;
		s->auth_source = "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD";
	} else if (token && *token) {
		if (asprintf(&s->auth, "Authorization: Bearer %s", token) < 0)
			return s->auth = NULL, -ENOMEM;
		s->auth_source = "MLFLOW_TRACKING_TOKEN";
	}
	return 0;
}

int blob_mlflow_open(const char *url, const struct blob_options *opt, struct blob_store **out,
		     char *err, size_t errlen)
{
	struct blob_mlflow *s = calloc(1, sizeof(*s));
	const char *rest = url + 7; /* "mlflow+" */
	int ret = -ENOMEM;

	if (!s) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	pthread_mutex_init(&s->lock, NULL);
	s->base.ops = &ml_ops;
	s->opt = *opt;
	const char *host = strstr(rest, "://");
	size_t hlen = host ? strcspn(host + 3, "/?#") : 0;
	if (strpbrk(url, "?#@") || !host || hlen == 0 ||
	    (strncmp(rest, "http://", 7) != 0 && strncmp(rest, "https://", 8) != 0)) {
		/* never echo a query or user info: they may hold a secret */
		char shown[256];
		blob_url_shown(url, shown, sizeof(shown));
		snprintf(err, errlen, "bad store URL '%s' (expected mlflow+http(s)://HOST[:PORT]"
			 "[/PATH]; credentials go in MLFLOW_TRACKING_* variables)", shown);
		ret = -EINVAL;
		goto fail;
	}
	s->api = strdup(rest);
	if (!s->api)
		goto nomem;
	while (strlen(s->api) > (size_t)(host - rest) + 3 + hlen && s->api[strlen(s->api) - 1] == '/')
		s->api[strlen(s->api) - 1] = '\0';
	s->runs = ml_map_new();
	s->where = ml_map_new();
	if (!s->runs || !s->where || ml_auth(s) < 0)
		goto nomem;
	const char *ins = getenv("MLFLOW_TRACKING_INSECURE_TLS");
	int insecure = opt->insecure ||
		       (ins && (strcasecmp(ins, "true") == 0 || strcmp(ins, "1") == 0));
	const char *ca_source;
	const char *ca = blob_ca_file(opt, "MLFLOW_TRACKING_SERVER_CERT_PATH", &ca_source);
	if (ca && !(s->ca_file = strdup(ca)))
		goto nomem;
	struct http_config hc = { 0 };
	hc.deadline_ms = (opt->timeout_s ? opt->timeout_s : 60) * 1000u;
	hc.connect_timeout_ms = 10000;
	hc.stall_ms = 15000;
	hc.insecure = insecure;
	if (insecure)
		LOG_WARN("TLS certificates of %s are not verified (%s)", s->api,
			 opt->insecure ? "--insecure" : "MLFLOW_TRACKING_INSECURE_TLS");
	hc.ca_file = s->ca_file;
	hc.ca_source = ca_source;
	if (http_create(&hc, &s->http) < 0)
		goto nomem;
	if (asprintf(&s->base.id, "mlflow+%s", s->api) < 0) {
		s->base.id = NULL;
		goto nomem;
	}
	*out = &s->base;
	return 0;
nomem:
	snprintf(err, errlen, "out of memory");
fail:
	ml_destroy(&s->base);
	return ret;
}
