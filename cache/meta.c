/*
 * meta.c: listings and small records through the cache.
 *
 * Each is kept in memory (struct cache_meta) and, after every answer of the store,
 * on disk (DIR/meta/XX/<id>). The store is asked again once the TTL has passed
 * (immutable records: never, once seen); one thread asks while the others wait for
 * its answer. When the store fails, the last copy (memory, else disk) is served, so
 * a mount whose store is unreachable still shows what it showed before; the failed
 * copy then counts as fresh for another TTL so an unreachable store is not asked on
 * every lookup.
 */
#include "cache_private.h"
#include "../blob/log.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Largest record read whole: registry records and alias tables are small. */
#define META_RECORD_MAX (16u << 20)

static struct cache_meta *meta_get(struct cache *c, const char *name)
{
	size_t b = cache_hash_str(name, 0) & (c->nmeta_buckets - 1);
	struct cache_meta *m = c->metas[b];

	while (m && strcmp(m->name, name) != 0)
		m = m->hnext;
	if (m)
		return m;
	m = calloc(1, sizeof(*m));
	if (!m || !(m->name = strdup(name))) {
		free(m);
		return NULL;
	}
	m->hnext = c->metas[b];
	c->metas[b] = m;
	c->nmetas++;
	return m;
}

void cache_meta_path(struct cache *c, const char *name, char *path, size_t size)
{
	char hex[CACHE_HEX_LEN + 1];
	const void *parts[] = { c->store->id, name };
	const size_t lens[] = { strlen(c->store->id), strlen(name) };

	cache_sha256_hex(parts, lens, 2, hex);
	snprintf(path, size, "%s/meta/%.2s/%s", c->dir, hex, hex);
}

static int read_file(const char *path, char **data, size_t *len)
{
	struct stat st;
	char *buf = NULL;
	int fd, ret = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0 || st.st_size > META_RECORD_MAX * 8) {
		ret = -EIO;
		goto out;
	}
	buf = malloc((size_t)st.st_size + 1);
	if (!buf) {
		ret = -ENOMEM;
		goto out;
	}
	size_t done = 0;
	while (done < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + done, (size_t)st.st_size - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			ret = -EIO;
			goto out;
		}
		done += (size_t)n;
	}
	buf[done] = '\0';
	*data = buf;
	*len = done;
	buf = NULL;
out:
	free(buf);
	close(fd);
	return ret;
}

/* ---- records on disk: a header line with the length and CRC-32C of the bytes, so a
 * damaged copy is found (and fetched again) instead of trusted ---- */
#define RECORD_MAGIC "artifactfs-record 1"

static int record_save(struct cache *c, const char *path, const char *data, size_t len,
		       int durable)
{
	char head[96];
	int n = snprintf(head, sizeof(head), RECORD_MAGIC " %zu %08x\n", len,
			 cache_crc32c(0, data, len));
	char *all = malloc((size_t)n + len);
	int ret;

	if (!all)
		return -ENOMEM;
	memcpy(all, head, (size_t)n);
	memcpy(all + n, data, len);
	ret = cache_write_file(c, path, all, (size_t)n + len, durable);
	free(all);
	return ret;
}

static int record_load(const char *path, char **data, size_t *len)
{
	char *text = NULL, *nl;
	size_t tlen = 0, want = 0;
	unsigned crc;
	int ret = read_file(path, &text, &tlen);

	if (ret < 0)
		return ret;
	nl = memchr(text, '\n', tlen);
	if (!nl || sscanf(text, RECORD_MAGIC " %zu %x", &want, &crc) != 2 ||
	    want != tlen - (size_t)(nl + 1 - text) || cache_crc32c(0, nl + 1, want) != crc) {
		LOG_INFO("cached copy %s is damaged; dropping it", path);
		unlink(path);
		free(text);
		return -ENOENT;
	}
	memmove(text, nl + 1, want);
	text[want] = '\0';
	*data = text;
	*len = want;
	return 0;
}

/* ---- listings on disk ----
 * One line of header, then one line per entry: name, folder flag, size, mtime seconds
 * and nanoseconds, etag, separated by tabs. Names never hold a control character
 * (blob_list_clean drops those), and a listing with such an etag is not kept, so the
 * format needs no escaping. Streaming it keeps memory flat for folders of millions.
 */
#define LISTING_MAGIC "artifactfs-listing 1"

static int line_ok(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20)
			return 0;
	return 1;
}

static int listing_save(struct cache *c, const char *name, const struct blob_list *l,
			int missing)
{
	size_t cap = 64 + l->count * 64, len = 0;
	char *text = malloc(cap), path[PATH_MAX];
	int ret;

	if (!text)
		return -ENOMEM;
	len = (size_t)snprintf(text, cap, LISTING_MAGIC "\t%d\n", missing);
	for (size_t i = 0; i < l->count; i++) {
		const struct blob_entry *e = &l->entries[i];
		size_t need = strlen(e->name) + strlen(e->etag) + 80;
		if (!line_ok(e->name) || !line_ok(e->etag)) {
			free(text);
			return -EINVAL;
		}
		if (len + need > cap) {
			cap = (len + need) * 2;
			char *n = realloc(text, cap);
			if (!n) {
				free(text);
				return -ENOMEM;
			}
			text = n;
		}
		len += (size_t)snprintf(text + len, cap - len, "%s\t%d\t%llu\t%lld\t%ld\t%s\n",
					e->name, e->is_dir, (unsigned long long)e->size,
					(long long)e->mtime.tv_sec, e->mtime.tv_nsec, e->etag);
	}
	cache_meta_path(c, name, path, sizeof(path));
	ret = record_save(c, path, text, len, 0);
	free(text);
	return ret;
}

static int listing_load(struct cache *c, const char *name, struct blob_list *l, int *missing)
{
	char path[PATH_MAX], *text = NULL, *p, *end;
	size_t len;
	int ret;

	cache_meta_path(c, name, path, sizeof(path));
	ret = record_load(path, &text, &len);
	if (ret < 0)
		return ret;
	ret = -EBADMSG;
	end = text + len;
	p = memchr(text, '\n', len);
	if (!p || strncmp(text, LISTING_MAGIC "\t", strlen(LISTING_MAGIC) + 1) != 0)
		goto out;
	*missing = text[strlen(LISTING_MAGIC) + 1] == '1';
	for (p++; p < end;) {
		char *nl = memchr(p, '\n', (size_t)(end - p)), *f[6];
		int n = 0;
		if (!nl)
			goto out;
		*nl = '\0';
		for (char *q = p; n < 6; n++) {
			f[n] = q;
			q = strchr(q, '\t');
			if (!q)
				break;
			*q++ = '\0';
		}
		if (n != 5)
			goto out; /* not six fields */
		struct blob_entry e = { 0 };
		char *x;
		e.name = f[0];
		e.is_dir = f[1][0] == '1';
		errno = 0;
		e.size = strtoull(f[2], &x, 10);
		if (*x)
			goto out;
		e.mtime.tv_sec = (time_t)strtoll(f[3], &x, 10);
		if (*x)
			goto out;
		e.mtime.tv_nsec = strtol(f[4], &x, 10);
		if (*x || errno || strlen(f[5]) >= BLOB_ETAG_MAX)
			goto out;
		memcpy(e.etag, f[5], strlen(f[5]) + 1);
		if (blob_list_add(l, &e) < 0) {
			ret = -ENOMEM;
			goto out;
		}
		p = nl + 1;
	}
	ret = 0;
out:
	free(text);
	return ret;
}

static struct cache_listing *listing_new(struct cache *c, struct blob_list *l)
{
	struct cache_listing *cl = calloc(1, sizeof(*cl));

	if (!cl)
		return NULL;
	cl->list = *l; /* takes the entries */
	blob_list_init(l);
	cl->refs = 1;
	cl->cache = c;
	return cl;
}

/* Drops one reference; called with c->lock held. */
static void listing_unref_locked(struct cache_listing *cl)
{
	if (cl && --cl->refs == 0) {
		blob_list_release(&cl->list);
		free(cl);
	}
}

void cache_listing_unref(struct cache_listing *cl)
{
	if (!cl)
		return;
	struct cache *c = cl->cache;
	pthread_mutex_lock(&c->lock);
	listing_unref_locked(cl);
	pthread_mutex_unlock(&c->lock);
}

const struct blob_entry *cache_listing_find(const struct cache_listing *cl, const char *name)
{
	size_t lo = 0, hi = cl->list.count;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int cmp = strcmp(cl->list.entries[mid].name, name);
		if (cmp == 0)
			return &cl->list.entries[mid];
		if (cmp < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

/* Waits while another thread asks the store about m; returns with c->lock held. */
static void meta_wait(struct cache *c, struct cache_meta *m)
{
	while (m->fetching)
		pthread_cond_wait(&c->cond, &c->lock);
}

int cache_list(struct cache *c, const char *prefix, struct cache_listing **out)
{
	struct blob_list l;
	struct cache_meta *m;
	char name[PATH_MAX + 2];
	int ret, missing = 0;

	*out = NULL;
	if ((size_t)snprintf(name, sizeof(name), "L%s", prefix) >= sizeof(name))
		return -ENAMETOOLONG;
	blob_list_init(&l);
	pthread_mutex_lock(&c->lock);
	m = meta_get(c, name);
	if (!m) {
		ret = -ENOMEM;
		goto out;
	}
	meta_wait(c, m);
	if (m->loaded && cache_now() - m->checked < (time_t)c->ttl)
		goto answer;
	m->fetching = 1;
	pthread_mutex_unlock(&c->lock);

	ret = blob_list(c->store, prefix, &l);
	if (ret == 0 || ret == -ENOENT) {
		missing = ret == -ENOENT;
		if (missing)
			blob_list_release(&l);
		blob_list_clean(&l, prefix);
		if (listing_save(c, name, &l, missing) < 0)
			LOG_DEBUG("cannot keep the listing of '%s' on disk", prefix);
	} else {
		int err = ret;
		blob_list_release(&l);
		pthread_mutex_lock(&c->lock);
		int have = m->loaded;
		pthread_mutex_unlock(&c->lock);
		if (!have && listing_load(c, name, &l, &missing) == 0) {
			blob_list_clean(&l, prefix);
			LOG_INFO("store failing (%s); serving the cached listing of '%s'",
				 strerror(-err), prefix);
			ret = 0;
		} else if (have) {
			LOG_INFO("store failing (%s); serving the cached listing of '%s'",
				 strerror(-err), prefix);
			pthread_mutex_lock(&c->lock);
			m->checked = cache_now();
			m->fetching = 0;
			pthread_cond_broadcast(&c->cond);
			goto answer;
		} else {
			blob_list_release(&l);
		}
	}

	pthread_mutex_lock(&c->lock);
	m->fetching = 0;
	pthread_cond_broadcast(&c->cond);
	if (ret < 0 && ret != -ENOENT)
		goto out;
	struct cache_listing *cl = listing_new(c, &l);
	if (!cl) {
		ret = -ENOMEM;
		goto out;
	}
	listing_unref_locked(m->listing);
	m->listing = cl;
	m->missing = missing;
	m->loaded = 1;
	m->checked = cache_now();
answer:
	if (m->missing) {
		ret = -ENOENT;
	} else {
		m->listing->refs++;
		*out = m->listing;
		ret = 0;
	}
out:
	pthread_mutex_unlock(&c->lock);
	blob_list_release(&l);
	return ret;
}

void cache_record_forget(struct cache *c, const char *key)
{
	char name[PATH_MAX + 2], path[PATH_MAX];
	struct cache_meta *m;

	if ((size_t)snprintf(name, sizeof(name), "R%s", key) >= sizeof(name))
		return;
	cache_meta_path(c, name, path, sizeof(path));
	pthread_mutex_lock(&c->lock);
	m = meta_get(c, name);
	if (m && !m->fetching) {
		m->loaded = 0;
		free(m->data);
		m->data = NULL;
		m->len = 0;
	}
	pthread_mutex_unlock(&c->lock);
	unlink(path);
}

int cache_knows_store(struct cache *c)
{
	const char *names[] = { "Lruns/", "Lregistry/" };
	char path[PATH_MAX];

	for (int i = 0; i < 2; i++) {
		cache_meta_path(c, names[i], path, sizeof(path));
		if (access(path, R_OK) == 0)
			return 1;
	}
	return 0;
}

void cache_forget_listing(struct cache *c, const char *prefix)
{
	char name[PATH_MAX + 2];

	snprintf(name, sizeof(name), "L%s", prefix);
	pthread_mutex_lock(&c->lock);
	struct cache_meta *m = meta_get(c, name);
	if (m)
		m->checked = 0;
	pthread_mutex_unlock(&c->lock);
}

int cache_record(struct cache *c, const char *key, int immutable, char **data, size_t *len)
{
	char name[PATH_MAX + 2], path[PATH_MAX], etag[BLOB_ETAG_MAX];
	struct cache_meta *m;
	char *got = NULL;
	size_t glen = 0;
	int ret, have;

	*data = NULL;
	*len = 0;
	if ((size_t)snprintf(name, sizeof(name), "R%s", key) >= sizeof(name))
		return -ENAMETOOLONG;
	cache_meta_path(c, name, path, sizeof(path));
	pthread_mutex_lock(&c->lock);
	m = meta_get(c, name);
	if (!m) {
		ret = -ENOMEM;
		goto out;
	}
	meta_wait(c, m);
	if (m->loaded && (immutable || cache_now() - m->checked < (time_t)c->ttl))
		goto answer;
	have = m->loaded;
	m->fetching = 1;
	pthread_mutex_unlock(&c->lock);

	/* an immutable record on disk is as good as the store's */
	ret = -ENOENT;
	if (immutable && !have)
		ret = record_load(path, &got, &glen);
	if (ret < 0) {
		ret = blob_get(c->store, key, META_RECORD_MAX, &got, &glen, etag);
		if (ret == 0) {
			if (record_save(c, path, got, glen, immutable) < 0)
				LOG_DEBUG("cannot keep record '%s' on disk", key);
		} else if (ret == -ENOENT) {
			unlink(path);
		} else if (!have && record_load(path, &got, &glen) == 0) {
			LOG_INFO("store failing (%s); serving the cached copy of '%s'",
				 strerror(-ret), key);
			ret = 0;
		} else if (have) {
			LOG_INFO("store failing (%s); serving the cached copy of '%s'",
				 strerror(-ret), key);
			ret = 1; /* keep what memory has */
		}
	}

	pthread_mutex_lock(&c->lock);
	m->fetching = 0;
	pthread_cond_broadcast(&c->cond);
	if (ret < 0 && ret != -ENOENT)
		goto out;
	if (ret != 1) {
		free(m->data);
		m->data = got;
		m->len = glen;
		got = NULL;
		m->missing = ret == -ENOENT;
	}
	m->loaded = 1;
	m->checked = cache_now();
answer:
	if (m->missing) {
		ret = -ENOENT;
	} else {
		*data = malloc(m->len + 1);
		if (!*data) {
			ret = -ENOMEM;
			goto out;
		}
		memcpy(*data, m->data, m->len);
		(*data)[m->len] = '\0';
		*len = m->len;
		ret = 0;
	}
out:
	pthread_mutex_unlock(&c->lock);
	free(got);
	return ret;
}

void cache_metas_free(struct cache *c)
{
	for (size_t i = 0; i < c->nmeta_buckets; i++) {
		while (c->metas[i]) {
			struct cache_meta *m = c->metas[i];
			c->metas[i] = m->hnext;
			listing_unref_locked(m->listing);
			free(m->data);
			free(m->name);
			free(m);
		}
	}
	free(c->metas);
	c->metas = NULL;
}
