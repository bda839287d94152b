/*
 * cache_private.h: the state shared by the files of cache/ and by nothing else.
 *
 * Lock order: cache->lock before nothing else; cache_file->lock is never held while
 * taking cache->lock in the other order (chunk code takes cache->lock only with no
 * file lock held, or file lock then cache lock: never cache lock then file lock).
 * cache->lock guards the chunk table, the LRU, the chunk buffers (mem.c), the
 * prefetch queue and the writer's queue; its condition variables are one per kind of
 * wait (cond: a chunk's bytes or state; mem_cond: a buffer; work, write_work,
 * hash_work: a thread's queue), and waiters of cond are woken only when what they
 * wait for may be there (struct cache_mem.want). The metas have their own lock.
 */
#ifndef CACHE_PRIVATE_H
#define CACHE_PRIVATE_H

#include "cache.h"

#include <limits.h>
#include <pthread.h>
#include <sys/stat.h>
#include <time.h>

#define CACHE_HEX_LEN 64

/* Identity of one blob version in the cache; shared by files and prefetch jobs. */
struct cache_blob {
	int refs; /* protected by cache->lock */
	char *key;
	char etag[BLOB_ETAG_MAX];
	uint64_t size;
	unsigned flags; /* of the store's reads of it: BLOB_PINNED_READS, BLOB_WHOLE_READS */
	char hex[CACHE_HEX_LEN + 1]; /* SHA-256 of store id, key, etag and chunk size */
};

enum chunk_state { CHUNK_ABSENT, CHUNK_FETCHING, CHUNK_PRESENT };

struct cache_chunk;

/*
 * A chunk's bytes in memory (mem.c). A fetch fills one as the store's answer arrives,
 * in order; readers are served from it as far as it is filled, without waiting for
 * the rest or for the disk; the writer thread then writes it to the chunk file with
 * direct I/O (no copy through the page cache), and it stays attached to its chunk
 * until the pool needs it for another. Bytes below filled never change while the
 * buffer is attached to a chunk or referenced. The bytes live in a memfd, so a reply
 * can splice them to the kernel like a chunk file's. All fields are protected by
 * cache->lock.
 */
struct cache_mem {
	struct cache_mem *prev, *next;	/* the idle list (refs 0, not busy): head = used last */
	struct cache_chunk *chunk;	/* whose bytes these are; NULL: free */
	int fd;				/* the memfd */
	char *buf;			/* its mapping, chunk_size bytes */
	uint64_t len;			/* the chunk's length */
	uint64_t filled;		/* bytes arrived, from 0 */
	uint64_t want;			/* the fewest bytes a waiting reader needs, 0 none:
					 * readers are woken when filled reaches it */
	int busy;			/* being filled or written to disk */
	int refs;			/* readers using its bytes outside the lock */
	int idle;			/* on the idle list */
	int consumed;			/* a reader has had its last byte: it goes when idle */
};

/* One chunk the cache knows of: on disk, being fetched, in memory, or held by a
 * reader. All fields are protected by cache->lock. */
struct cache_chunk {
	struct cache_chunk *hnext;	/* hash chain */
	struct cache_chunk *prev, *next; /* LRU list of PRESENT chunks, head = newest */
	char hex[CACHE_HEX_LEN + 1];
	uint64_t index;
	enum chunk_state state;
	int refs;			/* readers inside chunk code, and its fetch */
	struct cache_mem *mem;		/* its bytes in memory, or NULL */
	unsigned gen;			/* fetches finished */
	int err;			/* how the last fetch failed, or 0 */
	uint64_t disk_bytes;		/* size of the chunk file when PRESENT */
	/* The file as last verified: a file with another inode, size, mtime or ctime
	 * (written since) is verified again before it is served. */
	int verified;
	int checking;			/* one thread verifies the file (chunk_check) */
	ino_t ino;
	off_t fsize;
	struct timespec fmtime, fctime;
	time_t touched;			/* last atime update, seconds */
};

/* One cached listing, record or blob stat (see meta.c). Fields protected by
 * cache->meta_lock; name never changes, so a holder (users, queued) reads it freely. */
struct cache_meta {
	struct cache_meta *hnext;	/* hash chain */
	struct cache_meta *prev, *next;	/* LRU list, head = most recently used */
	struct cache_meta *qnext;	/* the refreshers' queue */
	char *name;			/* "L" + prefix, "R" + key or "S" + key */
	int loaded;			/* has a value (or a known absence) */
	int missing;			/* the store said ENOENT */
	int immutable;			/* a record never fetched again once seen */
	int disk_tried;			/* the disk copy was looked for */
	int loading;			/* one thread reads the disk copy */
	int fetching;			/* one thread asks the store */
	int edited;			/* changed through the mount while fetching */
	int queued;			/* in the refreshers' queue */
	int users;			/* threads holding it outside the lock: kept */
	unsigned answers;		/* refreshes that ended, answered or failed */
	int last_err;			/* how the last refresh failed, or 0 */
	time_t checked;			/* monotonic seconds of the last answer */
	uint64_t fetch_started;		/* monotonic ms the refresh under way began */
	struct cache_listing *listing;	/* "L": the snapshot (one ref held here) */
	char *data;			/* "R": the bytes */
	size_t len;
	struct blob_stat st;		/* "S" */
	size_t bytes;			/* memory it holds, for the bound */
};

struct cache_job {
	struct cache_blob *blob;	/* one ref held by the job */
	uint64_t index;
	unsigned count;			/* chunks from index, fetched with one ranged read */
};

#define CACHE_QUEUE_MAX 256
/* Most chunks one ranged read fetches: 128 MiB, so a sequential reader's bytes come in
 * a few large answers, as a download's would (Azurite spends about 30 ms on each
 * request besides the bytes, and more CPU per byte on smaller ones); the mount's
 * readahead of 64 chunks keeps four of them going at once. */
#define CACHE_RUN_MAX 16
/* Threads that refresh listings and records in the background: each may wait out a
 * store's deadline, so a few, and readers of copies never wait for them. */
#define CACHE_REFRESHERS 4
/* Parts of uploads sent at once (stage.c). */
#define CACHE_UPLOADERS 8
#define CACHE_MAX_WORKERS 32

struct cache {
	struct blob_store *store;	/* owned */
	char *dir;
	uint64_t max_bytes;
	uint32_t chunk_size;
	unsigned ttl, nworkers, readahead;

	pthread_mutex_t lock;
	pthread_cond_t cond;		/* a chunk fetch grew or finished, or writes done */
	unsigned chunk_waiters;		/* readers waiting on cond for a chunk's bytes */
	/* protected by lock: */
	struct cache_chunk **chunks;	/* hash table */
	size_t nbuckets, nchunks;
	struct cache_chunk *lru_head, *lru_tail;
	struct cache_stats stats;
	struct cache_job queue[CACHE_QUEUE_MAX];
	size_t qhead, qlen;
	int stopping;
	pthread_cond_t work;		/* the queue has a job, or stopping */

	pthread_t workers[CACHE_MAX_WORKERS];
	unsigned started;
	/* hash.c; under lock */
	struct cache_file *hash_head, *hash_tail;
	pthread_cond_t hash_work;	/* a file to hash, or stopping */
	pthread_t hasher;
	int hasher_started;
	char *hash_buf;			/* the hasher's, HASH_PIECE bytes */

	int lease_mode;			/* lease.c: 1 leases work, 0 untried, -1 not here */

	/* mem.c: the pool of chunk buffers, under lock */
	struct cache_mem **mems;	/* every buffer made, at most mem_max */
	unsigned nmems, mem_max, mem_making;
	struct cache_mem *idle_head, *idle_tail;
	pthread_cond_t mem_cond;	/* a buffer went idle (monotonic clock) */
	int direct_io;			/* 1 chunk files take O_DIRECT, 0 untried, -1 not */
	/* fetch.c: the writer of chunk files, under lock */
	struct cache_write *write_head, *write_tail;
	pthread_cond_t write_work;	/* a chunk to write, or stopping (monotonic clock) */
	pthread_t writer;
	int writer_started, writer_stopping;
	unsigned writes;		/* handed to the writer and not yet done */

	/* meta.c: listings, records and stats. meta_lock is taken with no other lock
	 * held, and no other layer's lock is taken under it (the store's state is asked
	 * before). */
	pthread_mutex_t meta_lock;
	pthread_cond_t meta_cond;	/* a refresh ended, or a disk copy was read */
	pthread_cond_t meta_work;	/* the refreshers' queue has work, or stopping */
	/* protected by meta_lock: */
	struct cache_meta **metas;
	size_t nmeta_buckets, nmetas;
	struct cache_meta *meta_head, *meta_tail;	/* LRU */
	size_t meta_bytes;		/* held by all metas */
	size_t meta_max;		/* bound on meta_bytes (fixed at create) */
	struct cache_meta *refresh_head, *refresh_tail;
	int meta_stopping;
	pthread_t refreshers[CACHE_REFRESHERS];
	unsigned nrefreshers;

	/* stage.c: the upload threads and their queue, under stage_lock (taken after a
	 * staged file's lock, never before) */
	pthread_mutex_t stage_lock;
	pthread_cond_t stage_work;	/* a part to send, or stopping */
	struct stage_job *stage_head, *stage_tail;
	pthread_t uploaders[CACHE_UPLOADERS];
	unsigned nuploaders;
	int stage_stopping;

	time_t started_wall;		/* wall clock at create: older disk copies are stale */
	int lock_fd;			/* DIR/lock, flock'ed while the cache lives; -1 none */
	char *holder;			/* cache_config.holder, or NULL */
};

/* A reader's open blob. */
struct cache_file {
	struct cache *cache;
	struct cache_blob *blob;
	pthread_mutex_t lock;
	/* protected by lock: */
	uint64_t next_off;		/* where a sequential reader reads next */
	uint64_t window;		/* chunks to prefetch ahead */
	uint64_t scheduled;		/* chunks below this index were prefetched */
	uint64_t seq_bytes;		/* read in order since the last jump */
	/* the sha256 check (hash.c), when there is one to make; under lock but for
	 * sha, which only the one hashing (hash_queued) touches */
	void *sha;			/* EVP_MD_CTX */
	uint64_t hash_off;		/* bytes hashed in order so far */
	uint8_t *touched;		/* bitmap: chunks read through this file */
	uint64_t ntouched, nchunks;
	unsigned char want[32];
	int hash_state;			/* 0 running, 1 matched, -1 mismatch */
	int hash_err;			/* why the hash could not go on (the store failed) */
	unsigned hash_err_gen;		/* hash_err set so many times */
	pthread_cond_t hash_done;	/* hash_state or hash_err set */
	char mark[PATH_MAX];		/* the sha256 mark to write once matched */
	/* protected by cache->lock: */
	int refs;			/* the opener's, and the hasher's while queued */
	int closed;			/* set under both locks: read under either */
	int hash_queued;		/* in the hasher's queue or being hashed */
	int hash_more;			/* read since the hasher took it */
	struct cache_file *hash_next;
};

/* crc32c.c: crc 0 to start, the previous result to go on. Cannot fail. */
uint32_t cache_crc32c(uint32_t crc, const void *buf, size_t len);
/* The same with the byte table only, to check the fast one against. */
uint32_t cache_crc32c_portable(uint32_t crc, const void *buf, size_t len);

/* cache.c */
uint64_t cache_hash_str(const char *s, uint64_t seed);
time_t cache_now(void);
uint64_t cache_now_ms(void);
void cache_sha256_hex(const void *parts[], const size_t lens[], int n,
		      char hex[CACHE_HEX_LEN + 1]);
/* Writes data to path atomically (temp file in dir/tmp, rename); durable: fsync'd
 * first, for what is never fetched again (immutable records). */
/* stage.c. Parts of an upload: CACHE_PART bytes, more for a file that would need
 * more than BLOB_PARTS_MAX parts, up to CACHE_PART_MAX (a blob of 5 TB). Parts sent
 * at once, for every staged file together. */
#define CACHE_PART (8u << 20)
#define CACHE_PART_MAX (512u << 20)
/* Lists the staged files an earlier mount left (logged): how many, or -errno. */
int cache_stage_scan(struct cache *c);
/* Stops the upload threads (nothing may be uploading). */
void cache_stage_stop(struct cache *c);

int cache_write_file(struct cache *c, const char *path, const void *data, size_t len,
		     int durable);

/*
 * chunk.c: the chunk table (see chunk.c's head comment). cache_chunk_find,
 * cache_chunk_get and cache_chunk_put want cache->lock held; the others take it.
 *
 * Each way of using a chunk has its own function:
 * - cache_chunk_ready waits until bytes [0, end) of the chunk can be read (in memory
 *   or in a verified file), fetching it when nobody is: the one that waits on the
 *   store, with no lease held;
 * - cache_chunk_span hands over [coff, coff+n) as a span, never waiting: -EAGAIN when
 *   the chunk is not ready any more (a caller's next round makes it ready again);
 *   with consume, a span that reaches the chunk's end lets its buffer go once idle
 *   (the bytes stay on disk): a reader that will not come back, unlike the hasher;
 * - cache_chunk_copy copies bytes out (ready, then a copy);
 * - cache_chunk_prefetch fetches runs of absent chunks with one ranged read each,
 *   and verifies present ones ahead of a reader (the workers').
 */
struct cache_chunk *cache_chunk_find(struct cache *c, const char *hex, uint64_t index);
struct cache_chunk *cache_chunk_get(struct cache *c, const char *hex, uint64_t index);
void cache_chunk_put(struct cache *c, struct cache_chunk *ch);
uint64_t cache_chunk_len(const struct cache *c, const struct cache_blob *b, uint64_t index);
/* Whether the store's bytes of b may be used as they arrive (BLOB_PINNED_READS). */
static inline int cache_pinned_reads(const struct cache_blob *b)
{
	return !!(b->flags & BLOB_PINNED_READS);
}
int cache_chunk_ready(struct cache *c, struct cache_blob *b, uint64_t index, uint64_t end);
int cache_chunk_span(struct cache *c, struct cache_blob *b, uint64_t index, uint64_t coff,
		     size_t n, int consume, struct cache_span *sp);
int cache_chunk_copy(struct cache *c, struct cache_blob *b, uint64_t index, char *dst,
		     uint64_t coff, size_t n, int consume);
void cache_chunk_prefetch(struct cache *c, struct cache_blob *b, uint64_t index,
			  unsigned count);
/* Makes a chunk that a fetch left PRESENT on disk or ABSENT (keeping only memory)
 * known to the table: accounting, LRU, eviction. Under cache->lock. */
void cache_chunk_stored(struct cache *c, struct cache_chunk *ch, const struct stat *st,
			int checked);
/* Writes a chunk file: bytes, trailer, fixed mtime, rename into place, identity (see
 * chunk.c). fd is a temp file in DIR/tmp named tmp, open for writing; closed here. */
int cache_chunk_commit(struct cache *c, int fd, const char *tmp, const struct cache_blob *b,
		       uint64_t index, const char *data, uint64_t len, uint32_t crc,
		       struct stat *st, int *checked);
/* Evicts until need more bytes fit within the bound, or (full: a disk found full)
 * until need bytes of chunk files are gone. Takes cache->lock. */
void cache_chunks_make_room(struct cache *c, uint64_t need, int full);
/* The size of the file of a chunk of len bytes (with its trailer). Cannot fail. */
uint64_t cache_chunk_file_size(uint64_t len);
int cache_chunks_scan(struct cache *c);
void cache_chunks_free(struct cache *c);
/* Whether a chunk's file, as last seen, carries the mark of a checked file (the fixed
 * mtime). Under cache->lock. Cannot fail. */
int cache_chunk_marked(const struct cache_chunk *ch);

/* known.c: the chunk files checked, for the next cache over the folder: listed at a
 * clean end, read (and removed) at start, marking verified the chunks whose files
 * are unchanged. */
void cache_chunks_known_save(struct cache *c);
void cache_chunks_known_load(struct cache *c);
void *cache_worker(void *arg);
void cache_blob_unref(struct cache *c, struct cache_blob *b);

/* lease.c (see its head comment). Leases are tried once cache_lease_start has made
 * their signal harmless. cache_lease_open opens a chunk file and leases it: 1 and a
 * leased fd (held unchanged until closed); 0 and a plain fd (no leases here); -EBADMSG
 * when another process has the file open for writing; -ENOENT or -errno. */
void cache_lease_start(struct cache *c);
int cache_lease_open(struct cache *c, const char *path, int *fd);

/* mem.c (see struct cache_mem). cache_mem_get: a buffer for ch's bytes, attached to
 * ch and busy: a free one, else a new one while the pool is below its bound, else the
 * idle one used longest ago (its chunk is then read from disk), else it waits for
 * one. NULL when stopping or out of memory. cache_mem_ref/unref around a use of its bytes outside the lock;
 * cache_mem_done ends its fetch (busy), cache_mem_detach takes it from its chunk. All
 * under cache->lock (cache_mem_get drops it while it makes a buffer). */
struct cache_mem *cache_mem_get(struct cache *c, struct cache_chunk *ch, uint64_t len);
void cache_mem_ref(struct cache *c, struct cache_mem *m);
void cache_mem_unref(struct cache *c, struct cache_mem *m);
void cache_mem_done(struct cache *c, struct cache_mem *m);
void cache_mem_detach(struct cache *c, struct cache_mem *m);
void cache_mems_free(struct cache *c);
/* cache_mem_trim without waiting for the writer: the writer's own. */
void cache_mem_trim_idle(struct cache *c);

/* fetch.c: fetches count chunks from index that the caller has claimed (FETCHING,
 * one ref each, which the fetch hands back) with one ranged read into memory buffers,
 * readers served as bytes arrive; each whole chunk goes to the writer. 0 or -errno. */
int cache_fetch_run(struct cache *c, struct cache_blob *b, uint64_t index, unsigned count);
/* For a blob the store sends whole only (BLOB_WHOLE_READS): every chunk of it that is
 * absent, fetched in one read from its first byte; chunk claimed is the caller's
 * (FETCHING, with the fetch's ref), the others are claimed here. No lock held. */
int cache_fetch_whole(struct cache *c, struct cache_blob *b, uint64_t claimed);
void *cache_writer(void *arg);
/* Stops the writer, writing what it was given first. */
void cache_writer_stop(struct cache *c);

/* hash.c (see its head comment). cache_hash_note records a read of [off, off+len)
 * and, when that read completes the file, waits for the verdict: 0, -EBADMSG on a
 * mismatch, or -errno when the hash could not be finished. cache_hash_failed: whether
 * a mismatch was found (-EBADMSG) or not (0). */
#define HASH_PIECE (1u << 20)
void *cache_hasher(void *arg);
int cache_hash_note(struct cache_file *f, uint64_t off, size_t len);
int cache_hash_failed(struct cache_file *f);
/* Whether f's bytes are still to be hashed (the hasher will read them). */
int cache_hash_pending(struct cache_file *f);
/* Drops a reference to an open file; the last one frees it. */
void cache_file_unref(struct cache_file *f);

/* meta_disk.c: the disk copies. cache_meta_path: where the cache keeps what it knows
 * under name (a listing, a record, a mark). The loads give -ENOENT for no usable copy
 * (a damaged one is dropped) and *saved, the wall-clock time it was written. */
void cache_meta_path(struct cache *c, const char *name, char *path, size_t size);
int cache_record_save(struct cache *c, const char *path, const char *data, size_t len,
		      int durable);
int cache_record_load(const char *path, char **data, size_t *len, time_t *saved);
int cache_listing_save(struct cache *c, const char *name, const struct blob_list *l,
		       int missing);
int cache_listing_load(struct cache *c, const char *name, struct blob_list *l, int *missing,
		       time_t *saved);

/* meta.c */
int cache_metas_init(struct cache *c, size_t max_bytes);
int cache_metas_start(struct cache *c);
/* Stops the refreshers (the store must already be stopped) and frees every meta. */
void cache_metas_free(struct cache *c);

#endif
