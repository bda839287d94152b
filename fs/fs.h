/*
 * fs.h: the tree artifactfs shows, and the mount. The one public header of fs/.
 *
 *   /runs/<experiment>/<run>/...   the store's runs/ prefix as stored
 *   /models/<name>/<version>/...   the frozen file set of a registered version
 *   /models/<name>/latest          symlink to the highest version
 *   /models/<name>/<alias>         symlink to the alias's version
 *   /runs/<experiment>/<run name>  symlink to the run's id (a store with links: MLflow)
 *
 * The tree is computed from the cache's listings and records on every lookup; it
 * keeps only parsed registry records and each model's alias table (refreshed after
 * the TTL), for at most FS_MODELS_MAX models, and forgets a model the registry no
 * longer has.
 *
 * Threads: all functions are thread-safe. fs->lock guards the model table and is
 * never held across cache or store I/O.
 */
#ifndef FS_FS_H
#define FS_FS_H

#include <limits.h>
#include <pthread.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "../blob/blob.h"
#include "../cache/cache.h"

enum fs_kind {
	FS_DIR,		/* root, runs/..., models, a model, a version or a folder in one */
	FS_FILE,	/* a blob */
	FS_LINK,	/* latest or an alias */
};

struct fs_node {
	enum fs_kind kind;
	int immutable;			/* a registered version's file: pinned for good */
	uint64_t size;
	struct timespec mtime;
	char key[PATH_MAX];		/* files: the store key */
	char etag[BLOB_ETAG_MAX];	/* files: the version served */
	char sha256[65];		/* registered files: "" when unknown */
	char target[80];		/* links: the version (or run) it points at */
};

struct fs_model;
struct fs_open;

#define FS_OPEN_BUCKETS 1024

struct fs_link;
struct fs_writes;

struct fs {
	struct cache *cache;		/* owned */
	unsigned ttl;
	int xattrs;			/* answer user.artifactfs.* (--xattrs) */
	int any_model_names;		/* the registry's names are another's (MLflow's):
					 * any that can be a file name is shown */
	uid_t uid;
	gid_t gid;
	struct timespec started;
	pthread_mutex_t lock;
	struct fs_model *models;	/* protected by lock */
	size_t nmodels;			/* protected by lock */
	struct fs_link *opened;		/* protected by lock: open files and folders (ops.c) */
	time_t err_logged;		/* protected by lock: last store failure logged */
	struct fs_open *opens[FS_OPEN_BUCKETS]; /* protected by lock: runs/ files' page cache */
	size_t nopens;			/* protected by lock */
	uint64_t *warned;		/* protected by lock: hashes of things warned of */
	size_t nwarned, capwarned;
	unsigned err_quiet;		/* protected by lock: failures not logged since */
	struct fs_writes *wr;		/* runs/ takes writes (write.c); NULL: read-only */
};

/* Takes over cache (fs_destroy frees it). */
int fs_create(struct cache *cache, unsigned ttl, struct fs **out);
void fs_destroy(struct fs *fs);

/* Resolves an absolute path of the tree. -ENOENT, -ENOTDIR, or -EIO/-EACCES when the
 * store fails and nothing is cached. */
int fs_resolve(struct fs *fs, const char *path, struct fs_node *out);

/* Calls fill for every child of the folder at path, with its node; stops early when
 * fill returns non-zero. -ENOTDIR for a file. */
typedef int (*fs_fill_fn)(void *ctx, const char *name, const struct fs_node *node);
int fs_list(struct fs *fs, const char *path, fs_fill_fn fill, void *ctx);

/* Models kept in memory at most: beyond, the least recently used is forgotten (and
 * read again from the cache when asked for). */
#define FS_MODELS_MAX 1024
/* How many models the tree keeps in memory now, for tests. Cannot fail. */
size_t fs_model_count(struct fs *fs);

/* The stat of a node as the mount shows it. Cannot fail. */
void fs_node_stat(const struct fs *fs, const struct fs_node *n, struct stat *st);

/* The command line: artifactfs mount|register|alias ... Returns the exit status. */
int fs_main(int argc, char **argv);
/* artifactfs mount STORE MOUNTPOINT [options]; argv[0] is "mount". */
int fs_mount_main(int argc, char **argv);
/* artifactfs prefetch PATH... [--jobs N]; argv[0] is "prefetch" (prefetch.c). */
int fs_prefetch_main(int argc, char **argv);
/* artifactfs stats MOUNTPOINT [--json]; argv[0] is "stats" (stats.c). */
int fs_stats_main(int argc, char **argv);

#endif
