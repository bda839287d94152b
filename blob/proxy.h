/*
 * proxy.h: reads through standard HTTP caching proxies, for fleets (private to blob/
 * and tests/).
 *
 * The list has CernVM-FS's form: groups separated by ';', tried in order; the members
 * of a group separated by '|', the load shared among them; DIRECT, a member of its
 * own, means the store itself:
 *
 *     http://p1:3128|http://p2:3128;http://p3:3128;DIRECT
 *
 * Only reads pinned to a version go through a proxy: their bytes never change under
 * their URL, so one cache entry serves every node. The URL is the store's path with
 * the version in the query (v=<etag>); the request carries Range (the cache's chunk-
 * aligned runs) and If-Match, and no credential: the proxy holds its own. Within a
 * group the member is chosen by the URL and offset, the same on every node, so each
 * chunk is cached by one proxy of the group. A member that fails (no answer in time,
 * a 5xx, an answer of the wrong range or version) is set aside for a while and the
 * read goes on through the next member, then the next group; when every proxy is set
 * aside or failed, or DIRECT comes, the read goes to the store: a read never fails
 * because of a proxy while the store answers.
 */
#ifndef BLOB_PROXY_H
#define BLOB_PROXY_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "blob.h"

struct http;

#define PROXY_URL_MAX 256
/* How long a failed proxy is set aside, by default (ARTIFACTFS_PROXY_SET_ASIDE_S
 * overrides it, for tests). */
#define PROXY_SET_ASIDE_S 60

struct proxy_member {
	char url[PROXY_URL_MAX];	/* "http://host:port", no trailing '/'; "" DIRECT */
	time_t aside_until;		/* monotonic seconds; under the list's lock */
};

struct proxy_group {
	struct proxy_member *m;
	size_t n;
};

struct blob_proxies {
	struct proxy_group *g;
	size_t ng;
	unsigned set_aside_s;
	struct http *http;		/* its own: a failing proxy is not the store */
	void *lock;			/* pthread_mutex_t */
};

/* Parses list (see above); opt (may be NULL) gives the deadline and TLS settings of
 * the requests to the proxies. -EINVAL with one line in err for a bad list (an empty
 * group or member, a member that is not http(s)://HOST[:PORT] or DIRECT). No
 * network I/O. */
int blob_proxies_parse(const char *list, const struct blob_options *opt,
		       struct blob_proxies **out, char *err, size_t errlen);
void blob_proxies_free(struct blob_proxies *p);

/* Headers a read through a proxy carries besides Range and If-Match ("Name: value"),
 * NULL-ended. */
struct proxy_read {
	const char *path;		/* the store's URI path, encoded ("/container/key") */
	const char *etag;		/* the version: quoted, as the store gives it */
	uint64_t off;
	size_t len;
	const char *const *headers;
	const char *what;		/* for logs */
	blob_sink_fn sink;
	void *sink_ctx;
};

/* Reads through the proxies. Returns the bytes delivered, -ESTALE when a proxy says
 * the version is gone (412 from the store through it), a sink's error, or -EAGAIN:
 * the read is to go to the store (DIRECT reached, or no proxy could serve it). When
 * a failed answer had reached the sink, the sink is told to start again (data NULL)
 * before the next. */
ssize_t blob_proxies_read(struct blob_proxies *p, const struct proxy_read *r);

/* The member of group g (of n) that serves path at off first: the same on every node.
 * Cannot fail. */
size_t proxy_pick(const char *path, uint64_t off, size_t n);

#endif
