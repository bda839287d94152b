/*
 * fake_store.h: an in-memory store for unit tests. It counts every call, can delay
 * reads (so concurrent readers really overlap) and can fail on demand. Not a store
 * imitation for mount tests: those run against real stores.
 */
#ifndef TESTS_FAKE_STORE_H
#define TESTS_FAKE_STORE_H

#include "../../blob/blob.h"

struct fake_store;

/* A new empty store named id; the blob_store is freed with blob_destroy. */
struct blob_store *fake_store_create(const char *id);
/* Puts (or replaces, with a new etag) a blob. */
void fake_store_put(struct blob_store *s, const char *key, const void *data, size_t len);
/* Deletes a blob (nothing when absent). */
void fake_store_delete(struct blob_store *s, const char *key);
/* Calls so far. */
unsigned fake_store_reads(struct blob_store *s);
unsigned fake_store_lists(struct blob_store *s);
unsigned fake_store_gets(struct blob_store *s); /* stat calls */
/* The store no longer promises that a read's bytes are of one version from the first
 * on (BLOB_PINNED_READS), as a local folder cannot. */
void fake_store_set_unpinned(struct blob_store *s);
/* Reads delivering their bytes right now. */
unsigned fake_store_active(struct blob_store *s);
/* Reads deliver their bytes in pieces (0: two), delay_ms apart; with restart_after,
 * after that many pieces the answer starts again from its first byte (the sink is
 * told, as blob.h says), once per read. */
void fake_store_set_stream(struct blob_store *s, unsigned pieces, unsigned delay_ms,
			   unsigned restart_after);
/* Bytes the reads delivered so far. */
uint64_t fake_store_read_bytes(struct blob_store *s);
/* Makes blob_destroy (by a cache that owns the store) leave the store alive, so a
 * test can count its calls after the cache is gone; free it with fake_store_free. */
void fake_store_pin(struct blob_store *s);
void fake_store_free(struct blob_store *s);
/* Every read sleeps this long first. */
void fake_store_set_delay_ms(struct blob_store *s, unsigned ms);
/* Every listing and stat sleeps this long first (a store that stalls). */
void fake_store_set_meta_delay_ms(struct blob_store *s, unsigned ms);
/* Every call fails with err (0: none) until set back. */
void fake_store_set_fail(struct blob_store *s, int err);

#endif
