/*
 * registry.h: the model registry kept in the store (private to fs/).
 *
 *   registry/<name>/<version>.json   one record per version, created once, never changed
 *   registry/<name>/aliases.json     {"production": 3, "staging": 4}
 *
 * Parsing is defensive: a record is store content and may be hostile. A malformed
 * record is refused whole; a bad file entry inside a good record (a path that would
 * leave the version folder, a bad size or etag) is skipped with one warning.
 */
#ifndef FS_REGISTRY_H
#define FS_REGISTRY_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "../blob/blob.h"

#define REG_NAME_MAX 128
#define REG_VERSION_MAX 1000000000

struct reg_file {
	char *path;		/* relative to the version folder, checked */
	uint64_t size;
	char etag[BLOB_ETAG_MAX];
	char sha256[65];	/* "" when the record has none */
};

struct reg_version {
	int version;
	char *source;		/* store prefix ending in '/' */
	struct timespec created;
	struct reg_file *files;	/* sorted by path */
	size_t nfiles;
};

struct reg_alias {
	char name[REG_NAME_MAX + 1];
	int version;
};

/* Model and alias names: [A-Za-z0-9][A-Za-z0-9._-]{0,127}; an alias is also not all
 * digits and not "latest". Cannot fail. */
int reg_name_ok(const char *name);
int reg_alias_ok(const char *name);
/* Parses "<n>.json" into n; -1 when the name is not a version record. */
int reg_version_of(const char *filename);
/* Parses a version folder name "<n>" (no sign, no leading zero); -1 otherwise. */
int reg_version_name(const char *name);

/* Parses record text; -EBADMSG (with one warning) when unusable. Caller frees the
 * result with reg_version_free. */
int reg_version_parse(const char *text, size_t len, const char *name, int version,
		      struct reg_version **out);
/* The same without the warning when the record is refused (a first try). */
int reg_version_parse_quiet(const char *text, size_t len, const char *name, int version,
			    struct reg_version **out);
void reg_version_free(struct reg_version *v);
/* The file at path, or NULL. Borrowed from v. */
const struct reg_file *reg_version_file(const struct reg_version *v, const char *path);

/* Parses aliases.json; bad entries are skipped with a warning. *out is a heap array. */
int reg_aliases_parse(const char *text, size_t len, const char *name,
		      struct reg_alias **out, size_t *n);

struct reg_request {
	const char *name;
	const char *source;
	const char *description;
	const char **tags;	/* "k=v" */
	size_t ntags;
};

/*
 * A store's registry: its own records (the layout above, kept in the store), or, for
 * an MLflow tracking server, MLflow's registry. Both are read the same way (the
 * MLflow backend shows its registry in the records' layout); registering and
 * setting aliases go to the provider.
 */
struct reg_provider {
	const char *name;
	int (*register_version)(struct blob_store *s, const struct reg_request *req,
				int *version, char *err, size_t errlen);
	int (*alias_set)(struct blob_store *s, const char *name, const char *alias,
			 int version, char *err, size_t errlen);
};
const struct reg_provider *reg_provider_of(const struct blob_store *s);

/* Registers a new version (conditional create, so concurrent callers never share a
 * number; MLflow numbers versions itself). On failure returns -errno with one line
 * in err. */
int reg_register(struct blob_store *s, const struct reg_request *req, int *version,
		 char *err, size_t errlen);
/* Sets (version > 0) or deletes (version == 0) an alias, with replace-if-unchanged so
 * no concurrent update is lost. */
int reg_alias_set(struct blob_store *s, const char *name, const char *alias, int version,
		  char *err, size_t errlen);

#endif
