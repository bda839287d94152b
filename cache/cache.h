/*
 * cache.h: the read-through disk cache between the tree (fs/) and the store (blob/).
 *
 * Contract:
 * - File bytes are kept in fixed-size chunks on local disk, keyed by store id, blob
 *   key, etag and chunk size: a changed blob is a new entry, so stale bytes are never
 *   served. Each chunk is fetched once, however many readers wait for it; sequential
 *   readers make the cache prefetch ahead in parallel, runs of chunks with one ranged
 *   read each. A chunk being fetched is in memory, and readers are served from there
 *   as its bytes arrive; it is written to disk behind them (memory bounded by
 *   cache_config.mem_bytes).
 * - A chunk file becomes visible by rename(2) only once complete and carries a
 *   CRC32C trailer, so a partial, truncated or damaged chunk is detected and fetched
 *   again, never served. Chunks survive unmount and restart; the cache stays within
 *   its size bound by evicting the least recently used chunk no reader holds.
 * - Listings and small records (registry JSON) are kept in memory (least recently
 *   used dropped beyond a bound) and on disk: they refresh after the TTL. A reader
 *   never waits on the store for what has a copy: past the TTL the copy is answered
 *   when the refresh has not come back within CACHE_STALE_WAIT_MS (at once while the
 *   store counts as down), and the refresh goes on in the background, one per key.
 *   When the store fails, the last copy is served.
 * - One cache folder serves one cache at a time: cache_create refuses a folder that
 *   another process holds (a lock that dies with its holder).
 * - Nothing secret is written: the store's id names it.
 *
 * Every fallible function returns 0 (or a byte count) or -errno, with blob.h's
 * meanings: -ESTALE means the blob no longer has the etag the file was opened at.
 *
 * Threads: every function is thread-safe. Lock order: cache->lock, then
 * cache_file->lock is never taken while cache->lock is held (they are independent);
 * the meta lock (listings and records) is taken with no other lock held. No lock is
 * held across store or disk I/O, but for unlink(2) of evicted chunks.
 */
#ifndef CACHE_CACHE_H
#define CACHE_CACHE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "../blob/blob.h"

#define CACHE_DEFAULT_CHUNK (8u << 20)
#define CACHE_DEFAULT_SIZE (20ull << 30)

struct cache;
struct cache_file;

struct cache_config {
	const char *dir;	/* created 0700 if missing */
	uint64_t max_bytes;	/* bound on chunk bytes on disk */
	uint32_t chunk_size;	/* bytes per chunk; 0 = CACHE_DEFAULT_CHUNK */
	unsigned ttl;		/* seconds a listing or mutable record stays fresh */
	unsigned workers;	/* prefetch threads; 0 = none */
	unsigned readahead;	/* most chunks prefetched ahead of a sequential reader */
	uint64_t meta_bytes;	/* bound on listings and records in memory; 0 = default */
	uint64_t mem_bytes;	/* bound on chunk bytes held in memory; 0 = default */
	const char *holder;	/* names the user of the folder (a mount point), for
				 * the refusal of a second one; NULL = none */
};

/* Listings and records in memory, by default: a folder of about 250,000 entries, or
 * many smaller ones; what is dropped is read again from disk when asked for. */
#define CACHE_DEFAULT_META_BYTES (64ull << 20)
/* Chunks in memory while they are fetched and written, and after while there is room:
 * eight 8 MiB chunks, enough for a sequential reader's prefetch window. At least
 * CACHE_MEM_MIN chunks whatever the bound. */
#define CACHE_DEFAULT_MEM_BYTES (64ull << 20)
#define CACHE_MEM_MIN 4
/* How long a reader of a stale copy waits for its refresh before taking the copy. */
#define CACHE_STALE_WAIT_MS 1000

/*
 * Opens the cache folder for store (which the cache takes over: cache_destroy frees
 * it). Scans the chunks already there. Starts no thread: call cache_start() once the
 * process will not fork again. On failure writes one line into err: -EBUSY when
 * another process holds the folder (the line names its holder).
 */
int cache_create(const struct cache_config *cfg, struct blob_store *store,
		 struct cache **out, char *err, size_t errlen);
/* Starts the prefetch workers and the refreshers, and reads under file leases (which
 * makes the process ignore SIGIO: the signal of a lease break). Records this process
 * as the folder's holder. */
int cache_start(struct cache *c);
/* Stops the workers and frees everything; files must all be closed. */
void cache_destroy(struct cache *c);
/* The store, borrowed for the cache's lifetime. Cannot fail. */
struct blob_store *cache_store(struct cache *c);
/* The cache folder. Cannot fail. */
const char *cache_folder(const struct cache *c);

/* ---- listings and records ---- */

/* An immutable snapshot of one folder level, sorted by name and cleaned
 * (blob_list_clean). Shared: take with cache_list, drop with cache_listing_unref. */
struct cache_listing {
	struct blob_list list;
	int refs; /* protected by the owning cache's meta lock */
	struct cache *cache;
};

/* The listing of prefix, fresh within the TTL. -ENOENT for an empty/missing folder. */
int cache_list(struct cache *c, const char *prefix, struct cache_listing **out);
void cache_listing_unref(struct cache_listing *l);
/* Binary search by name; NULL when absent. Borrowed from l. */
const struct blob_entry *cache_listing_find(const struct cache_listing *l, const char *name);

/*
 * A whole small blob (a registry record). immutable: once seen, never fetched again.
 * Otherwise refreshed after the TTL. *data is a NUL-terminated copy the caller frees.
 */
int cache_record(struct cache *c, const char *key, int immutable, char **data, size_t *len);
/* Drops the copies (memory and disk) of a record, so the next cache_record asks the
 * store: for a kept copy found unusable. */
void cache_record_forget(struct cache *c, const char *key);
/* Whether the cache folder holds listings of this store from an earlier mount, so a
 * mount can serve them while the store is unreachable. Cannot fail. */
int cache_knows_store(struct cache *c);
/*
 * Changes the copy of the listing of prefix after a change made through the mount:
 * the entry name becomes e (NULL: it is gone). A listing not in memory is asked of
 * the store next time. Cannot fail (out of memory, the copy is marked out of date).
 */
void cache_listing_edit(struct cache *c, const char *prefix, const char *name,
			const struct blob_entry *e);
/* Marks the copy of a listing out of date (after the tree learns it is). */
void cache_forget_listing(struct cache *c, const char *prefix);
/*
 * The store's current properties of key, for pinning an open file to a version: 0
 * with *st, -ENOENT, -EACCES or -EIO as the store answers, or -ETIMEDOUT when no
 * answer came within CACHE_STALE_WAIT_MS (at once while the store counts as down):
 * the caller then goes on with what its listing says. One question per key at a
 * time, however many ask.
 */
int cache_stat(struct cache *c, const char *key, struct blob_stat *st);
/* Figures of the in-memory listings and records, for tests. Cannot fail. */
void cache_meta_usage(struct cache *c, size_t *count, size_t *bytes);

/* ---- file bytes ---- */

/*
 * Opens the blob key at etag for reading through the cache. sha256 (64 hex digits)
 * or NULL: when given, a file read whole in order is checked against it, and the
 * read that reaches the end fails with -EBADMSG on a mismatch (logged by the cache),
 * as does every later read of that open file.
 */
int cache_file_open(struct cache *c, const char *key, const char *etag, uint64_t size,
		    const char *sha256, struct cache_file **out);
/* Reads up to len bytes at off. Short only at the end of the blob. */
ssize_t cache_file_read(struct cache_file *f, void *buf, size_t len, uint64_t off);
void cache_file_close(struct cache_file *f);

/* A piece of a blob in a cache file, checked and held unchanged (no other process
 * can write the file) until given back with cache_span_release. */
struct cache_span {
	int fd;			/* borrowed: do not close */
	uint64_t off;		/* where the piece starts in the file */
	size_t len;
	const char *mem;	/* the piece's bytes when they are in memory, else NULL */
	void *hold;
	int in_mem;		/* held in the cache's memory (fd is a memfd) */
};

/*
 * Maps [off, off+len) of the blob to pieces of verified cache files (at most max),
 * fetching what is missing, so the bytes can go to the reader without a copy through
 * the daemon. Returns the bytes mapped (short at the end of the blob, or when max
 * pieces were not enough) or -errno; -EAGAIN when this read must go through
 * cache_file_read (the file is being hashed, the cache cannot keep its chunks, or
 * the cache folder cannot hold files unchanged: no file leases there).
 */
ssize_t cache_file_map(struct cache_file *f, uint64_t off, size_t len,
		       struct cache_span *spans, int max, int *nspans);
/* Gives back a span once its bytes are sent. */
void cache_span_release(struct cache *c, const struct cache_span *sp);

/* Drops the chunks held in memory that no reader uses (their bytes stay on disk) and
 * gives that memory back. Cannot fail. */
void cache_mem_trim(struct cache *c);

/* ---- files written through the mount (stage.c) ----
 *
 * A file being written is staged in DIR/staging (never only in memory) and sent to
 * the store as one blob by cache_stage_upload: whole, or not at all. Parts a writer
 * has finished in order go up while it writes on, so an upload waits mostly for the
 * tail. A staged file not freed (a failed upload, a daemon that died) stays in the
 * folder, and the next cache over it names it in the log.
 */
struct cache_stage;

/* A new empty staged file for key (which it will be uploaded as). */
int cache_stage_create(struct cache *c, const char *key, struct cache_stage **out);
/* Fills it with the blob's bytes at etag (size bytes), to change a file in place. */
int cache_stage_fill(struct cache_stage *st, const char *etag, uint64_t size);
/* Writes at off: len, or -errno (-ENOSPC when the cache's disk is full); after a
 * failed write the file never uploads (cache_stage_upload answers that error). */
ssize_t cache_stage_write(struct cache_stage *st, const void *buf, size_t len, uint64_t off);
/* Writes at the end of the staged file, wherever another writer has put it
 * (O_APPEND: the kernel's idea of the size may be older). */
ssize_t cache_stage_append(struct cache_stage *st, const void *buf, size_t len);
ssize_t cache_stage_read(struct cache_stage *st, void *buf, size_t len, uint64_t off);
int cache_stage_truncate(struct cache_stage *st, uint64_t size);
uint64_t cache_stage_size(struct cache_stage *st);
/* How a write to it failed (-errno: it never uploads), or 0. */
int cache_stage_broken(struct cache_stage *st);
/* How many writes and truncations it has had. Cannot fail. */
uint64_t cache_stage_changes(struct cache_stage *st);
/* Whether it changed since its last upload (a new file: until its first). */
int cache_stage_dirty(struct cache_stage *st);
/* Makes the store's blob this file (excl: only if the key is free, -EEXIST), with
 * the new version in *out; 0 at once when nothing changed since the last upload. */
int cache_stage_upload(struct cache_stage *st, int excl, struct blob_stat *out);
/* The key it will be uploaded as becomes key (a rename while open). */
int cache_stage_rekey(struct cache_stage *st, const char *key);
/* Where its bytes are, for log lines. Cannot fail. */
const char *cache_stage_path(const struct cache_stage *st);
/* Frees it; keep leaves its bytes in the folder (an upload that failed). */
void cache_stage_free(struct cache_stage *st, int keep);

/* ---- figures, for tests and stats ---- */
struct cache_stats {
	uint64_t fetches;	/* ranged reads sent to the store for chunks */
	uint64_t fetched_bytes;
	uint64_t disk_bytes;	/* bytes of chunk files on disk */
	uint64_t chunks;	/* chunk files on disk */
	uint64_t damaged;	/* chunk files found damaged and dropped */
	uint64_t checked;	/* chunk files read whole to check them */
	uint64_t evicted;
	uint64_t mem_bytes;	/* chunk buffers in memory (mem.c) */
	uint64_t hits;		/* chunk reads the cache had (disk or memory) */
	uint64_t misses;	/* chunk reads that waited for the store */
	uint64_t served_bytes;	/* bytes read from files through the cache */
	uint64_t max_bytes;	/* the bound on disk_bytes (--cache-size) */
	uint64_t uploads;	/* staged files uploaded (writable mounts) */
	uint64_t upload_failures;
	uint64_t uploaded_bytes;
};
void cache_get_stats(struct cache *c, struct cache_stats *out);

#endif
