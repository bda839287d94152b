/*
 * chunk.c: file bytes through the cache: the chunk table, fetching, verifying,
 * eviction and prefetch.
 *
 * A chunk is in one of three states (struct cache_chunk, under cache->lock):
 *   ABSENT   -> the first reader to want it marks it FETCHING and fetches it;
 *   FETCHING -> other readers wait on cache->cond: one fetch per chunk;
 *   PRESENT  -> on disk as DIR/chunks/XX/<id>.<n>, in the LRU list.
 * A chunk file is the data followed by a trailer (magic, CRC32C, length, index, blob
 * id). It is written in DIR/tmp and renamed into place, so a visible chunk file is
 * complete unless damaged afterwards; the trailer catches that, and the file is
 * dropped and fetched again. A file is verified once and again whenever its inode,
 * size, mtime or ctime changes (a write to it changes them), so a damaged file is
 * never served; between the check and the read, a read lease (lease.c) keeps other
 * processes from changing it.
 *
 * When the chunk cannot be stored (disk full, read-only cache), the fetcher serves
 * its reader from memory and the chunk stays ABSENT: reads go on from the store.
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

static struct cache_chunk *chunk_get(struct cache *c, const char *hex, uint64_t index)
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

static void chunk_put(struct cache *c, struct cache_chunk *ch)
{
	if (ch->refs == 0 && ch->state == CHUNK_ABSENT)
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
			chunk_put(c, ch);
		}
		ch = prev;
	}
}

/* ---- chunk files ---- */

static uint64_t chunk_len(const struct cache *c, const struct cache_blob *b, uint64_t index)
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

/* Checks a chunk file against its trailer. -EBADMSG when damaged. */
static int chunk_verify(int fd, const struct stat *st, const char *hex, uint64_t index,
			uint64_t len)
{
	struct chunk_trailer t;
	char buf[1 << 16];
	uint32_t crc = 0;
	int ret;

	if ((uint64_t)st->st_size != len + sizeof(t))
		return -EBADMSG;
	ret = read_full(fd, &t, sizeof(t), (off_t)len);
	if (ret < 0)
		return ret;
	if (memcmp(t.magic, CHUNK_MAGIC, 8) != 0 || t.len != len || t.index != index ||
	    memcmp(t.id, hex, CACHE_HEX_LEN) != 0)
		return -EBADMSG;
	for (uint64_t off = 0; off < len;) {
		size_t n = len - off < sizeof(buf) ? (size_t)(len - off) : sizeof(buf);
		ret = read_full(fd, buf, n, (off_t)off);
		if (ret < 0)
			return ret;
		crc = cache_crc32c(crc, buf, n);
		off += n;
	}
	return crc == t.crc ? 0 : -EBADMSG;
}

static int write_full(int fd, const void *buf, size_t len)
{
	for (size_t done = 0; done < len;) {
		ssize_t n = write(fd, (const char *)buf + done, len - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		done += (size_t)n;
	}
	return 0;
}

/* The sink of a chunk fetch: bytes go straight to the temp file, so memory use does
 * not grow with the chunk size. */
struct file_sink {
	int fd;
	uint32_t crc;
	uint64_t len;
	int disk_err;		/* the local disk failed (not the store) */
};

static int file_put(void *ctx, const void *data, size_t len)
{
	struct file_sink *f = ctx;
	int ret;

	if (!data) {
		/* the store's answer restarts: drop what came so far */
		f->crc = 0;
		f->len = 0;
		if (ftruncate(f->fd, 0) < 0 || lseek(f->fd, 0, SEEK_SET) < 0) {
			f->disk_err = -errno;
			return f->disk_err;
		}
		return 0;
	}
	ret = write_full(f->fd, data, len);
	if (ret < 0) {
		f->disk_err = ret;
		return ret;
	}
	f->crc = cache_crc32c(f->crc, data, len);
	f->len += len;
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

/*
 * Fetches chunk index of b into its file (temp file, trailer, rename) and fills in
 * the identity of the file written; *checked says whether that identity is sure
 * (else the file must be verified before use). *disk_err tells a failure of the
 * local disk (full, read-only) from one of the store.
 */
static int chunk_fetch(struct cache *c, const struct cache_blob *b, uint64_t index,
		       uint64_t len, struct stat *st, int *checked, int *disk_err)
{
	struct stat pre;
	struct file_sink fs = { .fd = -1 };
	struct chunk_trailer t;
	char tmp[PATH_MAX], path[PATH_MAX];
	ssize_t got;
	int ret, renamed = 0;

	*disk_err = 0;
	*checked = 0;
	snprintf(tmp, sizeof(tmp), "%s/tmp/chunk.XXXXXX", c->dir);
	fs.fd = mkstemp(tmp);
	if (fs.fd < 0) {
		*disk_err = 1;
		return -errno;
	}
	got = blob_read_to(c->store, b->key, b->etag, index * c->chunk_size, len, file_put, &fs);
	if (got >= 0 && ((uint64_t)got != len || fs.len != len))
		got = -ESTALE; /* shorter than its version said: not that version any more */
	ret = got < 0 ? (int)got : 0;
	if (ret == 0) {
		memcpy(t.magic, CHUNK_MAGIC, 8);
		t.crc = fs.crc;
		t.len = (uint32_t)len;
		t.index = index;
		memcpy(t.id, b->hex, CACHE_HEX_LEN);
		ret = write_full(fs.fd, &t, sizeof(t));
		if (ret < 0)
			fs.disk_err = ret;
	}
	if (ret == 0) {
		struct timespec ts[2] = { { 0, UTIME_NOW }, chunk_mtime };
		if (futimens(fs.fd, ts) < 0)
			ret = fs.disk_err = -errno;
	}
	if (ret == 0) {
		chunk_path(c, b->hex, index, path, sizeof(path));
		char *slash = strrchr(path, '/');
		*slash = '\0';
		if (mkdir(path, 0700) < 0 && errno != EEXIST)
			ret = fs.disk_err = -errno;
		*slash = '/';
		if (ret == 0 && rename(tmp, path) < 0)
			ret = fs.disk_err = -errno;
		renamed = ret == 0;
		if (ret == 0 && fstat(fs.fd, &pre) < 0)
			ret = fs.disk_err = -errno;
	}
	if (close(fs.fd) < 0 && ret == 0)
		ret = fs.disk_err = -errno;
	/* the identity after the rename (which changes ctime) is the one kept */
	if (ret == 0)
		*checked = chunk_settle(c, path, &pre, st);
	if (ret < 0 && renamed)
		unlink(path);
	if (ret < 0)
		unlink(tmp);
	*disk_err = fs.disk_err != 0;
	return ret;
}

/*
 * Reads n bytes at coff of a PRESENT chunk's file into dst, verifying the file first
 * unless it is the one verified before; with fd_out, reads nothing and hands over
 * the open file instead, leased (cache_span_release closes it). Where leases do not
 * work, fd_out gets -EAGAIN: only a copy read at once is safe there. -EBADMSG or
 * -ENOENT: the file must be fetched again.
 */
static int chunk_use(struct cache *c, struct cache_chunk *ch, const struct cache_blob *b,
		     char *dst, uint64_t coff, size_t n, int *fd_out)
{
	char path[PATH_MAX];
	struct stat st;
	uint64_t len = chunk_len(c, b, ch->index);
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

void cache_span_release(struct cache *c, const struct cache_span *sp)
{
	struct cache_chunk *ch = sp->hold;

	close(sp->fd); /* and with it the lease */
	pthread_mutex_lock(&c->lock);
	ch->refs--;
	chunk_put(c, ch);
	pthread_mutex_unlock(&c->lock);
}

/*
 * Makes chunk index of b present and verified, then either copies n bytes at coff of
 * it into dst, or (span) hands over its leased file and a hold on the chunk (span->fd
 * and span->hold; the caller sets off and len), or (neither: prefetch) only
 * leaves it present, verified and in the page cache. Returns 0 or -errno; with span,
 * -EAGAIN when the cache cannot keep the chunk (read it with dst instead).
 */
int cache_chunk_access(struct cache *c, struct cache_blob *b, uint64_t index, char *dst,
		       uint64_t coff, size_t n, struct cache_span *span)
{
	int *fd_out = span ? &span->fd : NULL;
	uint64_t len = chunk_len(c, b, index);
	struct cache_chunk *ch;
	int ret = 0, damaged = 0;

	pthread_mutex_lock(&c->lock);
	ch = chunk_get(c, b->hex, index);
	if (!ch) {
		pthread_mutex_unlock(&c->lock);
		return -ENOMEM;
	}
	ch->refs++;
	for (;;) {
		if (fd_out && ch->state != CHUNK_PRESENT) {
			/* a span holds a lease: no waiting on the store meanwhile */
			ret = -EAGAIN;
			break;
		}
		if (ch->state == CHUNK_FETCHING) {
			/* a reader that waited on a fetch shares its failure rather than
			 * asking the failing store once more itself */
			unsigned gen = ch->gen;
			while (ch->state == CHUNK_FETCHING)
				pthread_cond_wait(&c->cond, &c->lock);
			if (ch->state == CHUNK_ABSENT && ch->gen != gen && ch->err) {
				ret = ch->err;
				break;
			}
			continue;
		}
		if (ch->state == CHUNK_PRESENT) {
			lru_remove(c, ch);
			lru_push(c, ch);
			if (!dst && !fd_out && ch->verified)
				break;
			unsigned gen = ch->gen;
			pthread_mutex_unlock(&c->lock);
			ret = chunk_use(c, ch, b, dst, coff, n, fd_out);
			pthread_mutex_lock(&c->lock);
			if (ret == 0 && span) {
				ch->refs++; /* the span's, until cache_span_release */
				span->hold = ch;
			}
			if (ret != -EBADMSG && ret != -ENOENT)
				break;
			/* damaged or removed behind our back: fetch it again, unless another
			 * reader has already (then its file is a new one) */
			if (ch->state == CHUNK_PRESENT && ch->gen == gen) {
				char path[PATH_MAX];
				chunk_path(c, b->hex, index, path, sizeof(path));
				if (ret == -EBADMSG) {
					LOG_WARN("cache chunk %s is damaged; fetching it again",
						 path);
					unlink(path);
					c->stats.damaged++;
				}
				chunk_drop(c, ch);
			}
			if (++damaged > 3) {
				ret = -EIO;
				break;
			}
			continue;
		}
		/* ABSENT: this thread fetches it */
		ch->state = CHUNK_FETCHING;
		pthread_mutex_unlock(&c->lock);

		struct stat st;
		int disk_err, checked;
		ret = chunk_fetch(c, b, index, len, &st, &checked, &disk_err);
		if (ret < 0 && disk_err) {
			/* the cache's filesystem is full (or failing): make room for this
			 * chunk by dropping old ones, then try once more */
			pthread_mutex_lock(&c->lock);
			uint64_t need = len + sizeof(struct chunk_trailer);
			chunk_evict(c, c->stats.disk_bytes > need ? c->stats.disk_bytes - need : 0);
			pthread_mutex_unlock(&c->lock);
			ret = chunk_fetch(c, b, index, len, &st, &checked, &disk_err);
		}
		pthread_mutex_lock(&c->lock);
		if (ret == 0 || disk_err) {
			c->stats.fetches++;
			c->stats.fetched_bytes += len;
		}
		if (ret == 0) {
			ch->state = CHUNK_PRESENT;
			ch->disk_bytes = len + sizeof(struct chunk_trailer);
			if (checked)
				remember_file(ch, &st);
			else
				ch->verified = 0;
			ch->touched = time(NULL);
			lru_push(c, ch);
			c->stats.disk_bytes += ch->disk_bytes;
			c->stats.chunks++;
			chunk_evict(c, c->max_bytes);
			ch->err = 0;
			ch->gen++;
			pthread_cond_broadcast(&c->cond);
			continue; /* PRESENT: read it from its file */
		}
		ch->state = CHUNK_ABSENT;
		ch->err = disk_err ? 0 : ret; /* waiters fetch for themselves after a disk error */
		ch->gen++;
		pthread_cond_broadcast(&c->cond);
		if (disk_err && !dst) {
			ret = -EAGAIN;
		} else if (disk_err) {
			/* the cache cannot keep it: serve this read straight from the store */
			LOG_INFO("cannot keep chunk %" PRIu64 " of %s in the cache (%s); reading "
				 "it from the store", index, b->key, strerror(-ret));
			pthread_mutex_unlock(&c->lock);
			ssize_t got = blob_read(c->store, b->key, b->etag,
						index * c->chunk_size + coff, n, dst);
			ret = got < 0 ? (int)got : (size_t)got == n ? 0 : -ESTALE;
			pthread_mutex_lock(&c->lock);
		}
		break;
	}
	ch->refs--;
	chunk_put(c, ch);
	pthread_mutex_unlock(&c->lock);
	return ret;
}

/* ---- start-up scan ---- */

struct scanned {
	char hex[CACHE_HEX_LEN + 1];
	uint64_t index, size;
	struct timespec atime;
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
			all[n++] = s;
		}
		closedir(d);
	}
	closedir(top);
	if (ret == 0 && n > 1)
		qsort(all, n, sizeof(*all), scanned_cmp);
	pthread_mutex_lock(&c->lock);
	for (size_t i = 0; ret == 0 && i < n; i++) {
		struct cache_chunk *ch = chunk_get(c, all[i].hex, all[i].index);
		if (!ch) {
			ret = -ENOMEM;
			break;
		}
		ch->state = CHUNK_PRESENT;
		ch->disk_bytes = all[i].size;
		ch->touched = all[i].atime.tv_sec;
		lru_push(c, ch); /* oldest first, so the newest ends at the head */
		c->stats.disk_bytes += all[i].size;
		c->stats.chunks++;
	}
	if (ret == 0)
		chunk_evict(c, c->max_bytes);
	pthread_mutex_unlock(&c->lock);
	free(all);
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

