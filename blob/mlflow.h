/*
 * mlflow.h: the pieces of the MLflow backend that are pure functions (answers of the
 * tracking server's REST API parsed, artifact URIs told apart), kept apart so that
 * the unit tests and the fuzz target can check them (private to blob/ and tests/).
 *
 * Every parser takes the server's JSON as untrusted: a missing or mistyped field
 * makes the entry it belongs to skipped (or the answer -EBADMSG when the answer
 * itself is not the expected object); nothing is trusted to be NUL-free or short.
 */
#ifndef BLOB_MLFLOW_H
#define BLOB_MLFLOW_H

#include <stddef.h>
#include <stdint.h>

#define ML_ID_MAX 64

struct ml_exp {
	char id[ML_ID_MAX];		/* experiment_id (a string in MLflow's JSON) */
	char *name;			/* owned */
	int by_id;			/* shown by its id (see ml_exps_place) */
};

struct ml_run {
	char id[ML_ID_MAX];		/* run_id */
	char exp_id[ML_ID_MAX];
	char status[16];		/* RUNNING, FINISHED, FAILED, KILLED, SCHEDULED */
	char *name;			/* run_name; owned, may be "" */
	char *artifact_uri;		/* owned */
	int64_t start_ms, end_ms;	/* 0 when absent */
};

struct ml_file {
	char *name;			/* last segment of "path"; owned */
	int is_dir;
	uint64_t size;
};

struct ml_version {
	int version;			/* "version": "3" */
	char *source;			/* owned */
	char run_id[ML_ID_MAX];		/* "" when none */
	char status[32];		/* READY, PENDING_REGISTRATION, FAILED_REGISTRATION */
	char stage[32];			/* current_stage: None, Staging, Production, Archived */
	int64_t created_ms;
};

struct ml_alias {
	char name[129];
	int version;
};

/* A page of experiments/search: entries appended to *out (heap array, *n of them);
 * *next: the next page's token (heap) or NULL when this page is the last. The same
 * shape for the others. */
int ml_parse_experiments(const char *json, size_t len, struct ml_exp **out, size_t *n,
			 char **next);
int ml_parse_runs(const char *json, size_t len, struct ml_run **out, size_t *n, char **next);
/* runs/get: {"run": {"info": {...}}}. */
int ml_parse_run(const char *json, size_t len, struct ml_run *out);
/* artifacts/list and mlflow-artifacts/artifacts: "files" (absent when empty). */
int ml_parse_files(const char *json, size_t len, struct ml_file **out, size_t *n,
		   char **next);
/* registered-models/search: the names. */
int ml_parse_models(const char *json, size_t len, char ***out, size_t *n, char **next);
int ml_parse_versions(const char *json, size_t len, struct ml_version **out, size_t *n,
		      char **next);
/* registered-models/get: {"registered_model": {"aliases": [{alias, version}]}}. */
int ml_parse_aliases(const char *json, size_t len, struct ml_alias **out, size_t *n);
/* model-versions/get-download-uri: {"artifact_uri": "..."}; model-versions/create:
 * {"model_version": {"version": "3"}}. Heap string / the number. */
int ml_parse_download_uri(const char *json, size_t len, char **out);
int ml_parse_created_version(const char *json, size_t len, int *version);
/* An error answer's error_code into code ("" when none). Cannot fail. */
void ml_parse_error(const char *json, size_t len, char *code, size_t size);

void ml_exps_free(struct ml_exp *e, size_t n);
void ml_run_release(struct ml_run *r);
void ml_runs_free(struct ml_run *r, size_t n);
void ml_files_free(struct ml_file *f, size_t n);
void ml_names_free(char **names, size_t n);
void ml_versions_free(struct ml_version *v, size_t n);

/* Where an artifact URI's bytes are. */
enum ml_loc_kind {
	ML_LOC_PROXIED,		/* mlflow-artifacts:/PATH: through the server */
	ML_LOC_DIRECT,		/* a store the mount reads itself: open root, keys
				 * prefix + relative path */
	ML_LOC_RUN,		/* runs:/RUN_ID/PATH: the run's artifacts */
	ML_LOC_OTHER,		/* a scheme this mount cannot read */
};

struct ml_loc {
	enum ml_loc_kind kind;
	char *root;		/* DIRECT: the store URL to open (one per container,
				 * bucket or "file:///"); OTHER: the URI */
	char *prefix;		/* DIRECT: key prefix ("" or ending in '/');
				 * PROXIED: path below the server's artifact root
				 * ("" or ending in '/'); RUN: path in the run */
	char run_id[ML_ID_MAX];	/* RUN */
};

/* Classifies uri (an artifact_uri or a version's source). -EINVAL for a URI that is
 * not one (no scheme, a query, a '..' segment). Caller releases out. */
int ml_loc_parse(const char *uri, struct ml_loc *out);
void ml_loc_release(struct ml_loc *l);

/* Whether an experiment name can be a folder name of the tree (else it shows by its
 * id). Cannot fail. */
int ml_exp_name_ok(const char *name);
/* Decides how each experiment shows: by its name, unless the name cannot be a file
 * name or is another experiment's id (then by its id, so that no folder stands for
 * two experiments). Returns 0 or -ENOMEM. */
int ml_exps_place(struct ml_exp *e, size_t n);

#endif
