/*
 * s3_cond.c: what the S3 backend does for a server that ignores conditional writes
 * (If-None-Match, If-Match): it says so once, and creates and replaces read back what
 * they wrote.
 */
#include "s3_store.h"
#include "log.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Whether the store's key holds exactly data (a read back): 1, 0 (other bytes, or
 * none), or -errno when the read back itself failed (which says nothing of who won). */
int s3_holds(struct blob_s3 *s, const char *key, const void *data, size_t len)
{
	int ret = 0;

	/* a server slow to show what it just stored: a few tries while the key is not
	 * there yet */
	for (int tries = 0; tries < 5; tries++) {
		char *got = NULL, etag[BLOB_ETAG_MAX];
		size_t glen = 0;
		ret = blob_get(&s->base, key, len + 1, &got, &glen, etag);
		if (ret == 0)
			ret = glen == len && memcmp(got, data, len) == 0;
		else if (ret == -EFBIG)
			ret = 0;
		free(got);
		if (ret != -ENOENT)
			return ret;
		struct timespec d = { 0, 50000000L * (tries + 1) };
		nanosleep(&d, NULL);
	}
	return ret == -ENOENT ? -EIO : ret;
}

void s3_conditions_ignored(struct blob_s3 *s)
{
	pthread_mutex_lock(&s->lock);
	int first = s->conditions != -1;
	s->conditions = -1;
	pthread_mutex_unlock(&s->lock);
	if (first)
		LOG_WARN("the store ignores conditional writes (If-None-Match, If-Match): "
			 "creates and replaces are checked before and read back after, which "
			 "narrows but cannot close the window for concurrent writers");
}

int s3_conditions_state(struct blob_s3 *s)
{
	pthread_mutex_lock(&s->lock);
	int c = s->conditions;
	pthread_mutex_unlock(&s->lock);
	return c;
}

