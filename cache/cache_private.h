/*
 * cache_private.h: the state shared by the files of cache/ and by nothing else.
 *
 * Lock order: cache->lock before nothing else; cache_file->lock is never held while
 * taking cache->lock in the other order (chunk code takes cache->lock only with no
 * file lock held, or file lock then cache lock: never cache lock then file lock).
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
	char hex[CACHE_HEX_LEN + 1]; /* SHA-256 of store id, key, etag and chunk size */
};

enum chunk_state { CHUNK_ABSENT, CHUNK_FETCHING, CHUNK_PRESENT };

/* One chunk the cache knows of: on disk, being fetched, or held by a reader. All
 * fields are protected by cache->lock. */
struct cache_chunk {
	struct cache_chunk *hnext;	/* hash chain */
	struct cache_chunk *prev, *next; /* LRU list of PRESENT chunks, head = newest */
	char hex[CACHE_HEX_LEN + 1];
	uint64_t index;
	enum chunk_state state;
	int refs;			/* readers inside chunk code */
	unsigned gen;			/* fetches finished */
	int err;			/* how the last fetch failed, or 0 */
	uint64_t disk_bytes;		/* size of the chunk file when PRESENT */
	/* The file as last verified: a file with another inode, size, mtime or ctime
	 * (written since) is verified again before it is served. */
	int verified;
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
};

#define CACHE_QUEUE_MAX 256
/* Threads that refresh listings and records in the background: each may wait out a
 * store's deadline, so a few, and readers of copies never wait for them. */
#define CACHE_REFRESHERS 4
#define CACHE_MAX_WORKERS 32

struct cache {
	struct blob_store *store;	/* owned */
	char *dir;
	uint64_t max_bytes;
	uint32_t chunk_size;
	unsigned ttl, nworkers, readahead;

	pthread_mutex_t lock;
	pthread_cond_t cond;		/* a chunk or meta fetch finished */
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
int cache_write_file(struct cache *c, const char *path, const void *data, size_t len,
		     int durable);

/* chunk.c: the chunk table (see chunk.c's head comment). cache_chunk_find wants
 * cache->lock held; cache_chunk_access takes it itself. */
struct cache_chunk *cache_chunk_find(struct cache *c, const char *hex, uint64_t index);
int cache_chunk_access(struct cache *c, struct cache_blob *b, uint64_t index, char *dst,
		       uint64_t coff, size_t n, struct cache_span *span);
int cache_chunks_scan(struct cache *c);
void cache_chunks_free(struct cache *c);
void *cache_worker(void *arg);
void cache_blob_unref(struct cache *c, struct cache_blob *b);

/* lease.c (see its head comment). Leases are tried once cache_lease_start has made
 * their signal harmless. cache_lease_open opens a chunk file and leases it: 1 and a
 * leased fd (held unchanged until closed); 0 and a plain fd (no leases here); -EBADMSG
 * when another process has the file open for writing; -ENOENT or -errno. */
void cache_lease_start(struct cache *c);
int cache_lease_open(struct cache *c, const char *path, int *fd);

/* hash.c (see its head comment). cache_hash_note records a read of [off, off+len)
 * and, when that read completes the file, waits for the verdict: 0, -EBADMSG on a
 * mismatch, or -errno when the hash could not be finished. cache_hash_failed: whether
 * a mismatch was found (-EBADMSG) or not (0). */
#define HASH_PIECE (1u << 20)
void *cache_hasher(void *arg);
int cache_hash_note(struct cache_file *f, uint64_t off, size_t len);
int cache_hash_failed(struct cache_file *f);
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
