/*
 * http.h: the HTTP layer shared by every remote backend (private to blob/).
 *
 * One struct http per store: a pool of curl easy handles (each keeps its connections
 * alive between requests) and a share handle for DNS, TLS sessions and the
 * connection cache. http_do() runs one operation: it retries transient failures
 * (connection errors, resets, stalls, truncated bodies, 408/429/5xx) with exponential
 * backoff and full jitter, honours Retry-After, and gives up at the operation's
 * deadline, so no request waits forever.
 *
 * Thread-safe: any number of threads may call http_do() at once.
 */
#ifndef BLOB_HTTP_H
#define BLOB_HTTP_H

#include <curl/curl.h>
#include <stddef.h>
#include <stdint.h>

#include "blob.h"

struct http;

/* Builds the headers of one attempt (fresh date and signature); returns 0 or -errno.
 * The list is freed by http_do. */
typedef int (*http_sign_fn)(void *ctx, struct curl_slist **headers);

struct http_request {
	const char *method;		/* "GET", "HEAD", "PUT", "POST" (with body), "DELETE" */
	const char *url;		/* may hold a SAS token: never logged */
	const char *what;		/* what to name in logs: no secret */
	http_sign_fn sign;
	void *sign_ctx;
	const void *body;		/* PUT body */
	size_t body_len;
	blob_sink_fn sink;		/* GET: a success's body goes here, in order, */
	void *sink_ctx;			/* at most sink_max bytes; else it is kept in */
	size_t sink_max;		/* response.body (bounded by body_max) */
	size_t body_max;		/* bound on a kept body */
	int check_range;		/* a 206 must start at range_start */
	const char *expect_etag;	/* a success must be of this version, or the
					 * answer fails with -ESTALE before any byte */
	uint64_t range_start;
	unsigned deadline_ms;		/* 0: the store's deadline */
	int quiet;			/* no log line on giving up (the caller reports) */
	const char *capture;		/* a response header whose value to keep, or NULL */
	const char *error_header;	/* the store's header naming an error, or NULL */
	const char *retry_ms_header;	/* the store's header giving a retry delay in
					 * milliseconds, or NULL (Retry-After is read anyway) */
	int must_try;			/* a write: tried with its whole deadline even
					 * while the store counts as down */
	int once;			/* one attempt, no retry (the caller has another
					 * way: the next proxy) */
	long final_status;		/* an error status this request does not retry
					 * (a server's 500 that means "missing"), or 0 */
	int has_expect_length;		/* a success must have a Content-Length of */
	uint64_t expect_length;		/* expect_length, or it fails with -EMSGSIZE
					 * before any byte */
	char *errbuf;			/* if set: why the last attempt failed */
	size_t errlen;
};

struct http_response {
	long status;
	char etag[BLOB_ETAG_MAX];	/* quoted, as the header gives it */
	uint64_t content_length;
	int has_length;
	char last_modified[64];
	char error_code[64];		/* request.error_header's value, or what the
					 * backend found in the body */
	uint64_t range_start;		/* from Content-Range */
	int has_range;
	char captured[256];		/* the value of request.capture, or "" */
	size_t received;		/* bytes handed to the sink */
	char *body;			/* owned: the kept body, NUL-terminated */
	size_t body_len;
};

struct http_config {
	unsigned deadline_ms;		/* per operation, retries included */
	unsigned connect_timeout_ms;
	unsigned stall_ms;		/* no byte for this long: the attempt fails */
	int insecure;			/* do not verify TLS certificates */
	const char *ca_file;		/* trusted CAs (PEM) instead of the system's, or
					 * NULL; kept by the caller while the layer lives */
	const char *ca_source;		/* where ca_file came from, for messages (kept
					 * by the caller too), or NULL */
};

int http_create(const struct http_config *cfg, struct http **out);
void http_destroy(struct http *h);

/*
 * Runs req until it gets an answer that is not transient, or the deadline passes.
 * Returns 0 with resp filled (any HTTP status: the caller maps it), -EIO when no
 * answer came in time, -ENOMEM, or the error a sink returned. Before a retry of an
 * answer that had reached the sink, the sink is told to start again (data NULL).
 * The caller frees resp->body with http_response_release.
 */
int http_do(struct http *h, const struct http_request *req, struct http_response *resp);
void http_response_release(struct http_response *resp);

/* Adds the layer's request figures to out (h may be NULL). Cannot fail. */
void http_add_stats(struct http *h, struct blob_stats *out);

/* Whether the store counts as down: the last operation gave up (see http.c). */
int http_down(struct http *h);
/* Makes every operation in flight and every later one fail with -EIO at once. */
void http_stop(struct http *h);

/* Percent-encodes s (RFC 3986 unreserved kept; '/' kept when keep_slash). Caller frees. */
char *http_escape(const char *s, int keep_slash);

#endif
