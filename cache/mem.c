/*
 * mem.c: the pool of chunk buffers (struct cache_mem in cache_private.h).
 *
 * At most mem_max buffers of chunk_size bytes each, made on first need and kept for
 * the cache's life (reusing one costs no page faults). A buffer is busy while its
 * fetch fills it and the writer writes it; referenced while a reader copies or
 * splices its bytes; idle otherwise, and then on the idle list, still attached to its
 * chunk (so readers keep finding the bytes in memory) until a fetch needs a buffer
 * and takes the one used longest ago. A fetch that finds no buffer idle and the pool
 * full waits: every busy buffer is done when its fetch ends (bounded by the store's
 * deadline) and every reference is given back without waiting on anything.
 *
 * The bytes are in a memfd mapped into the process: a reply splices them from the
 * memfd to the kernel, like a chunk file's, and the writer writes them with direct
 * I/O.
 */
#include "cache_private.h"
#include "../blob/log.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static void idle_remove(struct cache *c, struct cache_mem *m)
{
	if (!m->idle)
		return;
	if (m->prev)
		m->prev->next = m->next;
	else
		c->idle_head = m->next;
	if (m->next)
		m->next->prev = m->prev;
	else
		c->idle_tail = m->prev;
	m->prev = m->next = NULL;
	m->idle = 0;
}

/* Idle again: a buffer with a chunk goes to the head (used last), a free one to the
 * tail (taken first). */
static void idle_add(struct cache *c, struct cache_mem *m)
{
	if (m->idle || m->busy || m->refs > 0)
		return;
	m->idle = 1;
	if (m->chunk) {
		m->prev = NULL;
		m->next = c->idle_head;
		if (c->idle_head)
			c->idle_head->prev = m;
		c->idle_head = m;
		if (!c->idle_tail)
			c->idle_tail = m;
	} else {
		m->next = NULL;
		m->prev = c->idle_tail;
		if (c->idle_tail)
			c->idle_tail->next = m;
		c->idle_tail = m;
		if (!c->idle_head)
			c->idle_head = m;
	}
	pthread_cond_broadcast(&c->mem_cond); /* a fetch may wait for a buffer */
}

static struct cache_mem *mem_make(size_t size)
{
	struct cache_mem *m = calloc(1, sizeof(*m));

	if (!m)
		return NULL;
	m->fd = memfd_create("artifactfs-chunk", MFD_CLOEXEC);
	if (m->fd < 0 || ftruncate(m->fd, (off_t)size) < 0) {
		if (m->fd >= 0)
			close(m->fd);
		free(m);
		return NULL;
	}
	/* its pages made at once: one call instead of a fault per 4 KiB page while the
	 * first fetch fills it (a tenth of a cold read's CPU here) */
	m->buf = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, m->fd, 0);
	if (m->buf == MAP_FAILED) {
		close(m->fd);
		free(m);
		return NULL;
	}
	return m;
}

void cache_mem_detach(struct cache *c, struct cache_mem *m)
{
	struct cache_chunk *ch = m->chunk;

	if (!ch)
		return;
	ch->mem = NULL;
	m->chunk = NULL;
	m->filled = 0;
	cache_chunk_put(c, ch);
	if (m->idle) {
		/* free now: to the tail */
		idle_remove(c, m);
		idle_add(c, m);
	}
}

struct cache_mem *cache_mem_get(struct cache *c, struct cache_chunk *ch, uint64_t len)
{
	struct cache_mem *m = NULL;

	while (!m) {
		if (c->stopping)
			return NULL;
		if (c->idle_tail && !c->idle_tail->chunk) {
			m = c->idle_tail; /* free */
			idle_remove(c, m);
			break;
		}
		if (c->nmems + c->mem_making < c->mem_max) {
			c->mem_making++;
			pthread_mutex_unlock(&c->lock);
			m = mem_make(c->chunk_size);
			pthread_mutex_lock(&c->lock);
			c->mem_making--;
			if (!m) {
				LOG_WARN("cannot make a chunk buffer: %s", strerror(errno));
				return NULL;
			}
			c->mems[c->nmems++] = m;
			break;
		}
		if (c->idle_tail) {
			m = c->idle_tail; /* the one used longest ago */
			idle_remove(c, m);
			cache_mem_detach(c, m);
			break;
		}
		pthread_cond_wait(&c->mem_cond, &c->lock);
	}
	m->chunk = ch;
	m->len = len;
	m->filled = 0;
	m->want = 0;
	m->busy = 1;
	m->consumed = 0;
	ch->mem = m;
	return m;
}

void cache_mem_ref(struct cache *c, struct cache_mem *m)
{
	m->refs++;
	idle_remove(c, m);
}

/* Idle again; a buffer whose reader has had its last byte goes at once. */
static void mem_idle(struct cache *c, struct cache_mem *m)
{
	if (m->busy || m->refs > 0)
		return;
	if (m->consumed)
		cache_mem_detach(c, m);
	idle_add(c, m);
}

void cache_mem_unref(struct cache *c, struct cache_mem *m)
{
	m->refs--;
	mem_idle(c, m);
}

void cache_mem_done(struct cache *c, struct cache_mem *m)
{
	m->busy = 0;
	mem_idle(c, m);
}

void cache_mems_free(struct cache *c)
{
	for (unsigned i = 0; i < c->nmems; i++) {
		struct cache_mem *m = c->mems[i];
		munmap(m->buf, c->chunk_size);
		close(m->fd);
		free(m);
	}
	free(c->mems);
	c->mems = NULL;
	c->nmems = 0;
}

/* Frees the idle buffers; with wait, after the writer has written what it was given
 * (never from the writer itself, which would wait for itself). */
static void mem_trim(struct cache *c, int wait)
{
	struct cache_mem *gone = NULL;

	pthread_mutex_lock(&c->lock);
	while (wait && c->writes > 0) /* what is being written is dropped too */
		pthread_cond_wait(&c->cond, &c->lock);
	for (unsigned i = 0; i < c->nmems;) {
		struct cache_mem *m = c->mems[i];
		if (!m->idle) {
			i++;
			continue;
		}
		cache_mem_detach(c, m);
		idle_remove(c, m);
		c->mems[i] = c->mems[--c->nmems];
		m->next = gone;
		gone = m;
	}
	pthread_mutex_unlock(&c->lock);
	while (gone) {
		struct cache_mem *m = gone;
		gone = m->next;
		munmap(m->buf, c->chunk_size);
		close(m->fd);
		free(m);
	}
}

void cache_mem_trim(struct cache *c)
{
	mem_trim(c, 1);
}

void cache_mem_trim_idle(struct cache *c)
{
	mem_trim(c, 0);
}
