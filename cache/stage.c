/*
 * stage.c: files being written through the mount, staged on local disk and uploaded.
 *
 * A staged file is DIR/staging/<id> (the bytes) and DIR/staging/<id>.key (the store
 * and key it is for), both 0600. The bytes never sit only in memory: every write goes
 * to the file first. cache_stage_upload sends the file to the store as one blob: in
 * one request when it fits in one part, else as parts of st->part bytes sent by the
 * upload threads (CACHE_UPLOADERS at once, for every staged file together) and then
 * committed, so the blob appears whole or not at all.
 *
 * Parts that a writer has finished, in order, go up while it goes on writing: a
 * sequential writer's part is complete once the writer is past its end. Each part
 * counts its writes (gen); a part is sent as of the gen it had when it was read, and
 * counts as in the store only if no write came since. A write into a part already
 * sent makes it go again at the next upload, and a write that failed (ENOSPC) makes
 * the file never upload: half a file never reaches the store.
 *
 * A file whose upload failed, or a daemon that died, leaves the staged file in
 * place: the log names it, and the next cache over the folder lists every staged
 * file found there (cache_stage_scan) instead of deleting it.
 *
 * Lock order: st->lock, then c->stage_lock (the job queue); never the other way.
 */
#include "cache_private.h"
#include "../blob/log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct stage_part {
	uint32_t gen;		/* writes into the part so far */
	uint32_t sent;		/* gen + 1 of the copy in the upload; 0 none */
	int sending;		/* a job for it is queued or running */
	int err;		/* how its last send failed, or 0 */
};

struct cache_stage {
	struct cache *c;
	pthread_mutex_t lock;
	pthread_mutex_t append;	/* one append at a time: each at the end the last made */
	pthread_cond_t cond;	/* a part's send ended, or the upload began */
	int fd;
	int refs;		/* the owner, and each job queued or running */
	char *key;
	char path[PATH_MAX];	/* the bytes */
	char keypath[PATH_MAX + 8];	/* the key beside them */
	/* protected by lock: */
	uint64_t size;
	uint64_t part;		/* bytes per part */
	struct stage_part *parts;
	size_t nparts;		/* parts with state (covering size) */
	struct blob_upload *up;	/* the upload the parts go to, or NULL */
	int beginning;		/* a thread is starting the upload */
	uint64_t in_order;	/* bytes [0, in_order) were written in order */
	size_t early;		/* parts below this were handed to the threads early */
	int broken;		/* a write failed: the file never uploads (-errno) */
	int dirty;		/* changed since the last upload */
	uint64_t changes;	/* writes and truncations so far */
	struct blob_stat st;	/* the version the last upload made */
};

struct stage_job {
	struct stage_job *next;
	struct cache_stage *st;
	size_t index;
	uint64_t part;		/* st->part when queued (fixed while jobs run) */
};

/* ---- the staged file ---- */

static void stage_unref(struct cache_stage *st)
{
	pthread_mutex_lock(&st->lock);
	int last = --st->refs == 0;
	if (!last)
		pthread_cond_broadcast(&st->cond); /* rekey waits for the jobs to end */
	pthread_mutex_unlock(&st->lock);
	if (!last)
		return;
	if (st->up)
		blob_upload_abort(st->c->store, st->up);
	if (st->fd >= 0)
		close(st->fd);
	pthread_cond_destroy(&st->cond);
	pthread_mutex_destroy(&st->lock);
	pthread_mutex_destroy(&st->append);
	free(st->parts);
	free(st->key);
	free(st);
}

/* Writes "store id\nkey\n" beside the bytes, durably. */
static int stage_write_key(struct cache_stage *st, const char *key)
{
	const char *id = cache_store(st->c)->id;
	size_t len = strlen(id) + strlen(key) + 2;
	char *text = malloc(len + 1);
	int ret;

	if (!text)
		return -ENOMEM;
	snprintf(text, len + 1, "%s\n%s\n", id, key);
	ret = cache_write_file(st->c, st->keypath, text, len, 0);
	free(text);
	return ret;
}

static int stage_start_threads(struct cache *c);

int cache_stage_create(struct cache *c, const char *key, struct cache_stage **out)
{
	struct cache_stage *st;
	unsigned char rnd[8];
	char id[17];
	int ret;

	*out = NULL;
	ret = stage_start_threads(c);
	if (ret < 0)
		return ret;
	st = calloc(1, sizeof(*st));
	if (!st || !(st->key = strdup(key))) {
		free(st);
		return -ENOMEM;
	}
	st->c = c;
	st->refs = 1;
	st->fd = -1;
	st->part = CACHE_PART;
	pthread_mutex_init(&st->lock, NULL);
	pthread_mutex_init(&st->append, NULL);
	pthread_cond_init(&st->cond, NULL);
	for (int tries = 0; st->fd < 0; tries++) {
		if (tries == 100 || getentropy(rnd, sizeof(rnd)) < 0) {
			ret = -EIO;
			goto fail;
		}
		for (int i = 0; i < 8; i++)
			snprintf(id + 2 * i, 3, "%02x", rnd[i]);
		snprintf(st->path, sizeof(st->path), "%s/staging/%s", c->dir, id);
		st->fd = open(st->path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (st->fd < 0 && errno != EEXIST) {
			ret = -errno;
			goto fail;
		}
	}
	snprintf(st->keypath, sizeof(st->keypath), "%s.key", st->path);
	ret = stage_write_key(st, key);
	if (ret < 0) {
		unlink(st->path);
		goto fail;
	}
	st->dirty = 1; /* even empty, it is a file to make */
	*out = st;
	return 0;
fail:
	LOG_ERROR("cannot stage a file for '%s' in %s/staging: %s", key, c->dir, strerror(-ret));
	stage_unref(st);
	return ret;
}

const char *cache_stage_path(const struct cache_stage *st)
{
	return st->path;
}

uint64_t cache_stage_size(struct cache_stage *st)
{
	pthread_mutex_lock(&st->lock);
	uint64_t size = st->size;
	pthread_mutex_unlock(&st->lock);
	return size;
}

int cache_stage_broken(struct cache_stage *st)
{
	pthread_mutex_lock(&st->lock);
	int broken = st->broken;
	pthread_mutex_unlock(&st->lock);
	return broken;
}

uint64_t cache_stage_changes(struct cache_stage *st)
{
	pthread_mutex_lock(&st->lock);
	uint64_t n = st->changes;
	pthread_mutex_unlock(&st->lock);
	return n;
}

int cache_stage_dirty(struct cache_stage *st)
{
	pthread_mutex_lock(&st->lock);
	int dirty = st->dirty;
	pthread_mutex_unlock(&st->lock);
	return dirty;
}

/* Gives state to every part of a file of size bytes: 0 or -ENOMEM. */
static int parts_cover(struct cache_stage *st, uint64_t size)
{
	size_t n = (size_t)((size + st->part - 1) / st->part);

	if (n <= st->nparts)
		return 0;
	struct stage_part *np = realloc(st->parts, n * sizeof(*np));
	if (!np)
		return -ENOMEM;
	memset(np + st->nparts, 0, (n - st->nparts) * sizeof(*np));
	st->parts = np;
	st->nparts = n;
	return 0;
}

/* Forgets every part sent: the next upload starts over. Under st->lock. */
static void parts_unsend(struct cache_stage *st)
{
	for (size_t i = 0; i < st->nparts; i++)
		st->parts[i].sent = 0;
}

static void job_push(struct cache_stage *st, size_t index);

ssize_t cache_stage_write(struct cache_stage *st, const void *buf, size_t len, uint64_t off)
{
	size_t done = 0;
	int ret = 0, evicted = 0;

	if (len == 0)
		return 0;
	if (off + len < off)
		return -EFBIG;
	while (done < len) {
		ssize_t n = pwrite(st->fd, (const char *)buf + done, len - done,
				   (off_t)(off + done));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == ENOSPC && !evicted) {
			/* what is written comes before cached chunks, which the store has */
			cache_chunks_make_room(st->c, len - done + CACHE_PART, 1);
			evicted = 1;
			continue;
		}
		if (n < 0) {
			ret = -errno;
			break;
		}
		done += (size_t)n;
	}
	pthread_mutex_lock(&st->lock);
	if (ret == 0 && parts_cover(st, off + len) < 0)
		ret = -ENOMEM;
	if (ret < 0) {
		/* some bytes may be in, others not: this file must never reach the store */
		if (!st->broken)
			LOG_ERROR("write to the staged file of '%s' failed (%s): it will not be "
				  "uploaded", st->key, strerror(-ret));
		st->broken = ret;
		pthread_mutex_unlock(&st->lock);
		return ret;
	}
	if (off + len > st->size)
		st->size = off + len;
	for (size_t i = (size_t)(off / st->part); i <= (size_t)((off + len - 1) / st->part); i++)
		st->parts[i].gen++;
	st->dirty = 1;
	st->changes++;
	if (off <= st->in_order && off + len > st->in_order)
		st->in_order = off + len;
	/* the parts a writer in order has left behind go up now; a file of one part is
	 * sent whole in one request instead */
	while (st->in_order >= (st->early + 1) * st->part && st->in_order > st->part &&
	       st->early < st->nparts && !st->broken) {
		struct stage_part *p = &st->parts[st->early];
		if (!p->sending && p->sent != p->gen + 1)
			job_push(st, st->early);
		st->early++;
	}
	pthread_mutex_unlock(&st->lock);
	return (ssize_t)len;
}

ssize_t cache_stage_append(struct cache_stage *st, const void *buf, size_t len)
{
	pthread_mutex_lock(&st->append);
	pthread_mutex_lock(&st->lock);
	uint64_t end = st->size;
	pthread_mutex_unlock(&st->lock);
	ssize_t n = cache_stage_write(st, buf, len, end);
	pthread_mutex_unlock(&st->append);
	return n;
}

ssize_t cache_stage_read(struct cache_stage *st, void *buf, size_t len, uint64_t off)
{
	for (;;) {
		ssize_t n = pread(st->fd, buf, len, (off_t)off);
		if (n >= 0 || errno != EINTR)
			return n < 0 ? -errno : n;
	}
}

int cache_stage_truncate(struct cache_stage *st, uint64_t size)
{
	int ret = 0;

	if (ftruncate(st->fd, (off_t)size) < 0)
		return -errno;
	pthread_mutex_lock(&st->lock);
	if (parts_cover(st, size) < 0) {
		ret = -ENOMEM;
	} else {
		if (size < st->size && size % st->part)
			st->parts[size / st->part].gen++;
		for (size_t i = (size_t)(size / st->part) + (size % st->part ? 1 : 0);
		     i < st->nparts; i++)
			st->parts[i].gen++;
		st->size = size;
		if (st->in_order > size)
			st->in_order = size;
		if (st->early > size / st->part)
			st->early = (size_t)(size / st->part);
		st->dirty = 1;
		st->changes++;
	}
	pthread_mutex_unlock(&st->lock);
	return ret;
}

/* Fills the staged file with the bytes of the blob (its version etag), to change it
 * in place. Filled, it is clean: what the store has already, uploaded only once
 * written to (an open for writing that writes nothing, as touch(1) does, changes
 * nothing in the store), and no part goes up while it fills. */
int cache_stage_fill(struct cache_stage *st, const char *etag, uint64_t size)
{
	struct cache_file *f;
	size_t piece = 1u << 20;
	char *buf = malloc(piece);
	int ret, evicted = 0;

	if (!buf)
		return -ENOMEM;
	ret = cache_file_open(st->c, st->key, etag, size, NULL, &f);
	for (uint64_t off = 0; ret == 0 && off < size;) {
		ssize_t n = cache_file_read(f, buf, piece, off);
		if (n <= 0) {
			ret = n < 0 ? (int)n : -EIO;
			break;
		}
		for (ssize_t done = 0; ret == 0 && done < n;) {
			ssize_t w = pwrite(st->fd, buf + done, (size_t)(n - done),
					   (off_t)(off + (uint64_t)done));
			if (w < 0 && errno == ENOSPC && !evicted) {
				/* the blob's own chunks may go: it is in the store */
				cache_chunks_make_room(st->c, (size_t)(n - done) + CACHE_PART, 1);
				evicted = 1;
			} else if (w < 0 && errno != EINTR) {
				ret = -errno;
			} else if (w > 0) {
				done += w;
			}
		}
		off += (uint64_t)n;
	}
	if (f)
		cache_file_close(f);
	free(buf);
	if (ret == 0 && ftruncate(st->fd, (off_t)size) < 0)
		ret = -errno;
	if (ret < 0)
		return ret;
	pthread_mutex_lock(&st->lock);
	ret = parts_cover(st, size);
	st->size = size;
	st->dirty = 0;
	pthread_mutex_unlock(&st->lock);
	return ret;
}

int cache_stage_rekey(struct cache_stage *st, const char *key)
{
	char *nk = strdup(key);

	if (!nk)
		return -ENOMEM;
	pthread_mutex_lock(&st->lock);
	/* wait out the parts in flight: they go to the old key's upload */
	while (st->beginning || st->refs > 1)
		pthread_cond_wait(&st->cond, &st->lock);
	if (st->up) {
		blob_upload_abort(st->c->store, st->up);
		st->up = NULL;
	}
	parts_unsend(st);
	free(st->key);
	st->key = nk;
	st->dirty = 1;
	int ret = stage_write_key(st, key);
	pthread_mutex_unlock(&st->lock);
	return ret;
}

/* ---- the upload threads ---- */

static void job_push(struct cache_stage *st, size_t index)
{
	struct cache *c = st->c;
	struct stage_job *j = malloc(sizeof(*j));

	if (!j)
		return; /* the upload sends it later */
	j->st = st;
	j->index = index;
	j->part = st->part;
	j->next = NULL;
	st->refs++;
	st->parts[index].sending = 1;
	pthread_mutex_lock(&c->stage_lock);
	if (c->stage_tail)
		c->stage_tail->next = j;
	else
		c->stage_head = j;
	c->stage_tail = j;
	pthread_cond_signal(&c->stage_work);
	pthread_mutex_unlock(&c->stage_lock);
}

/* Starts the store's upload if there is none: under st->lock, dropped across it. */
static int stage_begin(struct cache_stage *st)
{
	while (st->beginning)
		pthread_cond_wait(&st->cond, &st->lock);
	if (st->up)
		return 0;
	st->beginning = 1;
	char *key = strdup(st->key);
	struct blob_upload *up = NULL;
	pthread_mutex_unlock(&st->lock);
	int ret = key ? blob_upload_begin(st->c->store, key, &up) : -ENOMEM;
	free(key);
	pthread_mutex_lock(&st->lock);
	st->beginning = 0;
	if (ret == 0)
		st->up = up;
	pthread_cond_broadcast(&st->cond);
	return ret;
}

/* Sends part index of st: the bytes it has now, as of its gen now. */
static void stage_send(struct cache_stage *st, size_t index, char *buf)
{
	pthread_mutex_lock(&st->lock);
	int ret = st->broken ? st->broken : stage_begin(st);
	struct stage_part *p;
	uint64_t off = (uint64_t)index * st->part;
	size_t len = 0;
	uint32_t gen = st->parts[index].gen;
	struct blob_upload *up = st->up;

	if (ret == 0 && off < st->size)
		len = st->size - off < st->part ? (size_t)(st->size - off) : (size_t)st->part;
	pthread_mutex_unlock(&st->lock);
	if (ret == 0 && len == 0)
		ret = -ECANCELED; /* truncated away meanwhile */
	for (size_t done = 0; ret == 0 && done < len;) {
		ssize_t n = pread(st->fd, buf + done, len - done, (off_t)(off + done));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			ret = n < 0 ? -errno : -EIO;
		else
			done += (size_t)n;
	}
	if (ret == 0)
		ret = blob_upload_part(st->c->store, up, (unsigned)index, off, buf, len);
	pthread_mutex_lock(&st->lock);
	p = &st->parts[index]; /* the array may have moved */
	p->sending = 0;
	p->err = ret == -ECANCELED ? 0 : ret;
	if (ret == 0 && st->up == up)
		p->sent = gen + 1;
	pthread_cond_broadcast(&st->cond);
	pthread_mutex_unlock(&st->lock);
}

static void *stage_uploader(void *arg)
{
	struct cache *c = arg;
	char *buf = NULL;
	uint64_t cap = 0;

	pthread_mutex_lock(&c->stage_lock);
	for (;;) {
		while (!c->stage_head && !c->stage_stopping)
			pthread_cond_wait(&c->stage_work, &c->stage_lock);
		if (!c->stage_head)
			break;
		struct stage_job *j = c->stage_head;
		c->stage_head = j->next;
		if (!c->stage_head)
			c->stage_tail = NULL;
		pthread_mutex_unlock(&c->stage_lock);
		if (cap < j->part) {
			free(buf);
			buf = malloc((size_t)j->part);
			cap = buf ? j->part : 0;
		}
		if (buf) {
			stage_send(j->st, j->index, buf);
		} else {
			pthread_mutex_lock(&j->st->lock);
			j->st->parts[j->index].sending = 0;
			j->st->parts[j->index].err = -ENOMEM;
			pthread_cond_broadcast(&j->st->cond);
			pthread_mutex_unlock(&j->st->lock);
		}
		/* a part is a large buffer: given back while no job waits */
		pthread_mutex_lock(&c->stage_lock);
		int idle = !c->stage_head;
		pthread_mutex_unlock(&c->stage_lock);
		if (idle) {
			free(buf);
			buf = NULL;
			cap = 0;
		}
		stage_unref(j->st);
		free(j);
		pthread_mutex_lock(&c->stage_lock);
	}
	pthread_mutex_unlock(&c->stage_lock);
	free(buf);
	return NULL;
}

static int stage_start_threads(struct cache *c)
{
	int ret = 0;

	pthread_mutex_lock(&c->stage_lock);
	for (; c->nuploaders < CACHE_UPLOADERS && !c->stage_stopping; c->nuploaders++) {
		sigset_t all, old;
		sigfillset(&all);
		pthread_sigmask(SIG_BLOCK, &all, &old);
		ret = -pthread_create(&c->uploaders[c->nuploaders], NULL, stage_uploader, c);
		pthread_sigmask(SIG_SETMASK, &old, NULL);
		if (ret < 0)
			break;
		pthread_setname_np(c->uploaders[c->nuploaders], "afs-upload");
	}
	if (c->stage_stopping)
		ret = -EIO;
	pthread_mutex_unlock(&c->stage_lock);
	return ret;
}

void cache_stage_stop(struct cache *c)
{
	pthread_mutex_lock(&c->stage_lock);
	c->stage_stopping = 1;
	pthread_cond_broadcast(&c->stage_work);
	pthread_mutex_unlock(&c->stage_lock);
	for (unsigned i = 0; i < c->nuploaders; i++)
		pthread_join(c->uploaders[i], NULL);
	c->nuploaders = 0;
}

/* ---- the upload ---- */

/* The whole file in one request. Under st->lock, dropped across it. */
static int stage_put(struct cache_stage *st, int excl)
{
	uint64_t size = st->size;
	char *buf = malloc(size ? (size_t)size : 1);
	char *key = strdup(st->key);
	struct blob_stat out = { 0 };
	int ret = buf && key ? 0 : -ENOMEM;

	pthread_mutex_unlock(&st->lock);
	for (size_t done = 0; ret == 0 && done < size;) {
		ssize_t n = pread(st->fd, buf + done, (size_t)size - done, (off_t)done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			ret = n < 0 ? -errno : -EIO;
		else
			done += (size_t)n;
	}
	if (ret == 0)
		ret = blob_put(st->c->store, key, buf, (size_t)size, excl, &out);
	free(buf);
	free(key);
	pthread_mutex_lock(&st->lock);
	if (ret == 0)
		st->st = out;
	return ret;
}

/* Sends every part not in the upload and commits them. Under st->lock, dropped
 * across the store's work. */
static int stage_parts(struct cache_stage *st, int excl)
{
	size_t n = (size_t)((st->size + st->part - 1) / st->part);
	int ret;

	if (n > BLOB_PARTS_MAX) {
		/* larger parts: start over with parts that make at most the bound */
		while (st->beginning || st->refs > 1)
			pthread_cond_wait(&st->cond, &st->lock);
		uint64_t part = (st->size + BLOB_PARTS_MAX - 1) / BLOB_PARTS_MAX;
		part = (part + (1u << 20) - 1) & ~(uint64_t)((1u << 20) - 1);
		if (part > CACHE_PART_MAX)
			return -EFBIG;
		if (st->up) {
			blob_upload_abort(st->c->store, st->up);
			st->up = NULL;
		}
		free(st->parts);
		st->parts = NULL;
		st->nparts = 0;
		st->part = part;
		st->early = 0;
		if (parts_cover(st, st->size) < 0)
			return -ENOMEM;
		n = (size_t)((st->size + st->part - 1) / st->part);
	}
	ret = stage_begin(st);
	if (ret < 0)
		return ret;
	for (int round = 0;; round++) {
		for (size_t i = 0; i < n; i++) {
			struct stage_part *p = &st->parts[i];
			if (!p->sending && p->sent != p->gen + 1) {
				p->err = 0;
				job_push(st, i);
			}
		}
		int busy = 1;
		while (busy) {
			busy = 0;
			for (size_t i = 0; i < n && !busy; i++)
				busy = st->parts[i].sending;
			if (busy)
				pthread_cond_wait(&st->cond, &st->lock);
		}
		ret = 0;
		int missing = 0;
		for (size_t i = 0; i < n; i++) {
			if (st->parts[i].sent != st->parts[i].gen + 1) {
				missing = 1;
				if (st->parts[i].err && !ret)
					ret = st->parts[i].err;
			}
		}
		if (ret < 0 || st->broken)
			break;
		if (!missing)
			break;
		if (round == 3)
			return -EIO; /* written faster than sent, round after round */
	}
	if (st->broken)
		ret = st->broken;
	if (ret < 0) {
		/* the parts sent are dropped: nothing is left in the store */
		if (st->up && st->refs == 1 && !st->beginning) {
			blob_upload_abort(st->c->store, st->up);
			st->up = NULL;
			parts_unsend(st);
		}
		return ret;
	}
	struct blob_upload *up = st->up;
	struct blob_stat out = { 0 };
	uint64_t size = st->size;
	st->up = NULL; /* the commit ends the upload, done or failed */
	parts_unsend(st);
	pthread_mutex_unlock(&st->lock);
	ret = blob_upload_commit(st->c->store, up, (unsigned)n, size, excl, &out);
	pthread_mutex_lock(&st->lock);
	if (ret == 0)
		st->st = out;
	return ret;
}

int cache_stage_upload(struct cache_stage *st, int excl, struct blob_stat *out)
{
	int ret;

	pthread_mutex_lock(&st->lock);
	if (st->broken) {
		ret = st->broken;
	} else if (!st->dirty) {
		ret = 0; /* what the store has is this */
	} else {
		/* writes from here on are the next upload's */
		uint32_t before = 0;
		for (size_t i = 0; i < st->nparts; i++)
			before += st->parts[i].gen;
		uint64_t size = st->size;
		st->dirty = 0;
		if (size <= st->part && !st->up)
			ret = stage_put(st, excl);
		else
			ret = stage_parts(st, excl);
		uint32_t after = 0;
		for (size_t i = 0; i < st->nparts; i++)
			after += st->parts[i].gen;
		if (ret < 0 || after != before || st->size != size)
			st->dirty = 1;
		__atomic_fetch_add(ret == 0 ? &st->c->stats.uploads : &st->c->stats.upload_failures,
				   1, __ATOMIC_RELAXED);
		if (ret == 0)
			__atomic_fetch_add(&st->c->stats.uploaded_bytes, size, __ATOMIC_RELAXED);
	}
	if (ret == 0 && out)
		*out = st->st;
	pthread_mutex_unlock(&st->lock);
	return ret;
}

void cache_stage_free(struct cache_stage *st, int keep)
{
	if (!st)
		return;
	if (!keep) {
		unlink(st->path);
		unlink(st->keypath);
	}
	stage_unref(st);
}

/* ---- what an earlier mount left ---- */

int cache_stage_scan(struct cache *c)
{
	char path[PATH_MAX];
	struct dirent *d;
	DIR *dir;
	int found = 0;

	snprintf(path, sizeof(path), "%s/staging", c->dir);
	if (mkdir(path, 0700) < 0 && errno != EEXIST)
		return -errno;
	dir = opendir(path);
	if (!dir)
		return -errno;
	while ((d = readdir(dir))) {
		size_t len = strlen(d->d_name);
		if (len < 5 || strcmp(d->d_name + len - 4, ".key") != 0)
			continue;
		char kp[PATH_MAX + 256], text[PATH_MAX + 512] = "";
		snprintf(kp, sizeof(kp), "%s/%s", path, d->d_name);
		int fd = open(kp, O_RDONLY | O_CLOEXEC);
		ssize_t n = fd >= 0 ? read(fd, text, sizeof(text) - 1) : -1;
		if (fd >= 0)
			close(fd);
		text[n > 0 ? n : 0] = '\0';
		char *nl = strchr(text, '\n');
		char *key = nl ? nl + 1 : text;
		if (nl)
			*nl = '\0';
		char *end = strchr(key, '\n');
		if (end)
			*end = '\0';
		LOG_WARN("a file written through an earlier mount never reached the store: "
			 "'%s' (store %s); its bytes are kept in %s/%.*s", key, nl ? text : "?",
			 path, (int)(len - 4), d->d_name);
		found++;
	}
	closedir(dir);
	return found;
}
