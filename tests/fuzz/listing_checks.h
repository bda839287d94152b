/*
 * listing_checks.h: the invariants every store's listing parser keeps, for the fuzz
 * targets (fuzz_listing, fuzz_s3). Define FUZZ_NAME before including it.
 */
#ifndef TESTS_FUZZ_LISTING_CHECKS_H
#define TESTS_FUZZ_LISTING_CHECKS_H

#include "blob/blob.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void fail(const char *what, const char *detail)
{
	fprintf(stderr, FUZZ_NAME ": invariant broken: %s: '%.200s'\n", what,
		detail ? detail : "");
	abort();
}

static void check_entries(const struct blob_list *l)
{
	if (l->count > l->cap || (l->count && !l->entries))
		fail("list count, cap and entries disagree", NULL);
	for (size_t i = 0; i < l->count; i++) {
		const struct blob_entry *e = &l->entries[i];
		if (!e->name)
			fail("entry without a name", NULL);
		if (!memchr(e->etag, '\0', sizeof(e->etag)))
			fail("etag not NUL-terminated", e->name);
		if (e->is_dir && (e->etag[0] || e->size || e->mtime.tv_sec || e->mtime.tv_nsec))
			fail("folder with blob properties", e->name);
	}
}

static void check_clean(const struct blob_list *l)
{
	for (size_t i = 0; i < l->count; i++) {
		const char *name = l->entries[i].name;
		if (!blob_name_ok(name, strlen(name)))
			fail("cleaned listing keeps a name blob_name_ok refuses", name);
		if (strchr(name, '/'))
			fail("cleaned listing keeps a name with '/'", name);
		if (i > 0 && strcmp(l->entries[i - 1].name, name) >= 0)
			fail("cleaned listing not sorted or not unique", name);
	}
}

#endif
