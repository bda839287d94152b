/*
 * mlflow_reg.c: an MLflow server's model registry in the store's registry layout,
 * and registering into it.
 *
 *   registry/                     one folder per registered model
 *   registry/<name>/<v>.json      a record per READY version: its artifacts listed
 *                                 once (sizes and etags: the record is immutable, so
 *                                 the cache keeps it for good), source
 *                                 versions/<name>/<v>/
 *   registry/<name>/aliases.json  {"champion": 3, "Production": 2}: the model's
 *                                 aliases, and its legacy stages Production and
 *                                 Staging (the highest version in each) unless an
 *                                 alias has the name
 */
#include "mlflow_store.h"
#include "log.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ML_PAGE 1000
#define ML_FILES_MAX 100000
#define ML_DEPTH_MAX 64
#define ML_READY_WAIT_MS 60000

/* "name=value" query parts, escaped; heap. */
static char *query2(const char *path, const char *k1, const char *v1, const char *k2,
		    const char *v2)
{
	char *e1 = http_escape(v1, 0), *e2 = v2 ? http_escape(v2, 0) : NULL, *out = NULL;

	if (e1 && (!v2 || e2) &&
	    asprintf(&out, "%s?%s=%s%s%s%s%s", path, k1, e1, v2 ? "&" : "", v2 ? k2 : "",
		     v2 ? "=" : "", v2 ? e2 : "") < 0)
		out = NULL;
	free(e1);
	free(e2);
	return out;
}

/* GET path?k1=v1[&k2=v2]: ml_call's answer, an INVALID_PARAMETER_VALUE (MLflow's
 * answer for a name or version it does not have) as -ENOENT. */
static int get2(struct blob_mlflow *s, const char *path, const char *k1, const char *v1,
		const char *k2, const char *v2, char **body, size_t *len)
{
	char *pq = query2(path, k1, v1, k2, v2);
	int ret;

	*body = NULL;
	if (!pq)
		return -ENOMEM;
	ret = ml_call(s, "GET", pq, NULL, body, len);
	free(pq);
	if (ret == -EINVAL) {
		free(*body);
		*body = NULL;
		ret = -ENOENT;
	}
	return ret;
}

/* ---- models ---- */

struct names_acc {
	char **names;
	size_t n;
};

static int models_page(void *ctx, const char *json, size_t len, char **next)
{
	struct names_acc *a = ctx;
	int ret = ml_parse_models(json, len, &a->names, &a->n, next);

	return ret == -EBADMSG ? -EIO : ret;
}

struct versions_acc {
	struct ml_version *v;
	size_t n;
};

static int versions_page(void *ctx, const char *json, size_t len, char **next)
{
	struct versions_acc *a = ctx;
	int ret = ml_parse_versions(json, len, &a->v, &a->n, next);

	return ret == -EBADMSG ? -EIO : ret;
}

/* Every version of model name. */
static int versions_of(struct blob_mlflow *s, const char *name, struct versions_acc *a)
{
	char *filter = NULL, *pq = NULL;
	int ret;

	memset(a, 0, sizeof(*a));
	/* the filter's quotes: ' unless the name holds one (MLflow takes " too); a name
	 * with both cannot be asked for */
	int dq = strchr(name, '\'') != NULL;
	if (dq && strchr(name, '"'))
		return -ENOENT;
	if (asprintf(&filter, dq ? "name=\"%s\"" : "name='%s'", name) < 0)
		return -ENOMEM;
	char *e = http_escape(filter, 0);
	if (!e || asprintf(&pq, "/api/2.0/mlflow/model-versions/search?filter=%s&max_results=%d",
			   e, ML_PAGE) < 0)
		pq = NULL;
	free(e);
	free(filter);
	if (!pq)
		return -ENOMEM;
	ret = ml_pages(s, "GET", pq, NULL, versions_page, a);
	free(pq);
	if (ret < 0) {
		ml_versions_free(a->v, a->n);
		memset(a, 0, sizeof(*a));
	}
	return ret;
}

/* The aliases table of name: its aliases, then the stages no alias is named as. */
static int aliases_text(struct blob_mlflow *s, const char *name, const struct versions_acc *va,
			char **text)
{
	struct ml_alias *al = NULL;
	size_t nal = 0;
	char *body = NULL;
	size_t len;
	int ret = get2(s, "/api/2.0/mlflow/registered-models/get", "name", name, NULL, NULL,
		       &body, &len);

	if (ret == 0)
		ret = ml_parse_aliases(body, len, &al, &nal) == -EBADMSG ? -EIO : 0;
	free(body);
	if (ret < 0) {
		free(al);
		return ret;
	}
	cJSON *o = cJSON_CreateObject();
	for (size_t i = 0; o && i < nal; i++)
		if (!cJSON_GetObjectItemCaseSensitive(o, al[i].name))
			cJSON_AddNumberToObject(o, al[i].name, al[i].version);
	static const char *const stages[] = { "Production", "Staging" };
	for (size_t k = 0; o && k < 2; k++) {
		int best = 0;
		for (size_t i = 0; i < va->n; i++)
			if (strcmp(va->v[i].stage, stages[k]) == 0 &&
			    strcmp(va->v[i].status, "READY") == 0 && va->v[i].version > best)
				best = va->v[i].version;
		if (best && !cJSON_GetObjectItemCaseSensitive(o, stages[k]))
			cJSON_AddNumberToObject(o, stages[k], best);
	}
	*text = o ? cJSON_PrintUnformatted(o) : NULL;
	cJSON_Delete(o);
	free(al);
	return *text ? 0 : -ENOMEM;
}

int ml_reg_list(struct blob_mlflow *s, const char *key, struct blob_list *out)
{
	const char *name = key + strlen("registry/");
	int ret;

	if (!*name) {
		struct names_acc a = { 0 };
		char pq[96];
		snprintf(pq, sizeof(pq), "/api/2.0/mlflow/registered-models/search?max_results=%d",
			 ML_PAGE);
		ret = ml_pages(s, "GET", pq, NULL, models_page, &a);
		for (size_t i = 0; ret == 0 && i < a.n; i++) {
			struct blob_entry e = { .name = a.names[i], .is_dir = 1 };
			if (blob_name_ok(a.names[i], strlen(a.names[i])))
				ret = blob_list_add(out, &e);
		}
		ml_names_free(a.names, a.n);
		return ret;
	}
	size_t nlen = strlen(name);
	if (nlen < 2 || name[nlen - 1] != '/' || memchr(name, '/', nlen - 1))
		return -ENOENT;
	char *model = strndup(name, nlen - 1), *text = NULL;
	struct versions_acc va;
	if (!model)
		return -ENOMEM;
	ret = versions_of(s, model, &va);
	if (ret == 0)
		ret = aliases_text(s, model, &va, &text);
	for (size_t i = 0; ret == 0 && i < va.n; i++) {
		/* a version still registering, or failed, is not shown */
		if (strcmp(va.v[i].status, "READY") != 0)
			continue;
		char fname[32];
		snprintf(fname, sizeof(fname), "%d.json", va.v[i].version);
		struct blob_entry e = { .name = fname };
		e.mtime.tv_sec = (time_t)(va.v[i].created_ms / 1000);
		snprintf(e.etag, sizeof(e.etag), "\"mv-%d\"", va.v[i].version);
		ret = blob_list_add(out, &e);
	}
	if (ret == 0) {
		struct blob_entry e = { .name = "aliases.json", .size = strlen(text) };
		ml_text_etag(text, e.etag);
		ret = blob_list_add(out, &e);
	}
	free(text);
	ml_versions_free(va.v, va.n);
	free(model);
	return ret;
}

/* ---- version records ---- */

int ml_version_loc(struct blob_mlflow *s, const char *name, int version, struct ml_loc *out)
{
	char mk[NAME_MAX + 32], vs[16], *uri;
	int ret;

	snprintf(mk, sizeof(mk), "%s\t%d", name, version);
	snprintf(vs, sizeof(vs), "%d", version);
	pthread_mutex_lock(&s->lock);
	uri = ml_map_get(s->where, mk);
	pthread_mutex_unlock(&s->lock);
	if (!uri) {
		char *body = NULL;
		size_t len;
		ret = get2(s, "/api/2.0/mlflow/model-versions/get-download-uri", "name", name,
			   "version", vs, &body, &len);
		if (ret == 0)
			ret = ml_parse_download_uri(body, len, &uri) == -EBADMSG ? -EIO : 0;
		free(body);
		if (ret < 0)
			return ret;
		if (!uri)
			return -ENOMEM;
		pthread_mutex_lock(&s->lock);
		ml_map_put(s->where, mk, uri); /* a version's place never changes */
		pthread_mutex_unlock(&s->lock);
	}
	ret = ml_loc_parse(uri, out);
	if (ret == 0 && out->kind == ML_LOC_RUN) {
		/* runs:/ID/PATH: PATH in the run's artifacts */
		struct ml_run run;
		struct ml_loc rl;
		ret = ml_run_get(s, out->run_id, &run);
		if (ret == 0) {
			ret = ml_loc_parse(run.artifact_uri, &rl);
			ml_run_release(&run);
		}
		if (ret == 0) {
			char *p = NULL;
			if (asprintf(&p, "%s%s", rl.prefix, out->prefix) < 0) {
				ml_loc_release(&rl);
				ret = -ENOMEM;
			} else {
				ml_loc_release(out);
				*out = rl;
				free(out->prefix);
				out->prefix = p;
			}
		} else {
			ml_loc_release(out);
		}
	} else if (ret == -EINVAL) {
		char shown[256];
		blob_url_shown(uri, shown, sizeof(shown));
		LOG_ERROR("model %s version %d: its artifacts are at '%s', which is not an "
			  "artifact location", name, version, shown);
		ret = -EIO;
	}
	free(uri);
	return ret;
}

struct walk {
	struct blob_mlflow *s;
	const struct ml_loc *loc;
	char tag[32];
	struct timespec mtime;
	cJSON *files;
	size_t n;
};

/* Adds every file below rel ("" or ending in '/') to w->files. */
static int walk(struct walk *w, const char *rel, int depth)
{
	struct blob_list l;
	int ret;

	if (depth > ML_DEPTH_MAX)
		return 0;
	blob_list_init(&l);
	ret = ml_loc_list(w->s, w->loc, rel, w->tag, w->mtime, &l);
	if (ret == -ENOENT && !rel[0])
		ret = 0;
	blob_list_clean(&l, rel);
	for (size_t i = 0; ret == 0 && i < l.count; i++) {
		const struct blob_entry *e = &l.entries[i];
		char *path = NULL;
		if (asprintf(&path, "%s%s%s", rel, e->name, e->is_dir ? "/" : "") < 0) {
			ret = -ENOMEM;
			break;
		}
		if (e->is_dir == 1) {
			ret = walk(w, path, depth + 1);
		} else if (!e->is_dir && w->n < ML_FILES_MAX && e->etag[0]) {
			cJSON *f = cJSON_CreateObject();
			cJSON_AddStringToObject(f, "path", path);
			cJSON_AddNumberToObject(f, "size", (double)e->size);
			cJSON_AddStringToObject(f, "etag", e->etag);
			cJSON_AddItemToArray(w->files, f);
			w->n++;
		}
		free(path);
	}
	blob_list_release(&l);
	return ret;
}

static int record_text(struct blob_mlflow *s, const char *name, int version, char **text)
{
	char vs[16], created[32];
	char *body = NULL;
	size_t len;
	int ret;

	snprintf(vs, sizeof(vs), "%d", version);
	ret = get2(s, "/api/2.0/mlflow/model-versions/get", "name", name, "version", vs, &body,
		   &len);
	if (ret < 0) {
		free(body);
		return ret;
	}
	/* {"model_version": {...}}: the search's shape, one version */
	struct ml_version *mv = NULL;
	size_t n = 0;
	char *next = NULL;
	cJSON *root = cJSON_ParseWithLength(body, len), *arr = cJSON_CreateArray();
	cJSON *one = cJSON_DetachItemFromObjectCaseSensitive(root, "model_version");
	free(body);
	cJSON_Delete(root);
	if (one)
		cJSON_AddItemToArray(arr, one);
	cJSON *wrap = cJSON_CreateObject();
	cJSON_AddItemToObject(wrap, "model_versions", arr);
	char *w = cJSON_PrintUnformatted(wrap);
	cJSON_Delete(wrap);
	ret = w ? ml_parse_versions(w, strlen(w), &mv, &n, &next) : -ENOMEM;
	free(w);
	free(next);
	if (ret == 0 && (n != 1 || mv[0].version != version))
		ret = -EIO;
	if (ret == 0 && strcmp(mv[0].status, "READY") != 0)
		ret = -ENOENT;
	int64_t created_ms = ret == 0 ? mv[0].created_ms : 0;
	ml_versions_free(mv, n);
	if (ret < 0)
		return ret == -EBADMSG ? -EIO : ret;

	struct ml_loc loc;
	ret = ml_version_loc(s, name, version, &loc);
	if (ret < 0)
		return ret;
	if (loc.kind == ML_LOC_OTHER || loc.kind == ML_LOC_RUN) {
		/* for good: this version is left out, the others are shown */
		char shown[256];
		blob_url_shown(loc.root ? loc.root : "?", shown, sizeof(shown));
		LOG_WARN("model %s version %d: its artifacts are at '%s', in a store this "
			 "mount cannot read (it reads file, wasbs, https Azure, s3 and "
			 "mlflow-artifacts locations); not shown", name, version, shown);
		ml_loc_release(&loc);
		return -EBADMSG;
	}
	struct walk wk = { .s = s, .loc = &loc, .files = cJSON_CreateArray() };
	snprintf(wk.tag, sizeof(wk.tag), "v%d", version);
	wk.mtime.tv_sec = (time_t)(created_ms / 1000);
	wk.mtime.tv_nsec = (long)(created_ms % 1000) * 1000000L;
	ret = wk.files ? walk(&wk, "", 0) : -ENOMEM;
	ml_loc_release(&loc);
	if (ret < 0) {
		cJSON_Delete(wk.files);
		return ret;
	}
	time_t secs = (time_t)(created_ms / 1000);
	struct tm tm;
	gmtime_r(&secs, &tm);
	strftime(created, sizeof(created), "%Y-%m-%dT%H:%M:%SZ", &tm);
	char source[NAME_MAX + 64];
	snprintf(source, sizeof(source), "versions/%s/%d/", name, version);
	cJSON *rec = cJSON_CreateObject();
	cJSON_AddStringToObject(rec, "name", name);
	cJSON_AddNumberToObject(rec, "version", version);
	cJSON_AddStringToObject(rec, "source", source);
	cJSON_AddStringToObject(rec, "created", created);
	cJSON_AddItemToObject(rec, "files", wk.files);
	*text = cJSON_PrintUnformatted(rec);
	cJSON_Delete(rec);
	return *text ? 0 : -ENOMEM;
}

int ml_reg_text(struct blob_mlflow *s, const char *key, char **text)
{
	const char *p = key + strlen("registry/"), *slash = strchr(p, '/');
	char name[NAME_MAX + 1], *end;

	*text = NULL;
	if (!slash || (size_t)(slash - p) >= sizeof(name) || slash == p || strchr(slash + 1, '/'))
		return -ENOENT;
	memcpy(name, p, (size_t)(slash - p));
	name[slash - p] = '\0';
	if (strcmp(slash + 1, "aliases.json") == 0) {
		struct versions_acc va;
		int ret = versions_of(s, name, &va);
		if (ret == 0)
			ret = aliases_text(s, name, &va, text);
		ml_versions_free(va.v, va.n);
		return ret;
	}
	long v = strtol(slash + 1, &end, 10);
	if (slash[1] < '1' || slash[1] > '9' || strcmp(end, ".json") != 0 || v <= 0 ||
	    v > 1000000000)
		return -ENOENT;
	return record_text(s, name, (int)v, text);
}

/* ---- registering ---- */

/* Waits until a new version is READY (a server may register it asynchronously). */
static int wait_ready(struct blob_mlflow *s, const char *name, int version, char *err,
		      size_t errlen)
{
	char vs[16];
	struct timespec t0, now;

	snprintf(vs, sizeof(vs), "%d", version);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		char *body = NULL;
		size_t len;
		int ret = get2(s, "/api/2.0/mlflow/model-versions/get", "name", name, "version",
			       vs, &body, &len);
		cJSON *root = ret == 0 ? cJSON_ParseWithLength(body, len) : NULL;
		free(body);
		const cJSON *mv = cJSON_GetObjectItemCaseSensitive(root, "model_version");
		const cJSON *st = cJSON_GetObjectItemCaseSensitive(mv, "status");
		const char *status = cJSON_IsString(st) ? st->valuestring : "";
		int ready = strcmp(status, "READY") == 0, failed = strcmp(status, "FAILED_REGISTRATION") == 0;
		cJSON_Delete(root);
		if (ret < 0) {
			snprintf(err, errlen, "cannot read back version %d of model %s: %s", version,
				 name, strerror(-ret));
			return ret;
		}
		if (ready)
			return 0;
		if (failed) {
			snprintf(err, errlen, "the MLflow server failed to register version %d of "
				 "model %s", version, name);
			return -EIO;
		}
		clock_gettime(CLOCK_MONOTONIC, &now);
		if ((now.tv_sec - t0.tv_sec) * 1000 > ML_READY_WAIT_MS) {
			snprintf(err, errlen, "version %d of model %s is not READY after %d s",
				 version, name, ML_READY_WAIT_MS / 1000);
			return -EIO;
		}
		struct timespec d = { 0, 200 * 1000000L };
		nanosleep(&d, NULL);
	}
}

int blob_mlflow_register(struct blob_store *bs, const char *name, const char *source,
			 const char *description, const char **tags, size_t ntags,
			 int *version, char *err, size_t errlen)
{
	struct blob_mlflow *s = ml_of(bs);
	char exp[NAME_MAX + 1], run_id[ML_ID_MAX], *body = NULL, *text = NULL;
	const char *p = source;
	size_t len;
	int ret;

	/* SOURCE: runs/<experiment>/<run id>/<path> */
	if (strncmp(p, "runs/", 5) == 0)
		p += 5;
	size_t el = strcspn(p, "/"), rl = el < strlen(p) ? strcspn(p + el + 1, "/") : 0;
	if (el == 0 || el >= sizeof(exp) || rl == 0 || rl >= sizeof(run_id)) {
		snprintf(err, errlen, "source '%.200s' is not runs/<experiment>/<run id>[/<path>]",
			 source);
		return -EINVAL;
	}
	memcpy(exp, p, el);
	exp[el] = '\0';
	memcpy(run_id, p + el + 1, rl);
	run_id[rl] = '\0';
	const char *path = p + el + 1 + rl;
	while (*path == '/')
		path++;
	char *key = NULL;
	if (asprintf(&key, "runs/%s/%s/%s", exp, run_id, path) < 0)
		return -ENOMEM;
	/* the source must be a folder that holds files: MLflow (and this mount) take a
	 * version's source as a folder, so one file would make an empty version */
	struct blob_list l;
	blob_list_init(&l);
	size_t kl = strlen(key);
	while (kl > 0 && key[kl - 1] == '/')
		key[--kl] = '\0';
	char *folder = NULL;
	if (asprintf(&folder, "%s/", key) < 0)
		folder = NULL;
	ret = folder ? bs->ops->list(bs, folder, &l) : -ENOMEM;
	if (ret == 0 && l.count == 0)
		ret = -ENOENT;
	int file = 0;
	if (ret == -ENOENT) {
		struct blob_stat st;
		file = bs->ops->stat(bs, key, &st) == 0;
	}
	blob_list_release(&l);
	free(folder);
	free(key);
	if (ret < 0) {
		snprintf(err, errlen, "source '%.200s': %s", source,
			 file ? "a file; a version's source is the folder that holds it"
			 : ret == -ENOENT ? "no such run or no files there" : strerror(-ret));
		return ret == -ENOENT && file ? -EINVAL : ret;
	}
	struct ml_run run;
	ret = ml_run_get(s, run_id, &run);
	if (ret < 0) {
		snprintf(err, errlen, "run %s: %s", run_id, strerror(-ret));
		return ret;
	}
	char *src = NULL;
	size_t ul = strlen(run.artifact_uri);
	while (ul > 0 && run.artifact_uri[ul - 1] == '/')
		ul--;
	if (asprintf(&src, "%.*s%s%s", (int)ul, run.artifact_uri, *path ? "/" : "", path) < 0)
		src = NULL;
	ml_run_release(&run);
	if (!src)
		return -ENOMEM;
	size_t sl = strlen(src);
	while (sl > 0 && src[sl - 1] == '/')
		src[--sl] = '\0';

	cJSON *o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "name", name);
	body = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	char why[ML_WHY] = "", said[ML_WHY + 64];
	ret = body ? ml_call_quiet(s, "POST", "/api/2.0/mlflow/registered-models/create", body,
				   &text, &len, why) : -ENOMEM;
	free(body);
	free(text);
	text = NULL;
	if (ret < 0 && ret != -EEXIST) {
		snprintf(err, errlen, "cannot create registered model %s: %s", name,
			 ml_failure(s, ret, why, said, sizeof(said)));
		free(src);
		return ret;
	}
	o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "name", name);
	cJSON_AddStringToObject(o, "source", src);
	cJSON_AddStringToObject(o, "run_id", run_id);
	if (description && *description)
		cJSON_AddStringToObject(o, "description", description);
	if (ntags) {
		cJSON *ta = cJSON_AddArrayToObject(o, "tags");
		for (size_t i = 0; i < ntags; i++) {
			const char *eq = strchr(tags[i], '=');
			cJSON *t = cJSON_CreateObject();
			char *k = eq ? strndup(tags[i], (size_t)(eq - tags[i])) : strdup(tags[i]);
			cJSON_AddStringToObject(t, "key", k ? k : "");
			cJSON_AddStringToObject(t, "value", eq ? eq + 1 : "");
			free(k);
			cJSON_AddItemToArray(ta, t);
		}
	}
	body = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	free(src);
	ret = body ? ml_call_quiet(s, "POST", "/api/2.0/mlflow/model-versions/create", body,
				   &text, &len, why) : -ENOMEM;
	free(body);
	if (ret == 0 && ml_parse_created_version(text, len, version) < 0)
		ret = -EIO;
	free(text);
	if (ret < 0) {
		snprintf(err, errlen, "cannot create a version of model %s: %s", name,
			 ml_failure(s, ret, why, said, sizeof(said)));
		return ret;
	}
	return wait_ready(s, name, *version, err, errlen);
}

int blob_mlflow_alias(struct blob_store *bs, const char *name, const char *alias, int version,
		      char *err, size_t errlen)
{
	struct blob_mlflow *s = ml_of(bs);
	char vs[16], *body, *text = NULL;
	size_t len;
	int ret;

	snprintf(vs, sizeof(vs), "%d", version);
	cJSON *o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "name", name);
	cJSON_AddStringToObject(o, "alias", alias);
	if (version > 0)
		cJSON_AddStringToObject(o, "version", vs);
	body = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	if (!body)
		return -ENOMEM;
	char why[ML_WHY];
	ret = ml_call_quiet(s, version > 0 ? "POST" : "DELETE",
			    "/api/2.0/mlflow/registered-models/alias", body, &text, &len, why);
	free(body);
	if (ret == -EINVAL && text) {
		char code[64];
		ml_parse_error(text, len, code, sizeof(code));
		cJSON *r = cJSON_ParseWithLength(text, len);
		const cJSON *m = cJSON_GetObjectItemCaseSensitive(r, "message");
		snprintf(err, errlen, "the MLflow server refused: %.200s",
			 cJSON_IsString(m) ? m->valuestring : code);
		cJSON_Delete(r);
	} else if (ret < 0) {
		char said[ML_WHY + 64];
		snprintf(err, errlen, "%s of alias %s of model %s failed: %s",
			 version > 0 ? "setting" : "deleting", alias, name,
			 ret == -ENOENT ? "no such model, version or alias"
			 : ml_failure(s, ret, why, said, sizeof(said)));
	}
	free(text);
	return ret;
}
