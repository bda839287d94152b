/*
 * meta.c: listings, small records and blob stats through the cache.
 *
 * Each is kept in memory (struct cache_meta) and, listings and records, after every
 * answer of the store, on disk (DIR/meta/XX/<id>). The store is asked again once the
 * TTL has passed (immutable records: never, once seen); one thread asks while the
 * others wait for its answer.
 *
 * Stale while revalidating: a reader that finds a copy past its TTL (in memory, or
 * on disk from an earlier mount) starts one refresh in the background and waits for
 * it at most CACHE_STALE_WAIT_MS from the moment that refresh began, not at all
 * while the store counts as down; then it answers from the copy. So a store that
 * stalls, refuses connections or fails costs a reader of cached things about a
 * second once per key, never the store's deadline. A reader with no copy asks the
 * store itself and waits for the answer (the store's deadline bounds it). When the
 * store fails, the copy counts as fresh for another TTL, so a failing store is not
 * asked on every lookup.
 *
 * Memory: the metas form an LRU list; beyond the bound on their bytes the least
 * recently used that nobody holds are dropped (their disk copies stay, and a disk
 * copy younger than the TTL counts as fresh when read again).
 */
#include "cache_private.h"
#include "../blob/log.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Largest record read whole: registry records and alias tables are small. */
#define META_RECORD_MAX (16u << 20)

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

/* Drops one reference; called with c->meta_lock held. */
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
	pthread_mutex_lock(&c->meta_lock);
	listing_unref_locked(cl);
	pthread_mutex_unlock(&c->meta_lock);
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

/* ---- the table: a hash of names and an LRU list, under c->meta_lock ---- */

#define META_BUCKETS 16384

static void lru_unlink(struct cache *c, struct cache_meta *m)
{
	if (m->prev)
		m->prev->next = m->next;
	else
		c->meta_head = m->next;
	if (m->next)
		m->next->prev = m->prev;
	else
		c->meta_tail = m->prev;
	m->prev = m->next = NULL;
}

static void lru_push(struct cache *c, struct cache_meta *m)
{
	m->next = c->meta_head;
	if (c->meta_head)
		c->meta_head->prev = m;
	c->meta_head = m;
	if (!c->meta_tail)
		c->meta_tail = m;
}

static void set_bytes(struct cache *c, struct cache_meta *m, size_t bytes)
{
	c->meta_bytes -= m->bytes;
	m->bytes = bytes;
	c->meta_bytes += bytes;
}

static size_t listing_bytes(const struct blob_list *l)
{
	size_t n = sizeof(struct cache_listing) + l->cap * sizeof(*l->entries);

	for (size_t i = 0; i < l->count; i++)
		n += strlen(l->entries[i].name) + 1;
	return n;
}

/* The bytes a meta holds with its value. */
static size_t meta_bytes(const struct cache_meta *m)
{
	size_t n = sizeof(*m) + strlen(m->name) + 1 + m->len;

	if (m->listing)
		n += listing_bytes(&m->listing->list);
	return n;
}

static void meta_free(struct cache *c, struct cache_meta *m)
{
	set_bytes(c, m, 0);
	listing_unref_locked(m->listing);
	free(m->data);
	free(m->name);
	free(m);
}

/* Drops the least recently used metas nobody holds until the bound is kept; the most
 * recently used one stays whatever its size. */
static void meta_trim(struct cache *c)
{
	struct cache_meta *m = c->meta_tail;

	while (c->meta_bytes > c->meta_max && m && m != c->meta_head) {
		struct cache_meta *prev = m->prev;
		if (m->users == 0 && !m->fetching && !m->queued && !m->loading) {
			size_t b = cache_hash_str(m->name, 0) & (c->nmeta_buckets - 1);
			struct cache_meta **pp = &c->metas[b];
			while (*pp != m)
				pp = &(*pp)->hnext;
			*pp = m->hnext;
			lru_unlink(c, m);
			c->nmetas--;
			meta_free(c, m);
		}
		m = prev;
	}
}

/* Finds or makes the meta of name, most recently used now, and holds it (meta_put). */
static struct cache_meta *meta_get(struct cache *c, const char *name)
{
	size_t b = cache_hash_str(name, 0) & (c->nmeta_buckets - 1);
	struct cache_meta *m = c->metas[b];

	while (m && strcmp(m->name, name) != 0)
		m = m->hnext;
	if (m) {
		lru_unlink(c, m);
	} else {
		m = calloc(1, sizeof(*m));
		if (!m || !(m->name = strdup(name))) {
			free(m);
			return NULL;
		}
		m->hnext = c->metas[b];
		c->metas[b] = m;
		c->nmetas++;
		set_bytes(c, m, meta_bytes(m));
	}
	lru_push(c, m);
	m->users++;
	return m;
}

static void meta_put(struct cache *c, struct cache_meta *m)
{
	m->users--;
	meta_trim(c);
}

/* ---- answers: what the store (or a disk copy) said, taken in under the lock ---- */

struct meta_answer {
	int err;		/* 0, -ENOENT (a known absence), or how the store failed */
	struct blob_list list;	/* "L" */
	char *data;		/* "R" */
	size_t len;
	struct blob_stat st;	/* "S" */
};

static void answer_release(struct meta_answer *a)
{
	blob_list_release(&a->list);
	free(a->data);
	a->data = NULL;
}

/* Asks the store about m's name and keeps the answer on disk. No lock held. */
static void meta_fetch(struct cache *c, const char *name, int immutable, struct meta_answer *a)
{
	const char *key = name + 1;
	char path[PATH_MAX], etag[BLOB_ETAG_MAX];

	memset(a, 0, sizeof(*a));
	blob_list_init(&a->list);
	switch (name[0]) {
	case 'L':
		a->err = blob_list(c->store, key, &a->list);
		if (a->err == 0 || a->err == -ENOENT) {
			if (a->err)
				blob_list_release(&a->list);
			blob_list_clean(&a->list, key);
			if (cache_listing_save(c, name, &a->list, a->err == -ENOENT) < 0)
				LOG_DEBUG("cannot keep the listing of '%s' on disk", key);
		}
		break;
	case 'R':
		cache_meta_path(c, name, path, sizeof(path));
		a->err = blob_get(c->store, key, META_RECORD_MAX, &a->data, &a->len, etag);
		if (a->err == 0 && cache_record_save(c, path, a->data, a->len, immutable) < 0)
			LOG_DEBUG("cannot keep record '%s' on disk", key);
		else if (a->err == -ENOENT)
			unlink(path);
		break;
	default:
		a->err = blob_stat(c->store, key, &a->st);
		break;
	}
	if (a->err != 0 && a->err != -ENOENT)
		answer_release(a);
}

/* Reads the disk copy of m's name: 0 with *saved, or -ENOENT. No lock held. */
static int meta_load(struct cache *c, const char *name, struct meta_answer *a, time_t *saved)
{
	char path[PATH_MAX];
	int missing = 0, ret = -ENOENT;

	memset(a, 0, sizeof(*a));
	blob_list_init(&a->list);
	if (name[0] == 'L') {
		ret = cache_listing_load(c, name, &a->list, &missing, saved);
		if (ret == 0)
			blob_list_clean(&a->list, name + 1);
		else
			blob_list_release(&a->list);
		a->err = missing ? -ENOENT : 0;
	} else if (name[0] == 'R') {
		cache_meta_path(c, name, path, sizeof(path));
		ret = cache_record_load(path, &a->data, &a->len, saved);
	}
	return ret < 0 ? -ENOENT : 0;
}

/* Takes a value (an answer that is not a failure) into m: 0, or -ENOMEM. */
static int meta_take(struct cache *c, struct cache_meta *m, struct meta_answer *a)
{
	if (m->name[0] == 'L') {
		struct cache_listing *cl = listing_new(c, &a->list);
		if (!cl)
			return -ENOMEM;
		listing_unref_locked(m->listing);
		m->listing = cl;
	} else if (m->name[0] == 'R') {
		free(m->data);
		m->data = a->data;
		m->len = a->len;
		a->data = NULL;
	} else {
		m->st = a->st;
	}
	m->missing = a->err == -ENOENT;
	m->loaded = 1;
	set_bytes(c, m, meta_bytes(m));
	return 0;
}

/* Ends a refresh of m with answer a: called with the lock held. */
static void meta_install(struct cache *c, struct cache_meta *m, struct meta_answer *a)
{
	int err = a->err;

	if ((err == 0 || err == -ENOENT) && meta_take(c, m, a) < 0)
		err = -ENOMEM;
	if (err == 0 || err == -ENOENT) {
		m->checked = cache_now();
		m->last_err = 0;
		if (m->edited) /* changed through the mount while asked: ask again */
			m->checked -= (time_t)c->ttl + 1;
	} else {
		m->last_err = err;
		if (m->loaded && m->name[0] != 'S') {
			LOG_INFO("store failing (%s); serving the cached copy of '%s'",
				 strerror(-err), m->name + 1);
			m->checked = cache_now(); /* do not ask a failing store at every lookup */
		}
	}
	m->fetching = 0;
	m->edited = 0;
	m->answers++;
	pthread_cond_broadcast(&c->meta_cond);
	answer_release(a);
}

/* ---- refreshes ---- */

/* Refreshes m in this thread, the lock dropped across the store's answer. Called
 * with the lock held and fetching set. */
static void refresh_here(struct cache *c, struct cache_meta *m)
{
	struct meta_answer a;
	int immutable = m->immutable;

	pthread_mutex_unlock(&c->meta_lock);
	meta_fetch(c, m->name, immutable, &a);
	pthread_mutex_lock(&c->meta_lock);
	meta_install(c, m, &a);
}


static void *meta_refresher(void *arg)
{
	struct cache *c = arg;

	pthread_mutex_lock(&c->meta_lock);
	for (;;) {
		while (!c->refresh_head && !c->meta_stopping)
			pthread_cond_wait(&c->meta_work, &c->meta_lock);
		struct cache_meta *m = c->refresh_head;
		if (!m)
			break; /* stopping, and nothing left */
		c->refresh_head = m->qnext;
		if (!c->refresh_head)
			c->refresh_tail = NULL;
		m->qnext = NULL;
		m->queued = 0;
		m->users++;
		refresh_here(c, m);
		meta_put(c, m);
	}
	pthread_mutex_unlock(&c->meta_lock);
	return NULL;
}

/* Starts a refresh of m: in the background when there are refreshers, else in this
 * thread (background == 0). Called with the lock held and m not being refreshed. */
static void refresh_start(struct cache *c, struct cache_meta *m, int background)
{
	m->fetching = 1;
	m->fetch_started = cache_now_ms();
	if (!background || c->nrefreshers == 0) {
		refresh_here(c, m);
		return;
	}
	m->queued = 1;
	if (c->refresh_tail)
		c->refresh_tail->qnext = m;
	else
		c->refresh_head = m;
	c->refresh_tail = m;
	pthread_cond_signal(&c->meta_work);
}

/* Waits on the meta condition until the monotonic ms deadline. */
static void wait_until(struct cache *c, uint64_t deadline)
{
	struct timespec ts = { .tv_sec = (time_t)(deadline / 1000),
			       .tv_nsec = (long)(deadline % 1000) * 1000000 };

	pthread_cond_timedwait(&c->meta_cond, &c->meta_lock, &ts);
}

/* The disk copy is looked for once, by one thread, when memory has none: a copy of
 * this process (an entry dropped from memory and read back) is as fresh as its age;
 * one of an earlier mount is stale, so the store is asked first (but the copy is
 * there to answer when it does not answer). */
static void meta_from_disk(struct cache *c, struct cache_meta *m)
{
	struct meta_answer a;
	time_t saved = 0;

	m->disk_tried = 1;
	m->loading = 1;
	pthread_mutex_unlock(&c->meta_lock);
	int ret = meta_load(c, m->name, &a, &saved);
	pthread_mutex_lock(&c->meta_lock);
	if (ret == 0 && !m->loaded && meta_take(c, m, &a) == 0) {
		time_t age = time(NULL) - saved;
		if (saved < c->started_wall || age < 0 || age > (time_t)c->ttl)
			m->checked = cache_now() - (time_t)c->ttl - 1;
		else
			m->checked = cache_now() - age;
	}
	answer_release(&a);
	m->loading = 0;
	pthread_cond_broadcast(&c->meta_cond);
}

/*
 * Brings m to a state a reader can answer from, with the lock held throughout but
 * across I/O. A listing or record with a copy: fresh, or stale once its refresh has
 * had CACHE_STALE_WAIT_MS (none while the store is down). With no copy: after the
 * store answered or failed (m->last_err). A stat ("S") always asks; returns 1 when a
 * refresh ended meanwhile (its answer is in m), 0 when none came in time.
 */
static int meta_settle(struct cache *c, struct cache_meta *m, int store_down)
{
	int is_stat = m->name[0] == 'S';
	unsigned seen = m->answers;

	for (;;) {
		if (m->loading) {
			pthread_cond_wait(&c->meta_cond, &c->meta_lock);
			continue;
		}
		if (!m->loaded && !m->disk_tried && !is_stat) {
			meta_from_disk(c, m);
			continue;
		}
		int copy = m->loaded && !is_stat;
		if (copy && (m->immutable || cache_now() - m->checked < (time_t)c->ttl))
			return 1;
		if (m->answers != seen)
			return 1; /* a refresh ended since this reader came */
		if (!m->fetching) {
			/* with nothing to answer with, this reader asks and waits */
			refresh_start(c, m, copy || is_stat);
			continue;
		}
		if (!copy && !is_stat) {
			pthread_cond_wait(&c->meta_cond, &c->meta_lock);
			continue;
		}
		uint64_t until = m->fetch_started + CACHE_STALE_WAIT_MS;
		if (cache_now_ms() >= until || store_down)
			return 0; /* answer from the copy; the refresh goes on */
		wait_until(c, until);
	}
}

/* Takes and settles the meta of kind + key; returns it held, with the lock held, or
 * NULL (-errno in *err). */
static struct cache_meta *meta_begin(struct cache *c, char kind, const char *key,
				     int immutable, int *answered, int *err)
{
	char name[PATH_MAX + 2];
	struct cache_meta *m;

	if ((size_t)snprintf(name, sizeof(name), "%c%s", kind, key) >= sizeof(name)) {
		*err = -ENAMETOOLONG;
		return NULL;
	}
	/* asked before the lock: the meta lock is held across no other layer's lock */
	int down = blob_down(c->store);
	pthread_mutex_lock(&c->meta_lock);
	m = meta_get(c, name);
	if (!m) {
		pthread_mutex_unlock(&c->meta_lock);
		*err = -ENOMEM;
		return NULL;
	}
	if (immutable)
		m->immutable = 1;
	*answered = meta_settle(c, m, down);
	*err = 0;
	return m;
}

static void meta_end(struct cache *c, struct cache_meta *m)
{
	meta_put(c, m);
	pthread_mutex_unlock(&c->meta_lock);
}

/* What a settled listing or record answers: 0 (a value to copy out), -ENOENT, or
 * for a reader with no copy, how the store failed. */
static int meta_result(const struct cache_meta *m)
{
	if (!m->loaded)
		return m->last_err ? m->last_err : -EIO;
	return m->missing ? -ENOENT : 0;
}

/* ---- the interface ---- */

int cache_list(struct cache *c, const char *prefix, struct cache_listing **out)
{
	int answered, ret;
	struct cache_meta *m = meta_begin(c, 'L', prefix, 0, &answered, &ret);

	*out = NULL;
	if (!m)
		return ret;
	ret = meta_result(m);
	if (ret == 0) {
		m->listing->refs++;
		*out = m->listing;
	}
	meta_end(c, m);
	return ret;
}

int cache_record(struct cache *c, const char *key, int immutable, char **data, size_t *len)
{
	int answered, ret;
	struct cache_meta *m = meta_begin(c, 'R', key, immutable, &answered, &ret);

	*data = NULL;
	*len = 0;
	if (!m)
		return ret;
	ret = meta_result(m);
	if (ret == 0 && !(*data = malloc(m->len + 1))) {
		ret = -ENOMEM;
	} else if (ret == 0) {
		memcpy(*data, m->data, m->len);
		(*data)[m->len] = '\0';
		*len = m->len;
	}
	meta_end(c, m);
	return ret;
}

int cache_stat(struct cache *c, const char *key, struct blob_stat *st)
{
	int answered, ret;
	struct cache_meta *m = meta_begin(c, 'S', key, 0, &answered, &ret);

	if (!m)
		return ret;
	if (!answered)
		ret = -ETIMEDOUT;
	else if (m->last_err)
		ret = m->last_err;
	else if (m->missing)
		ret = -ENOENT;
	else
		*st = m->st;
	meta_end(c, m);
	return ret;
}

void cache_record_forget(struct cache *c, const char *key)
{
	char name[PATH_MAX + 2], path[PATH_MAX];
	struct cache_meta *m;

	if ((size_t)snprintf(name, sizeof(name), "R%s", key) >= sizeof(name))
		return;
	cache_meta_path(c, name, path, sizeof(path));
	pthread_mutex_lock(&c->meta_lock);
	m = meta_get(c, name);
	if (m && !m->fetching && !m->loading) {
		m->loaded = 0;
		m->missing = 0;
		m->disk_tried = 1; /* the copy is dropped below: ask the store */
		free(m->data);
		m->data = NULL;
		m->len = 0;
		set_bytes(c, m, meta_bytes(m));
	}
	if (m)
		meta_put(c, m);
	pthread_mutex_unlock(&c->meta_lock);
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

	if ((size_t)snprintf(name, sizeof(name), "L%s", prefix) >= sizeof(name))
		return;
	pthread_mutex_lock(&c->meta_lock);
	struct cache_meta *m = meta_get(c, name);
	if (m) {
		m->checked = cache_now() - (time_t)c->ttl - 1;
		meta_put(c, m);
	}
	pthread_mutex_unlock(&c->meta_lock);
}

/* The meta of name if there is one; no new one is made. Under the lock. */
static struct cache_meta *meta_find(struct cache *c, const char *name)
{
	size_t b = cache_hash_str(name, 0) & (c->nmeta_buckets - 1);
	struct cache_meta *m = c->metas[b];

	while (m && strcmp(m->name, name) != 0)
		m = m->hnext;
	return m;
}

void cache_listing_edit(struct cache *c, const char *prefix, const char *name,
			const struct blob_entry *e)
{
	char mname[PATH_MAX + 2], path[PATH_MAX];
	struct blob_list nl;

	if ((size_t)snprintf(mname, sizeof(mname), "L%s", prefix) >= sizeof(mname))
		return;
	/* the disk copy is older than this change: the store is asked instead */
	cache_meta_path(c, mname, path, sizeof(path));
	unlink(path);
	blob_list_init(&nl);
	pthread_mutex_lock(&c->meta_lock);
	struct cache_meta *m = meta_find(c, mname);
	if (!m || !m->loaded || (!m->listing && !e))
		goto out;
	const struct blob_list *old = m->listing ? &m->listing->list : NULL;
	size_t n = old ? old->count : 0, i = 0;
	int fail = 0;
	for (; i < n && strcmp(old->entries[i].name, name) < 0; i++)
		fail |= blob_list_add(&nl, &old->entries[i]) < 0;
	if (e) {
		struct blob_entry ne = *e;
		ne.name = (char *)name;
		fail |= blob_list_add(&nl, &ne) < 0;
	}
	if (i < n && strcmp(old->entries[i].name, name) == 0)
		i++;
	for (; i < n; i++)
		fail |= blob_list_add(&nl, &old->entries[i]) < 0;
	struct cache_listing *cl = fail ? NULL : listing_new(c, &nl);
	if (!cl) {
		m->checked = cache_now() - (time_t)c->ttl - 1; /* ask the store instead */
		goto out;
	}
	listing_unref_locked(m->listing);
	m->listing = cl;
	m->missing = 0;
	if (m->fetching)
		m->edited = 1; /* the answer under way may predate this change */
	set_bytes(c, m, meta_bytes(m));
out:
	pthread_mutex_unlock(&c->meta_lock);
	blob_list_release(&nl);
}

void cache_meta_usage(struct cache *c, size_t *count, size_t *bytes)
{
	pthread_mutex_lock(&c->meta_lock);
	*count = c->nmetas;
	*bytes = c->meta_bytes;
	pthread_mutex_unlock(&c->meta_lock);
}

/* ---- life cycle ---- */

int cache_metas_init(struct cache *c, size_t max_bytes)
{
	pthread_condattr_t ca;

	pthread_mutex_init(&c->meta_lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&c->meta_cond, &ca);
	pthread_condattr_destroy(&ca);
	pthread_cond_init(&c->meta_work, NULL);
	c->meta_max = max_bytes ? max_bytes : CACHE_DEFAULT_META_BYTES;
	c->nmeta_buckets = META_BUCKETS;
	c->metas = calloc(c->nmeta_buckets, sizeof(*c->metas));
	return c->metas ? 0 : -ENOMEM;
}

int cache_metas_start(struct cache *c)
{
	int ret = 0;

	for (; c->nrefreshers < CACHE_REFRESHERS; c->nrefreshers++) {
		ret = -pthread_create(&c->refreshers[c->nrefreshers], NULL, meta_refresher, c);
		if (ret == 0)
			pthread_setname_np(c->refreshers[c->nrefreshers], "afs-refresh");
		if (ret < 0)
			break;
	}
	return ret;
}

void cache_metas_free(struct cache *c)
{
	if (!c->metas)
		return;
	pthread_mutex_lock(&c->meta_lock);
	c->meta_stopping = 1;
	pthread_cond_broadcast(&c->meta_work);
	pthread_mutex_unlock(&c->meta_lock);
	for (unsigned i = 0; i < c->nrefreshers; i++)
		pthread_join(c->refreshers[i], NULL);
	for (size_t i = 0; i < c->nmeta_buckets; i++) {
		while (c->metas[i]) {
			struct cache_meta *m = c->metas[i];
			c->metas[i] = m->hnext;
			meta_free(c, m);
		}
	}
	free(c->metas);
	c->metas = NULL;
	pthread_cond_destroy(&c->meta_work);
	pthread_cond_destroy(&c->meta_cond);
	pthread_mutex_destroy(&c->meta_lock);
}
