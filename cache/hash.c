/*
 * hash.c: the sha256 check of a registered file, off the read path.
 *
 * Reads of a file with a sha256 go to the kernel without a copy (cache_file_map),
 * like any other. One hasher thread per cache follows behind them and hashes the
 * blob in order, from the chunks' buffers while they are in memory (a reader of a
 * file still to be hashed leaves them there for it) and else from the cache files,
 * as far as its chunks are there: it never
 * fetches anything for a reader that skips parts (mmap). The read that completes the
 * file (every chunk read at least once, in any order) waits for the verdict, and then
 * the hasher fetches whatever it still lacks. On a mismatch that read and every later
 * read of the open file fail with -EBADMSG. A match is marked on disk (the sha mark),
 * so that version is never hashed again.
 *
 * Without the thread (cache_start not called), the completing read hashes inline.
 */
#include "cache_private.h"
#include "../blob/log.h"

#include <errno.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>


void cache_file_unref(struct cache_file *f)
{
	struct cache *c = f->cache;
	int last;

	pthread_mutex_lock(&c->lock);
	last = --f->refs == 0;
	pthread_mutex_unlock(&c->lock);
	if (!last)
		return;
	if (f->sha)
		EVP_MD_CTX_free(f->sha);
	free(f->touched);
	cache_blob_unref(c, f->blob);
	pthread_cond_destroy(&f->hash_done);
	pthread_mutex_destroy(&f->lock);
	free(f);
}

/* Whether bytes [0, end) of a chunk are there without a fetch: in memory or on disk. */
static int chunk_there(struct cache *c, const struct cache_blob *b, uint64_t index,
		       uint64_t end)
{
	struct cache_chunk *ch;
	int there;

	pthread_mutex_lock(&c->lock);
	ch = cache_chunk_find(c, b->hex, index);
	there = ch && (ch->state == CHUNK_PRESENT || (ch->mem && ch->mem->filled >= end));
	pthread_mutex_unlock(&c->lock);
	return there;
}

/* Hashes n bytes at coff of a chunk: from its buffer while it is in memory (no copy),
 * else read back into buf (HASH_PIECE bytes) a piece at a time. */
static int hash_chunk(struct cache_file *f, uint64_t index, uint64_t coff, size_t n, char *buf)
{
	struct cache *c = f->cache;
	struct cache_span sp;
	int ret = cache_chunk_ready(c, f->blob, index, coff + n);

	if (ret == 0)
		ret = cache_chunk_span(c, f->blob, index, coff, n, 1, &sp);
	if (ret == 0 && sp.in_mem) {
		EVP_DigestUpdate(f->sha, sp.mem, n);
		cache_span_release(c, &sp);
		return 0;
	}
	if (ret == 0)
		cache_span_release(c, &sp);
	for (size_t done = 0; done < n;) {
		size_t piece = n - done < HASH_PIECE ? n - done : HASH_PIECE;
		ret = cache_chunk_copy(c, f->blob, index, buf, coff + done, piece, 1);
		if (ret < 0)
			return ret;
		EVP_DigestUpdate(f->sha, buf, piece);
		done += piece;
	}
	return 0;
}

/* Hashes on from where the hash stands, as far as it can. Only the caller that
 * claimed f (hash_queued) runs this. */
static void file_hash_run(struct cache_file *f, char *buf)
{
	struct cache *c = f->cache;
	uint64_t size = f->blob->size;

	for (;;) {
		pthread_mutex_lock(&f->lock);
		uint64_t off = f->hash_off;
		int all = f->ntouched == f->nchunks, stop = f->hash_state != 0 || f->closed;
		pthread_mutex_unlock(&f->lock);
		if (stop)
			return;
		uint64_t index = off / c->chunk_size, coff = off % c->chunk_size;
		size_t n = c->chunk_size - coff;
		if (n > size - off)
			n = (size_t)(size - off);
		if (!all && !chunk_there(c, f->blob, index, coff + n))
			return; /* a later read brings it */
		int ret = hash_chunk(f, index, coff, n, buf);
		if (ret < 0) {
			if (all) {
				pthread_mutex_lock(&f->lock);
				f->hash_err = ret;
				f->hash_err_gen++;
				pthread_cond_broadcast(&f->hash_done);
				pthread_mutex_unlock(&f->lock);
			}
			return;
		}
		int state = 0;
		if (off + n == size) {
			unsigned char md[32];
			unsigned int mdlen = 0;
			EVP_DigestFinal_ex(f->sha, md, &mdlen);
			state = memcmp(md, f->want, 32) == 0 ? 1 : -1;
			/* marked before anyone hears of it: a new open finds the mark */
			if (state > 0 && cache_write_file(c, f->mark, "", 0, 0) < 0)
				LOG_DEBUG("cannot keep the sha256 mark of %s", f->blob->key);
			if (state < 0)
				LOG_ERROR("%s: the bytes read do not match the registered sha256",
					  f->blob->key);
		}
		pthread_mutex_lock(&f->lock);
		f->hash_off = off + n;
		f->hash_state = state;
		if (state != 0)
			pthread_cond_broadcast(&f->hash_done);
		pthread_mutex_unlock(&f->lock);
		if (state != 0)
			return;
	}
}

void *cache_hasher(void *arg)
{
	struct cache *c = arg;
	char *buf = c->hash_buf;

	pthread_mutex_lock(&c->lock);
	while (!c->stopping) {
		struct cache_file *f = c->hash_head;
		if (!f) {
			pthread_cond_wait(&c->hash_work, &c->lock);
			continue;
		}
		c->hash_head = f->hash_next;
		if (!c->hash_head)
			c->hash_tail = NULL;
		f->hash_next = NULL;
		f->hash_more = 0;
		pthread_mutex_unlock(&c->lock);
		file_hash_run(f, buf);
		pthread_mutex_lock(&c->lock);
		if (f->hash_more && !f->closed) {
			/* reads came meanwhile: go on after the others */
			if (c->hash_tail)
				c->hash_tail->hash_next = f;
			else
				c->hash_head = f;
			c->hash_tail = f;
			continue;
		}
		f->hash_queued = 0;
		pthread_mutex_unlock(&c->lock);
		cache_file_unref(f);
		pthread_mutex_lock(&c->lock);
	}
	pthread_mutex_unlock(&c->lock);
	return NULL;
}

/* Asks the hasher to go on with f. Returns 1 when there is no hasher thread. */
static int hash_kick(struct cache_file *f)
{
	struct cache *c = f->cache;
	int inline_only;

	pthread_mutex_lock(&c->lock);
	inline_only = !c->hasher_started;
	if (!inline_only) {
		if (f->hash_queued) {
			f->hash_more = 1;
		} else {
			f->hash_queued = 1;
			f->refs++;
			if (c->hash_tail)
				c->hash_tail->hash_next = f;
			else
				c->hash_head = f;
			c->hash_tail = f;
			pthread_cond_signal(&c->hash_work);
		}
	}
	pthread_mutex_unlock(&c->lock);
	return inline_only;
}

int cache_hash_note(struct cache_file *f, uint64_t off, size_t len)
{
	struct cache *c = f->cache;
	int ret = 0, complete;

	if (!f->sha || len == 0)
		return 0;
	pthread_mutex_lock(&f->lock);
	for (uint64_t i = off / c->chunk_size; i <= (off + len - 1) / c->chunk_size; i++) {
		if (!(f->touched[i / 8] & (1u << (i % 8)))) {
			f->touched[i / 8] |= (uint8_t)(1u << (i % 8));
			f->ntouched++;
		}
	}
	complete = f->ntouched == f->nchunks;
	int state = f->hash_state;
	/* a failure of the store from before this read does not count for it */
	unsigned gen = f->hash_err_gen;
	pthread_mutex_unlock(&f->lock);
	if (state != 0)
		return state < 0 ? -EBADMSG : 0;
	if (hash_kick(f) && complete) {
		/* no hasher thread: the completing read hashes, one at a time */
		int mine;
		pthread_mutex_lock(&c->lock);
		mine = !f->hash_queued;
		f->hash_queued = 1;
		pthread_mutex_unlock(&c->lock);
		if (mine) {
			char *buf = malloc(HASH_PIECE);
			if (buf)
				file_hash_run(f, buf);
			free(buf);
			pthread_mutex_lock(&f->lock);
			if (!buf) {
				f->hash_err = -ENOMEM;
				f->hash_err_gen++;
			}
			pthread_cond_broadcast(&f->hash_done);
			pthread_mutex_unlock(&f->lock);
			pthread_mutex_lock(&c->lock);
			f->hash_queued = 0;
			pthread_mutex_unlock(&c->lock);
		}
	}
	if (!complete)
		return 0;
	pthread_mutex_lock(&f->lock);
	while (f->hash_state == 0 && f->hash_err_gen == gen)
		pthread_cond_wait(&f->hash_done, &f->lock);
	if (f->hash_state < 0)
		ret = -EBADMSG;
	else if (f->hash_state == 0)
		ret = f->hash_err; /* the store failed: a later read tries again */
	pthread_mutex_unlock(&f->lock);
	return ret;
}

/* The hash's state: 0 running (or no hash: see the callers), 1 matched, -1 mismatch. */
static int hash_state(struct cache_file *f)
{
	int state;

	pthread_mutex_lock(&f->lock);
	state = f->hash_state;
	pthread_mutex_unlock(&f->lock);
	return state;
}

int cache_hash_failed(struct cache_file *f)
{
	return f->sha && hash_state(f) < 0 ? -EBADMSG : 0;
}

int cache_hash_pending(struct cache_file *f)
{
	return f->sha && hash_state(f) == 0;
}
