/*
 * http.c: see http.h.
 *
 * Why these numbers: an attempt whose average speed stays under one byte a second for
 * stall_ms (15 s by default; curl averages over a few seconds, so a burst just
 * before a stall delays it a little) is a stalled connection, not a slow one, and is
 * retried on a new connection.
 * Backoff starts at 100 ms and doubles up to 4 s, with full jitter so that many
 * readers hitting one failing server do not retry in lock-step.
 */
#include "http.h"
#include "log.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define HTTP_POOL_MAX 64
/* Once an operation has given up, the store counts as down: then one operation every
 * HTTP_PROBE_MS probes it with a short deadline and the others fail at once, until a
 * probe succeeds. So a mount whose store is gone serves its cache without waiting,
 * fails uncached reads quickly, and notices by itself when the store is back. Writes
 * (must_try) are always tried, with their whole deadline: each is what a user saves. */
#define HTTP_DOWN_DEADLINE_MS 3000
#define HTTP_PROBE_MS 2000
#define HTTP_BACKOFF_BASE_MS 100
#define HTTP_BACKOFF_CAP_MS 4000

struct http {
	struct http_config cfg;
	CURLSH *share;
	pthread_mutex_t share_locks[CURL_LOCK_DATA_LAST];
	pthread_mutex_t lock;
	CURL *pool[HTTP_POOL_MAX];	/* protected by lock */
	int npool;			/* protected by lock */
	int down;			/* protected by lock: the last operation gave up */
	int stopping;			/* atomic: http_stop was called (read on every
					 * progress callback, so no lock) */
	uint64_t last_probe;		/* protected by lock: ms, when down */
	struct blob_stats st;		/* protected by lock */
};

const double blob_lat_bounds_s[BLOB_LAT_BUCKETS] = { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
						     0.5, 1, 2.5, 5, 10, 1e300 };

/* Counts one operation that took ms. Under h->lock. */
static void count_op(struct http *h, uint64_t ms, int gave_up)
{
	double s = (double)ms / 1000;
	int b = 0;

	while (b < BLOB_LAT_BUCKETS - 1 && s > blob_lat_bounds_s[b])
		b++;
	h->st.operations++;
	h->st.lat[b]++;
	h->st.lat_sum_s += s;
	h->st.gave_up += gave_up != 0;
}

void http_add_stats(struct http *h, struct blob_stats *out)
{
	if (!h)
		return;
	pthread_mutex_lock(&h->lock);
	out->operations += h->st.operations;
	out->attempts += h->st.attempts;
	out->retries += h->st.retries;
	out->gave_up += h->st.gave_up;
	out->err_connect += h->st.err_connect;
	out->err_timeout += h->st.err_timeout;
	out->err_network += h->st.err_network;
	out->err_5xx += h->st.err_5xx;
	out->err_429 += h->st.err_429;
	out->err_refused += h->st.err_refused;
	for (int i = 0; i < BLOB_LAT_BUCKETS; i++)
		out->lat[i] += h->st.lat[i];
	out->lat_sum_s += h->st.lat_sum_s;
	pthread_mutex_unlock(&h->lock);
}

static uint64_t now_ms(void);

/* Records how an operation ended; logs when the store goes down or comes back. */
static void store_state(struct http *h, int gave_up, const char *what, int quiet)
{
	pthread_mutex_lock(&h->lock);
	int was = h->down;
	h->down = gave_up;
	if (gave_up)
		h->last_probe = now_ms();
	pthread_mutex_unlock(&h->lock);
	if (gave_up && !was && !quiet)
		LOG_WARN("the store is not answering (%s); until it does, reads of what is not "
			 "cached fail at once", what);
	else if (!gave_up && was)
		LOG_INFO("the store answers again");
}

static pthread_once_t http_once = PTHREAD_ONCE_INIT;

static void http_global_init(void)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
}

static void share_lock(CURL *c, curl_lock_data data, curl_lock_access access, void *arg)
{
	struct http *h = arg;

	(void)c;
	(void)access;
	pthread_mutex_lock(&h->share_locks[data]);
}

static void share_unlock(CURL *c, curl_lock_data data, void *arg)
{
	struct http *h = arg;

	(void)c;
	pthread_mutex_unlock(&h->share_locks[data]);
}

int http_create(const struct http_config *cfg, struct http **out)
{
	struct http *h;

	pthread_once(&http_once, http_global_init);
	h = calloc(1, sizeof(*h));
	if (!h)
		return -ENOMEM;
	h->cfg = *cfg;
	for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
		pthread_mutex_init(&h->share_locks[i], NULL);
	pthread_mutex_init(&h->lock, NULL);
	h->share = curl_share_init();
	if (!h->share) {
		http_destroy(h);
		return -ENOMEM;
	}
	curl_share_setopt(h->share, CURLSHOPT_LOCKFUNC, share_lock);
	curl_share_setopt(h->share, CURLSHOPT_UNLOCKFUNC, share_unlock);
	curl_share_setopt(h->share, CURLSHOPT_USERDATA, h);
	curl_share_setopt(h->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
	curl_share_setopt(h->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
	curl_share_setopt(h->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT);
	*out = h;
	return 0;
}

void http_destroy(struct http *h)
{
	if (!h)
		return;
	for (int i = 0; i < h->npool; i++)
		curl_easy_cleanup(h->pool[i]);
	if (h->share)
		curl_share_cleanup(h->share);
	for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
		pthread_mutex_destroy(&h->share_locks[i]);
	pthread_mutex_destroy(&h->lock);
	free(h);
}

static CURL *pool_take(struct http *h)
{
	CURL *c = NULL;

	pthread_mutex_lock(&h->lock);
	if (h->npool > 0)
		c = h->pool[--h->npool];
	pthread_mutex_unlock(&h->lock);
	return c ? c : curl_easy_init();
}

static void pool_give(struct http *h, CURL *c)
{
	pthread_mutex_lock(&h->lock);
	if (h->npool < HTTP_POOL_MAX) {
		h->pool[h->npool++] = c;
		c = NULL;
	}
	pthread_mutex_unlock(&h->lock);
	if (c)
		curl_easy_cleanup(c);
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int http_down(struct http *h)
{
	pthread_mutex_lock(&h->lock);
	int down = h->down;
	pthread_mutex_unlock(&h->lock);
	return down;
}

static int stopping(struct http *h)
{
	return __atomic_load_n(&h->stopping, __ATOMIC_ACQUIRE);
}

void http_stop(struct http *h)
{
	__atomic_store_n(&h->stopping, 1, __ATOMIC_RELEASE);
}

/* Sleeps ms, waking early when the layer is stopped. */
static void backoff_sleep(struct http *h, unsigned ms)
{
	while (ms > 0 && !stopping(h)) {
		unsigned step = ms < 50 ? ms : 50;
		usleep(step * 1000);
		ms -= step;
	}
}

/* ---- one attempt ---- */

struct attempt {
	struct http *h;
	CURL *c;
	const struct http_request *req;
	struct http_response *resp;
	size_t sent;			/* PUT body bytes handed to curl */
	unsigned retry_after_ms;	/* from Retry-After or the store's own header */
	int overflow;			/* the server sent more than asked for */
	int placed;			/* the answer is the range asked for: bytes may go on */
	int misplaced;			/* a range answered from another offset */
	int unranged;			/* the whole blob for a range that starts later */
	int sink_err;			/* the sink refused the bytes */
};

static int header_is(const char *line, size_t len, const char *name, const char **value,
		     size_t *vlen)
{
	size_t n = strlen(name);

	if (len <= n || strncasecmp(line, name, n) != 0 || line[n] != ':')
		return 0;
	const char *v = line + n + 1, *end = line + len;
	while (v < end && (*v == ' ' || *v == '\t'))
		v++;
	while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
		end--;
	*value = v;
	*vlen = (size_t)(end - v);
	return 1;
}

static void copy_value(char *dst, size_t size, const char *v, size_t len)
{
	if (len >= size)
		len = size - 1;
	memcpy(dst, v, len);
	dst[len] = '\0';
}

static size_t on_header(char *line, size_t size, size_t n, void *arg)
{
	struct attempt *a = arg;
	struct http_response *r = a->resp;
	size_t len = size * n, vlen;
	const char *v;
	char tmp[64];

	if (len > 5 && strncmp(line, "HTTP/", 5) == 0) {
		/* a new response (after 100-continue): forget the previous headers */
		r->has_length = 0;
		r->has_range = 0;
		r->etag[0] = r->last_modified[0] = r->error_code[0] = r->captured[0] = '\0';
		a->retry_after_ms = 0;
	} else if (a->req->capture && header_is(line, len, a->req->capture, &v, &vlen)) {
		copy_value(r->captured, sizeof(r->captured), v, vlen);
	} else if (header_is(line, len, "ETag", &v, &vlen)) {
		copy_value(r->etag, sizeof(r->etag), v, vlen);
	} else if (header_is(line, len, "Content-Length", &v, &vlen)) {
		copy_value(tmp, sizeof(tmp), v, vlen);
		r->content_length = strtoull(tmp, NULL, 10);
		r->has_length = 1;
	} else if (header_is(line, len, "Last-Modified", &v, &vlen)) {
		copy_value(r->last_modified, sizeof(r->last_modified), v, vlen);
	} else if (a->req->error_header && header_is(line, len, a->req->error_header, &v, &vlen)) {
		copy_value(r->error_code, sizeof(r->error_code), v, vlen);
	} else if (header_is(line, len, "Content-Range", &v, &vlen)) {
		copy_value(tmp, sizeof(tmp), v, vlen);
		unsigned long long s, e;
		if (sscanf(tmp, "bytes %llu-%llu/", &s, &e) == 2 && e >= s) {
			r->range_start = s;
			r->has_range = 1;
		}
	} else if (header_is(line, len, "Retry-After", &v, &vlen)) {
		copy_value(tmp, sizeof(tmp), v, vlen);
		if (tmp[0] >= '0' && tmp[0] <= '9')
			a->retry_after_ms = (unsigned)strtoul(tmp, NULL, 10) * 1000;
	} else if (a->req->retry_ms_header &&
		   header_is(line, len, a->req->retry_ms_header, &v, &vlen)) {
		copy_value(tmp, sizeof(tmp), v, vlen);
		a->retry_after_ms = (unsigned)strtoul(tmp, NULL, 10);
	}
	return len;
}

static size_t on_body(char *data, size_t size, size_t n, void *arg)
{
	struct attempt *a = arg;
	struct http_response *r = a->resp;
	const struct http_request *q = a->req;
	size_t len = size * n;

	long status = 0;
	curl_easy_getinfo(a->c, CURLINFO_RESPONSE_CODE, &status);
	/* only a success's body goes to the caller's buffer; an error's is kept (small)
	 * for its error code */
	if (q->sink && status >= 200 && status < 300) {
		/* the caller may use the bytes as they come: an answer that is not the
		 * range asked for must not reach it at all, so it is judged before its
		 * first byte goes on */
		if (q->expect_etag && !a->placed && strcmp(r->etag, q->expect_etag) != 0) {
			/* a server that ignores If-Match: another version's bytes never
			 * reach the caller */
			a->sink_err = -ESTALE;
			return 0;
		}
		if (q->has_expect_length && !a->placed && r->has_length &&
		    r->content_length != q->expect_length) {
			a->sink_err = -EMSGSIZE;
			return 0;
		}
		if (q->check_range && !a->placed) {
			if (status == 200 && q->range_start > 0) {
				a->unranged = 1;
				return 0;
			}
			if (status == 206 && (!r->has_range || r->range_start != q->range_start)) {
				a->misplaced = 1;
				return 0;
			}
		}
		a->placed = 1;
		if (r->received + len > q->sink_max) {
			a->overflow = 1;
			return 0; /* aborts the transfer */
		}
		a->sink_err = q->sink(q->sink_ctx, data, len);
		if (a->sink_err < 0)
			return 0;
		r->received += len;
		return len;
	}
	size_t max = q->body_max && !q->sink ? q->body_max : (1u << 20);
	if (r->body_len + len > max) {
		a->overflow = 1;
		return 0;
	}
	char *nb = realloc(r->body, r->body_len + len + 1);
	if (!nb)
		return 0;
	memcpy(nb + r->body_len, data, len);
	r->body = nb;
	r->body_len += len;
	r->body[r->body_len] = '\0';
	return len;
}

static size_t on_upload(char *dst, size_t size, size_t n, void *arg)
{
	struct attempt *a = arg;
	size_t left = a->req->body_len - a->sent, len = size * n;

	if (len > left)
		len = left;
	memcpy(dst, (const char *)a->req->body + a->sent, len);
	a->sent += len;
	return len;
}

/* curl calls this about once a second and on every piece of data: a transfer of a
 * stopped layer ends at once. */
static int on_progress(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
		       curl_off_t ulnow)
{
	struct attempt *a = arg;

	(void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
	return stopping(a->h);
}

static int transient_status(long status)
{
	return status == 408 || status == 429 || status == 500 || status == 502 ||
	       status == 503 || status == 504;
}

static int transient_curl(CURLcode rc)
{
	switch (rc) {
	case CURLE_URL_MALFORMAT:
	case CURLE_UNSUPPORTED_PROTOCOL:
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CACERT_BADFILE:
	case CURLE_OUT_OF_MEMORY:
	case CURLE_ABORTED_BY_CALLBACK:
		return 0;
	default:
		return 1;
	}
}

static void reset_response(struct http_response *r)
{
	free(r->body);
	memset(r, 0, sizeof(*r));
}

int http_do(struct http *h, const struct http_request *req, struct http_response *resp)
{
	uint64_t start = now_ms();
	unsigned limit = req->deadline_ms ? req->deadline_ms : h->cfg.deadline_ms;
	int skip = 0;

	memset(resp, 0, sizeof(*resp));
	pthread_mutex_lock(&h->lock);
	if (stopping(h)) {
		skip = 1;
	} else if (h->down && !req->must_try) {
		if (start - h->last_probe < HTTP_PROBE_MS) {
			skip = 1;
		} else {
			h->last_probe = start; /* this operation is the probe */
			if (limit > HTTP_DOWN_DEADLINE_MS)
				limit = HTTP_DOWN_DEADLINE_MS;
		}
	}
	pthread_mutex_unlock(&h->lock);
	if (skip) {
		pthread_mutex_lock(&h->lock);
		count_op(h, 0, 1);
		pthread_mutex_unlock(&h->lock);
		if (req->errbuf)
			snprintf(req->errbuf, req->errlen, "the store is not answering");
		return -EIO;
	}
	uint64_t deadline = start + limit;
	char last[160] = "no attempt";
	unsigned attempt_no = 0;
	int ret = -EIO;
	CURL *c = pool_take(h);

	if (!c)
		return -ENOMEM;
	for (;;) {
		struct attempt a = { .h = h, .c = c, .req = req, .resp = resp };
		struct curl_slist *headers = NULL;
		uint64_t now = now_ms();
		if (now >= deadline || stopping(h))
			break;
		if (resp->received && req->sink) {
			ret = req->sink(req->sink_ctx, NULL, 0); /* the bytes come again */
			if (ret < 0)
				goto out;
		}
		reset_response(resp);
		attempt_no++;
		ret = req->sign ? req->sign(req->sign_ctx, &headers) : 0;
		if (ret < 0) {
			curl_slist_free_all(headers);
			goto out;
		}
		curl_easy_reset(c);
		curl_easy_setopt(c, CURLOPT_URL, req->url);
		curl_easy_setopt(c, CURLOPT_SHARE, h->share);
		curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
		curl_easy_setopt(c, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
		curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)(deadline - now));
		curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)h->cfg.connect_timeout_ms);
		curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
		curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME,
				 (long)(h->cfg.stall_ms + 999) / 1000);
		curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
		/* fewer, larger receives: each one is a callback and a write to the cache */
		curl_easy_setopt(c, CURLOPT_BUFFERSIZE, 256L << 10);
		curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, h->cfg.insecure ? 0L : 1L);
		curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, h->cfg.insecure ? 0L : 2L);
		if (h->cfg.ca_file)
			curl_easy_setopt(c, CURLOPT_CAINFO, h->cfg.ca_file);
		curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
		curl_easy_setopt(c, CURLOPT_HEADERDATA, &a);
		curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
		curl_easy_setopt(c, CURLOPT_WRITEDATA, &a);
		curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
		curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
		curl_easy_setopt(c, CURLOPT_XFERINFODATA, &a);
		if (strcmp(req->method, "HEAD") == 0) {
			curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
		} else if (strcmp(req->method, "PUT") == 0 || strcmp(req->method, "POST") == 0 ||
			   (req->body && strcmp(req->method, "DELETE") == 0)) {
			curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
			if (strcmp(req->method, "PUT") != 0)
				curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, req->method);
			curl_easy_setopt(c, CURLOPT_READFUNCTION, on_upload);
			curl_easy_setopt(c, CURLOPT_READDATA, &a);
			curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, (curl_off_t)req->body_len);
			/* large bodies in large sends: fewer system calls here, fewer reads
			 * and events on the server */
			if (req->body_len > (64u << 10))
				curl_easy_setopt(c, CURLOPT_UPLOAD_BUFFERSIZE, 1L << 20);
			/* no "Expect: 100-continue" round trip for small records */
			headers = curl_slist_append(headers, "Expect:");
		} else if (strcmp(req->method, "GET") != 0) {
			curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, req->method);
		}
		curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
		CURLcode rc = curl_easy_perform(c);
		curl_slist_free_all(headers);
		long code = 0;
		if (rc == CURLE_OK)
			curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
		pthread_mutex_lock(&h->lock);
		h->st.attempts++;
		h->st.retries += attempt_no > 1;
		if (rc == CURLE_OK) {
			h->st.err_5xx += code >= 500;
			h->st.err_429 += code == 429;
			h->st.err_refused += code == 401 || code == 403;
		} else if (rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST) {
			h->st.err_connect++;
		} else if (rc == CURLE_OPERATION_TIMEDOUT) {
			h->st.err_timeout++;
		} else if (rc != CURLE_ABORTED_BY_CALLBACK && rc != CURLE_WRITE_ERROR) {
			h->st.err_network++; /* resets, cut answers, TLS (not our own aborts) */
		}
		pthread_mutex_unlock(&h->lock);

		unsigned wait_ms = 0;
		if (rc == CURLE_OK) {
			curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &resp->status);
			int truncated = req->sink && (resp->status == 200 || resp->status == 206) &&
					resp->has_length && resp->received != resp->content_length;
			/* a range answered from another offset is as bad as a cut body */
			int misplaced = req->check_range && resp->status == 206 &&
					(!resp->has_range || resp->range_start != req->range_start);
			int final = req->final_status && resp->status == req->final_status;
			if ((final || !transient_status(resp->status)) && !truncated && !misplaced) {
				ret = 0;
				store_state(h, 0, NULL, 0);
				goto out;
			}
			if (truncated)
				snprintf(last, sizeof(last), "truncated body (%zu of %llu bytes)",
					 resp->received, (unsigned long long)resp->content_length);
			else if (misplaced)
				snprintf(last, sizeof(last), "range answered at the wrong offset");
			else
				snprintf(last, sizeof(last), "HTTP %ld %s", resp->status,
					 resp->error_code);
			if (!truncated && !misplaced)
				wait_ms = a.retry_after_ms;
		} else if (rc == CURLE_ABORTED_BY_CALLBACK && !a.sink_err && !a.overflow) {
			snprintf(last, sizeof(last), "stopped");
			break; /* the layer is stopping */
		} else if (a.unranged) {
			/* a store that ignores Range: the caller tells what it makes of that */
			curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &resp->status);
			ret = 0;
			goto out;
		} else if (a.misplaced) {
			snprintf(last, sizeof(last), "range answered at the wrong offset");
			curl_easy_cleanup(c); /* the rest of that answer is on the connection */
			c = curl_easy_init();
			if (!c) {
				ret = -ENOMEM;
				goto out;
			}
		} else if (a.sink_err) {
			ret = a.sink_err; /* not the network's fault: no retry */
			goto out;
		} else {
			snprintf(last, sizeof(last), "%s%s", curl_easy_strerror(rc),
				 a.overflow ? " (more bytes than asked for)" : "");
			if (rc == CURLE_PEER_FAILED_VERIFICATION || rc == CURLE_SSL_CACERT_BADFILE)
				snprintf(last + strlen(last), sizeof(last) - strlen(last),
					 " (trusted CAs: %.80s)", h->cfg.ca_source ? h->cfg.ca_source
						: "the system's");
			if (!transient_curl(rc) && !a.overflow) {
				if (!req->quiet)
					LOG_WARN("%s %s: %s", req->method, req->what, last);
				ret = rc == CURLE_OUT_OF_MEMORY ? -ENOMEM : -EIO;
				goto out;
			}
			/* a broken connection may sit in the cache: start afresh */
			curl_easy_cleanup(c);
			c = curl_easy_init();
			if (!c) {
				ret = -ENOMEM;
				goto out;
			}
		}
		LOG_DEBUG("%s %s: attempt %u failed: %s", req->method, req->what, attempt_no,
			  last);
		if (req->once)
			break;
		if (wait_ms == 0) {
			unsigned shift = attempt_no < 6 ? attempt_no - 1 : 5;
			unsigned cap = HTTP_BACKOFF_BASE_MS << shift;
			if (cap > HTTP_BACKOFF_CAP_MS)
				cap = HTTP_BACKOFF_CAP_MS;
			unsigned seed = (unsigned)(now_ms() ^ (uintptr_t)&a);
			wait_ms = 1 + (unsigned)(rand_r(&seed) % cap);
		}
		now = now_ms();
		if (now + wait_ms >= deadline)
			break;
		backoff_sleep(h, wait_ms);
	}
	if (stopping(h)) {
		ret = -EIO; /* the end of the mount: nobody waits for this answer */
		goto out;
	}
	if (!req->quiet)
		LOG_WARN("%s %s: giving up after %u attempts in %.1f s: %s", req->method,
			 req->what, attempt_no, (double)(now_ms() - start) / 1000, last);
	store_state(h, 1, last, req->quiet);
	ret = -EIO;
out:
	pthread_mutex_lock(&h->lock);
	count_op(h, now_ms() - start, ret == -EIO);
	pthread_mutex_unlock(&h->lock);
	if (req->errbuf)
		snprintf(req->errbuf, req->errlen, "%s", last);
	if (c)
		pool_give(h, c);
	if (ret < 0)
		reset_response(resp);
	return ret;
}

void http_response_release(struct http_response *resp)
{
	free(resp->body);
	resp->body = NULL;
	resp->body_len = 0;
}

char *http_escape(const char *s, int keep_slash)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t len = strlen(s);
	char *out = malloc(3 * len + 1), *o = out;

	if (!out)
		return NULL;
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;
		if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
		    ch == '-' || ch == '_' || ch == '.' || ch == '~' || (keep_slash && ch == '/')) {
			*o++ = (char)ch;
		} else {
			*o++ = '%';
			*o++ = hex[ch >> 4];
			*o++ = hex[ch & 15];
		}
	}
	*o = '\0';
	return out;
}
