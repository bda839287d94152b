/*
 * fetch.c: chunks fetched from the store into memory, and written to disk behind.
 *
 * A fetch asks the store for a run of consecutive chunks with one ranged read (a
 * sequential reader's prefetch asks for several: fewer, larger requests) and streams
 * the answer into one memory buffer per chunk (mem.c). Readers waiting for a chunk
 * are woken as its bytes arrive and served from the buffer as far as it is filled.
 * A whole chunk goes to the writer thread, which writes it to its chunk file with
 * direct I/O (the bytes are not copied through the page cache: that copy was most of
 * the cost of a cold read) and then makes the chunk PRESENT; the fetch meanwhile goes
 * on with the next chunk of its run.
 *
 * When the store's answer restarts (a retry after part of it came), the bytes that
 * are already in a buffer are skipped, not written again: what a reader was served
 * never changes under it. A chunk the fetch could not finish goes back to ABSENT with
 * the error, which its waiters share; a chunk that could not be written to disk
 * (full, read-only) stays in memory until its buffer is needed, and is fetched again
 * after that.
 */
#include "cache_private.h"
#include "../blob/log.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* A whole chunk handed to the writer. */
struct cache_write {
	struct cache_write *next;
	struct cache_blob *blob;	/* one ref */
	struct cache_chunk *chunk;	/* the fetch's claim (one ref) goes with it */
	struct cache_mem *mem;		/* busy until written */
	uint32_t crc;
};

/* How far the fetch of one run has got. */
struct run {
	struct cache *c;
	struct cache_blob *b;
	uint64_t index;			/* first chunk */
	unsigned count;
	uint64_t pos;			/* bytes of this attempt's answer so far */
	unsigned cur;			/* the chunk being filled (from index) */
	struct cache_chunk **ch;	/* count claims; NULL: not this fetch's */
	struct cache_mem *mem;		/* the buffer of chunk cur, once it has one */
	uint64_t have;			/* its bytes so far */
	uint32_t crc;			/* of those */
	int err;			/* no buffer could be had */
	int pinned;			/* the store's bytes may be used as they come */
};

/* Opens a temp file for a chunk, with direct I/O where the filesystem takes it. */
static int temp_open(struct cache *c, char *tmp, size_t size, int *direct)
{
	int fd, mode;

	snprintf(tmp, size, "%s/tmp/chunk.XXXXXX", c->dir);
	fd = mkostemp(tmp, O_CLOEXEC);
	*direct = 0;
	if (fd < 0)
		return -errno;
	pthread_mutex_lock(&c->lock);
	mode = c->direct_io;
	pthread_mutex_unlock(&c->lock);
	if (mode >= 0 && fcntl(fd, F_SETFL, O_DIRECT) == 0) {
		*direct = 1;
	} else if (mode == 0) {
		pthread_mutex_lock(&c->lock);
		c->direct_io = -1;
		pthread_mutex_unlock(&c->lock);
		LOG_INFO("the cache folder %s does not take direct I/O: chunk files are "
			 "written through the page cache", c->dir);
	}
	return fd;
}

/* Writes one whole chunk from its buffer into its file and makes it PRESENT (or, when
 * the disk fails, leaves it in memory only); hands back the fetch's claim. */
static void write_chunk(struct cache *c, struct cache_write *w)
{
	struct cache_mem *m = w->mem;
	struct stat st;
	char tmp[PATH_MAX];
	int direct, checked = 0, ret;
	int fd;

	/* room first: the files on disk never exceed the bound, even for a moment */
	cache_chunks_make_room(c, cache_chunk_file_size(m->len), 0);
	fd = temp_open(c, tmp, sizeof(tmp), &direct);
	ret = fd < 0 ? fd : 0;
	if (ret == 0) {
		/* direct I/O wants whole blocks: the last chunk's tail goes through the
		 * page cache (cache_chunk_commit turns O_DIRECT off for it) */
		ret = cache_chunk_commit(c, fd, tmp, w->blob, w->chunk->index, m->buf, m->len,
					 w->crc, &st, &checked);
		if (ret == -EINVAL && direct) {
			pthread_mutex_lock(&c->lock);
			c->direct_io = -1;
			pthread_mutex_unlock(&c->lock);
			fd = temp_open(c, tmp, sizeof(tmp), &direct);
			ret = fd < 0 ? fd : cache_chunk_commit(c, fd, tmp, w->blob,
								w->chunk->index, m->buf, m->len,
								w->crc, &st, &checked);
		}
	}
	if (ret == -ENOSPC || ret == -EDQUOT) {
		/* the cache's filesystem is full: make room by dropping old chunks, then
		 * try once more */
		cache_chunks_make_room(c, cache_chunk_file_size(m->len), 1);
		fd = temp_open(c, tmp, sizeof(tmp), &direct);
		ret = fd < 0 ? fd : cache_chunk_commit(c, fd, tmp, w->blob, w->chunk->index,
							m->buf, m->len, w->crc, &st, &checked);
	}
	if (ret < 0)
		LOG_INFO("cannot keep chunk %" PRIu64 " of %s on disk (%s); it is served from "
			 "memory while it can be", w->chunk->index, w->blob->key, strerror(-ret));
	pthread_mutex_lock(&c->lock);
	if (ret == 0 && c->direct_io == 0 && direct)
		c->direct_io = 1;
	cache_chunk_stored(c, w->chunk, ret == 0 ? &st : NULL, checked);
	cache_mem_done(c, m);
	w->chunk->refs--;
	cache_chunk_put(c, w->chunk);
	pthread_mutex_unlock(&c->lock);
	cache_blob_unref(c, w->blob);
	free(w);
}

/* A cache with nothing to write for this long gives its chunk buffers back (mem.c):
 * a mount that serves from disk for months holds no idle buffers. */
#define WRITER_IDLE_S 30

void *cache_writer(void *arg)
{
	struct cache *c = arg;

	pthread_mutex_lock(&c->lock);
	for (;;) {
		struct cache_write *w = c->write_head;
		if (!w) {
			if (c->writer_stopping)
				break;
			struct timespec until;
			clock_gettime(CLOCK_MONOTONIC, &until);
			until.tv_sec += WRITER_IDLE_S;
			if (pthread_cond_timedwait(&c->write_work, &c->lock, &until) == ETIMEDOUT &&
			    !c->write_head && c->nmems > 0) {
				pthread_mutex_unlock(&c->lock);
				cache_mem_trim_idle(c);
				pthread_mutex_lock(&c->lock);
			}
			continue;
		}
		c->write_head = w->next;
		if (!c->write_head)
			c->write_tail = NULL;
		pthread_mutex_unlock(&c->lock);
		write_chunk(c, w);
		pthread_mutex_lock(&c->lock);
		if (--c->writes == 0)
			pthread_cond_broadcast(&c->cond);
	}
	pthread_mutex_unlock(&c->lock);
	return NULL;
}

void cache_writer_stop(struct cache *c)
{
	pthread_mutex_lock(&c->lock);
	c->writer_stopping = 1;
	pthread_cond_broadcast(&c->write_work);
	pthread_mutex_unlock(&c->lock);
	if (c->writer_started)
		pthread_join(c->writer, NULL);
	c->writer_started = 0;
}

/* Chunk cur is whole: to the writer (or written here without one). */
static int run_chunk_whole(struct run *r)
{
	struct cache *c = r->c;
	struct cache_write *w = calloc(1, sizeof(*w));
	int inline_write;

	if (!w)
		return -ENOMEM;
	w->chunk = r->ch[r->cur];
	w->mem = r->mem;
	w->crc = r->crc;
	w->blob = r->b;
	pthread_mutex_lock(&c->lock);
	r->b->refs++;
	r->ch[r->cur] = NULL; /* the claim goes with the write */
	inline_write = !c->writer_started || c->writer_stopping;
	if (!inline_write) {
		c->writes++;
		if (c->write_tail)
			c->write_tail->next = w;
		else
			c->write_head = w;
		c->write_tail = w;
		pthread_cond_signal(&c->write_work);
	}
	pthread_mutex_unlock(&c->lock);
	if (inline_write)
		write_chunk(c, w);
	r->mem = NULL;
	r->have = 0;
	r->crc = 0;
	r->cur++;
	while (r->cur < r->count && !r->ch[r->cur])
		r->cur++; /* not this fetch's: its bytes go by */
	return 0;
}

/* Lets readers have the bytes of chunk cur that came, waking those whose bytes are
 * all here. */
static void run_publish(struct run *r)
{
	struct cache *c = r->c;

	pthread_mutex_lock(&c->lock);
	r->mem->filled = r->have;
	if (r->mem->want && r->mem->filled >= r->mem->want) {
		r->mem->want = 0;
		pthread_cond_broadcast(&c->cond);
	}
	pthread_mutex_unlock(&c->lock);
}

static int run_put(void *ctx, const void *data, size_t len)
{
	struct run *r = ctx;
	struct cache *c = r->c;
	const char *p = data;

	if (!data) {
		/* the answer starts again: what readers may have had stays as it is; bytes
		 * nobody could use yet come anew */
		r->pos = 0;
		if (!r->pinned) {
			r->have = 0;
			r->crc = 0;
		}
		return 0;
	}
	while (len > 0) {
		uint64_t k = r->pos / c->chunk_size, coff = r->pos % c->chunk_size;
		uint64_t clen = cache_chunk_len(c, r->b, r->index + k);
		size_t take = clen - coff < len ? (size_t)(clen - coff) : len;
		if (k >= r->count)
			return -EIO; /* more than asked for */
		if (k == r->cur) {
			if (!r->mem) {
				pthread_mutex_lock(&c->lock);
				r->mem = cache_mem_get(c, r->ch[k], clen);
				/* readers waiting for this chunk now wait for its bytes */
				if (r->mem && c->chunk_waiters > 0)
					pthread_cond_broadcast(&c->cond);
				pthread_mutex_unlock(&c->lock);
				if (!r->mem)
					return r->err = -ENOMEM;
			}
			/* bytes below have came before a restart: keep those */
			if (coff + take > r->have) {
				size_t skip = coff < r->have ? (size_t)(r->have - coff) : 0;
				memcpy(r->mem->buf + coff + skip, p + skip, take - skip);
				r->crc = cache_crc32c(r->crc, p + skip, take - skip);
				r->have = coff + take;
				if (r->pinned)
					run_publish(r);
			}
			if (coff + take == clen && r->pinned) {
				int ret = run_chunk_whole(r);
				if (ret < 0)
					return ret;
			}
		}
		/* k < cur: a chunk finished before a restart */
		r->pos += take;
		p += take;
		len -= take;
	}
	return 0;
}

/* Fetches chunks index..index+count-1 of b, those of ch that are not NULL (claimed:
 * FETCHING, one ref each, handed over), in one read. */
static int fetch_run(struct cache *c, struct cache_blob *b, uint64_t index, unsigned count,
		     struct cache_chunk **ch, int pinned)
{
	struct run r = { .c = c, .b = b, .index = index, .count = count, .ch = ch,
			 .pinned = pinned };
	uint64_t off = index * c->chunk_size, len = 0;
	ssize_t got;
	int ret;

	for (unsigned i = 0; i < count; i++)
		len += cache_chunk_len(c, b, index + i);
	while (r.cur < count && !ch[r.cur])
		r.cur++;
	got = blob_read_to(c->store, b->key, b->etag, off, len, run_put, &r);
	if (r.err)
		got = r.err;
	else if (got >= 0 && !r.pinned && r.mem && r.have == r.mem->len && (uint64_t)got == len) {
		/* the whole answer came as that version: now its bytes may be used */
		run_publish(&r);
		got = run_chunk_whole(&r) < 0 ? -ENOMEM : got;
	}
	if (got >= 0 && r.cur < count)
		got = -ESTALE; /* shorter than its version said: not that version any more */
	ret = got < 0 ? (int)got : 0;
	pthread_mutex_lock(&c->lock);
	c->stats.fetches++;
	c->stats.fetched_bytes += (uint64_t)(got > 0 ? got : 0);
	/* the chunks not whole: absent again, their waiters told why */
	for (unsigned i = r.cur; i < count; i++) {
		struct cache_chunk *k = r.ch[i];
		if (!k)
			continue;
		if (i == r.cur && r.mem) {
			cache_mem_detach(c, r.mem);
			cache_mem_done(c, r.mem);
		}
		k->state = CHUNK_ABSENT;
		k->err = ret < 0 ? ret : -EIO;
		k->gen++;
		k->refs--;
		cache_chunk_put(c, k);
	}
	pthread_cond_broadcast(&c->cond);
	pthread_mutex_unlock(&c->lock);
	return ret;
}

int cache_fetch_run(struct cache *c, struct cache_blob *b, uint64_t index, unsigned count)
{
	struct cache_chunk *ch[CACHE_RUN_MAX];

	pthread_mutex_lock(&c->lock);
	for (unsigned i = 0; i < count; i++)
		ch[i] = cache_chunk_find(c, b->hex, index + i);
	pthread_mutex_unlock(&c->lock);
	return fetch_run(c, b, index, count, ch, cache_pinned_reads(b));
}

int cache_fetch_whole(struct cache *c, struct cache_blob *b, uint64_t claimed)
{
	uint64_t n = (b->size + c->chunk_size - 1) / c->chunk_size;
	struct cache_chunk **ch = calloc(n ? n : 1, sizeof(*ch));
	int ret;

	pthread_mutex_lock(&c->lock);
	for (uint64_t i = 0; i < n; i++) {
		struct cache_chunk *k = i == claimed ? cache_chunk_find(c, b->hex, i)
						     : ch ? cache_chunk_get(c, b->hex, i) : NULL;
		if (i == claimed) {
			if (ch)
				ch[i] = k;
			continue;
		}
		if (!k || k->state != CHUNK_ABSENT || k->mem)
			continue; /* here, or another fetch's */
		k->state = CHUNK_FETCHING;
		k->refs++;
		ch[i] = k;
	}
	if (!ch) {
		/* no room for the claims: the caller's chunk goes back */
		struct cache_chunk *k = cache_chunk_find(c, b->hex, claimed);
		k->state = CHUNK_ABSENT;
		k->err = -ENOMEM;
		k->gen++;
		k->refs--;
		cache_chunk_put(c, k);
		pthread_cond_broadcast(&c->cond);
		pthread_mutex_unlock(&c->lock);
		return -ENOMEM;
	}
	pthread_mutex_unlock(&c->lock);
	/* the store's bytes are of the version asked for from the first on (a whole
	 * file is one answer), so readers are served as they arrive */
	ret = fetch_run(c, b, 0, (unsigned)n, ch, 1);
	free(ch);
	return ret;
}
