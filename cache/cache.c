/*
 * cache.c: the cache's life cycle (folder set-up, workers) and the helpers its other
 * files share.
 *
 * Folder layout (every folder 0700):
 *   DIR/chunks/XX/<id>.<n>   chunk n of the blob version <id> (XX: first two digits)
 *   DIR/meta/XX/<id>         a listing (JSON) or a record (raw bytes)
 *   DIR/tmp/                 files being written; emptied at start
 *   DIR/staging/<r>[.key]    files written through the mount, and their keys
 *                            (stage.c); kept until uploaded
 * <id> is a SHA-256 over the store id and the key (and etag and chunk size for
 * chunks), so no key, etag or credential appears in a file name.
 */
#include "cache_private.h"
#include "../blob/log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/file.h>
#include <limits.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

uint64_t cache_hash_str(const char *s, uint64_t seed)
{
	uint64_t h = blob_fnv(s, strlen(s), BLOB_FNV_INIT ^ seed);

	return h ^ (h >> 29);
}

uint64_t cache_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

time_t cache_now(void)
{
	return (time_t)(cache_now_ms() / 1000);
}

void cache_sha256_hex(const void *parts[], const size_t lens[], int n,
		      char hex[CACHE_HEX_LEN + 1])
{
	unsigned char md[32];
	unsigned int mdlen = 0;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();

	/* Each part is followed by a NUL so that ("ab","c") and ("a","bc") differ. */
	EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
	for (int i = 0; i < n; i++) {
		EVP_DigestUpdate(ctx, parts[i], lens[i]);
		EVP_DigestUpdate(ctx, "", 1);
	}
	EVP_DigestFinal_ex(ctx, md, &mdlen);
	EVP_MD_CTX_free(ctx);
	for (int i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
}

int cache_write_file(struct cache *c, const char *path, const void *data, size_t len,
		     int durable)
{
	char tmp[PATH_MAX];
	int fd, ret = 0;

	snprintf(tmp, sizeof(tmp), "%s/tmp/meta.XXXXXX", c->dir);
	fd = mkstemp(tmp);
	if (fd < 0)
		return -errno;
	for (size_t done = 0; done < len;) {
		ssize_t n = write(fd, (const char *)data + done, len - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			ret = -errno;
			break;
		}
		done += (size_t)n;
	}
	if (ret == 0 && durable && fsync(fd) < 0)
		ret = -errno;
	if (close(fd) < 0 && ret == 0)
		ret = -errno;
	if (ret == 0) {
		char dir[PATH_MAX];
		snprintf(dir, sizeof(dir), "%s", path);
		*strrchr(dir, '/') = '\0';
		if (mkdir(dir, 0700) < 0 && errno != EEXIST)
			ret = -errno;
		else if (rename(tmp, path) < 0)
			ret = -errno;
	}
	if (ret < 0)
		unlink(tmp);
	return ret;
}

/* mkdir -p with mode 0700 for what it creates. */
static int make_dirs(const char *path)
{
	char tmp[PATH_MAX];

	if ((size_t)snprintf(tmp, sizeof(tmp), "%s", path) >= sizeof(tmp))
		return -ENAMETOOLONG;
	for (char *p = tmp + 1;; p++) {
		if (*p == '/' || *p == '\0') {
			char was = *p;
			*p = '\0';
			if (mkdir(tmp, 0700) < 0 && errno != EEXIST)
				return -errno;
			*p = was;
			if (!was)
				break;
		}
	}
	return 0;
}

/* Removes what a crashed writer left in tmp/: the folder is this cache's alone (the
 * lock), so nothing there is anybody's work in progress. */
static void empty_tmp(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;

	if (!d)
		return;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			unlinkat(dirfd(d), e->d_name, 0);
	closedir(d);
}

/*
 * One cache folder, one cache: DIR/lock is flock'ed for the cache's life, so a second
 * mount over the folder (which would keep its own count of the bytes on disk, and
 * break the bound) is refused. The lock dies with the process that holds it, kill -9
 * included. The file names the holder, for the refusal's message.
 */
/* Whether the mount point named in a holder's text ("the mount on PATH (pid N)") is
 * still mounted. A holder whose mount is gone is a daemon on its way out. */
static int holder_mounted(const char *who)
{
	const char *on = "the mount on ", *end = strstr(who, " (pid ");
	char want[PATH_MAX], line[2 * PATH_MAX], point[PATH_MAX];
	int found = 0;

	if (strncmp(who, on, strlen(on)) != 0 || !end)
		return 1;
	snprintf(want, sizeof(want), "%.*s", (int)(end - who - strlen(on)), who + strlen(on));
	FILE *f = fopen("/proc/self/mountinfo", "re");
	if (!f)
		return 1;
	while (!found && fgets(line, sizeof(line), f))
		found = blob_mountinfo_line(line, point, sizeof(point), NULL, 0, NULL, 0) == 0 &&
			strcmp(point, want) == 0;
	fclose(f);
	return found;
}

static int folder_lock(struct cache *c, char *err, size_t errlen)
{
	char path[PATH_MAX], who[256] = "";
	int fd;

	snprintf(path, sizeof(path), "%s/lock", c->dir);
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		int e = errno;
		snprintf(err, errlen, "cache folder %s: %s", c->dir, strerror(e));
		return -e;
	}
	/* a daemon unmounted a moment ago may still be finishing: its lock goes with
	 * it, so a mount right after umount waits for that (20 s at most) */
	for (int waited = 0; flock(fd, LOCK_EX | LOCK_NB) < 0 && errno == EWOULDBLOCK &&
			     waited < 400; waited++) {
		ssize_t n = pread(fd, who, sizeof(who) - 1, 0);
		who[n > 0 ? n : 0] = '\0';
		who[strcspn(who, "\n")] = '\0';
		if (!who[0] || holder_mounted(who))
			break;
		usleep(50 * 1000);
	}
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		int e = errno == EWOULDBLOCK ? EBUSY : errno;
		ssize_t n = pread(fd, who, sizeof(who) - 1, 0);
		who[n > 0 ? n : 0] = '\0';
		who[strcspn(who, "\n")] = '\0';
		for (char *p = who; *p; p++)
			if ((unsigned char)*p < 0x20)
				*p = '?';
		close(fd);
		if (e == EBUSY)
			snprintf(err, errlen, "cache folder %s is in use by %s; give each mount "
				 "its own --cache-dir", c->dir, who[0] ? who : "another mount");
		else
			snprintf(err, errlen, "cache folder %s: %s", c->dir, strerror(e));
		return -e;
	}
	c->lock_fd = fd;
	return 0;
}

/* Writes who holds the folder (this process, now that it will not fork again). */
static void folder_holder(struct cache *c)
{
	char text[PATH_MAX + 64];
	int n;

	if (c->lock_fd < 0)
		return;
	n = snprintf(text, sizeof(text), "the mount on %s (pid %d)\n",
		     c->holder ? c->holder : "?", (int)getpid());
	if (n > 0 && ftruncate(c->lock_fd, 0) == 0 && pwrite(c->lock_fd, text, (size_t)n, 0) < 0)
		LOG_DEBUG("cannot write %s/lock", c->dir);
}

int cache_create(const struct cache_config *cfg, struct blob_store *store,
		 struct cache **out, char *err, size_t errlen)
{
	struct cache *c = NULL;
	char path[PATH_MAX];
	struct stat st;
	int ret;

	*out = NULL;
	c = calloc(1, sizeof(*c));
	if (!c) {
		ret = -ENOMEM;
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	c->store = store;
	c->dir = strdup(cfg->dir);
	c->max_bytes = cfg->max_bytes;
	c->chunk_size = cfg->chunk_size ? cfg->chunk_size : CACHE_DEFAULT_CHUNK;
	c->ttl = cfg->ttl;
	c->nworkers = cfg->workers > CACHE_MAX_WORKERS ? CACHE_MAX_WORKERS : cfg->workers;
	c->readahead = cfg->readahead;
	uint64_t mem_bytes = cfg->mem_bytes ? cfg->mem_bytes : CACHE_DEFAULT_MEM_BYTES;
	c->mem_max = (unsigned)(mem_bytes / c->chunk_size);
	if (c->mem_max < CACHE_MEM_MIN)
		c->mem_max = CACHE_MEM_MIN;
	c->mems = calloc(c->mem_max, sizeof(*c->mems));
	pthread_mutex_init(&c->lock, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&c->write_work, &ca);
	pthread_cond_init(&c->mem_cond, &ca);
	pthread_condattr_destroy(&ca);
	pthread_cond_init(&c->cond, NULL);
	pthread_cond_init(&c->work, NULL);
	pthread_cond_init(&c->hash_work, NULL);
	pthread_mutex_init(&c->stage_lock, NULL);
	pthread_cond_init(&c->stage_work, NULL);
	c->nbuckets = 1024;
	c->chunks = calloc(c->nbuckets, sizeof(*c->chunks));
	c->lock_fd = -1;
	c->started_wall = time(NULL);
	c->holder = cfg->holder ? strdup(cfg->holder) : NULL;
	c->lease_mode = -1; /* until cache_start */
	if (!c->dir || !c->chunks || !c->mems || cache_metas_init(c, cfg->meta_bytes) < 0 ||
	    (cfg->holder && !c->holder)) {
		ret = -ENOMEM;
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	ret = make_dirs(c->dir);
	if (ret == 0 && (stat(c->dir, &st) < 0 || !S_ISDIR(st.st_mode)))
		ret = -ENOTDIR;
	if (ret == 0 && st.st_uid == geteuid() && (st.st_mode & 077) && chmod(c->dir, 0700) < 0)
		ret = -errno;
	const char *subs[] = { "chunks", "meta", "tmp" };
	for (int i = 0; ret == 0 && i < 3; i++) {
		snprintf(path, sizeof(path), "%s/%s", c->dir, subs[i]);
		if (mkdir(path, 0700) < 0 && errno != EEXIST)
			ret = -errno;
	}
	if (ret == 0) {
		snprintf(path, sizeof(path), "%s/tmp", c->dir);
		if (access(path, W_OK) < 0)
			ret = -errno;
	}
	if (ret < 0) {
		snprintf(err, errlen, "cache folder %s: %s", c->dir, strerror(-ret));
		goto fail;
	}
	ret = folder_lock(c, err, errlen);
	if (ret < 0)
		goto fail;
	folder_holder(c);
	empty_tmp(path);
	ret = cache_chunks_scan(c);
	if (ret >= 0 && store->ops->put) {
		int found = cache_stage_scan(c);
		ret = found < 0 ? found : 0;
	}
	if (ret < 0) {
		snprintf(err, errlen, "cache folder %s: %s", c->dir, strerror(-ret));
		goto fail;
	}
	*out = c;
	return 0;
fail:
	if (c) {
		c->store = NULL; /* the caller keeps the store when we fail */
		cache_destroy(c);
	}
	return ret;
}

int cache_start(struct cache *c)
{
	sigset_t all, old;
	int ret = 0;

	/* Workers block every signal: the FUSE loop's thread handles them. */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	for (; c->started < c->nworkers; c->started++) {
		ret = -pthread_create(&c->workers[c->started], NULL, cache_worker, c);
		if (ret == 0)
			pthread_setname_np(c->workers[c->started], "afs-prefetch");
		if (ret < 0)
			break;
	}
	if (ret == 0 && !c->writer_started) {
		ret = -pthread_create(&c->writer, NULL, cache_writer, c);
		if (ret == 0)
			pthread_setname_np(c->writer, "afs-writer");
		c->writer_started = ret == 0;
	}
	if (ret == 0)
		ret = cache_metas_start(c);
	if (ret == 0 && !c->hasher_started) {
		c->hash_buf = malloc(HASH_PIECE);
		ret = c->hash_buf ? -pthread_create(&c->hasher, NULL, cache_hasher, c) : -ENOMEM;
		c->hasher_started = ret == 0;
		if (ret == 0)
			pthread_setname_np(c->hasher, "afs-hasher");
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (ret == 0) {
		cache_lease_start(c);
		folder_holder(c);
	}
	return ret;
}

void cache_destroy(struct cache *c)
{
	if (!c)
		return;
	/* no thread waits out a deadline of a store that stalls */
	if (c->store)
		blob_stop(c->store);
	cache_stage_stop(c);
	cache_metas_free(c);
	pthread_mutex_lock(&c->lock);
	c->stopping = 1;
	pthread_cond_broadcast(&c->work);
	pthread_cond_broadcast(&c->hash_work);
	pthread_cond_broadcast(&c->mem_cond);
	pthread_mutex_unlock(&c->lock);
	for (unsigned i = 0; i < c->started; i++)
		pthread_join(c->workers[i], NULL);
	if (c->hasher_started)
		pthread_join(c->hasher, NULL);
	cache_writer_stop(c); /* what was fetched is written first */
	while (c->hash_head) {
		struct cache_file *f = c->hash_head;
		c->hash_head = f->hash_next;
		cache_file_unref(f);
	}
	while (c->qlen) {
		cache_blob_unref(c, c->queue[c->qhead].blob);
		c->qhead = (c->qhead + 1) % CACHE_QUEUE_MAX;
		c->qlen--;
	}
	if (c->chunks && c->lock_fd >= 0)
		cache_chunks_known_save(c);
	if (c->chunks)
		cache_chunks_free(c);
	if (c->mems)
		cache_mems_free(c);
	pthread_cond_destroy(&c->write_work);
	pthread_cond_destroy(&c->mem_cond);
	pthread_cond_destroy(&c->work);
	pthread_cond_destroy(&c->hash_work);
	free(c->hash_buf);
	pthread_cond_destroy(&c->cond);
	pthread_mutex_destroy(&c->lock);
	pthread_cond_destroy(&c->stage_work);
	pthread_mutex_destroy(&c->stage_lock);
	blob_destroy(c->store);
	if (c->lock_fd >= 0)
		close(c->lock_fd);
	free(c->holder);
	free(c->dir);
	free(c);
}

const char *cache_folder(const struct cache *c)
{
	return c->dir;
}

struct blob_store *cache_store(struct cache *c)
{
	return c->store;
}

void cache_get_stats(struct cache *c, struct cache_stats *out)
{
	pthread_mutex_lock(&c->lock);
	*out = c->stats;
	out->mem_bytes = (uint64_t)c->nmems * c->chunk_size;
	out->served_bytes = __atomic_load_n(&c->stats.served_bytes, __ATOMIC_RELAXED);
	out->uploads = __atomic_load_n(&c->stats.uploads, __ATOMIC_RELAXED);
	out->upload_failures = __atomic_load_n(&c->stats.upload_failures, __ATOMIC_RELAXED);
	out->uploaded_bytes = __atomic_load_n(&c->stats.uploaded_bytes, __ATOMIC_RELAXED);
	out->max_bytes = c->max_bytes;
	pthread_mutex_unlock(&c->lock);
}
