/*
 * s3_cond.c: what the S3 backend does for a server that ignores conditional writes
 * (If-None-Match, If-Match), as s3rver does.
 *
 * Whether the server honours them is learnt once per process, on a probe key of its
 * own (never on the key being written): a second create-if-absent of the probe must
 * be refused. When it is not, that is said once in the log, and every create and
 * replace takes a claim on its key first: an empty object under
 * .artifactfs-claims/<hash of the key>/<random>, then a listing of that folder. Only
 * a writer that sees its claim alone goes on (check, write, read back, drop the
 * claim); one that sees another drops its own and tries again after a random pause.
 * With a store whose writes are visible to the listings that follow them (S3 is), two
 * writers can never both see themselves alone, so register never hands out one
 * version twice and an alias update is never lost. A claim older than CLAIM_STALE_S
 * beside a new one is a crashed writer's, and is ignored. Each folder of claims keeps
 * an empty ANCHOR object for good, so that it never empties: a server that keeps
 * objects as files (s3rver) removes an empty folder, and fails a write into it that
 * comes at that moment.
 */
#include "s3_store.h"
#include "log.h"

#include <errno.h>
#include <inttypes.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CLAIMS ".artifactfs-claims/"
#define CLAIM_STALE_S 60
#define CLAIM_ROUNDS 60
#define ANCHOR ".anchor"

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
			 "creates and replaces take a claim on their key first (under %s)",
			 CLAIMS);
}

int s3_conditions_state(struct blob_s3 *s)
{
	pthread_mutex_lock(&s->lock);
	int c = s->conditions;
	pthread_mutex_unlock(&s->lock);
	return c;
}

static void random_name(char *out, size_t size)
{
	unsigned char r[12];

	if (RAND_bytes(r, sizeof(r)) != 1) {
		struct timespec t;
		clock_gettime(CLOCK_REALTIME, &t);
		snprintf(out, size, "%lx%lx%lx", (long)t.tv_sec, t.tv_nsec, (long)random());
		return;
	}
	for (size_t i = 0; i < sizeof(r) && 2 * i + 2 < size; i++)
		snprintf(out + 2 * i, 3, "%02x", r[i]);
}

int s3_conditions_learn(struct blob_s3 *s, int (*create)(struct blob_s3 *s, const char *key),
			int *known)
{
	char probe[96], rnd[32];

	*known = s3_conditions_state(s);
	if (*known != 0)
		return 0;
	random_name(rnd, sizeof(rnd));
	snprintf(probe, sizeof(probe), CLAIMS "probe-%s", rnd);
	int ret = blob_put(&s->base, CLAIMS ANCHOR, "", 0, 0, NULL);
	if (ret < 0)
		return ret;
	ret = create(s, probe);
	if (ret == 0) {
		int again = create(s, probe);
		if (again == 0) {
			s3_conditions_ignored(s);
			*known = -1;
		} else if (again == -EEXIST || again == -ESTALE) {
			pthread_mutex_lock(&s->lock);
			s->conditions = 1;
			pthread_mutex_unlock(&s->lock);
			*known = 1;
		} else {
			ret = again;
		}
	}
	blob_remove(&s->base, probe);
	return ret;
}

int s3_claim(struct blob_s3 *s, const char *key, char *claim, size_t size)
{
	char dir[64], rnd[32];
	int ret = 0;

	snprintf(dir, sizeof(dir), CLAIMS "%016" PRIx64 "/",
		 blob_fnv(key, strlen(key), BLOB_FNV_INIT));
	snprintf(claim, size, "%s" ANCHOR, dir);
	ret = blob_put(&s->base, claim, "", 0, 0, NULL);
	if (ret < 0)
		return ret;
	for (int round = 0; round < CLAIM_ROUNDS; round++) {
		struct blob_list l;
		random_name(rnd, sizeof(rnd));
		snprintf(claim, size, "%s%s", dir, rnd);
		ret = blob_put(&s->base, claim, "", 0, 0, NULL);
		if (ret < 0)
			return ret;
		blob_list_init(&l);
		ret = blob_list(&s->base, dir, &l);
		time_t mine = 0;
		int seen = 0, others = 0;
		for (size_t i = 0; ret == 0 && i < l.count; i++)
			if (strcmp(l.entries[i].name, rnd) == 0) {
				mine = l.entries[i].mtime.tv_sec;
				seen = 1;
			}
		for (size_t i = 0; ret == 0 && i < l.count; i++)
			if (!l.entries[i].is_dir && strcmp(l.entries[i].name, rnd) != 0 &&
			    strcmp(l.entries[i].name, ANCHOR) != 0 &&
			    l.entries[i].mtime.tv_sec + CLAIM_STALE_S >= mine)
				others++;
		blob_list_release(&l);
		if (ret == 0 && seen && others == 0)
			return 0; /* alone: held */
		blob_remove(&s->base, claim);
		if (ret < 0 && ret != -ENOENT)
			return ret;
		/* another writer at the same key: both step back, for a random while */
		unsigned char r = 0;
		if (RAND_bytes(&r, 1) != 1)
			r = (unsigned char)random();
		long ms = 20 + (long)r % (40 + 20 * (round < 10 ? round : 10));
		struct timespec d = { ms / 1000, (ms % 1000) * 1000000L };
		nanosleep(&d, NULL);
	}
	LOG_ERROR("%s: no claim on it after %d tries (the store ignores conditional writes, "
		  "and other writers kept at it)", key, CLAIM_ROUNDS);
	return -EIO;
}

void s3_unclaim(struct blob_s3 *s, const char *claim)
{
	int ret = blob_remove(&s->base, claim);

	if (ret < 0 && ret != -ENOENT)
		LOG_WARN("%s: could not remove the claim (%s); it is ignored after %d s", claim,
			 strerror(-ret), CLAIM_STALE_S);
}
