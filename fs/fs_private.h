/*
 * fs_private.h: what the files of fs/ share beyond fs.h.
 */
#ifndef FS_PRIVATE_H
#define FS_PRIVATE_H

#include "fs.h"

#include <pthread.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

/* A runs/ path whose page cache the kernel may hold (see fs_open_begin). */
struct fs_open {
	struct fs_open *next;
	int users;			/* open files using the page cache */
	char etag[BLOB_ETAG_MAX];	/* the version whose pages the kernel may hold */
	char path[];
};

/* FNV-1a of a string; monotonic seconds. Cannot fail. */
uint64_t fs_hash(const char *s);
time_t fs_mono_now(void);

/* Maps an error of the layers below to what a FUSE request answers, logging store
 * failures (EIO, EACCES) in one line, at most once every few seconds. */
int fs_errno(struct fs *fs, int err, const char *path);

/* Pins a runs/ file to the etag the store has now (the listed one when the store
 * does not answer within about a second); updates size, etag and mtime in n. */
int fs_pin_run_file(struct fs *fs, struct fs_node *n);

/* Logs that an open file's blob is no longer at etag, naming both etags. */
void fs_log_changed(struct fs *fs, const char *path, int immutable, const char *etag);

/*
 * The kernel keeps one page cache per path, shared by every open file of it. A runs/
 * file is opened at the etag the store has then, so two opens may be at different
 * versions: fs_open_begin decides how this open uses the page cache so that no open
 * file ever sees another version's pages. Returns 1 when the open must bypass the
 * page cache (direct I/O: another version is cached and open), 0 when it uses it,
 * with *keep set when the cached pages are of this very version. fs_open_end undoes
 * a begin that returned 0.
 */
int fs_open_begin(struct fs *fs, const char *path, const char *etag, int *keep);
void fs_open_end(struct fs *fs, const char *path);

/* Pieces of cache files one read may send. */
#define FS_SPANS_MAX 4

/*
 * The largest READ the kernel sends (max_write makes libfuse's max_pages) and the
 * mount's readahead. libfuse 3.14 splices a reply only if it fits in its pipe with
 * FS_SPANS_MAX + 2 pages to spare, and without CAP_SYS_RESOURCE the pipe stops at
 * fs.pipe-max-size (1 MiB): a 1 MiB READ would be copied twice instead.
 */
#define FS_READ_MAX ((1u << 20) - 8 * 4096)

/*
 * reply.c. Zero-copy replies hand libfuse spans of cache files that it splices to
 * the kernel after the handler returns, in the same thread. fs_sent_keep lets go of
 * this thread's previous spans and keeps these until the reply is written: the
 * session's device I/O (set up by fs_reply_hooks, once mounted) lets go of them.
 * -ENOMEM when it cannot keep them (the caller releases them).
 */
int fs_sent_keep(struct fs *fs, const struct cache_span *sp, int n);
void fs_sent_release(void);
struct fuse;
int fs_reply_hooks(struct fuse *fuse);

/* Files and folders open through the mount, on one list (fs->opened, under
 * fs->lock), so that the end of the mount closes what the kernel never released.
 * First member of every handle; dir: 0 a file read through the cache, 1 a folder,
 * 2 a file of the overlay (write.c). */
struct fs_link {
	struct fs_link *prev, *next;
	int dir;
};
void fs_link_add(struct fs *fs, struct fs_link *l, int dir);
void fs_link_del(struct fs *fs, struct fs_link *l);

/*
 * overlay.c: what a --writable mount has written and the store's listings do not show
 * yet: files being written or whose upload failed (struct fs_wfile, over a staged
 * file of the cache), and folders made here that hold no file yet. Every wfile field
 * is under wr->lock.
 */
struct fs_wfile {
	struct fs_wfile *next;
	struct cache_stage *st;
	pthread_mutex_t sync_lock;	/* one upload at a time */
	int refs;			/* handles, and threads at work on it */
	int listed;			/* in the overlay */
	int opens;			/* handles */
	int excl;			/* created O_EXCL: uploaded only if the key is free */
	int failed;			/* how the last upload failed (its bytes are kept) */
	int in_store;			/* the key has a blob this file made or replaces */
	uint64_t failed_at;		/* the staged file's changes when its upload failed */
	struct timespec mtime;
	char etag[BLOB_ETAG_MAX];	/* of the last upload, or "" */
	char *key;			/* "runs/..." */
};

struct fs_writes {
	pthread_mutex_t lock;
	struct fs_wfile *files;
	char **dirs;			/* folders made here, keys ending in '/' */
	size_t ndirs, capdirs;
};


int fs_writes_init(struct fs *fs);
void fs_writes_free(struct fs *fs);
/* The overlay's node at key (no trailing '/'): 1 with *out, or 0. */
int fs_overlay_node(struct fs *fs, const char *key, struct fs_node *out);
/* The overlay's children of the folder prefix (ending in '/'): a heap array. */
struct fs_ochild {
	char name[NAME_MAX + 1];
	struct fs_node node;
};
int fs_overlay_list(struct fs *fs, const char *prefix, struct fs_ochild **out, size_t *n);
/* "runs/..." for a path of the writable part of the tree (below /runs/), else NULL
 * with -EROFS (the rest of the tree, or a read-only mount) or -EINVAL (a name the
 * store cannot hold) in *err. */
const char *fs_wkey(struct fs *fs, const char *path, int *err);
/* The folder prefix of key ("runs/a/" for "runs/a/b") into out; its last segment. */
void fs_parent_of(const char *key, char *out, size_t size);
const char *fs_name_of(const char *key);
void fs_ts_now(struct timespec *ts);
/* Under wr->lock: the overlay's file at key, or NULL; takes wf out of the overlay;
 * the folders made here (dkey ends in '/'). */
struct fs_wfile *fs_wfile_find(struct fs_writes *wr, const char *key);
void fs_wfile_unlist(struct fs_writes *wr, struct fs_wfile *wf);
ssize_t fs_wdir_index(struct fs_writes *wr, const char *dkey);
int fs_wdir_add(struct fs_writes *wr, const char *dkey);
void fs_wdir_del(struct fs_writes *wr, size_t i);
/* The wfile of key, held (refs) and opened (opens, in the same step), made if absent
 * with a new staged file (filled from the store's blob when fill; blob NULL: a new
 * file). *made: it is new. */
int fs_wfile_get(struct fs *fs, const char *key, const struct fs_node *blob, int fill,
		 int excl, struct fs_wfile **out, int *made);
/* Undoes fs_wfile_get when the open goes no further. */
void fs_wfile_unopen(struct fs *fs, struct fs_wfile *wf);
/* Drops an open (and its hold): the last one uploads what changed and, unless that
 * failed, takes the file out of the overlay. 0 or the upload's error. */
int fs_wfile_close(struct fs *fs, struct fs_wfile *wf);
/* Drops a reference; the last one of a wfile out of the overlay frees it (keep: its
 * staged bytes stay in the cache folder). */
void fs_wfile_unref(struct fs *fs, struct fs_wfile *wf, int keep);
/* Uploads wf if it changed: 0, or the upload's error (logged with where its bytes are
 * kept). retry: also when its last upload failed and nothing changed since (else that
 * failure is answered again). */
int fs_wfile_sync(struct fs *fs, struct fs_wfile *wf, int retry);
/* What an upload's error answers close(2) and fsync(2). */
int fs_sync_errno(int err);
/* The cached listings after a change made here: key shown with st in its folder (and
 * its folders in theirs); key taken out of its folder, which with keep_folder stays
 * on this mount. */
void fs_listings_show(struct fs *fs, const char *key, const struct blob_stat *st);
void fs_listings_hide(struct fs *fs, const char *key, int keep_folder);

/* write.c: the FUSE operations of a writable mount. */
struct fuse_file_info;
struct fuse_bufvec;
struct fuse_operations;
struct statvfs;
/* Adds the write operations to ops. */
void fs_w_ops(struct fuse_operations *ops);
/* An open through the overlay (n: the tree's node at path, or NULL): 1 when it is
 * not the overlay's (a read of a file it does not hold), else 0 or -errno. */
int fs_w_open(struct fs *fs, const char *path, const struct fs_node *n,
	      struct fuse_file_info *fi);
int fs_is_whandle(const struct fuse_file_info *fi);
int fs_w_read(struct fuse_file_info *fi, char *buf, size_t size, off_t off);
int fs_w_read_buf(struct fuse_file_info *fi, struct fuse_bufvec **bufp, size_t size,
		  off_t off);
int fs_w_release(struct fuse_file_info *fi);
void fs_whandle_free(struct fs *fs, struct fs_link *l);
/* Fills in what a writable mount's statfs says (free space: the cache's disk). */
int fs_w_statfs(struct fs *fs, struct statvfs *st);

/* stats.c: the mount's figures, as JSON (artifactfs stats) and in Prometheus's text
 * format (/metrics); heap strings, NULL without memory. --metrics ADDR:PORT: parsed
 * (-EINVAL with one line in err), and its HTTP server started (NULL when it cannot
 * listen) and stopped. */
struct sockaddr_storage;
char *fs_stats_json(struct fs *fs);
char *fs_stats_prometheus(struct fs *fs);
int fs_metrics_parse(const char *addr, struct sockaddr_storage *out, char *err, size_t errlen);
void *fs_metrics_start(struct fs *fs, const struct sockaddr_storage *addr);
void fs_metrics_stop(void *d);

/* Closes the files still open (ops.c): for the end of the mount. */
void fs_release_all(struct fs *fs);

extern const struct fuse_operations fs_ops;

#endif
