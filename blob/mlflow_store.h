/*
 * mlflow_store.h: the MLflow backend's store, shared by mlflow.c (the server, its
 * runs and the artifacts) and mlflow_reg.c (its registry) (private to blob/).
 *
 * The backend shows a tracking server in the store layout that the tree reads:
 *
 *   runs/<experiment>/                     an experiment (its name, or its id when
 *                                          the name cannot be a file name)
 *   runs/<experiment>/<run id>/...         the run's artifacts
 *   runs/<experiment>/<run name>           a link to the run id (name unique there)
 *   registry/<name>/<version>.json         a record made from a READY model version:
 *                                          its files listed once, kept for good
 *   registry/<name>/aliases.json           its aliases, and the legacy stages
 *   versions/<name>/<version>/...          the version's artifacts (its records'
 *                                          source)
 *
 * Artifacts are read where they are: in a store the mount opens itself (file, Azure,
 * S3: ranged, pinned to the etag) or through the server's proxy (whole files only,
 * one streaming request per file, BLOB_WHOLE_READS).
 */
#ifndef BLOB_MLFLOW_STORE_H
#define BLOB_MLFLOW_STORE_H

#include "blob_private.h"
#include "http.h"
#include "mlflow.h"

#include <pthread.h>
#include <time.h>

struct ml_map;

struct ml_sub {
	char *root;			/* the URL it was opened at */
	struct blob_store *store;
};

/* Texts made for a stat are kept this many seconds for the read that follows it. */
#define ML_MEMO_MAX 32
#define ML_MEMO_S 5

struct blob_mlflow {
	struct blob_store base;
	struct http *http;
	struct blob_options opt;
	char *api;			/* "http(s)://host:port[/path]", no trailing '/' */
	char *auth;			/* the Authorization header line, or NULL: a secret */
	const char *auth_source;	/* which variables gave it ("none") */
	char *ca_file;
	pthread_mutex_t lock;		/* guards what follows */
	struct ml_exp *exps;		/* the last experiments listing */
	size_t nexps;
	struct ml_map *runs;		/* run id -> "exp_id\tend_ms\tstatus\tartifact_uri" */
	struct ml_map *where;		/* "name\tversion" -> the version's artifact URI */
	struct ml_sub *subs;
	size_t nsubs;
	struct {
		char *key, *text;
		time_t made;
	} memo[ML_MEMO_MAX];		/* records made lately, until read */
	int warned_other;		/* a location of another kind was logged */
	unsigned memo_next;
	int subs_stopped;
};

/* A small string map (chained, bounded: full, it starts afresh). */
struct ml_map *ml_map_new(void);
void ml_map_free(struct ml_map *m);
/* A heap copy of the value of key, or NULL. */
char *ml_map_get(struct ml_map *m, const char *key);
int ml_map_put(struct ml_map *m, const char *key, const char *value);

/* One call of the REST API: method "GET"/"POST"/"DELETE", path_query below the
 * server's URL ("/api/2.0/mlflow/..."), JSON body for POST (or NULL). 0 with the
 * answer's body in *out (heap, NUL-ended) and its length; else -errno: -EACCES
 * (logged, naming the credentials' source), -ENOENT (404, RESOURCE_DOES_NOT_EXIST,
 * or an alias or version the server does not have), -EEXIST
 * (RESOURCE_ALREADY_EXISTS), -EINVAL (another 400: *out holds the answer), -EIO. */
int ml_call(struct blob_mlflow *s, const char *method, const char *path_query,
	    const char *body, char **out, size_t *len);
/* The same, logging nothing: the caller says what failed (see ml_failure); why (at
 * least ML_WHY bytes) gets what went wrong on the way, or "" when the server answered. */
#define ML_WHY 200
int ml_call_quiet(struct blob_mlflow *s, const char *method, const char *path_query,
		  const char *body, char **out, size_t *len, char *why);
/* What a failed call's error means to the user, into buf: for -EACCES, the refusal
 * and which credentials were used; else why (from ml_call_quiet) or the errno's text.
 * Returns buf. */
const char *ml_failure(struct blob_mlflow *s, int err, const char *why, char *buf,
		       size_t size);

/* The headers of a call (http_sign_fn): the credentials, and a JSON body's type. */
struct ml_sign {
	struct blob_mlflow *s;
	int json;
};
int ml_sign(void *ctx, struct curl_slist **headers);
/* What a failed answer means (logged where the user must act): the -errno of ml_call. */
int ml_errno(struct blob_mlflow *s, const struct http_response *resp, const char *what);

/* Every page of a search: page is called with each answer; its next token goes into
 * the next request. path_query ends where "&page_token=" may be appended (GET) or
 * body is the JSON object to which "page_token" is added (POST). */
typedef int (*ml_page_fn)(void *ctx, const char *json, size_t len, char **next);
int ml_pages(struct blob_mlflow *s, const char *method, const char *path_query,
	     const char *body, ml_page_fn page, void *ctx);

/* The artifacts at loc + rel (rel "" or ending in '/'): one folder level into out,
 * with etags made from tag for proxied files (which have none) and mtime. */
int ml_loc_list(struct blob_mlflow *s, const struct ml_loc *loc, const char *rel,
		const char *tag, struct timespec mtime, struct blob_list *out);

/* The run of run_id: from the last listing, else asked of the server. Caller
 * releases out (ml_run_release). -ENOENT when the server has no such run. */
int ml_run_get(struct blob_mlflow *s, const char *run_id, struct ml_run *out);

/* mlflow_art.c: the store opened at root (once, kept for the mount); -EIO (logged)
 * when it cannot be opened. */
int ml_sub_store(struct blob_mlflow *s, const char *root, struct blob_store **out);
/* A proxied artifact's read (path below the proxy's root): from 0, whole; its size
 * is checked against the one its etag names. */
ssize_t ml_proxied_read(struct blob_mlflow *s, const char *key, const char *path,
			const char *etag, uint64_t off, size_t len, blob_sink_fn sink, void *ctx);
/* The size a proxied artifact's etag names, or -1 when etag is not one. */
int64_t ml_proxied_size(const char *etag);
/* Artifacts at where are in a store this mount cannot read: -EIO, logged once. */
int ml_warn_other(struct blob_mlflow *s, const char *where);

/* The registry part (mlflow_reg.c): listings and records under "registry/". */
int ml_reg_list(struct blob_mlflow *s, const char *key, struct blob_list *out);
/* The text of a record or aliases table at key (heap). */
int ml_reg_text(struct blob_mlflow *s, const char *key, char **text);
/* The location of a version's artifacts. */
int ml_version_loc(struct blob_mlflow *s, const char *name, int version, struct ml_loc *out);

/* The quoted etag of a made text. */
void ml_text_etag(const char *text, char etag[BLOB_ETAG_MAX]);

static inline struct blob_mlflow *ml_of(struct blob_store *bs)
{
	return (struct blob_mlflow *)bs;
}

#endif
