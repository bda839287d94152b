/*
 * stats.c: the mount's figures (cache, store requests, uploads), as JSON for
 * `artifactfs stats` (read from the mount's control file, MOUNT/.artifactfs-stats,
 * which no listing shows) and in Prometheus's text exposition format for --metrics
 * (an HTTP server on ADDR:PORT answering /metrics, with libmicrohttpd).
 */
#include "fs.h"
#include "fs_private.h"
#include "../blob/log.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

struct figures {
	struct cache_stats c;
	struct blob_stats s;
	const char *store;
	int writable;
};

static void gather(struct fs *fs, struct figures *f)
{
	cache_get_stats(fs->cache, &f->c);
	blob_get_stats(cache_store(fs->cache), &f->s);
	f->store = cache_store(fs->cache)->id;
	f->writable = fs->wr != NULL;
}

/* The duration under which a fraction q of the operations ended (the upper bound of
 * its bucket), in seconds; 0 with none. */
static double quantile(const struct blob_stats *s, double q)
{
	uint64_t total = 0, acc = 0;

	for (int i = 0; i < BLOB_LAT_BUCKETS; i++)
		total += s->lat[i];
	if (!total)
		return 0;
	for (int i = 0; i < BLOB_LAT_BUCKETS; i++) {
		acc += s->lat[i];
		if ((double)acc >= q * (double)total)
			return i < BLOB_LAT_BUCKETS - 1 ? blob_lat_bounds_s[i]
							: blob_lat_bounds_s[BLOB_LAT_BUCKETS - 2];
	}
	return blob_lat_bounds_s[BLOB_LAT_BUCKETS - 2];
}

char *fs_stats_json(struct fs *fs)
{
	struct figures f;
	cJSON *o = cJSON_CreateObject(), *c, *s, *e, *l;
	char *text;

	gather(fs, &f);
	cJSON_AddStringToObject(o, "store", f.store);
	c = cJSON_AddObjectToObject(o, "cache");
	cJSON_AddNumberToObject(c, "hits", (double)f.c.hits);
	cJSON_AddNumberToObject(c, "misses", (double)f.c.misses);
	cJSON_AddNumberToObject(c, "fetched_bytes", (double)f.c.fetched_bytes);
	cJSON_AddNumberToObject(c, "served_bytes", (double)f.c.served_bytes);
	cJSON_AddNumberToObject(c, "fetches", (double)f.c.fetches);
	cJSON_AddNumberToObject(c, "chunks", (double)f.c.chunks);
	cJSON_AddNumberToObject(c, "disk_bytes", (double)f.c.disk_bytes);
	cJSON_AddNumberToObject(c, "bound_bytes", (double)f.c.max_bytes);
	cJSON_AddNumberToObject(c, "memory_bytes", (double)f.c.mem_bytes);
	cJSON_AddNumberToObject(c, "evictions", (double)f.c.evicted);
	cJSON_AddNumberToObject(c, "damaged_dropped", (double)f.c.damaged);
	s = cJSON_AddObjectToObject(o, "store_requests");
	cJSON_AddBoolToObject(s, "up", f.s.up);
	cJSON_AddNumberToObject(s, "operations", (double)f.s.operations);
	cJSON_AddNumberToObject(s, "requests", (double)f.s.attempts);
	cJSON_AddNumberToObject(s, "retries", (double)f.s.retries);
	cJSON_AddNumberToObject(s, "gave_up", (double)f.s.gave_up);
	e = cJSON_AddObjectToObject(s, "errors");
	cJSON_AddNumberToObject(e, "connect", (double)f.s.err_connect);
	cJSON_AddNumberToObject(e, "timeout", (double)f.s.err_timeout);
	cJSON_AddNumberToObject(e, "network", (double)f.s.err_network);
	cJSON_AddNumberToObject(e, "http_5xx", (double)f.s.err_5xx);
	cJSON_AddNumberToObject(e, "http_429", (double)f.s.err_429);
	cJSON_AddNumberToObject(e, "refused", (double)f.s.err_refused);
	l = cJSON_AddObjectToObject(s, "latency_seconds");
	cJSON_AddNumberToObject(l, "p50", quantile(&f.s, 0.5));
	cJSON_AddNumberToObject(l, "p90", quantile(&f.s, 0.9));
	cJSON_AddNumberToObject(l, "p99", quantile(&f.s, 0.99));
	/* the same fields on every mount (zeros where nothing is written) */
	cJSON *u = cJSON_AddObjectToObject(o, "uploads");
	cJSON_AddBoolToObject(u, "writable", f.writable);
	cJSON_AddNumberToObject(u, "done", (double)f.c.uploads);
	cJSON_AddNumberToObject(u, "failed", (double)f.c.upload_failures);
	cJSON_AddNumberToObject(u, "bytes", (double)f.c.uploaded_bytes);
	text = cJSON_Print(o);
	cJSON_Delete(o);
	if (text) {
		char *t = realloc(text, strlen(text) + 2);
		if (t) {
			text = t;
			memcpy(text + strlen(text), "\n", 2);
		}
	}
	return text;
}

struct buf {
	char *p;
	size_t len, cap;
	int bad;
};

static void put(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(struct buf *b, const char *fmt, ...)
{
	va_list ap;

	for (int round = 0; round < 2 && !b->bad; round++) {
		va_start(ap, fmt);
		int n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
		va_end(ap);
		if (n < 0) {
			b->bad = 1;
			return;
		}
		if (b->p && b->len + (size_t)n < b->cap) {
			b->len += (size_t)n;
			return;
		}
		size_t cap = (b->cap + (size_t)n + 1) * 2;
		char *np = realloc(b->p, cap);
		if (!np) {
			b->bad = 1;
			return;
		}
		b->p = np;
		b->cap = cap;
	}
}

/* One metric: its HELP and TYPE lines, and its value. */
static void metric(struct buf *b, const char *name, const char *type, const char *help,
		   double v)
{
	put(b, "# HELP %s %s\n# TYPE %s %s\n%s %.17g\n", name, help, name, type, name, v);
}

char *fs_stats_prometheus(struct fs *fs)
{
	struct figures f;
	struct buf b = { 0 };

	gather(fs, &f);
	metric(&b, "artifactfs_cache_hits_total", "counter",
	       "Chunk reads the cache had, on disk or in memory.", (double)f.c.hits);
	metric(&b, "artifactfs_cache_misses_total", "counter",
	       "Chunk reads that waited for the store.", (double)f.c.misses);
	metric(&b, "artifactfs_cache_fetched_bytes_total", "counter",
	       "Bytes fetched from the store into the cache.", (double)f.c.fetched_bytes);
	metric(&b, "artifactfs_served_bytes_total", "counter",
	       "Bytes read from files through the cache.", (double)f.c.served_bytes);
	metric(&b, "artifactfs_cache_fetches_total", "counter",
	       "Fetches from the store into the cache (a chunk, or a whole file).",
	       (double)f.c.fetches);
	metric(&b, "artifactfs_cache_chunks", "gauge", "Chunk files on disk.",
	       (double)f.c.chunks);
	metric(&b, "artifactfs_cache_disk_bytes", "gauge", "Bytes of chunk files on disk.",
	       (double)f.c.disk_bytes);
	metric(&b, "artifactfs_cache_bound_bytes", "gauge", "The bound on the cache (--cache-size).",
	       (double)f.c.max_bytes);
	metric(&b, "artifactfs_cache_memory_bytes", "gauge",
	       "Bytes of chunks held in memory (fetched, not yet on disk or being read).",
	       (double)f.c.mem_bytes);
	metric(&b, "artifactfs_cache_evictions_total", "counter",
	       "Chunk files evicted to stay within the bound.", (double)f.c.evicted);
	metric(&b, "artifactfs_cache_damaged_total", "counter",
	       "Chunk files found damaged and dropped.", (double)f.c.damaged);
	metric(&b, "artifactfs_store_up", "gauge",
	       "1 when the store answers, 0 while it counts as down.", f.s.up ? 1 : 0);
	metric(&b, "artifactfs_store_requests_total", "counter",
	       "HTTP requests sent to the store, retries included.", (double)f.s.attempts);
	metric(&b, "artifactfs_store_retries_total", "counter", "Requests that were retries.",
	       (double)f.s.retries);
	metric(&b, "artifactfs_store_operations_failed_total", "counter",
	       "Operations that failed after their retries.", (double)f.s.gave_up);
	put(&b, "# HELP artifactfs_store_errors_total Failed requests to the store, by kind.\n"
		"# TYPE artifactfs_store_errors_total counter\n");
	const struct {
		const char *kind;
		uint64_t v;
	} errs[] = { { "connect", f.s.err_connect }, { "timeout", f.s.err_timeout },
		     { "network", f.s.err_network }, { "http_5xx", f.s.err_5xx },
		     { "http_429", f.s.err_429 }, { "refused", f.s.err_refused } };
	for (size_t i = 0; i < sizeof(errs) / sizeof(*errs); i++)
		put(&b, "artifactfs_store_errors_total{kind=\"%s\"} %" PRIu64 "\n", errs[i].kind,
		    errs[i].v);
	put(&b, "# HELP artifactfs_store_operation_duration_seconds Store operations by "
		"duration, retries included.\n"
		"# TYPE artifactfs_store_operation_duration_seconds histogram\n");
	uint64_t acc = 0;
	for (int i = 0; i < BLOB_LAT_BUCKETS; i++) {
		acc += f.s.lat[i];
		if (i < BLOB_LAT_BUCKETS - 1)
			put(&b, "artifactfs_store_operation_duration_seconds_bucket{le=\"%g\"} %" PRIu64
				"\n", blob_lat_bounds_s[i], acc);
		else
			put(&b, "artifactfs_store_operation_duration_seconds_bucket{le=\"+Inf\"} %"
				PRIu64 "\n", acc);
	}
	put(&b, "artifactfs_store_operation_duration_seconds_sum %.17g\n"
		"artifactfs_store_operation_duration_seconds_count %" PRIu64 "\n", f.s.lat_sum_s, acc);
	metric(&b, "artifactfs_writable", "gauge", "1 when runs/ takes writes (--writable).",
	       f.writable ? 1 : 0);
	metric(&b, "artifactfs_uploads_total", "counter", "Files uploaded to the store.",
	       (double)f.c.uploads);
	metric(&b, "artifactfs_upload_failures_total", "counter", "Uploads that failed.",
	       (double)f.c.upload_failures);
	metric(&b, "artifactfs_uploaded_bytes_total", "counter", "Bytes uploaded.",
	       (double)f.c.uploaded_bytes);
	if (b.bad) {
		free(b.p);
		return NULL;
	}
	return b.p;
}

/* ---- --metrics ADDR:PORT ---- */

static enum MHD_Result answer(void *cls, struct MHD_Connection *conn, const char *url,
			      const char *method, const char *version, const char *upload,
			      size_t *upload_len, void **ptr)
{
	struct fs *fs = cls;
	struct MHD_Response *r;
	enum MHD_Result ret;
	char *text = NULL;
	unsigned status = MHD_HTTP_OK;

	(void)version;
	(void)upload;
	(void)upload_len;
	(void)ptr;
	if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
		status = MHD_HTTP_METHOD_NOT_ALLOWED;
	} else if (strcmp(url, "/metrics") != 0) {
		status = MHD_HTTP_NOT_FOUND;
	} else if (!(text = fs_stats_prometheus(fs))) {
		status = MHD_HTTP_INTERNAL_SERVER_ERROR;
	}
	if (!text)
		text = strdup(status == MHD_HTTP_NOT_FOUND ? "only /metrics here\n" : "error\n");
	if (!text)
		return MHD_NO;
	r = MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
	if (!r) {
		free(text);
		return MHD_NO;
	}
	MHD_add_response_header(r, "Content-Type",
				status == MHD_HTTP_OK ? "text/plain; version=0.0.4; charset=utf-8"
						      : "text/plain");
	ret = MHD_queue_response(conn, status, r);
	MHD_destroy_response(r);
	return ret;
}

int fs_metrics_parse(const char *addr, struct sockaddr_storage *out, char *err, size_t errlen)
{
	char host[256];
	const char *colon = strrchr(addr, ':');
	char *end;

	memset(out, 0, sizeof(*out));
	if (!colon || (size_t)(colon - addr) >= sizeof(host))
		goto bad;
	long port = strtol(colon + 1, &end, 10);
	if (!colon[1] || *end || port <= 0 || port > 65535)
		goto bad;
	memcpy(host, addr, (size_t)(colon - addr));
	host[colon - addr] = '\0';
	if (!host[0]) {
		/* ":PORT": every interface */
		struct sockaddr_in *a4 = (struct sockaddr_in *)out;
		a4->sin_family = AF_INET;
		a4->sin_port = htons((uint16_t)port);
		a4->sin_addr.s_addr = htonl(INADDR_ANY);
		return 0;
	}
	if (host[0] == '[' && host[strlen(host) - 1] == ']') {
		memmove(host, host + 1, strlen(host));
		host[strlen(host) - 1] = '\0';
	}
	/* an address, or a name (localhost, the node's own): its first address */
	struct addrinfo hints = { .ai_family = AF_INET, .ai_socktype = SOCK_STREAM }, *ai = NULL;
	if (getaddrinfo(host, NULL, &hints, &ai) != 0 || !ai) {
		/* no IPv4 address (localhost is 127.0.0.1 first, as scrapers expect) */
		hints.ai_family = AF_UNSPEC;
		ai = NULL;
		if (getaddrinfo(host, NULL, &hints, &ai) != 0 || !ai)
			goto bad;
	}
	if (ai->ai_addrlen <= sizeof(*out))
		memcpy(out, ai->ai_addr, ai->ai_addrlen);
	int family = ai->ai_family;
	freeaddrinfo(ai);
	if (family == AF_INET)
		((struct sockaddr_in *)out)->sin_port = htons((uint16_t)port);
	else if (family == AF_INET6)
		((struct sockaddr_in6 *)out)->sin6_port = htons((uint16_t)port);
	else
		goto bad;
	return 0;
bad:
	snprintf(err, errlen, "bad --metrics '%.100s' (expected ADDR:PORT, e.g. 127.0.0.1:9310, "
		 "[::1]:9310, localhost:9310 or :9310 for every interface)", addr);
	return -EINVAL;
}

void *fs_metrics_start(struct fs *fs, const struct sockaddr_storage *addr)
{
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;

	if (addr->ss_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	struct MHD_Daemon *d = MHD_start_daemon(flags, 0, NULL, NULL, answer, fs,
						MHD_OPTION_SOCK_ADDR, addr,
						MHD_OPTION_CONNECTION_LIMIT, 64u,
						MHD_OPTION_CONNECTION_TIMEOUT, 10u, MHD_OPTION_END);
	return d;
}

void fs_metrics_stop(void *d)
{
	if (d)
		MHD_stop_daemon(d);
}

/* ---- artifactfs stats MOUNTPOINT [--json] ---- */

static double num(const cJSON *o, const char *a, const char *b)
{
	const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, a);

	if (b)
		x = cJSON_GetObjectItemCaseSensitive(x, b);
	return cJSON_IsNumber(x) ? x->valuedouble : 0;
}

static const char *human(double v, char *out, size_t size)
{
	static const char *const unit[] = { "B", "KiB", "MiB", "GiB", "TiB" };
	int u = 0;

	while (v >= 1024 && u < 4) {
		v /= 1024;
		u++;
	}
	snprintf(out, size, u ? "%.1f %s" : "%.0f %s", v, unit[u]);
	return out;
}

int fs_stats_main(int argc, char **argv)
{
	const char *mnt = NULL;
	int json = 0;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--json") == 0)
			json = 1;
		else if (argv[i][0] == '-' || mnt) {
			fprintf(stderr, "artifactfs: stats takes MOUNTPOINT [--json]\n");
			return 2;
		} else
			mnt = argv[i];
	}
	if (!mnt) {
		fprintf(stderr, "artifactfs: stats takes MOUNTPOINT [--json]\n");
		return 2;
	}
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s%s", mnt, "/.artifactfs-stats");
	FILE *f = fopen(path, "r");
	if (!f) {
		fprintf(stderr, "artifactfs: %s is not an artifactfs mount (%s)\n", mnt,
			strerror(errno));
		return 2;
	}
	char *text = NULL;
	size_t len = 0;
	FILE *m = open_memstream(&text, &len);
	char buf[8192];
	size_t n;
	while (m && (n = fread(buf, 1, sizeof(buf), f)) > 0)
		fwrite(buf, 1, n, m);
	fclose(f);
	if (m)
		fclose(m);
	cJSON *o = text ? cJSON_ParseWithLength(text, len) : NULL;
	if (!o) {
		fprintf(stderr, "artifactfs: %s answered no figures\n", mnt);
		free(text);
		return 1;
	}
	if (json) {
		fputs(text, stdout);
	} else {
		char a[32], b[32], c[32];
		const cJSON *st = cJSON_GetObjectItemCaseSensitive(o, "store");
		const cJSON *up = cJSON_GetObjectItemCaseSensitive(
			cJSON_GetObjectItemCaseSensitive(o, "store_requests"), "up");
		double hits = num(o, "cache", "hits"), misses = num(o, "cache", "misses");
		printf("%-10s %s (%s)\n", "store", cJSON_IsString(st) ? st->valuestring : "?",
		       cJSON_IsTrue(up) ? "up" : "down");
		printf("%-10s %.0f hits, %.0f misses (%.1f%% hits)\n", "cache", hits, misses,
		       hits + misses > 0 ? 100 * hits / (hits + misses) : 0.0);
		printf("%-10s fetched %s, served %s\n", "", human(num(o, "cache", "fetched_bytes"),
		       a, sizeof(a)), human(num(o, "cache", "served_bytes"), b, sizeof(b)));
		printf("%-10s %.0f chunks on disk, %s of %s; %s in memory\n", "",
		       num(o, "cache", "chunks"), human(num(o, "cache", "disk_bytes"), a, sizeof(a)),
		       human(num(o, "cache", "bound_bytes"), b, sizeof(b)),
		       human(num(o, "cache", "memory_bytes"), c, sizeof(c)));
		printf("%-10s %.0f evictions, %.0f damaged chunks dropped\n", "",
		       num(o, "cache", "evictions"), num(o, "cache", "damaged_dropped"));
		const cJSON *r = cJSON_GetObjectItemCaseSensitive(o, "store_requests");
		printf("%-10s %.0f sent, %.0f retries, %.0f operations failed\n", "requests",
		       num(r, "requests", NULL), num(r, "retries", NULL), num(r, "gave_up", NULL));
		printf("%-10s connect %.0f, timeout %.0f, network %.0f, 5xx %.0f, 429 %.0f, "
		       "refused %.0f\n", "errors", num(r, "errors", "connect"),
		       num(r, "errors", "timeout"), num(r, "errors", "network"),
		       num(r, "errors", "http_5xx"), num(r, "errors", "http_429"),
		       num(r, "errors", "refused"));
		printf("%-10s p50 %g s, p90 %g s, p99 %g s\n", "latency",
		       num(r, "latency_seconds", "p50"), num(r, "latency_seconds", "p90"),
		       num(r, "latency_seconds", "p99"));
		if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(
			    cJSON_GetObjectItemCaseSensitive(o, "uploads"), "writable")))
			printf("%-10s %.0f done, %.0f failed, %s\n", "uploads",
			       num(o, "uploads", "done"), num(o, "uploads", "failed"),
			       human(num(o, "uploads", "bytes"), a, sizeof(a)));
	}
	cJSON_Delete(o);
	free(text);
	return 0;
}
