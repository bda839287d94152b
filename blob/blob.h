/*
 * blob.h: the store interface. Every backend (local directory, Azure Blob, S3)
 * implements the table of operations below; the rest of artifactfs reaches a store
 * only through these functions and never knows which backend it talks to.
 *
 * Keys are store-relative ("runs/exp/run-1/model.pth"): a backend adds its own
 * prefix. Folders are key prefixes that end in '/'; a listing is one folder level.
 *
 * Errors: every fallible function returns 0 (or a byte count) on success and -errno
 * on failure, with the same meaning in every backend:
 *   -ENOENT  no such blob or folder
 *   -EEXIST  create-if-absent found the key taken
 *   -ESTALE  the blob's etag is not the one asked for (changed since it was seen)
 *   -EACCES  the store refused the credentials
 *   -EIO     the store is unreachable or failing (after the backend's retries)
 *   -ENOMEM, -EINVAL as usual
 *
 * Threads: a struct blob_store is safe to use from many threads at once; backends
 * hold no lock across I/O. Configuration is fixed once blob_open() returns.
 *
 * This layer knows nothing of FUSE or of the cache.
 */
#ifndef BLOB_BLOB_H
#define BLOB_BLOB_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

/* Longest etag kept, with its quotes and the terminating NUL. */
#define BLOB_ETAG_MAX 128

struct blob_store;
struct blob_upload; /* a write in parts, the backend's own */

/* One entry of a listing: a blob or a folder, named by its last segment. */
struct blob_entry {
	char *name;		/* owned; last segment, no '/' */
	int is_dir;		/* a folder (common prefix) */
	uint64_t size;		/* blobs only */
	struct timespec mtime;	/* blobs only (folders: zero) */
	char etag[BLOB_ETAG_MAX]; /* blobs only; "" for folders */
};

/* A listing: the entries of one folder level, in the order the store gave them. */
struct blob_list {
	struct blob_entry *entries; /* owned */
	size_t count;
	size_t cap;
};

/* Properties of one blob. */
struct blob_stat {
	uint64_t size;
	struct timespec mtime;
	char etag[BLOB_ETAG_MAX];
};

/*
 * Receives the bytes of a read, in order. Returns 0 to go on or -errno to stop the
 * read (which then fails with that error). When a remote read is retried after part
 * of it arrived, the sink is first called with data NULL and len 0: everything it
 * received so far is void and the bytes come again from the start.
 */
typedef int (*blob_sink_fn)(void *ctx, const void *data, size_t len);

/* What a store's requests did since the mount started (stats, metrics). */
#define BLOB_LAT_BUCKETS 12
extern const double blob_lat_bounds_s[BLOB_LAT_BUCKETS]; /* upper bounds; the last +Inf */
struct blob_stats {
	int up;				/* the store answers (not counting as down) */
	uint64_t operations;		/* requests the layers above asked for */
	uint64_t attempts;		/* HTTP requests sent, retries included */
	uint64_t retries;
	uint64_t gave_up;		/* operations that failed after their retries */
	uint64_t err_connect, err_timeout, err_network;	/* failed attempts, by kind */
	uint64_t err_5xx, err_429, err_refused;		/* answers: 5xx, 429, 401/403 */
	uint64_t lat[BLOB_LAT_BUCKETS];	/* operations by duration (not cumulative) */
	double lat_sum_s;
};

/* blob_ops.flags: read_to's bytes are all of the version that etag names, from the
 * first one on (the store checks the version before it answers, as a conditional
 * request does), so they may be used as they arrive. Without it, a change of version
 * during a read is told only when read_to returns, and its bytes may be used only
 * once it returned the length asked for. */
#define BLOB_PINNED_READS 1u
/* read_to answers only with a whole blob, from its first byte (a server that ignores
 * Range): a reader fetches the blob in one read, never a piece at a time. */
#define BLOB_WHOLE_READS 2u

/* blob_entry.is_dir of a link (a store whose tree has them: MLflow's run names):
 * its target, a sibling's name, is in etag. */
#define BLOB_ENTRY_LINK 2

struct blob_ops {
	const char *name; /* "file", "azure", ... */
	unsigned flags;   /* BLOB_PINNED_READS, BLOB_WHOLE_READS */
	void (*destroy)(struct blob_store *s);
	/* One folder level under prefix ("" or ending in '/'). -ENOENT when nothing is
	 * there at all. Appends to out. */
	int (*list)(struct blob_store *s, const char *prefix, struct blob_list *out);
	int (*stat)(struct blob_store *s, const char *key, struct blob_stat *out);
	/* Streams len bytes at off of the version named by etag ("" = any) into sink.
	 * Returns the bytes delivered (short only at the end of the blob) or -errno;
	 * -ESTALE when the blob is no longer at that etag (or is gone). Memory use does
	 * not grow with len. */
	ssize_t (*read_to)(struct blob_store *s, const char *key, const char *etag,
			   uint64_t off, size_t len, blob_sink_fn sink, void *ctx);
	/* Optional: the flags of reads of one blob, for a store whose blobs differ
	 * (flags above otherwise). Cannot fail. */
	unsigned (*read_flags)(struct blob_store *s, const char *key, const char *etag);
	/* Writes a small blob only if the key is free: -EEXIST when it is taken. */
	int (*create)(struct blob_store *s, const char *key, const void *data, size_t len);
	/* Replaces a small blob only if it is still at etag: -ESTALE when it changed,
	 * -ENOENT when it is gone. */
	int (*replace)(struct blob_store *s, const char *key, const char *etag,
		       const void *data, size_t len);
	/* Optional: checks that the store answers within deadline_s seconds (0: the
	 * store's own deadline), with one line into err. */
	int (*check)(struct blob_store *s, unsigned deadline_s, char *err, size_t errlen);
	/* Optional: whether the store counts as down (its last operation gave up), so
	 * the layers above answer from their copies without asking. Cannot fail. */
	int (*down)(struct blob_store *s);
	/* Optional: adds what the store's requests did to out (remote stores). */
	void (*stats)(struct blob_store *s, struct blob_stats *out);
	/* Optional: makes every operation in flight, and every later one, fail with
	 * -EIO at once: for the end of the mount, so no thread waits out a deadline on
	 * a store that stalls. Cannot fail; irreversible. */
	void (*stop)(struct blob_store *s);

	/* ---- writes (optional: a store without them is read-only) ----
	 * A blob is written whole: nothing of it is visible until the write ends, and
	 * then all of it at once, replacing what the key held. excl: only when the key
	 * is free, -EEXIST when it is taken. *out (may be NULL) gets the new version. */
	/* Writes len bytes from data as the blob, in one request. */
	int (*put)(struct blob_store *s, const char *key, const void *data, size_t len,
		   int excl, struct blob_stat *out);
	/* Starts a write in parts: part i holds the bytes at off, every part but the
	 * last of one size (at least BLOB_PART_MIN), at most BLOB_PARTS_MAX parts. Parts
	 * go in any order, from many threads at once; a part sent again replaces the
	 * earlier one. */
	int (*upload_begin)(struct blob_store *s, const char *key, struct blob_upload **out);
	int (*upload_part)(struct blob_store *s, struct blob_upload *u, unsigned index,
			   uint64_t off, const void *data, size_t len);
	/* Makes parts 0..nparts-1 (size bytes in all) the blob. The upload ends, done or
	 * failed: u is freed. */
	int (*upload_commit)(struct blob_store *s, struct blob_upload *u, unsigned nparts,
			     uint64_t size, int excl, struct blob_stat *out);
	/* Ends an upload without a blob, leaving no part behind. Cannot fail. */
	void (*upload_abort)(struct blob_store *s, struct blob_upload *u);
	/* Deletes a blob: -ENOENT when there is none. */
	int (*remove)(struct blob_store *s, const char *key);
	/* Moves the blob src to dst (dst replaced). A store with no rename copies inside
	 * the store, then deletes src: in between, both are there. */
	int (*move)(struct blob_store *s, const char *src, const char *dst,
		    struct blob_stat *out);
};

/* Parts: the smallest but the last, and the most of one blob (S3's bounds, which
 * every store accepts). */
#define BLOB_PART_MIN (5u << 20)
#define BLOB_PARTS_MAX 10000u


/* The common head of every backend's store struct. */
struct blob_store {
	const struct blob_ops *ops;
	/* Names the store for cache keys and logs: scheme, place and prefix, never a
	 * credential. Owned by the store. */
	char *id;
};

/* How remote stores behave; fixed at open. */
struct blob_options {
	unsigned timeout_s;	/* deadline of one operation, retries included; 0 = 60 */
	int insecure;		/* do not verify TLS certificates (warns) */
	const char *proxy;	/* a proxy list for reads pinned to a version (proxy.h),
				 * or NULL; Azure stores take it */
	const char *ca_file;	/* --ca-file: trusted CAs (PEM) for every store, or NULL
				 * (see blob_ca_file) */
};

/*
 * The CA bundle a store trusts, first found: --ca-file, the store's own variable
 * (store_var: AWS_CA_BUNDLE, MLFLOW_TRACKING_SERVER_CERT_PATH; NULL for none),
 * CURL_CA_BUNDLE, SSL_CERT_FILE (what curl and OpenSSL honour); NULL: the system's.
 * *source names which, for messages (a static string). Cannot fail.
 */
const char *blob_ca_file(const struct blob_options *opt, const char *store_var,
			 const char **source);

/*
 * Opens the store named by url (file://, wasbs://, https://, http://). Credentials
 * come from the environment (see the backend). opt may be NULL for the defaults. On
 * failure returns -errno and writes one line saying what is wrong into err (never a
 * secret). The caller frees the store with blob_destroy(). Does no network I/O: use
 * blob_check() for that.
 */
int blob_open(const char *url, const struct blob_options *opt, struct blob_store **out,
	      char *err, size_t errlen);

/* Checks that the store answers (and the credentials work) within deadline_s seconds
 * (0: the store's --timeout). On failure writes one line into err and returns -errno:
 * -EIO when the store does not answer. */
int blob_check(struct blob_store *s, unsigned deadline_s, char *err, size_t errlen);

void blob_destroy(struct blob_store *s);

/* See struct blob_ops. Stores without the operation are never down and have nothing
 * in flight to stop. Cannot fail. */
/* Whether the store takes writes. Cannot fail. */
static inline int blob_writable(const struct blob_store *s)
{
	return s->ops->put && s->ops->upload_begin && s->ops->remove && s->ops->move;
}

/* The store's request figures (zero for a store without requests). Cannot fail. */
static inline void blob_get_stats(struct blob_store *s, struct blob_stats *out)
{
	*out = (struct blob_stats){ 0 };
	if (s->ops->stats)
		s->ops->stats(s, out);
	out->up = !(s->ops->down ? s->ops->down(s) : 0);
}

static inline int blob_down(struct blob_store *s)
{
	return s->ops->down ? s->ops->down(s) : 0;
}

static inline void blob_stop(struct blob_store *s)
{
	if (s->ops->stop)
		s->ops->stop(s);
}

static inline unsigned blob_read_flags(struct blob_store *s, const char *key,
				       const char *etag)
{
	return s->ops->read_flags ? s->ops->read_flags(s, key, etag) : s->ops->flags;
}

static inline int blob_list(struct blob_store *s, const char *prefix, struct blob_list *out)
{
	return s->ops->list(s, prefix, out);
}

static inline int blob_stat(struct blob_store *s, const char *key, struct blob_stat *out)
{
	return s->ops->stat(s, key, out);
}

static inline ssize_t blob_read_to(struct blob_store *s, const char *key, const char *etag,
				   uint64_t off, size_t len, blob_sink_fn sink, void *ctx)
{
	return s->ops->read_to(s, key, etag, off, len, sink, ctx);
}

/* blob_read_to into buf (len bytes at most). */
ssize_t blob_read(struct blob_store *s, const char *key, const char *etag, uint64_t off,
		  size_t len, void *buf);

static inline int blob_create(struct blob_store *s, const char *key, const void *data,
			      size_t len)
{
	return s->ops->create(s, key, data, len);
}

static inline int blob_replace(struct blob_store *s, const char *key, const char *etag,
			       const void *data, size_t len)
{
	return s->ops->replace(s, key, etag, data, len);
}

static inline int blob_put(struct blob_store *s, const char *key, const void *data,
			   size_t len, int excl, struct blob_stat *out)
{
	return s->ops->put(s, key, data, len, excl, out);
}

static inline int blob_upload_begin(struct blob_store *s, const char *key,
				    struct blob_upload **out)
{
	return s->ops->upload_begin(s, key, out);
}

static inline int blob_upload_part(struct blob_store *s, struct blob_upload *u,
				   unsigned index, uint64_t off, const void *data, size_t len)
{
	return s->ops->upload_part(s, u, index, off, data, len);
}

static inline int blob_upload_commit(struct blob_store *s, struct blob_upload *u,
				     unsigned nparts, uint64_t size, int excl,
				     struct blob_stat *out)
{
	return s->ops->upload_commit(s, u, nparts, size, excl, out);
}

static inline void blob_upload_abort(struct blob_store *s, struct blob_upload *u)
{
	s->ops->upload_abort(s, u);
}

static inline int blob_remove(struct blob_store *s, const char *key)
{
	return s->ops->remove(s, key);
}

static inline int blob_move(struct blob_store *s, const char *src, const char *dst,
			    struct blob_stat *out)
{
	return s->ops->move(s, src, dst, out);
}

/*
 * Reads a whole small blob (at most max bytes) and the etag of the version read.
 * *data is a NUL-terminated heap copy the caller frees. -EFBIG when larger than max.
 */
int blob_get(struct blob_store *s, const char *key, size_t max, char **data, size_t *len,
	     char etag[BLOB_ETAG_MAX]);

/*
 * An MLflow tracking server (mlflow+http(s)://HOST[:PORT][/PATH]) is a store whose
 * registry is MLflow's own: registering and aliases go to its API.
 */
int blob_is_mlflow(const struct blob_store *s);
/* Creates a version of model name from source (runs/<experiment>/<run id>/<path>),
 * waits until the server has it READY; *version: its number. */
int blob_mlflow_register(struct blob_store *s, const char *name, const char *source,
			 const char *description, const char **tags, size_t ntags,
			 int *version, char *err, size_t errlen);
/* Sets (version > 0) or deletes (version 0) an alias of model name. */
int blob_mlflow_alias(struct blob_store *s, const char *name, const char *alias, int version,
		      char *err, size_t errlen);

/* Listing helpers. blob_list_add copies name; cannot fail but for -ENOMEM. */
void blob_list_init(struct blob_list *l);
int blob_list_add(struct blob_list *l, const struct blob_entry *e);
void blob_list_release(struct blob_list *l);
/* Sorts by name, then drops what may not appear in a tree (see blob_name_ok), and a
 * blob that shares its name with a folder, each with one warning naming folder. */
void blob_list_clean(struct blob_list *l, const char *folder);

/* FNV-1a over n bytes of p, from h (BLOB_FNV_INIT to start): the one string hash of
 * the project (bucket picks, names of cache files; never a check of content). */
#define BLOB_FNV_INIT 1469598103934665603ull
uint64_t blob_fnv(const void *p, size_t n, uint64_t h);

/* url as error messages may show it: without a query or fragment (a SAS signature)
 * and with user info, but for wasb(s)'s CONTAINER@, as "***" (a password, a token);
 * as much of it as size holds. */
void blob_url_shown(const char *url, char *out, size_t size);

/* One line of /proc/self/mountinfo: its mount point (unescaped), its file system type
 * ("fuse.artifactfs") and its device ("0:42"); tsize or dsize 0 when not wanted. 0,
 * or -1 for a line of another shape. */
int blob_mountinfo_line(const char *line, char *point, size_t psize, char *fstype,
			size_t tsize, char *dev, size_t dsize);

/* Whether a key segment can be a file name: not empty, ".", "..", no '/', no
 * control character, at most NAME_MAX bytes. Cannot fail. */
int blob_name_ok(const char *name, size_t len);

#endif
