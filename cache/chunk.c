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
 * size or mtime changes (a write to it changes mtime), so a damaged file is never
 * served.
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
/* Reads this close to where a sequential reader left off still count as in order:
 * the kernel sends readahead requests in parallel, so they arrive a little shuffled.
 * Capped at two chunks so that reads in distinct chunks never look sequential. */
#define CHUNK_SEQ_SLACK (4ull << 20)
/* A reader is sequential once it has read a whole chunk's worth in order: the kernel's
 * readahead around one mmap fault (at most max_readahead, 4 MiB, below the 8 MiB chunk)
 * does not make a random reader look sequential. */

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

static struct cache_chunk *chunk_find(struct cache *c, const char *hex, uint64_t index)
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
	struct cache_chunk *ch = chunk_find(c, hex, index);
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
 * Fetches chunk index of b into its file (temp file, trailer, rename) and fills in
 * the identity of the file written. *disk_err tells a failure of the local disk
 * (full, read-only) from one of the store.
 */
static int chunk_fetch(struct cache *c, const struct cache_blob *b, uint64_t index,
		       uint64_t len, struct stat *st, int *disk_err)
{
	struct file_sink fs = { .fd = -1 };
	struct chunk_trailer t;
	char tmp[PATH_MAX], path[PATH_MAX];
	ssize_t got;
	int ret, renamed = 0;

	*disk_err = 0;
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
		chunk_path(c, b->hex, index, path, sizeof(path));
		char *slash = strrchr(path, '/');
		*slash = '\0';
		if (mkdir(path, 0700) < 0 && errno != EEXIST)
			ret = fs.disk_err = -errno;
		*slash = '/';
		if (ret == 0 && rename(tmp, path) < 0)
			ret = fs.disk_err = -errno;
		renamed = ret == 0;
		/* the identity after the rename (which changes ctime) is the one kept */
		if (ret == 0 && fstat(fs.fd, st) < 0)
			ret = fs.disk_err = -errno;
	}
	if (close(fs.fd) < 0 && ret == 0)
		ret = fs.disk_err = -errno;
	if (ret < 0 && renamed)
		unlink(path);
	if (ret < 0)
		unlink(tmp);
	*disk_err = fs.disk_err != 0;
	return ret;
}

/*
 * Reads n bytes at coff of a PRESENT chunk's file, verifying the file first unless
 * it is the one verified before. With fd_out, reads nothing and hands over the open,
 * verified file instead. -EBADMSG or -ENOENT: the file must be fetched again.
 */
static int chunk_pread(struct cache *c, struct cache_chunk *ch, const struct cache_blob *b,
		       char *dst, uint64_t coff, size_t n, int *fd_out)
{
	char path[PATH_MAX];
	struct stat st;
	uint64_t len = chunk_len(c, b, ch->index);
	int fd, ret, known;
	time_t now = time(NULL);

	chunk_path(c, b->hex, ch->index, path, sizeof(path));
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? -ENOENT : -errno;
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
	if (touch) {
		/* atime orders the LRU list again after a restart. It changes ctime too,
		 * so the identity is taken after it. */
		struct timespec ts[2] = { { 0, UTIME_NOW }, { 0, UTIME_OMIT } };
		if (futimens(fd, ts) == 0 && fstat(fd, &st) < 0) {
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

/*
 * Makes chunk index of b present and verified, then either copies n bytes at coff of
 * it into dst, or (fd_out) hands over its open file, or (neither: prefetch) only
 * leaves it present, verified and in the page cache. Returns 0 or -errno; with fd_out,
 * -EAGAIN when the cache cannot keep the chunk (read it with dst instead).
 */
static int chunk_access(struct cache *c, struct cache_blob *b, uint64_t index, char *dst,
			uint64_t coff, size_t n, int *fd_out)
{
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
			pthread_mutex_unlock(&c->lock);
			ret = chunk_pread(c, ch, b, dst, coff, n, fd_out);
			pthread_mutex_lock(&c->lock);
			if (ret != -EBADMSG && ret != -ENOENT)
				break;
			/* damaged or removed behind our back: fetch it again */
			if (ch->state == CHUNK_PRESENT) {
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
		int disk_err;
		ret = chunk_fetch(c, b, index, len, &st, &disk_err);
		if (ret < 0 && disk_err) {
			/* the cache's filesystem is full (or failing): make room for this
			 * chunk by dropping old ones, then try once more */
			pthread_mutex_lock(&c->lock);
			uint64_t need = len + sizeof(struct chunk_trailer);
			chunk_evict(c, c->stats.disk_bytes > need ? c->stats.disk_bytes - need : 0);
			pthread_mutex_unlock(&c->lock);
			ret = chunk_fetch(c, b, index, len, &st, &disk_err);
		}
		pthread_mutex_lock(&c->lock);
		if (ret == 0 || disk_err) {
			c->stats.fetches++;
			c->stats.fetched_bytes += len;
		}
		if (ret == 0) {
			ch->state = CHUNK_PRESENT;
			ch->disk_bytes = (uint64_t)st.st_size;
			remember_file(ch, &st);
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
		if (disk_err && fd_out) {
			ret = -EAGAIN;
		} else if (disk_err && dst) {
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
		int ret = chunk_access(c, job.blob, job.index, NULL, 0, 0, NULL);
		if (ret < 0)
			LOG_DEBUG("prefetch of chunk %" PRIu64 " of %s failed: %s", job.index,
				  job.blob->key, strerror(-ret));
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
	b->refs = 1;
	f->cache = c;
	f->blob = b;
	f->window = 2;
	pthread_mutex_init(&f->lock, NULL);
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
		f->window = 2;
		f->scheduled = 0;
		f->next_off = off + len;
		pthread_mutex_unlock(&f->lock);
		return;
	}
	if (off + len > f->next_off) {
		f->seq_bytes += off + len - (off > f->next_off ? off : f->next_off);
		f->next_off = off + len;
	}
	if (f->seq_bytes < c->chunk_size) {
		pthread_mutex_unlock(&f->lock);
		return;
	}
	from = f->scheduled > last + 1 ? f->scheduled : last + 1;
	to = last + f->window;
	if (to >= nchunks)
		to = nchunks - 1;
	if (from <= to) {
		f->scheduled = to + 1;
		/* the window doubles each time the reader needs more, up to readahead */
		if (f->window < c->readahead)
			f->window = f->window * 2 > c->readahead ? c->readahead : f->window * 2;
	}
	pthread_mutex_unlock(&f->lock);

	pthread_mutex_lock(&c->lock);
	for (uint64_t i = from; i <= to && c->qlen < CACHE_QUEUE_MAX; i++) {
		struct cache_chunk *ch = chunk_find(c, b->hex, i);
		/* absent chunks are fetched ahead; present ones not yet verified in this
		 * run are verified ahead (which also reads them into the page cache) */
		if (ch && (ch->state == CHUNK_FETCHING || (ch->state == CHUNK_PRESENT && ch->verified)))
			continue;
		struct cache_job *j = &c->queue[(c->qhead + c->qlen) % CACHE_QUEUE_MAX];
		j->blob = b;
		j->index = i;
		b->refs++;
		c->qlen++;
		pthread_cond_signal(&c->work);
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
		int ret = chunk_access(c, f->blob, index, buf + done, coff, n, NULL);
		if (ret < 0)
			return ret;
		done += n;
	}
	return 0;
}

/*
 * Extends the in-order hash with [off, off+n). Once every chunk of the blob has been
 * read through this file (in any order: parallel readahead shuffles them), the part
 * the in-order hash missed is read back from the cache, so a file read whole is
 * always checked, and a reader that skips parts (mmap) never causes a download.
 * Called with f->lock held. Returns -EBADMSG on a mismatch (then and for every later
 * read), logged here once.
 */
static int file_hash(struct cache_file *f, const char *buf, size_t n, uint64_t off)
{
	struct cache *c = f->cache;
	uint64_t size = f->blob->size;
	int ret = 0;

	if (f->hash_state != 0)
		return f->hash_state < 0 ? -EBADMSG : 0;
	if (off <= f->hash_off && off + n > f->hash_off) {
		EVP_DigestUpdate(f->sha, buf + (f->hash_off - off), off + n - f->hash_off);
		f->hash_off = off + n;
	}
	for (uint64_t i = off / c->chunk_size; i <= (off + n - 1) / c->chunk_size; i++) {
		if (!(f->touched[i / 8] & (1u << (i % 8)))) {
			f->touched[i / 8] |= (uint8_t)(1u << (i % 8));
			f->ntouched++;
		}
	}
	if (f->hash_off < size && f->ntouched == f->nchunks) {
		size_t piece = c->chunk_size;
		char *tmp = malloc(piece);
		while (tmp && f->hash_off < size) {
			size_t take = size - f->hash_off < piece ? (size_t)(size - f->hash_off) : piece;
			if (file_read_raw(f, tmp, take, f->hash_off) < 0)
				break; /* the store failed: checked on a later read */
			EVP_DigestUpdate(f->sha, tmp, take);
			f->hash_off += take;
		}
		free(tmp);
	}
	if (f->hash_off == size) {
		unsigned char md[32];
		unsigned int mdlen = 0;
		EVP_DigestFinal_ex(f->sha, md, &mdlen);
		if (memcmp(md, f->want, 32) == 0) {
			f->hash_state = 1;
			if (cache_write_file(c, f->mark, "", 0, 0) < 0)
				LOG_DEBUG("cannot keep the sha256 mark of %s", f->blob->key);
		} else {
			f->hash_state = -1;
			LOG_ERROR("%s: the bytes read do not match the registered sha256",
				  f->blob->key);
			ret = -EBADMSG;
		}
	}
	return ret;
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
	if (f->sha) {
		pthread_mutex_lock(&f->lock);
		ret = f->hash_state < 0 ? -EBADMSG : 0;
		pthread_mutex_unlock(&f->lock);
		if (ret < 0)
			return ret;
	}
	file_prefetch(f, off, len);
	ret = file_read_raw(f, buf, len, off);
	if (ret < 0)
		return ret;
	if (f->sha) {
		pthread_mutex_lock(&f->lock);
		ret = file_hash(f, buf, len, off);
		pthread_mutex_unlock(&f->lock);
		if (ret < 0)
			return ret;
	}
	(void)c;
	return (ssize_t)len;
}

ssize_t cache_file_map(struct cache_file *f, uint64_t off, size_t len,
		       struct cache_span *spans, int max, int *nspans)
{
	struct cache *c = f->cache;
	uint64_t size = f->blob->size;
	size_t done = 0;
	int ret = 0, n = 0;

	*nspans = 0;
	if (f->sha) {
		pthread_mutex_lock(&f->lock);
		int state = f->hash_state;
		pthread_mutex_unlock(&f->lock);
		if (state == 0)
			return -EAGAIN; /* being hashed: the bytes must pass through */
		if (state < 0)
			return -EBADMSG;
	}
	if (off >= size || len == 0)
		return 0;
	/* The kernel reads the handed-over files after this returns; a chunk file that
	 * another process truncates in between would read short. Once this mount has
	 * seen its cache files damaged, every read is copied and checked instead. */
	pthread_mutex_lock(&c->lock);
	int damaged = c->stats.damaged > 0;
	pthread_mutex_unlock(&c->lock);
	if (damaged)
		return -EAGAIN;
	if (len > size - off)
		len = (size_t)(size - off);
	file_prefetch(f, off, len);
	while (done < len) {
		if (n == max) {
			/* more pieces than the caller can take: let it copy instead */
			for (int i = 0; i < n; i++)
				close(spans[i].fd);
			return -EAGAIN;
		}
		uint64_t pos = off + done;
		uint64_t index = pos / c->chunk_size, coff = pos % c->chunk_size;
		size_t take = c->chunk_size - coff;
		int fd = -1;
		if (take > len - done)
			take = len - done;
		ret = chunk_access(c, f->blob, index, NULL, 0, 0, &fd);
		if (ret < 0)
			break;
		spans[n].fd = fd;
		spans[n].off = coff;
		spans[n].len = take;
		n++;
		done += take;
	}
	if (ret < 0) {
		for (int i = 0; i < n; i++)
			close(spans[i].fd);
		return ret;
	}
	*nspans = n;
	return (ssize_t)done;
}

void cache_file_close(struct cache_file *f)
{
	if (!f)
		return;
	if (f->sha)
		EVP_MD_CTX_free(f->sha);
	free(f->touched);
	cache_blob_unref(f->cache, f->blob);
	pthread_mutex_destroy(&f->lock);
	free(f);
}
