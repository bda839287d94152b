/*
 * chunk.c: file bytes through the cache: the chunk table, verifying, eviction, the
 * ways a chunk is used (cache_private.h lists them) and prefetch. Fetching is
 * fetch.c's, the chunks held in memory mem.c's.
 *
 * A chunk is in one of three states (struct cache_chunk, under cache->lock):
 *   ABSENT   -> the first reader to want it marks it FETCHING and fetches it;
 *   FETCHING -> its bytes arrive into a buffer (ch->mem), and readers are served
 *               from there as far as it is filled; it stays FETCHING until it is
 *               written to its file: one fetch per chunk;
 *   PRESENT  -> on disk as DIR/chunks/XX/<id>.<n>, in the LRU list.
 * Whatever the state, bytes in ch->mem are the chunk's and are served first.
 * A chunk file is the data followed by a trailer (magic, CRC32C, length, index, blob
 * id). It is written in DIR/tmp and renamed into place, so a visible chunk file is
 * complete unless damaged afterwards; the trailer catches that, and the file is
 * dropped and fetched again. A file is verified once and again whenever its inode,
 * size, mtime or ctime changes (a write to it changes them), so a damaged file is
 * never served; between the check and the read, a read lease (lease.c) keeps other
 * processes from changing it.
 *
 * When the chunk cannot be stored (disk full, read-only cache), it stays ABSENT with
 * its bytes in memory while its buffer lasts, then is fetched again.
 */
#include "cache_private.h"
#include "../blob/log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define CHUNK_MAGIC "AFSCHNK1"

struct chunk_trailer {
	char magic[8];
	uint32_t crc;
	uint32_t len;
	uint64_t index;
	char id[CACHE_HEX_LEN];
};

/* ---- the table (all under cache->lock) ---- */

static size_t chunk_bucket(const struct cache *c, const char *hex, uint64_t index)
{
	return (size_t)(cache_hash_str(hex, index * 0x9E3779B97F4A7C15ull) & (c->nbuckets - 1));
}

struct cache_chunk *cache_chunk_find(struct cache *c, const char *hex, uint64_t index)
{
	struct cache_chunk *ch = c->chunks[chunk_bucket(c, hex, index)];

	while (ch && (ch->index != index || strcmp(ch->hex, hex) != 0))
		ch = ch->hnext;
	return ch;
}

static void chunk_grow(struct cache *c)
{
	size_t n = c->nbuckets * 2;
	struct cache_chunk **nb = calloc(n, sizeof(*nb));
	struct cache_chunk **old = c->chunks;
	size_t oldn = c->nbuckets;

	if (!nb)
		return; /* longer chains, still correct */
	c->chunks = nb;
	c->nbuckets = n;
	for (size_t i = 0; i < oldn; i++) {
		while (old[i]) {
			struct cache_chunk *ch = old[i];
			size_t b = chunk_bucket(c, ch->hex, ch->index);
			old[i] = ch->hnext;
			ch->hnext = nb[b];
			nb[b] = ch;
		}
	}
	free(old);
}

struct cache_chunk *cache_chunk_get(struct cache *c, const char *hex, uint64_t index)
{
	struct cache_chunk *ch = cache_chunk_find(c, hex, index);
	size_t b;

	if (ch)
		return ch;
	ch = calloc(1, sizeof(*ch));
	if (!ch)
		return NULL;
	memcpy(ch->hex, hex, CACHE_HEX_LEN + 1);
	ch->index = index;
	ch->state = CHUNK_ABSENT;
	if (c->nchunks > 2 * c->nbuckets)
		chunk_grow(c);
	b = chunk_bucket(c, hex, index);
	ch->hnext = c->chunks[b];
	c->chunks[b] = ch;
	c->nchunks++;
	return ch;
}

static void chunk_unhash(struct cache *c, struct cache_chunk *ch)
{
	struct cache_chunk **pp = &c->chunks[chunk_bucket(c, ch->hex, ch->index)];

	while (*pp != ch)
		pp = &(*pp)->hnext;
	*pp = ch->hnext;
	c->nchunks--;
	free(ch);
}

static void lru_remove(struct cache *c, struct cache_chunk *ch)
{
	if (ch->prev)
		ch->prev->next = ch->next;
	else
		c->lru_head = ch->next;
	if (ch->next)
		ch->next->prev = ch->prev;
	else
		c->lru_tail = ch->prev;
	ch->prev = ch->next = NULL;
}

static void lru_push(struct cache *c, struct cache_chunk *ch)
{
	ch->prev = NULL;
	ch->next = c->lru_head;
	if (c->lru_head)
		c->lru_head->prev = ch;
	c->lru_head = ch;
	if (!c->lru_tail)
		c->lru_tail = ch;
}

static void chunk_path(const struct cache *c, const char *hex, uint64_t index, char *path,
		       size_t size)
{
	snprintf(path, size, "%s/chunks/%.2s/%s.%" PRIu64, c->dir, hex, hex, index);
}

/*
 * A verified chunk file's mtime: a time no write ever stamps (a write sets the current
 * time). Timestamps are coarse, so a write just after the check could leave ctime
 * as it was; it cannot leave this mtime.
 */
static const struct timespec chunk_mtime = { 1000000000, 0 };

int cache_chunk_marked(const struct cache_chunk *ch)
{
	return ch->fmtime.tv_sec == chunk_mtime.tv_sec && ch->fmtime.tv_nsec == chunk_mtime.tv_nsec;
}

/* Whether st is the file last verified. ctime is in it because no user call can
 * set it back: a write that restores mtime still changes ctime. */
static int same_file(const struct cache_chunk *ch, const struct stat *st)
{
	return ch->ino == st->st_ino && ch->fsize == st->st_size &&
	       ch->fmtime.tv_sec == st->st_mtim.tv_sec &&
	       ch->fmtime.tv_nsec == st->st_mtim.tv_nsec &&
	       ch->fctime.tv_sec == st->st_ctim.tv_sec && ch->fctime.tv_nsec == st->st_ctim.tv_nsec;
}

static void remember_file(struct cache_chunk *ch, const struct stat *st)
{
	ch->verified = 1;
	ch->ino = st->st_ino;
	ch->fsize = st->st_size;
	ch->fmtime = st->st_mtim;
	ch->fctime = st->st_ctim;
}

/* PRESENT -> ABSENT: the file is gone or to be removed by the caller. */
static void chunk_drop(struct cache *c, struct cache_chunk *ch)
{
	lru_remove(c, ch);
	c->stats.disk_bytes -= ch->disk_bytes;
	c->stats.chunks--;
	ch->disk_bytes = 0;
	ch->verified = 0;
	ch->state = CHUNK_ABSENT;
}

void cache_chunk_put(struct cache *c, struct cache_chunk *ch)
{
	if (ch->refs == 0 && ch->state == CHUNK_ABSENT && !ch->mem)
		chunk_unhash(c, ch);
}

/*
 * Evicts least recently used chunks that no reader holds until the chunk files take
 * at most limit bytes. The unlink happens under the lock on
 * purpose: a new fill of the same chunk renames its file to the same path, and must
 * not be unlinked by a late eviction.
 */
static void chunk_evict(struct cache *c, uint64_t limit)
{
	struct cache_chunk *ch = c->lru_tail;
	char path[PATH_MAX];

	while (ch && c->stats.disk_bytes > limit) {
		struct cache_chunk *prev = ch->prev;
		if (ch->refs == 0) {
			chunk_path(c, ch->hex, ch->index, path, sizeof(path));
			unlink(path);
			chunk_drop(c, ch);
			c->stats.evicted++;
			cache_chunk_put(c, ch);
		}
		ch = prev;
	}
}

/* ---- chunk files ---- */

uint64_t cache_chunk_len(const struct cache *c, const struct cache_blob *b, uint64_t index)
{
	uint64_t start = index * c->chunk_size;
	uint64_t left = b->size - start;

	return left < c->chunk_size ? left : c->chunk_size;
}

static int read_full(int fd, void *buf, size_t len, off_t off)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = pread(fd, (char *)buf + done, len - done, off + (off_t)done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EBADMSG;
		done += (size_t)n;
	}
	return 0;
}

/* Bytes read at a time to check a chunk file: large enough for few system calls,
 * small enough to stay in the processor's cache between the copy and the CRC. (A
 * mapping of the file instead costs more: its page faults took 0.6 s of CPU per GiB
 * here, the copies 0.1 s.) */
#define VERIFY_PIECE (256u << 10)

/* Checks a chunk file against its trailer. -EBADMSG when damaged. */
static int chunk_verify(int fd, const struct stat *st, const char *hex, uint64_t index,
			uint64_t len)
{
	struct chunk_trailer t;
	uint32_t crc;
	int ret;

	if ((uint64_t)st->st_size != len + sizeof(t))
		return -EBADMSG;
	ret = read_full(fd, &t, sizeof(t), (off_t)len);
	if (ret < 0)
		return ret;
	if (memcmp(t.magic, CHUNK_MAGIC, 8) != 0 || t.len != len || t.index != index ||
	    memcmp(t.id, hex, CACHE_HEX_LEN) != 0)
		return -EBADMSG;
	char *buf = malloc(VERIFY_PIECE);
	if (!buf)
		return -ENOMEM;
	crc = 0;
	for (uint64_t off = 0; off < len;) {
		size_t n = len - off < VERIFY_PIECE ? (size_t)(len - off) : VERIFY_PIECE;
		ret = read_full(fd, buf, n, (off_t)off);
		if (ret < 0)
			break;
		crc = cache_crc32c(crc, buf, n);
		off += n;
	}
	free(buf);
	if (ret < 0)
		return ret;
	return crc == t.crc ? 0 : -EBADMSG;
}

static int pwrite_full(int fd, const void *buf, size_t len, off_t off)
{
	for (size_t done = 0; done < len;) {
		ssize_t n = pwrite(fd, (const char *)buf + done, len - done, off + (off_t)done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		done += (size_t)n;
	}
	return 0;
}

/*
 * The identity of a chunk file just written and renamed into place (pre: by its writer
 * fd after the rename),
 * taken under a lease once our own writer fd is closed. Another process may have
 * changed it since the rename: then 0, and it is verified before it is served.
 */
static int chunk_settle(struct cache *c, const char *path, const struct stat *pre,
			struct stat *st)
{
	int fd, leased = cache_lease_open(c, path, &fd), ok;

	if (leased < 0)
		return 0;
	ok = fstat(fd, st) == 0 && st->st_ino == pre->st_ino && st->st_size == pre->st_size &&
	     st->st_mtim.tv_sec == chunk_mtime.tv_sec && st->st_mtim.tv_nsec == chunk_mtime.tv_nsec &&
	     st->st_ctim.tv_sec == pre->st_ctim.tv_sec && st->st_ctim.tv_nsec == pre->st_ctim.tv_nsec;
	close(fd);
	return ok;
}

int cache_chunk_commit(struct cache *c, int fd, const char *tmp, const struct cache_blob *b,
		       uint64_t index, const char *data, uint64_t len, uint32_t crc,
		       struct stat *st, int *checked)
{
	struct stat pre;
	struct chunk_trailer t;
	char path[PATH_MAX];
	/* direct I/O takes whole 4 KiB blocks from an aligned buffer: the body but the
	 * last chunk's tail; the rest through the page cache */
	uint64_t whole = len & ~(uint64_t)4095;
	int flags = fcntl(fd, F_GETFL);
	int ret = 0, renamed = 0;

	*checked = 0;
	if (!(flags & O_DIRECT))
		whole = 0;
	if (whole > 0)
		ret = pwrite_full(fd, data, (size_t)whole, 0);
	if (ret == 0 && (flags & O_DIRECT) && fcntl(fd, F_SETFL, flags & ~O_DIRECT) < 0)
		ret = -errno;
	if (ret == 0)
		ret = pwrite_full(fd, data + whole, (size_t)(len - whole), (off_t)whole);
	if (ret == 0) {
		memcpy(t.magic, CHUNK_MAGIC, 8);
		t.crc = crc;
		t.len = (uint32_t)len;
		t.index = index;
		memcpy(t.id, b->hex, CACHE_HEX_LEN);
		ret = pwrite_full(fd, &t, sizeof(t), (off_t)len);
	}
	if (ret == 0) {
		struct timespec ts[2] = { { 0, UTIME_NOW }, chunk_mtime };
		if (futimens(fd, ts) < 0)
			ret = -errno;
	}
	if (ret == 0) {
		chunk_path(c, b->hex, index, path, sizeof(path));
		char *slash = strrchr(path, '/');
		*slash = '\0';
		if (mkdir(path, 0700) < 0 && errno != EEXIST)
			ret = -errno;
		*slash = '/';
		if (ret == 0 && rename(tmp, path) < 0)
			ret = -errno;
		renamed = ret == 0;
		if (ret == 0 && fstat(fd, &pre) < 0)
			ret = -errno;
	}
	if (close(fd) < 0 && ret == 0)
		ret = -errno;
	/* the identity after the rename (which changes ctime) is the one kept */
	if (ret == 0)
		*checked = chunk_settle(c, path, &pre, st);
	if (ret < 0 && renamed)
		unlink(path);
	if (ret < 0)
		unlink(tmp);
	return ret;
}

void cache_chunk_stored(struct cache *c, struct cache_chunk *ch, const struct stat *st,
			int checked)
{
	ch->err = 0;
	ch->gen++;
	if (!st) {
		ch->state = CHUNK_ABSENT; /* in memory only, while its buffer lasts */
		pthread_cond_broadcast(&c->cond);
		return;
	}
	ch->state = CHUNK_PRESENT;
	ch->disk_bytes = (uint64_t)st->st_size;
	if (checked)
		remember_file(ch, st);
	else
		ch->verified = 0;
	ch->touched = time(NULL);
	lru_push(c, ch);
	c->stats.disk_bytes += ch->disk_bytes;
	c->stats.chunks++;
	chunk_evict(c, c->max_bytes);
	pthread_cond_broadcast(&c->cond);
}

uint64_t cache_chunk_file_size(uint64_t len)
{
	return len + sizeof(struct chunk_trailer);
}

void cache_chunks_make_room(struct cache *c, uint64_t need, int full)
{
	uint64_t limit;

	pthread_mutex_lock(&c->lock);
	if (full) /* the disk is: whatever the bound, free what the chunk needs */
		limit = c->stats.disk_bytes > need ? c->stats.disk_bytes - need : 0;
	else
		limit = c->max_bytes > need ? c->max_bytes - need : 0;
	chunk_evict(c, limit);
	pthread_mutex_unlock(&c->lock);
}

/*
 * Checks a PRESENT chunk's file unless it is the one verified before, and then reads
 * n bytes at coff of it into dst, or (fd_out) hands over the open file, leased
 * (cache_span_release closes it), or (neither) only leaves it checked and in the
 * page cache. Where leases do not work, fd_out gets -EAGAIN: only a copy read at once
 * is safe there. -EBADMSG or -ENOENT: the file must be fetched again.
 */
static int chunk_use(struct cache *c, struct cache_chunk *ch, const struct cache_blob *b,
		     char *dst, uint64_t coff, size_t n, int *fd_out)
{
	char path[PATH_MAX];
	struct stat st;
	uint64_t len = cache_chunk_len(c, b, ch->index);
	int fd, ret, known, leased;
	time_t now = time(NULL);

	chunk_path(c, b->hex, ch->index, path, sizeof(path));
	leased = cache_lease_open(c, path, &fd);
	if (leased < 0)
		return leased;
	if (!leased && fd_out) {
		close(fd);
		return -EAGAIN;
	}
	if (fstat(fd, &st) < 0) {
		ret = -errno;
		goto out;
	}
	pthread_mutex_lock(&c->lock);
	known = ch->verified && same_file(ch, &st);
	int touch = now - ch->touched > 60;
	if (touch)
		ch->touched = now;
	pthread_mutex_unlock(&c->lock);
	if (!known) {
		pthread_mutex_lock(&c->lock);
		c->stats.checked++;
		pthread_mutex_unlock(&c->lock);
		ret = chunk_verify(fd, &st, b->hex, ch->index, len);
		if (ret < 0)
			goto out;
	}
	/* mtime marks the file checked, only under the lease: without it, a write
	 * since the check would be marked too */
	int mark = !known && leased && (st.st_mtim.tv_sec != chunk_mtime.tv_sec ||
					 st.st_mtim.tv_nsec != chunk_mtime.tv_nsec);
	if (touch || mark) {
		/* atime orders the LRU list again after a restart. Both change ctime, so
		 * the identity is taken after. */
		struct timespec ts[2] = { { 0, touch ? UTIME_NOW : UTIME_OMIT },
					  mark ? chunk_mtime : (struct timespec){ 0, UTIME_OMIT } };
		if (futimens(fd, ts) < 0 || fstat(fd, &st) < 0) {
			ret = -errno;
			goto out;
		}
	}
	if (!known || touch) {
		pthread_mutex_lock(&c->lock);
		remember_file(ch, &st);
		pthread_mutex_unlock(&c->lock);
	}
	ret = dst ? read_full(fd, dst, n, (off_t)coff) : 0;
	if (ret == 0 && fd_out) {
		*fd_out = fd;
		return 0;
	}
out:
	close(fd);
	return ret;
}

/* A chunk's file was found damaged (-EBADMSG) or gone (-ENOENT) by a use that began
 * at fetch generation gen: drop it, unless another reader has fetched it again since
 * (then its file is a new one). Under cache->lock. */
static void chunk_damaged(struct cache *c, struct cache_chunk *ch, const struct cache_blob *b,
			  unsigned gen, int err)
{
	char path[PATH_MAX];

	if (ch->state != CHUNK_PRESENT || ch->gen != gen)
		return;
	chunk_path(c, b->hex, ch->index, path, sizeof(path));
	if (err == -EBADMSG) {
		LOG_WARN("cache chunk %s is damaged; fetching it again", path);
		unlink(path);
		c->stats.damaged++;
	}
	chunk_drop(c, ch);
}

/* Whether bytes [0, end) of ch are in its buffer. Under cache->lock. */
static int in_mem(const struct cache_chunk *ch, uint64_t end)
{
	return ch->mem && ch->mem->filled >= end;
}

/* The chunk's file checked (or the chunk gone bad): chunk_use with no lease kept,
 * by one thread at a time; another that asks meanwhile waits for that check and gets
 * -EAGAIN (look again). Under cache->lock, dropped meanwhile. */
static int chunk_check(struct cache *c, struct cache_chunk *ch, const struct cache_blob *b)
{
	unsigned gen = ch->gen;
	int ret;

	if (ch->checking) {
		c->chunk_waiters++;
		while (ch->checking)
			pthread_cond_wait(&c->cond, &c->lock);
		c->chunk_waiters--;
		return -EAGAIN;
	}
	ch->checking = 1;
	pthread_mutex_unlock(&c->lock);
	ret = chunk_use(c, ch, b, NULL, 0, 0, NULL);
	pthread_mutex_lock(&c->lock);
	ch->checking = 0;
	if (c->chunk_waiters > 0)
		pthread_cond_broadcast(&c->cond);
	if (ret == -EBADMSG || ret == -ENOENT)
		chunk_damaged(c, ch, b, gen, ret);
	return ret;
}

int cache_chunk_ready(struct cache *c, struct cache_blob *b, uint64_t index, uint64_t end)
{
	struct cache_chunk *ch;
	unsigned wait_gen = 0;
	int ret = 0, damaged = 0, waited = 0;

	pthread_mutex_lock(&c->lock);
	ch = cache_chunk_get(c, b->hex, index);
	if (!ch) {
		pthread_mutex_unlock(&c->lock);
		return -ENOMEM;
	}
	ch->refs++;
	if (in_mem(ch, end) || ch->state == CHUNK_PRESENT)
		c->stats.hits++;
	else
		c->stats.misses++;
	for (;;) {
		ret = 0;
		if (in_mem(ch, end)) {
			if (ch->state == CHUNK_PRESENT) {
				lru_remove(c, ch);
				lru_push(c, ch);
			}
			break;
		}
		if (ch->state == CHUNK_PRESENT) {
			lru_remove(c, ch);
			lru_push(c, ch);
			if (ch->verified)
				break;
			ret = chunk_check(c, ch, b);
			if (ret == -EAGAIN)
				continue;
			if (ret != -EBADMSG && ret != -ENOENT)
				break;
			if (++damaged > 3) {
				ret = -EIO;
				break;
			}
			continue;
		}
		if (ch->state == CHUNK_FETCHING) {
			/* woken as its bytes arrive; a reader that waited on a fetch shares
			 * its failure rather than asking the failing store once more */
			if (!waited) {
				waited = 1;
				wait_gen = ch->gen;
			}
			if (ch->mem && (!ch->mem->want || end < ch->mem->want))
				ch->mem->want = end;
			c->chunk_waiters++;
			pthread_cond_wait(&c->cond, &c->lock);
			c->chunk_waiters--;
			continue;
		}
		if (waited && ch->gen != wait_gen && ch->err) {
			ret = ch->err;
			break;
		}
		/* ABSENT: this thread fetches it */
		ch->state = CHUNK_FETCHING;
		ch->refs++; /* the fetch's */
		pthread_mutex_unlock(&c->lock);
		ret = b->flags & BLOB_WHOLE_READS ? cache_fetch_whole(c, b, index)
						  : cache_fetch_run(c, b, index, 1);
		pthread_mutex_lock(&c->lock);
		if (ret < 0 && !in_mem(ch, end))
			break;
	}
	ch->refs--;
	cache_chunk_put(c, ch);
	pthread_mutex_unlock(&c->lock);
	return ret;
}

int cache_chunk_span(struct cache *c, struct cache_blob *b, uint64_t index, uint64_t coff,
		     size_t n, int consume, struct cache_span *sp)
{
	struct cache_chunk *ch;
	int ret;

	memset(sp, 0, sizeof(*sp));
	sp->fd = -1;
	sp->off = coff;
	sp->len = n;
	pthread_mutex_lock(&c->lock);
	ch = cache_chunk_find(c, b->hex, index);
	if (ch && in_mem(ch, coff + n)) {
		cache_mem_ref(c, ch->mem);
		if (consume && coff + n == ch->mem->len)
			ch->mem->consumed = 1;
		sp->fd = ch->mem->fd;
		sp->mem = ch->mem->buf + coff;
		sp->hold = ch->mem;
		sp->in_mem = 1;
		pthread_mutex_unlock(&c->lock);
		return 0;
	}
	if (!ch || ch->state != CHUNK_PRESENT) {
		pthread_mutex_unlock(&c->lock);
		return -EAGAIN; /* not ready any more: the caller's next round */
	}
	lru_remove(c, ch);
	lru_push(c, ch);
	ch->refs++;
	unsigned gen = ch->gen;
	pthread_mutex_unlock(&c->lock);
	ret = chunk_use(c, ch, b, NULL, 0, 0, &sp->fd);
	pthread_mutex_lock(&c->lock);
	if (ret == 0) {
		sp->hold = ch; /* and the ref, until cache_span_release */
		pthread_mutex_unlock(&c->lock);
		return 0;
	}
	if (ret == -EBADMSG || ret == -ENOENT) {
		chunk_damaged(c, ch, b, gen, ret);
		ret = -EAGAIN; /* the next round fetches it again */
	}
	sp->fd = -1;
	ch->refs--;
	cache_chunk_put(c, ch);
	pthread_mutex_unlock(&c->lock);
	return ret;
}

void cache_span_release(struct cache *c, const struct cache_span *sp)
{
	pthread_mutex_lock(&c->lock);
	if (sp->in_mem) {
		cache_mem_unref(c, sp->hold);
	} else {
		struct cache_chunk *ch = sp->hold;
		pthread_mutex_unlock(&c->lock);
		close(sp->fd); /* and with it the lease */
		pthread_mutex_lock(&c->lock);
		ch->refs--;
		cache_chunk_put(c, ch);
	}
	pthread_mutex_unlock(&c->lock);
}

/* Copies from a PRESENT chunk's file, checked just before (a cache folder without
 * leases). -EAGAIN when it is not present. */
static int chunk_copy_file(struct cache *c, struct cache_blob *b, uint64_t index, char *dst,
			   uint64_t coff, size_t n)
{
	struct cache_chunk *ch;
	int ret;

	pthread_mutex_lock(&c->lock);
	ch = cache_chunk_find(c, b->hex, index);
	if (!ch || ch->state != CHUNK_PRESENT) {
		pthread_mutex_unlock(&c->lock);
		return -EAGAIN;
	}
	ch->refs++;
	unsigned gen = ch->gen;
	pthread_mutex_unlock(&c->lock);
	ret = chunk_use(c, ch, b, dst, coff, n, NULL);
	pthread_mutex_lock(&c->lock);
	if (ret == -EBADMSG || ret == -ENOENT)
		chunk_damaged(c, ch, b, gen, ret);
	ch->refs--;
	cache_chunk_put(c, ch);
	pthread_mutex_unlock(&c->lock);
	return ret;
}

int cache_chunk_copy(struct cache *c, struct cache_blob *b, uint64_t index, char *dst,
		     uint64_t coff, size_t n, int consume)
{
	/* A round ends without the bytes when the chunk is found damaged (a few times
	 * at most: then -EIO) or when its buffer went to another chunk between ready and
	 * span (the next round has it fetched or read from disk: under steady pressure on
	 * the memory pool, more rounds) */
	for (int round = 0, damaged = 0; round < 64 && damaged < 4; round++) {
		struct cache_span sp;
		int ret = cache_chunk_ready(c, b, index, coff + n);
		if (ret < 0)
			return ret;
		ret = cache_chunk_span(c, b, index, coff, n, consume, &sp);
		if (ret == 0) {
			if (sp.in_mem)
				memcpy(dst, sp.mem, n);
			else
				ret = read_full(sp.fd, dst, n, (off_t)coff);
			cache_span_release(c, &sp);
			return ret;
		}
		if (ret == -EAGAIN)
			ret = chunk_copy_file(c, b, index, dst, coff, n);
		if (ret != -EAGAIN && ret != -EBADMSG && ret != -ENOENT)
			return ret;
		damaged += ret != -EAGAIN;
	}
	return -EIO;
}

void cache_chunk_prefetch(struct cache *c, struct cache_blob *b, uint64_t index,
			  unsigned count)
{
	uint64_t i = index, end = index + count;

	pthread_mutex_lock(&c->lock);
	while (i < end && !c->stopping) {
		struct cache_chunk *ch = cache_chunk_get(c, b->hex, i);
		if (!ch)
			break;
		if (ch->state == CHUNK_ABSENT && !ch->mem) {
			/* the run of absent chunks from here, in one ranged read (a chunk a
			 * read where the store's bytes are usable only at its end) */
			if (b->flags & BLOB_WHOLE_READS) {
				/* the whole blob in one read, from its first byte */
				ch->state = CHUNK_FETCHING;
				ch->refs++;
				pthread_mutex_unlock(&c->lock);
				int ret = cache_fetch_whole(c, b, i);
				if (ret < 0)
					LOG_DEBUG("prefetch of %s failed: %s", b->key, strerror(-ret));
				pthread_mutex_lock(&c->lock);
				break;
			}
			unsigned n = 0, most = cache_pinned_reads(b) ? CACHE_RUN_MAX : 1;
			while (i + n < end && n < most) {
				struct cache_chunk *k = n ? cache_chunk_get(c, b->hex, i + n) : ch;
				if (!k || k->state != CHUNK_ABSENT || k->mem)
					break;
				k->state = CHUNK_FETCHING;
				k->refs++;
				n++;
			}
			pthread_mutex_unlock(&c->lock);
			int ret = cache_fetch_run(c, b, i, n);
			if (ret < 0)
				LOG_DEBUG("prefetch of chunks %" PRIu64 "-%" PRIu64 " of %s failed: %s",
					  i, i + n - 1, b->key, strerror(-ret));
			pthread_mutex_lock(&c->lock);
			i += n;
			continue;
		}
		if (ch->state == CHUNK_PRESENT && !ch->verified && !ch->mem && !ch->checking) {
			/* checked ahead of the reader, which also reads it from disk */
			ch->refs++;
			chunk_check(c, ch, b);
			ch->refs--;
		} else if (ch->state == CHUNK_PRESENT && ch->verified && !ch->mem) {
			/* read ahead from disk, without waiting for it */
			char path[PATH_MAX];
			chunk_path(c, b->hex, ch->index, path, sizeof(path));
			ch->refs++;
			pthread_mutex_unlock(&c->lock);
			int fd = open(path, O_RDONLY | O_CLOEXEC);
			if (fd >= 0) {
				posix_fadvise(fd, 0, 0, POSIX_FADV_WILLNEED);
				close(fd);
			}
			pthread_mutex_lock(&c->lock);
			ch->refs--;
		}
		cache_chunk_put(c, ch);
		i++;
	}
	pthread_mutex_unlock(&c->lock);
}

/* ---- start-up scan ---- */

struct scanned {
	char hex[CACHE_HEX_LEN + 1];
	uint64_t index, size;
	struct timespec atime;
	struct stat st;
};

static int scanned_cmp(const void *a, const void *b)
{
	const struct scanned *x = a, *y = b;

	if (x->atime.tv_sec != y->atime.tv_sec)
		return x->atime.tv_sec < y->atime.tv_sec ? -1 : 1;
	return (x->atime.tv_nsec > y->atime.tv_nsec) - (x->atime.tv_nsec < y->atime.tv_nsec);
}

static int name_parse(const char *name, char *hex, uint64_t *index)
{
	char *end;

	for (int i = 0; i < CACHE_HEX_LEN; i++)
		if (!((name[i] >= '0' && name[i] <= '9') || (name[i] >= 'a' && name[i] <= 'f')))
			return -1;
	if (name[CACHE_HEX_LEN] != '.' || name[CACHE_HEX_LEN + 1] < '0' ||
	    name[CACHE_HEX_LEN + 1] > '9')
		return -1;
	errno = 0;
	*index = strtoull(name + CACHE_HEX_LEN + 1, &end, 10);
	if (*end || errno)
		return -1;
	memcpy(hex, name, CACHE_HEX_LEN);
	hex[CACHE_HEX_LEN] = '\0';
	return 0;
}

int cache_chunks_scan(struct cache *c)
{
	struct scanned *all = NULL;
	size_t n = 0, cap = 0;
	char path[PATH_MAX];
	DIR *top, *d;
	struct dirent *e, *f;
	int ret = 0;

	snprintf(path, sizeof(path), "%s/chunks", c->dir);
	top = opendir(path);
	if (!top)
		return -errno;
	while (ret == 0 && (e = readdir(top))) {
		if (e->d_name[0] == '.')
			continue;
		int sfd = openat(dirfd(top), e->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (sfd < 0 || !(d = fdopendir(sfd))) {
			if (sfd >= 0)
				close(sfd);
			continue;
		}
		while ((f = readdir(d))) {
			struct scanned s;
			struct stat st;
			if (f->d_name[0] == '.')
				continue;
			if (name_parse(f->d_name, s.hex, &s.index) < 0 ||
			    fstatat(dirfd(d), f->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
			    !S_ISREG(st.st_mode)) {
				LOG_INFO("removing stray file %s/%s from the cache", e->d_name,
					 f->d_name);
				unlinkat(dirfd(d), f->d_name, 0);
				continue;
			}
			if (n == cap) {
				cap = cap ? cap * 2 : 256;
				struct scanned *na = realloc(all, cap * sizeof(*all));
				if (!na) {
					ret = -ENOMEM;
					break;
				}
				all = na;
			}
			s.size = (uint64_t)st.st_size;
			s.atime = st.st_atim;
			s.st = st;
			all[n++] = s;
		}
		closedir(d);
	}
	closedir(top);
	if (ret == 0 && n > 1)
		qsort(all, n, sizeof(*all), scanned_cmp);
	pthread_mutex_lock(&c->lock);
	for (size_t i = 0; ret == 0 && i < n; i++) {
		struct cache_chunk *ch = cache_chunk_get(c, all[i].hex, all[i].index);
		if (!ch) {
			ret = -ENOMEM;
			break;
		}
		ch->state = CHUNK_PRESENT;
		ch->disk_bytes = all[i].size;
		ch->touched = all[i].atime.tv_sec;
		remember_file(ch, &all[i].st);
		ch->verified = 0; /* until the list of checked files says so */
		lru_push(c, ch); /* oldest first, so the newest ends at the head */
		c->stats.disk_bytes += all[i].size;
		c->stats.chunks++;
	}
	if (ret == 0)
		chunk_evict(c, c->max_bytes);
	pthread_mutex_unlock(&c->lock);
	free(all);
	if (ret == 0)
		cache_chunks_known_load(c);
	return ret;
}

void cache_chunks_free(struct cache *c)
{
	for (size_t i = 0; i < c->nbuckets; i++) {
		while (c->chunks[i]) {
			struct cache_chunk *ch = c->chunks[i];
			c->chunks[i] = ch->hnext;
			free(ch);
		}
	}
	free(c->chunks);
	c->chunks = NULL;
}

