/*
 * file.c: a reader's open blob: reads through the chunks, sequential detection and
 * prefetch, and zero-copy mapping. The sha256 check of a file read whole is hash.c's.
 */
#include "cache_private.h"
#include "../blob/log.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Reads this close to where a sequential reader left off still count as in order:
 * the kernel sends readahead requests in parallel, so they arrive a little shuffled.
 * Capped at two chunks so that reads in distinct chunks never look sequential. */
#define CHUNK_SEQ_SLACK (4ull << 20)
/* A reader is sequential once it has read half a chunk's worth in order: the kernel's
 * readahead around one mmap fault (at most the mount's max_readahead, just under
 * 1 MiB) does not make a random reader look sequential. Then the window of chunks
 * fetched ahead starts at PREFETCH_FIRST and grows fourfold each time the reader
 * needs more, up to the readahead: a download's parallel requests are there from
 * the start, and every step of the ramp costs the reader a store's round trip. */
#define PREFETCH_FIRST 4
/* Chunks checked or read ahead from disk of a sequential reader of a cached file. */
#define PREFETCH_DISK 8

/* ---- blobs, files and prefetch ---- */

void cache_blob_unref(struct cache *c, struct cache_blob *b)
{
	int last;

	pthread_mutex_lock(&c->lock);
	last = --b->refs == 0;
	pthread_mutex_unlock(&c->lock);
	if (last) {
		free(b->key);
		free(b);
	}
}

void *cache_worker(void *arg)
{
	struct cache *c = arg;

	pthread_mutex_lock(&c->lock);
	while (!c->stopping) {
		if (c->qlen == 0) {
			pthread_cond_wait(&c->work, &c->lock);
			continue;
		}
		struct cache_job job = c->queue[c->qhead];
		c->qhead = (c->qhead + 1) % CACHE_QUEUE_MAX;
		c->qlen--;
		pthread_mutex_unlock(&c->lock);
		cache_chunk_prefetch(c, job.blob, job.index, job.count);
		cache_blob_unref(c, job.blob);
		pthread_mutex_lock(&c->lock);
	}
	pthread_mutex_unlock(&c->lock);
	return NULL;
}

static int hex_digit(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

/* The mark that says: this blob version was read whole and matched this sha256. The
 * etag pins the bytes, so it never needs checking again, and reads of it go without
 * a copy through the daemon. */
static void sha_mark_path(struct cache *c, const struct cache_blob *b, const char *sha256,
			  char *path, size_t size)
{
	char name[CACHE_HEX_LEN + 80];

	snprintf(name, sizeof(name), "S%s:%.64s", b->hex, sha256);
	cache_meta_path(c, name, path, size);
}

int cache_file_open(struct cache *c, const char *key, const char *etag, uint64_t size,
		    const char *sha256, struct cache_file **out)
{
	struct cache_file *f = calloc(1, sizeof(*f));
	struct cache_blob *b = calloc(1, sizeof(*b));
	char cs[32];
	int ret = -ENOMEM;

	*out = NULL;
	if (!f || !b || !(b->key = strdup(key)))
		goto fail;
	snprintf(b->etag, sizeof(b->etag), "%s", etag);
	snprintf(cs, sizeof(cs), "%u", c->chunk_size);
	const void *parts[] = { c->store->id, key, etag, cs };
	const size_t lens[] = { strlen(c->store->id), strlen(key), strlen(etag), strlen(cs) };
	cache_sha256_hex(parts, lens, 4, b->hex);
	b->size = size;
	b->flags = blob_read_flags(c->store, key, etag);
	b->refs = 1;
	f->cache = c;
	f->blob = b;
	f->window = PREFETCH_FIRST;
	f->refs = 1;
	pthread_mutex_init(&f->lock, NULL);
	pthread_cond_init(&f->hash_done, NULL);
	char mark[PATH_MAX];
	if (sha256 && strlen(sha256) == 64) {
		sha_mark_path(c, b, sha256, mark, sizeof(mark));
		if (access(mark, F_OK) == 0)
			sha256 = NULL; /* checked before */
	}
	if (sha256 && strlen(sha256) == 64) {
		int ok = 1;
		memcpy(f->mark, mark, sizeof(f->mark));
		for (int i = 0; i < 32 && ok; i++) {
			int hi = hex_digit(sha256[2 * i]), lo = hex_digit(sha256[2 * i + 1]);
			ok = hi >= 0 && lo >= 0;
			f->want[i] = (unsigned char)(hi << 4 | lo);
		}
		if (ok && size > 0) {
			f->nchunks = (size + c->chunk_size - 1) / c->chunk_size;
			f->touched = calloc((size_t)(f->nchunks + 7) / 8, 1);
			f->sha = EVP_MD_CTX_new();
			if (!f->touched || !f->sha ||
			    !EVP_DigestInit_ex(f->sha, EVP_sha256(), NULL)) {
				EVP_MD_CTX_free(f->sha);
				free(f->touched);
				pthread_cond_destroy(&f->hash_done);
				pthread_mutex_destroy(&f->lock);
				goto fail;
			}
		}
	}
	*out = f;
	return 0;
fail:
	if (b)
		free(b->key);
	free(b);
	free(f);
	return ret;
}

/* Whether a chunk in [from, to] must come from the store. Takes cache->lock (under
 * the file's lock: that order is allowed). */
static int file_any_absent(struct cache *c, const struct cache_blob *b, uint64_t from,
			   uint64_t to)
{
	int absent = 0;

	pthread_mutex_lock(&c->lock);
	for (uint64_t i = from; i <= to && !absent; i++) {
		struct cache_chunk *ch = cache_chunk_find(c, b->hex, i);
		absent = !ch || (ch->state == CHUNK_ABSENT && !ch->mem);
	}
	pthread_mutex_unlock(&c->lock);
	return absent;
}

/* Queues a prefetch job. Under cache->lock. */
static void file_queue(struct cache *c, struct cache_blob *b, uint64_t index, unsigned count)
{
	struct cache_job *j;

	if (c->qlen >= CACHE_QUEUE_MAX)
		return;
	j = &c->queue[(c->qhead + c->qlen) % CACHE_QUEUE_MAX];
	j->blob = b;
	j->index = index;
	j->count = count;
	b->refs++;
	c->qlen++;
	pthread_cond_signal(&c->work);
}

/* Decides what to prefetch for a read of [off, off+len) and queues it. */
static void file_prefetch(struct cache_file *f, uint64_t off, size_t len)
{
	struct cache *c = f->cache;
	struct cache_blob *b = f->blob;
	uint64_t nchunks = (b->size + c->chunk_size - 1) / c->chunk_size;
	uint64_t last = (off + len - 1) / c->chunk_size, from, to;
	int seq;

	if (c->readahead == 0 || c->nworkers == 0)
		return;
	pthread_mutex_lock(&f->lock);
	uint64_t slack = 2ull * c->chunk_size < CHUNK_SEQ_SLACK ? 2ull * c->chunk_size
								: CHUNK_SEQ_SLACK;
	seq = off + slack >= f->next_off && off <= f->next_off + slack;
	if (!seq) {
		f->seq_bytes = 0;
		f->window = PREFETCH_FIRST;
		f->scheduled = 0;
		f->next_off = off + len;
		pthread_mutex_unlock(&f->lock);
		return;
	}
	if (off + len > f->next_off) {
		f->seq_bytes += off + len - (off > f->next_off ? off : f->next_off);
		f->next_off = off + len;
	}
	if (f->seq_bytes < c->chunk_size / 2) {
		pthread_mutex_unlock(&f->lock);
		return;
	}
	/* Runs as long as the window allows, up to CACHE_RUN_MAX chunks: whole runs
	 * only (but for the blob's last chunks), so each ranged read is a large one.
	 * The fetches themselves wait for room in the memory pool (mem.c), so a window
	 * longer than the pool costs no memory. */
	uint64_t run = f->window < CACHE_RUN_MAX ? f->window : CACHE_RUN_MAX;
	from = f->scheduled > last + 1 ? f->scheduled : last + 1;
	to = last + f->window;
	if (to >= nchunks)
		to = nchunks - 1;
	if (from <= to && !file_any_absent(c, b, from, to)) {
		/* all on disk (or in memory): the disk needs a far shorter lead than the
		 * store, and a long one would queue the reader's next chunk behind
		 * hundreds of MiB of readahead; one chunk a job */
		if (to > last + PREFETCH_DISK)
			to = last + PREFETCH_DISK;
		run = 1;
	}
	if (from <= to && to + 1 < nchunks)
		to = from + (to + 1 - from) / run * run - 1;
	if (from <= to) {
		f->scheduled = to + 1;
		/* the window grows each time the reader needs more, up to readahead */
		if (f->window < c->readahead)
			f->window = f->window * 4 > c->readahead ? c->readahead : f->window * 4;
	}
	pthread_mutex_unlock(&f->lock);

	pthread_mutex_lock(&c->lock);
	for (uint64_t i = from; i <= to && c->qlen < CACHE_QUEUE_MAX; i += run) {
		unsigned count = to + 1 - i < run ? (unsigned)(to + 1 - i) : (unsigned)run;
		int absent = 0, unchecked = 0, on_disk = 0;
		/* absent chunks are fetched ahead, a run in one ranged read; present ones
		 * not yet verified are verified ahead (which also reads them into the page
		 * cache), each by a worker of its own; verified ones are read ahead */
		for (unsigned k = 0; k < count; k++) {
			struct cache_chunk *ch = cache_chunk_find(c, b->hex, i + k);
			absent += !ch || (ch->state == CHUNK_ABSENT && !ch->mem);
			unchecked += ch && ch->state == CHUNK_PRESENT && !ch->verified && !ch->mem;
			on_disk += ch && ch->state == CHUNK_PRESENT && ch->verified && !ch->mem;
		}
		if (absent || (on_disk && !unchecked)) {
			file_queue(c, b, i, count);
			continue;
		}
		for (unsigned k = 0; unchecked && k < count; k++) {
			struct cache_chunk *ch = cache_chunk_find(c, b->hex, i + k);
			if (ch && ch->state == CHUNK_PRESENT && !ch->verified && !ch->mem)
				file_queue(c, b, i + k, 1);
		}
	}
	pthread_mutex_unlock(&c->lock);
}

/* Bytes of the blob read back (for the hash check) without going through prefetch. */
static int file_read_raw(struct cache_file *f, char *buf, size_t len, uint64_t off)
{
	struct cache *c = f->cache;
	size_t done = 0;

	while (done < len) {
		uint64_t pos = off + done;
		uint64_t index = pos / c->chunk_size, coff = pos % c->chunk_size;
		size_t n = c->chunk_size - coff;
		if (n > len - done)
			n = len - done;
		int ret = cache_chunk_copy(c, f->blob, index, buf + done, coff, n,
					   !cache_hash_pending(f));
		if (ret < 0)
			return ret;
		done += n;
	}
	return 0;
}

ssize_t cache_file_read(struct cache_file *f, void *buf, size_t len, uint64_t off)
{
	struct cache *c = f->cache;
	uint64_t size = f->blob->size;
	int ret;

	if (off >= size || len == 0)
		return 0;
	if (len > size - off)
		len = (size_t)(size - off);
	ret = cache_hash_failed(f);
	if (ret < 0)
		return ret;
	file_prefetch(f, off, len);
	ret = file_read_raw(f, buf, len, off);
	if (ret == 0)
		ret = cache_hash_note(f, off, len);
	if (ret == 0)
		__atomic_fetch_add(&c->stats.served_bytes, (uint64_t)len, __ATOMIC_RELAXED);
	return ret < 0 ? ret : (ssize_t)len;
}

ssize_t cache_file_map(struct cache_file *f, uint64_t off, size_t len,
		       struct cache_span *spans, int max, int *nspans)
{
	struct cache *c = f->cache;
	uint64_t size = f->blob->size;
	size_t done = 0;
	int ret = 0, n = 0;

	*nspans = 0;
	ret = cache_hash_failed(f);
	if (ret < 0)
		return ret;
	if (off >= size || len == 0)
		return 0;
	/* The kernel reads the handed-over files after this returns: only a file held
	 * under a lease is sure to be unchanged then. */
	pthread_mutex_lock(&c->lock);
	int no_leases = c->lease_mode < 0;
	pthread_mutex_unlock(&c->lock);
	if (no_leases)
		return -EAGAIN;
	if (len > size - off)
		len = (size_t)(size - off);
	uint64_t first = off / c->chunk_size, last = (off + len - 1) / c->chunk_size;
	if (last - first >= (uint64_t)max)
		return -EAGAIN; /* more pieces than the caller can take: let it copy */
	file_prefetch(f, off, len);
	/* Up to three rounds: a chunk found damaged in the second step is dropped, and
	 * the next round fetches it again. */
	for (int round = 0; round < 3; round++) {
		/* First every chunk ready (in memory as far as this read needs, or in a
		 * checked file), fetching what is missing, and the sha256 verdict when
		 * this read completes the file: waits, with no lease held. */
		done = 0;
		while (done < len) {
			uint64_t pos = off + done;
			uint64_t index = pos / c->chunk_size, coff = pos % c->chunk_size;
			size_t take = c->chunk_size - coff < len - done ? c->chunk_size - coff
									: len - done;
			ret = cache_chunk_ready(c, f->blob, index, coff + take);
			if (ret < 0)
				return ret;
			done += take;
		}
		ret = cache_hash_note(f, off, len);
		if (ret < 0)
			return ret;
		/* a file still to be hashed leaves its chunks in memory for the hasher */
		int consume = !cache_hash_pending(f);
		/* Then the spans, each held (a chunk file under a lease, a buffer by a
		 * reference) until the reply is written: local work only from here. */
		done = 0;
		n = 0;
		while (done < len) {
			uint64_t pos = off + done;
			uint64_t index = pos / c->chunk_size, coff = pos % c->chunk_size;
			size_t take = c->chunk_size - coff;
			if (take > len - done)
				take = len - done;
			ret = cache_chunk_span(c, f->blob, index, coff, take, consume, &spans[n]);
			if (ret < 0)
				break;
			n++;
			done += take;
		}
		if (ret == 0)
			break;
		for (int i = 0; i < n; i++)
			cache_span_release(c, &spans[i]);
		if (ret != -EAGAIN)
			return ret;
	}
	if (ret < 0)
		return ret; /* the caller copies */
	*nspans = n;
	__atomic_fetch_add(&c->stats.served_bytes, (uint64_t)done, __ATOMIC_RELAXED);
	return (ssize_t)done;
}

void cache_file_close(struct cache_file *f)
{
	if (!f)
		return;
	pthread_mutex_lock(&f->lock);
	pthread_mutex_lock(&f->cache->lock);
	f->closed = 1; /* the hasher stops hashing it */
	pthread_mutex_unlock(&f->cache->lock);
	pthread_mutex_unlock(&f->lock);
	cache_file_unref(f);
}
