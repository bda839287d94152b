/*
 * s3_store.h: the S3 backend's store, shared by its request code (s3.c) and its
 * credentials (s3_creds.c); private to blob/.
 */
#ifndef BLOB_S3_STORE_H
#define BLOB_S3_STORE_H

#include "s3.h"
#include "http.h"

#include <pthread.h>
#include <time.h>

/* Credentials from the metadata service are asked again this long before expiry. */
#define S3_REFRESH_BEFORE 300

enum cred_kind { CRED_ANON, CRED_STATIC, CRED_IMDS_PENDING, CRED_IMDS };

struct blob_s3 {
	struct blob_store base;
	struct s3_url url;
	char *base_url;		/* scheme://host[:port], without the bucket */
	char *host;		/* the Host header: host[:port] */
	char *path_base;	/* "" (virtual-hosted) or "/BUCKET" (path-style) */
	char *region;
	char *ca_file;
	struct http *http;
	struct http *imds_http;
	char *imds;		/* the metadata service's base URL */
	pthread_mutex_t lock;	/* the credentials and what was learnt of the server */
	enum cred_kind kind;
	char *akid, *secret, *token;	/* secrets; NULL when anonymous */
	time_t expires;		/* CRED_IMDS: when they expire (wall clock) */
	time_t imds_next;	/* CRED_IMDS_PENDING: no new try before */
	char source[320];	/* where the credentials came from, for messages */
	int conditions;		/* conditional writes: 0 unknown, 1 honoured, -1 ignored */
	unsigned timeout_s;	/* --timeout: how long one operation may take */
};

/* Wipes and frees the credentials (the lock held or the store unshared). */
void s3_cred_clear(struct blob_s3 *s);
/* Chooses the credentials and the region at open (no network): environment, then
 * shared files; else the metadata service, asked at the first request. */
int s3_creds_choose(struct blob_s3 *s, char *err, size_t errlen);
/* Before a request: the metadata service asked at the first one, and again within
 * S3_REFRESH_BEFORE of expiry. */
void s3_creds_ensure(struct blob_s3 *s);

/* s3_cond.c. Whether key holds exactly data (a read back): 1, 0 (other bytes), or
 * -errno when the read back failed; a key not shown yet is read again a few times. */
int s3_holds(struct blob_s3 *s, const char *key, const void *data, size_t len);
/* The server ignores conditional writes: said once in the log. */
void s3_conditions_ignored(struct blob_s3 *s);
/* What is known of conditional writes: 0 unknown, 1 honoured, -1 ignored. */
int s3_conditions_state(struct blob_s3 *s);
/* A create-if-absent of an empty object, and a replace of key if its etag is etag:
 * 0, or -EEXIST / -ESTALE when refused. */
typedef int (*s3_probe_fn)(struct blob_s3 *s, const char *key, const char *etag);
/* Learns it when unknown, on a probe key of its own: a second create-if-absent and a
 * replace of an etag it does not have must both be refused. *known: 1 honoured, -1
 * ignored, 0 still unknown (the probe could not be written: conditional requests are
 * then sent as they are). 0, or -ENOMEM. */
int s3_conditions_learn(struct blob_s3 *s, s3_probe_fn create, s3_probe_fn replace,
			int *known);
/* For a server that ignores them: takes the claim on key (see s3_cond.c), its object's
 * key into claim, and when it was taken into *since (monotonic ms). 0 when held, or
 * -errno. */
int s3_claim(struct blob_s3 *s, const char *key, char *claim, size_t size, uint64_t *since);
/* Whether a claim taken at since may still write: its holder must be done well
 * before the claim counts as stale. 0, or -EIO (logged). */
int s3_claim_fresh(struct blob_s3 *s, const char *key, uint64_t since);
void s3_unclaim(struct blob_s3 *s, const char *claim);

#endif
