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
 * version twice and an alias update is never lost. A claim older than a holder can
 * hold one (3 --timeouts and a minute) beside a new one is a crashed writer's: it is
 * removed. Each folder of claims keeps
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

static uint64_t now_ms(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000u + (uint64_t)t.tv_nsec / 1000000u;
}

/* How old a claim is before it counts as a crashed writer's: longer than a holder
 * may hold one (s3_claim_fresh's bound, then one write of --timeout), with margin. */
static unsigned stale_s(const struct blob_s3 *s)
{
	return 3 * s->timeout_s + 60;
}

int s3_conditions_learn(struct blob_s3 *s, s3_probe_fn create, s3_probe_fn replace,
			int *known)
{
	char probe[96], rnd[32];

	*known = s3_conditions_state(s);
	if (*known != 0)
		return 0;
	/* the anchor first, so that the probe's removal never empties the folder; a
	 * store that refuses it (a role that writes only its prefixes) is not asked, and
	 * gets conditional requests as they are */
	if (blob_put(&s->base, CLAIMS ANCHOR, "", 0, 0, NULL) < 0)
		return 0;
	random_name(rnd, sizeof(rnd));
	snprintf(probe, sizeof(probe), CLAIMS "probe-%s", rnd);
	if (create(s, probe, NULL) == 0) {
		int again = create(s, probe, NULL);
		int other = replace(s, probe, "\"artifactfs-not-this-version\"");
		int refused = (again == -EEXIST || again == -ESTALE) &&
			      (other == -EEXIST || other == -ESTALE);
		if (again == 0 || other == 0) {
			s3_conditions_ignored(s);
			*known = -1;
		} else if (refused) {
			pthread_mutex_lock(&s->lock);
			s->conditions = 1;
			pthread_mutex_unlock(&s->lock);
			*known = 1;
		}
	}
	blob_remove(&s->base, probe);
	return 0;
}

int s3_claim(struct blob_s3 *s, const char *key, char *claim, size_t size, uint64_t *since)
{
	char dir[64], rnd[32];
	uint64_t start = now_ms(), limit = start + (uint64_t)(stale_s(s) + 10) * 1000u;
	int ret = 0;

	snprintf(dir, sizeof(dir), CLAIMS "%016" PRIx64 "/",
		 blob_fnv(key, strlen(key), BLOB_FNV_INIT));
	snprintf(claim, size, "%s" ANCHOR, dir);
	ret = blob_put(&s->base, claim, "", 0, 0, NULL);
	if (ret < 0)
		return ret;
	for (int round = 0; now_ms() < limit; round++) {
		struct blob_list l;
		random_name(rnd, sizeof(rnd));
		snprintf(claim, size, "%s%s", dir, rnd);
		*since = now_ms();
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
		for (size_t i = 0; ret == 0 && seen && i < l.count; i++) {
			const struct blob_entry *e = &l.entries[i];
			if (e->is_dir || strcmp(e->name, rnd) == 0 || strcmp(e->name, ANCHOR) == 0)
				continue;
			if (e->mtime.tv_sec + (time_t)stale_s(s) >= mine) {
				others++;
			} else {
				/* a crashed writer's: it goes */
				char old[160];
				snprintf(old, sizeof(old), "%s%s", dir, e->name);
				blob_remove(&s->base, old);
			}
		}
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
		long ms = 20 + (long)r * (round < 10 ? round + 1 : 10) / 4;
		struct timespec d = { ms / 1000, (ms % 1000) * 1000000L };
		nanosleep(&d, NULL);
	}
	LOG_ERROR("%s: no claim on it after %u s (the store ignores conditional writes, and "
		  "other writers held it)", key, stale_s(s) + 10);
	return -EIO;
}

int s3_claim_fresh(struct blob_s3 *s, const char *key, uint64_t since)
{
	if (now_ms() - since < (uint64_t)(2 * s->timeout_s + 30) * 1000u)
		return 0;
	LOG_ERROR("%s: not written: its claim is too old to be sure no other writer has "
		  "taken it meanwhile (the store was slow); try again", key);
	return -EIO;
}

void s3_unclaim(struct blob_s3 *s, const char *claim)
{
	int ret = blob_remove(&s->base, claim);

	if (ret < 0 && ret != -ENOENT)
		LOG_WARN("%s: could not remove the claim (%s); it is ignored after %u s", claim,
			 strerror(-ret), stale_s(s));
}
