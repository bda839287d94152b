/*
 * fake_store.c: see fake_store.h.
 */
#include "fake_store.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct fake_blob {
	char *key;
	char *data;
	size_t len;
	char etag[BLOB_ETAG_MAX];
};

struct fake_store {
	struct blob_store base;
	pthread_mutex_t lock;
	struct fake_blob *blobs;
	size_t n;
	unsigned version;
	unsigned reads, lists, stats;
	uint64_t read_bytes;	/* delivered by reads */
	unsigned delay_ms;
	unsigned meta_delay_ms;
	unsigned pieces, piece_delay_ms, restart_after;	/* fake_store_set_stream */
	unsigned active;	/* reads delivering now */
	int fail;
	int pinned;
	struct blob_ops ops;
};

static struct fake_store *fk(struct blob_store *s)
{
	return (struct fake_store *)s;
}

static struct fake_blob *find(struct fake_store *f, const char *key)
{
	for (size_t i = 0; i < f->n; i++)
		if (strcmp(f->blobs[i].key, key) == 0)
			return &f->blobs[i];
	return NULL;
}

/* Sleeps the meta delay of a listing or stat, counted first. */
static void meta_delay(struct fake_store *f, unsigned *counter)
{
	pthread_mutex_lock(&f->lock);
	(*counter)++;
	unsigned delay = f->meta_delay_ms;
	pthread_mutex_unlock(&f->lock);
	if (delay)
		usleep(delay * 1000);
}

static int fake_list(struct blob_store *s, const char *prefix, struct blob_list *out)
{
	struct fake_store *f = fk(s);
	size_t plen = strlen(prefix);
	int ret = 0, any = 0;

	meta_delay(f, &f->lists);
	pthread_mutex_lock(&f->lock);
	if (f->fail) {
		ret = f->fail;
		goto out;
	}
	for (size_t i = 0; i < f->n && ret == 0; i++) {
		const char *k = f->blobs[i].key;
		if (strncmp(k, prefix, plen) != 0)
			continue;
		any = 1;
		const char *rest = k + plen, *slash = strchr(rest, '/');
		char name[1024];
		snprintf(name, sizeof(name), "%.*s", (int)(slash ? slash - rest : (long)strlen(rest)),
			 rest);
		struct blob_entry e = { .name = name, .is_dir = slash != NULL };
		int dup = 0;
		for (size_t j = 0; j < out->count; j++)
			if (strcmp(out->entries[j].name, name) == 0 && out->entries[j].is_dir == e.is_dir)
				dup = 1;
		if (dup)
			continue;
		if (!slash) {
			e.size = f->blobs[i].len;
			memcpy(e.etag, f->blobs[i].etag, sizeof(e.etag));
		}
		ret = blob_list_add(out, &e);
	}
	if (!any && plen)
		ret = -ENOENT;
out:
	pthread_mutex_unlock(&f->lock);
	return ret;
}

static int fake_stat(struct blob_store *s, const char *key, struct blob_stat *out)
{
	struct fake_store *f = fk(s);
	int ret = 0;

	meta_delay(f, &f->stats);
	pthread_mutex_lock(&f->lock);
	struct fake_blob *b = find(f, key);
	if (f->fail)
		ret = f->fail;
	else if (!b)
		ret = -ENOENT;
	else {
		memset(out, 0, sizeof(*out));
		out->size = b->len;
		memcpy(out->etag, b->etag, sizeof(out->etag));
	}
	pthread_mutex_unlock(&f->lock);
	return ret;
}

static ssize_t fake_read_to(struct blob_store *s, const char *key, const char *etag,
			    uint64_t off, size_t len, blob_sink_fn sink, void *ctx)
{
	struct fake_store *f = fk(s);
	ssize_t ret;
	char *copy = NULL;

	pthread_mutex_lock(&f->lock);
	f->reads++;
	unsigned delay = f->delay_ms;
	pthread_mutex_unlock(&f->lock);
	if (delay)
		usleep(delay * 1000);
	pthread_mutex_lock(&f->lock);
	struct fake_blob *b = find(f, key);
	if (f->fail)
		ret = f->fail;
	else if (!b)
		ret = etag && *etag ? -ESTALE : -ENOENT;
	else if (etag && *etag && strcmp(etag, b->etag) != 0)
		ret = -ESTALE;
	else if (off >= b->len)
		ret = 0;
	else {
		size_t n = b->len - off < len ? b->len - off : len;
		copy = malloc(n);
		memcpy(copy, b->data + off, n);
		ret = (ssize_t)n;
		f->read_bytes += n;
	}
	pthread_mutex_unlock(&f->lock);
	if (ret > 0) {
		/* in pieces (two by default), as a network read would arrive */
		pthread_mutex_lock(&f->lock);
		unsigned pieces = f->pieces ? f->pieces : 2, pause = f->piece_delay_ms;
		unsigned restart = f->restart_after;
		f->active++;
		pthread_mutex_unlock(&f->lock);
		size_t piece = ((size_t)ret + pieces - 1) / pieces, done = 0;
		unsigned sent = 0;
		int r = 0;
		while (r == 0 && done < (size_t)ret) {
			size_t n = (size_t)ret - done < piece ? (size_t)ret - done : piece;
			if (sent > 0 && pause)
				usleep(pause * 1000);
			r = sink(ctx, copy + done, n);
			done += n;
			if (++sent == restart && r == 0) {
				/* the answer breaks off and comes again from the start */
				r = sink(ctx, NULL, 0);
				done = 0;
			}
		}
		if (r < 0)
			ret = r;
		pthread_mutex_lock(&f->lock);
		f->active--;
		pthread_mutex_unlock(&f->lock);
	}
	free(copy);
	return ret;
}

static void put_locked(struct fake_store *f, const char *key, const void *data, size_t len)
{
	struct fake_blob *b = find(f, key);
	if (!b) {
		f->blobs = realloc(f->blobs, (f->n + 1) * sizeof(*f->blobs));
		b = &f->blobs[f->n++];
		b->key = strdup(key);
		b->data = NULL;
	}
	free(b->data);
	b->data = malloc(len ? len : 1);
	memcpy(b->data, data, len);
	b->len = len;
	snprintf(b->etag, sizeof(b->etag), "\"v%u\"", ++f->version);
}

/* Check and write under one lock: the atomicity the real stores give. */
static int fake_create(struct blob_store *s, const char *key, const void *data, size_t len)
{
	struct fake_store *f = fk(s);
	int ret = 0;

	pthread_mutex_lock(&f->lock);
	if (find(f, key))
		ret = -EEXIST;
	else
		put_locked(f, key, data, len);
	pthread_mutex_unlock(&f->lock);
	return ret;
}

static int fake_replace(struct blob_store *s, const char *key, const char *etag,
			const void *data, size_t len)
{
	struct fake_store *f = fk(s);

	pthread_mutex_lock(&f->lock);
	struct fake_blob *b = find(f, key);
	int ret = !b ? -ENOENT : strcmp(b->etag, etag) ? -ESTALE : 0;
	if (ret == 0)
		put_locked(f, key, data, len);
	pthread_mutex_unlock(&f->lock);
	return ret;
}

static void fake_destroy(struct blob_store *s)
{
	if (fk(s)->pinned)
		return;
	fake_store_free(s);
}

void fake_store_pin(struct blob_store *s)
{
	fk(s)->pinned = 1;
}

void fake_store_free(struct blob_store *s)
{
	struct fake_store *f = fk(s);

	for (size_t i = 0; i < f->n; i++) {
		free(f->blobs[i].key);
		free(f->blobs[i].data);
	}
	free(f->blobs);
	free(f->base.id);
	pthread_mutex_destroy(&f->lock);
	free(f);
}

static const struct blob_ops fake_ops = {
	.name = "fake",
	.flags = BLOB_PINNED_READS, /* a copy of one version, checked before */
	.destroy = fake_destroy,
	.list = fake_list,
	.stat = fake_stat,
	.read_to = fake_read_to,
	.create = fake_create,
	.replace = fake_replace,
};

void fake_store_set_unpinned(struct blob_store *s)
{
	struct fake_store *f = fk(s);

	f->ops.flags &= ~BLOB_PINNED_READS;
}


struct blob_store *fake_store_create(const char *id)
{
	struct fake_store *f = calloc(1, sizeof(*f));

	f->ops = fake_ops;
	f->base.ops = &f->ops; /* its own, so a test can change its flags */
	f->base.id = strdup(id);
	pthread_mutex_init(&f->lock, NULL);
	return &f->base;
}

void fake_store_put(struct blob_store *s, const char *key, const void *data, size_t len)
{
	struct fake_store *f = fk(s);

	pthread_mutex_lock(&f->lock);
	put_locked(f, key, data, len);
	pthread_mutex_unlock(&f->lock);
}

#define FAKE_GETTER(name, field)                          \
	unsigned name(struct blob_store *s)               \
	{                                                 \
		struct fake_store *f = fk(s);             \
		pthread_mutex_lock(&f->lock);             \
		unsigned v = f->field;                    \
		pthread_mutex_unlock(&f->lock);           \
		return v;                                 \
	}
FAKE_GETTER(fake_store_reads, reads)
FAKE_GETTER(fake_store_lists, lists)
FAKE_GETTER(fake_store_gets, stats)
FAKE_GETTER(fake_store_active, active)

void fake_store_set_stream(struct blob_store *s, unsigned pieces, unsigned delay_ms,
			   unsigned restart_after)
{
	struct fake_store *f = fk(s);

	pthread_mutex_lock(&f->lock);
	f->pieces = pieces;
	f->piece_delay_ms = delay_ms;
	f->restart_after = restart_after;
	pthread_mutex_unlock(&f->lock);
}

uint64_t fake_store_read_bytes(struct blob_store *s)
{
	struct fake_store *f = fk(s);

	pthread_mutex_lock(&f->lock);
	uint64_t v = f->read_bytes;
	pthread_mutex_unlock(&f->lock);
	return v;
}

void fake_store_set_delay_ms(struct blob_store *s, unsigned ms)
{
	struct fake_store *f = fk(s);

	pthread_mutex_lock(&f->lock);
	f->delay_ms = ms;
	pthread_mutex_unlock(&f->lock);
}

void fake_store_delete(struct blob_store *s, const char *key)
{
	struct fake_store *f = fk(s);

	pthread_mutex_lock(&f->lock);
	struct fake_blob *b = find(f, key);
	if (b) {
		free(b->key);
		free(b->data);
		*b = f->blobs[--f->n];
	}
	pthread_mutex_unlock(&f->lock);
}

void fake_store_set_meta_delay_ms(struct blob_store *s, unsigned ms)
{
	struct fake_store *f = fk(s);

	pthread_mutex_lock(&f->lock);
	f->meta_delay_ms = ms;
	pthread_mutex_unlock(&f->lock);
}

void fake_store_set_fail(struct blob_store *s, int err)
{
	struct fake_store *f = fk(s);

	pthread_mutex_lock(&f->lock);
	f->fail = err;
	pthread_mutex_unlock(&f->lock);
}
