/*
 * proxy.c: the proxy list and reads through it (see proxy.h).
 */
#include "proxy.h"
#include "http.h"
#include "log.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static time_t mono_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec;
}

/* One member's text (trimmed) into m: 0, or -EINVAL with err. */
static int member_parse(const char *s, size_t len, struct proxy_member *m, char *err,
			size_t errlen)
{
	while (len && isspace((unsigned char)*s)) {
		s++;
		len--;
	}
	while (len && isspace((unsigned char)s[len - 1]))
		len--;
	memset(m, 0, sizeof(*m));
	if (len == 6 && strncasecmp(s, "DIRECT", 6) == 0)
		return 0;
	size_t scheme = len > 7 && strncmp(s, "http://", 7) == 0 ? 7 :
			len > 8 && strncmp(s, "https://", 8) == 0 ? 8 : 0;
	while (len > scheme && s[len - 1] == '/')
		len--;
	size_t host = len - scheme;
	int ok = scheme && host > 0 && len < PROXY_URL_MAX;
	for (size_t i = scheme; ok && i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		ok = isalnum(c) || c == '.' || c == '-' || c == ':' || c == '[' || c == ']' ||
		     c == '_';
	}
	if (!ok) {
		snprintf(err, errlen, "bad --proxy member '%.*s' (expected http://HOST:PORT or "
			 "DIRECT)", (int)(len < 200 ? len : 200), s);
		return -EINVAL;
	}
	memcpy(m->url, s, len);
	m->url[len] = '\0';
	return 0;
}

int blob_proxies_parse(const char *list, const struct blob_options *opt,
		       struct blob_proxies **out, char *err, size_t errlen)
{
	struct blob_proxies *p = calloc(1, sizeof(*p));
	pthread_mutex_t *lock = malloc(sizeof(*lock));
	int ret = -ENOMEM;

	*out = NULL;
	if (!p || !lock) {
		free(p);
		free(lock);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	pthread_mutex_init(lock, NULL);
	p->lock = lock;
	p->set_aside_s = PROXY_SET_ASIDE_S;
	const char *sa = getenv("ARTIFACTFS_PROXY_SET_ASIDE_S");
	if (sa && *sa)
		p->set_aside_s = (unsigned)strtoul(sa, NULL, 10);
	const char *g = list;
	for (;;) {
		size_t glen = strcspn(g, ";");
		struct proxy_group *ng = realloc(p->g, (p->ng + 1) * sizeof(*ng));
		if (!ng)
			goto nomem;
		p->g = ng;
		struct proxy_group *grp = &p->g[p->ng++];
		memset(grp, 0, sizeof(*grp));
		const char *m = g, *gend = g + glen;
		for (;;) {
			const char *bar = memchr(m, '|', (size_t)(gend - m));
			size_t mlen = bar ? (size_t)(bar - m) : (size_t)(gend - m);
			int empty = 1;
			for (size_t i = 0; i < mlen; i++)
				empty &= isspace((unsigned char)m[i]) != 0;
			if (empty) {
				snprintf(err, errlen, "bad --proxy '%.200s': an empty group or member",
					 list);
				ret = -EINVAL;
				goto fail;
			}
			struct proxy_member *nm = realloc(grp->m, (grp->n + 1) * sizeof(*nm));
			if (!nm)
				goto nomem;
			grp->m = nm;
			ret = member_parse(m, mlen, &grp->m[grp->n], err, errlen);
			if (ret < 0)
				goto fail;
			grp->n++;
			if (!bar)
				break;
			m = bar + 1;
		}
		if (!*gend)
			break;
		g = gend + 1;
	}
	struct http_config hc = { 0 };
	hc.deadline_ms = (opt && opt->timeout_s ? opt->timeout_s : 60) * 1000u;
	hc.connect_timeout_ms = 2000;
	hc.stall_ms = 10000;
	hc.insecure = opt && opt->insecure;
	hc.ca_file = blob_ca_file(opt, NULL, &hc.ca_source);
	if (http_create(&hc, &p->http) < 0)
		goto nomem;
	*out = p;
	return 0;
nomem:
	snprintf(err, errlen, "out of memory");
	ret = -ENOMEM;
fail:
	blob_proxies_free(p);
	return ret;
}

void blob_proxies_free(struct blob_proxies *p)
{
	if (!p)
		return;
	for (size_t i = 0; i < p->ng; i++)
		free(p->g[i].m);
	free(p->g);
	http_destroy(p->http);
	if (p->lock) {
		pthread_mutex_destroy(p->lock);
		free(p->lock);
	}
	free(p);
}

size_t proxy_pick(const char *path, uint64_t off, size_t n)
{
	unsigned char le[8];

	for (int i = 0; i < 8; i++)
		le[i] = (unsigned char)(off >> (8 * i));
	uint64_t h = blob_fnv(le, 8, blob_fnv(path, strlen(path), BLOB_FNV_INIT));
	return n ? (size_t)(h % n) : 0;
}

struct relay {
	const struct proxy_read *r;
	size_t given;			/* bytes of this answer handed on */
	int restarted;			/* the sink was told to start again */
};

static int relay_put(void *ctx, const void *data, size_t len)
{
	struct relay *y = ctx;

	if (!data) {
		y->given = 0;
		return y->r->sink(y->r->sink_ctx, NULL, 0);
	}
	y->given += len;
	return y->r->sink(y->r->sink_ctx, data, len);
}

struct proxy_sign {
	const struct proxy_read *r;
	char range[64];
};

static int proxy_sign(void *ctx, struct curl_slist **headers)
{
	struct proxy_sign *g = ctx;
	char line[BLOB_ETAG_MAX + 16];
	struct curl_slist *n;

	n = curl_slist_append(*headers, g->range);
	if (!n)
		return -ENOMEM;
	*headers = n;
	snprintf(line, sizeof(line), "If-Match: %s", g->r->etag);
	if (!(n = curl_slist_append(*headers, line)))
		return -ENOMEM;
	*headers = n;
	for (const char *const *h = g->r->headers; h && *h; h++) {
		if (!(n = curl_slist_append(*headers, *h)))
			return -ENOMEM;
		*headers = n;
	}
	return 0;
}

/* Sets member m aside, with one log line. */
static void set_aside(struct blob_proxies *p, struct proxy_member *m, const char *why)
{
	pthread_mutex_lock(p->lock);
	int was = m->aside_until > mono_s();
	m->aside_until = mono_s() + (time_t)p->set_aside_s;
	pthread_mutex_unlock(p->lock);
	if (!was)
		LOG_WARN("proxy %s failed (%s); set aside for %u s, reads go on through the "
			 "next", m->url, why, p->set_aside_s);
}

/* One attempt through member m: the bytes, -ESTALE, a sink's error, or -EAGAIN
 * (this member failed: set aside). */
static ssize_t through(struct blob_proxies *p, struct proxy_member *m,
		       const struct proxy_read *r, struct relay *y)
{
	struct proxy_sign g = { .r = r };
	struct http_request hq = { 0 };
	struct http_response resp;
	char *esc = http_escape(r->etag, 0), *url = NULL, why[200] = "";
	ssize_t ret;

	if (!esc || asprintf(&url, "%s%s?v=%s", m->url, r->path, esc) < 0)
		url = NULL;
	free(esc);
	if (!url)
		return -ENOMEM;
	snprintf(g.range, sizeof(g.range), "Range: bytes=%" PRIu64 "-%" PRIu64, r->off,
		 r->off + r->len - 1);
	hq.method = "GET";
	hq.url = url;
	hq.what = r->what;
	hq.sign = proxy_sign;
	hq.sign_ctx = &g;
	hq.sink = relay_put;
	hq.sink_ctx = y;
	hq.sink_max = r->len;
	hq.check_range = 1;
	hq.range_start = r->off;
	hq.expect_etag = r->etag;
	hq.must_try = 1;	/* one member's failure says nothing of the next */
	hq.quiet = 1;
	hq.once = 1;
	hq.errbuf = why;
	hq.errlen = sizeof(why);
	if (y->given > 0) {
		ret = relay_put(y, NULL, 0); /* what came through the last one is void */
		if (ret < 0) {
			free(url);
			return ret;
		}
	}
	ret = http_do(p->http, &hq, &resp);
	if (ret == 0 && (resp.status == 206 || (resp.status == 200 && r->off == 0))) {
		ret = (ssize_t)resp.received;
	} else if (ret == 0 && resp.status == 412) {
		ret = -ESTALE; /* the store, through the proxy: not that version any more */
	} else if (ret == 0 && resp.status == 416) {
		ret = 0;
	} else if (ret == 0 || ret == -EIO || ret == -ESTALE) {
		if (ret == 0)
			snprintf(why, sizeof(why), "HTTP %ld", resp.status);
		else if (ret == -ESTALE)
			snprintf(why, sizeof(why), "an answer of another version");
		for (size_t n = strlen(why); n > 0 && why[n - 1] == ' '; n--)
			why[n - 1] = '\0';
		set_aside(p, m, why[0] ? why : "no answer");
		ret = -EAGAIN;
	}
	http_response_release(&resp);
	free(url);
	return ret;
}

ssize_t blob_proxies_read(struct blob_proxies *p, const struct proxy_read *r)
{
	struct relay y = { .r = r };

	if (r->len == 0)
		return 0;
	for (size_t gi = 0; gi < p->ng; gi++) {
		struct proxy_group *g = &p->g[gi];
		size_t first = proxy_pick(r->path, r->off, g->n);
		for (size_t k = 0; k < g->n; k++) {
			struct proxy_member *m = &g->m[(first + k) % g->n];
			if (!m->url[0]) {
				if (y.given > 0) {
					int ret = relay_put(&y, NULL, 0);
					if (ret < 0)
						return ret;
				}
				return -EAGAIN; /* DIRECT */
			}
			pthread_mutex_lock(p->lock);
			int aside = m->aside_until > mono_s();
			pthread_mutex_unlock(p->lock);
			if (aside)
				continue;
			ssize_t ret = through(p, m, r, &y);
			if (ret != -EAGAIN)
				return ret;
		}
	}
	if (y.given > 0) {
		int ret = relay_put(&y, NULL, 0);
		if (ret < 0)
			return ret;
	}
	return -EAGAIN; /* no proxy could: the store itself */
}
