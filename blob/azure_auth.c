/*
 * azure_auth.c: Azure Blob STORE URLs, connection strings and Shared Key signing.
 *
 * String-to-sign (Shared Key, x-ms-version 2009-09-19 and later): the verb, eleven
 * standard headers (Content-Length empty when 0, Date empty because x-ms-date is
 * sent), then every x-ms-* header lowercased and sorted as "name:value\n", then the
 * canonicalized resource: "/" account, the URI path as sent, and each query
 * parameter, name lowercased, name and value decoded, sorted: "\nname:value".
 */
#include "azure.h"
#include "blob_private.h"

#include <ctype.h>
#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* ---- connection strings ---- */

static char *dup_n(const char *s, size_t n)
{
	char *d = malloc(n + 1);

	if (d) {
		memcpy(d, s, n);
		d[n] = '\0';
	}
	return d;
}

static void wipe_free(char *s)
{
	if (s) {
		OPENSSL_cleanse(s, strlen(s));
		free(s);
	}
}

void azure_conn_release(struct azure_conn *c)
{
	free(c->protocol);
	free(c->account);
	wipe_free(c->key);
	free(c->suffix);
	free(c->blob_endpoint);
	wipe_free(c->sas);
	memset(c, 0, sizeof(*c));
}

int azure_conn_parse(const char *text, struct azure_conn *out, char *err, size_t errlen)
{
	struct {
		const char *name;
		char **field;
	} keys[] = {
		{ "DefaultEndpointsProtocol", &out->protocol },
		{ "AccountName", &out->account },
		{ "AccountKey", &out->key },
		{ "EndpointSuffix", &out->suffix },
		{ "BlobEndpoint", &out->blob_endpoint },
		{ "SharedAccessSignature", &out->sas },
	};
	const char *p = text;

	memset(out, 0, sizeof(*out));
	while (*p) {
		const char *end = strchr(p, ';');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		const char *eq = memchr(p, '=', len);
		while (len && isspace((unsigned char)*p)) {
			p++;
			len--;
		}
		if (len == 0) {
			p = end ? end + 1 : p + len;
			continue;
		}
		if (!eq) {
			snprintf(err, errlen, "AZURE_STORAGE_CONNECTION_STRING: a part has no '=' "
				 "(expected Key=Value;Key=Value)");
			goto bad;
		}
		size_t klen = (size_t)(eq - p), vlen = len - klen - 1;
		const char *v = eq + 1;
		int known = 0;
		if (klen == strlen("UseDevelopmentStorage") &&
		    strncasecmp(p, "UseDevelopmentStorage", klen) == 0) {
			out->dev = vlen == 4 && strncasecmp(v, "true", 4) == 0;
			known = 1;
		}
		for (size_t i = 0; !known && i < sizeof(keys) / sizeof(*keys); i++) {
			if (klen == strlen(keys[i].name) && strncasecmp(p, keys[i].name, klen) == 0) {
				if (*keys[i].field)
					wipe_free(*keys[i].field);
				*keys[i].field = dup_n(v, vlen);
				if (!*keys[i].field) {
					snprintf(err, errlen, "out of memory");
					azure_conn_release(out);
					return -ENOMEM;
				}
				known = 1;
			}
		}
		/* other keys (QueueEndpoint, ...) concern other services */
		p = end ? end + 1 : p + len;
	}
	for (size_t i = 0; i < sizeof(keys) / sizeof(*keys); i++) {
		if (!*keys[i].field && !(*keys[i].field = strdup(""))) {
			snprintf(err, errlen, "out of memory");
			azure_conn_release(out);
			return -ENOMEM;
		}
	}
	if (!out->protocol[0]) {
		free(out->protocol);
		out->protocol = strdup("https");
	}
	if (!out->suffix[0]) {
		free(out->suffix);
		out->suffix = strdup("core.windows.net");
	}
	if (out->sas[0] == '?')
		memmove(out->sas, out->sas + 1, strlen(out->sas));
	if (!out->protocol || !out->suffix) {
		snprintf(err, errlen, "out of memory");
		azure_conn_release(out);
		return -ENOMEM;
	}
	return 0;
bad:
	azure_conn_release(out);
	return -EINVAL;
}

/* ---- Shared Key ---- */

struct dynstr {
	char *s;
	size_t len, cap;
	int failed;
};

static void ds_add(struct dynstr *d, const char *s, size_t n)
{
	if (d->failed)
		return;
	if (d->len + n + 1 > d->cap) {
		size_t cap = (d->len + n + 1) * 2;
		char *ns = realloc(d->s, cap);
		if (!ns) {
			d->failed = 1;
			return;
		}
		d->s = ns;
		d->cap = cap;
	}
	memcpy(d->s + d->len, s, n);
	d->len += n;
	d->s[d->len] = '\0';
}

static void ds_str(struct dynstr *d, const char *s)
{
	ds_add(d, s ? s : "", s ? strlen(s) : 0);
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = (char)tolower((unsigned char)c);
	return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Percent-decodes s[0..n) into a new string. */
static char *decode(const char *s, size_t n)
{
	char *out = malloc(n + 1), *o = out;

	if (!out)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '%' && i + 2 < n && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
			*o++ = (char)(hexval(s[i + 1]) << 4 | hexval(s[i + 2]));
			i += 2;
		} else {
			*o++ = s[i];
		}
	}
	*o = '\0';
	return out;
}

static int str_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

char *azure_string_to_sign(const struct azure_sign_input *in)
{
	struct dynstr d = { 0 };
	const char *lines[] = { in->verb, "", "", in->content_length,
				in->content_md5 ? in->content_md5 : "", in->content_type, "",
				"", in->if_match, in->if_none_match, "", in->range };
	char **hdrs = NULL, **params = NULL;
	size_t nh = 0, np = 0;

	for (size_t i = 0; i < sizeof(lines) / sizeof(*lines); i++) {
		ds_str(&d, lines[i]);
		ds_add(&d, "\n", 1);
	}
	for (const char *const *h = in->ms_headers; h && *h; h++)
		nh++;
	hdrs = calloc(nh + 1, sizeof(*hdrs));
	for (size_t i = 0; hdrs && i < nh; i++) {
		const char *h = in->ms_headers[i], *colon = strchr(h, ':');
		size_t nlen = colon ? (size_t)(colon - h) : strlen(h);
		hdrs[i] = strdup(h);
		if (!hdrs[i]) {
			d.failed = 1;
			break;
		}
		for (size_t k = 0; k < nlen; k++)
			hdrs[i][k] = (char)tolower((unsigned char)hdrs[i][k]);
	}
	if (!hdrs)
		d.failed = 1;
	if (!d.failed) {
		qsort(hdrs, nh, sizeof(*hdrs), str_cmp);
		for (size_t i = 0; i < nh; i++) {
			ds_str(&d, hdrs[i]);
			ds_add(&d, "\n", 1);
		}
	}
	ds_add(&d, "/", 1);
	ds_str(&d, in->account);
	ds_str(&d, in->path);
	/* query parameters: decoded "name:value", sorted by name */
	const char *q = in->query ? in->query : "";
	for (const char *p = q; *p; p = strchr(p, '&') ? strchr(p, '&') + 1 : p + strlen(p))
		np++;
	params = calloc(np + 1, sizeof(*params));
	if (!params)
		d.failed = 1;
	np = 0;
	for (const char *p = q; params && *p;) {
		const char *amp = strchr(p, '&');
		size_t len = amp ? (size_t)(amp - p) : strlen(p);
		const char *eq = memchr(p, '=', len);
		size_t klen = eq ? (size_t)(eq - p) : len;
		char *k = decode(p, klen), *v = eq ? decode(eq + 1, len - klen - 1) : strdup("");
		if (k && v) {
			for (char *c = k; *c; c++)
				*c = (char)tolower((unsigned char)*c);
			size_t n = strlen(k) + strlen(v) + 2;
			params[np] = malloc(n);
			if (params[np]) {
				snprintf(params[np], n, "%s:%s", k, v);
				np++;
			} else {
				d.failed = 1;
			}
		} else {
			d.failed = 1;
		}
		free(k);
		free(v);
		p = amp ? amp + 1 : p + len;
	}
	if (params && !d.failed) {
		qsort(params, np, sizeof(*params), str_cmp);
		for (size_t i = 0; i < np; i++) {
			ds_add(&d, "\n", 1);
			ds_str(&d, params[i]);
		}
	}
	for (size_t i = 0; hdrs && i < nh; i++)
		free(hdrs[i]);
	free(hdrs);
	for (size_t i = 0; params && i < np; i++)
		free(params[i]);
	free(params);
	if (d.failed) {
		free(d.s);
		return NULL;
	}
	return d.s;
}

int azure_signature(const char *key_b64, const char *sts, char *out, size_t outlen)
{
	size_t klen = strlen(key_b64);
	unsigned char *key = malloc(klen + 1), md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	int n, ret = 0;

	if (!key)
		return -ENOMEM;
	n = klen % 4 == 0 ? EVP_DecodeBlock(key, (const unsigned char *)key_b64, (int)klen) : -1;
	if (n <= 0) {
		ret = -EINVAL;
		goto out;
	}
	/* EVP_DecodeBlock counts the padding as zero bytes */
	for (size_t i = klen; i > 0 && key_b64[i - 1] == '='; i--)
		n--;
	if (!HMAC(EVP_sha256(), key, n, (const unsigned char *)sts, strlen(sts), md, &mdlen) ||
	    outlen < 4 * ((mdlen + 2) / 3) + 1) {
		ret = -EINVAL;
		goto out;
	}
	EVP_EncodeBlock((unsigned char *)out, md, (int)mdlen);
out:
	OPENSSL_cleanse(key, klen + 1);
	free(key);
	return ret;
}

long long azure_parse_date(const char *s)
{
	struct tm tm = { 0 };
	const char *end = strptime(s, "%a, %d %b %Y %H:%M:%S GMT", &tm);

	return end ? (long long)timegm(&tm) : 0;
}

/* ---- STORE URLs ---- */

void azure_url_release(struct azure_url *u)
{
	free(u->endpoint);
	free(u->account);
	free(u->container);
	free(u->prefix);
	memset(u, 0, sizeof(*u));
}

/* A container name: 3-63 of [a-z0-9-] (Azure's rule; "$root" and "$web" too). */
static int container_ok(const char *s, size_t n)
{
	if (n == 5 && (strncmp(s, "$root", 5) == 0))
		return 1;
	if (n == 4 && strncmp(s, "$web", 4) == 0)
		return 1;
	if (n < 3 || n > 63)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!(islower((unsigned char)s[i]) || isdigit((unsigned char)s[i]) || s[i] == '-'))
			return 0;
	return 1;
}

int azure_url_parse(const char *url, struct azure_url *out, char *err, size_t errlen)
{
	const char *scheme, *rest, *host, *path;
	char *prefix_raw = NULL;
	size_t hostlen;
	int vhost, ret = -EINVAL;

	char shown[256];
	memset(out, 0, sizeof(*out));
	blob_url_shown(url, shown, sizeof(shown)); /* no password in a message */
	if (strpbrk(url, "?#")) {
		/* never echo a query: it may hold a SAS signature */
		snprintf(err, errlen, "bad store URL: put a SAS token in AZURE_STORAGE_SAS_TOKEN, "
			 "not in STORE");
		goto out;
	}
	if (strncmp(url, "wasbs://", 8) == 0 || strncmp(url, "wasb://", 7) == 0) {
		/* wasbs://CONTAINER@ACCOUNT.blob.core.windows.net/PREFIX */
		scheme = url[4] == 's' ? "https" : "http";
		rest = url + (url[4] == 's' ? 8 : 7);
		const char *at = strchr(rest, '@'), *slash = strchr(rest, '/');
		if (!at || (slash && slash < at)) {
			snprintf(err, errlen, "bad store URL '%s' (expected "
				 "wasbs://CONTAINER@ACCOUNT.blob.core.windows.net/PREFIX)", shown);
			goto out;
		}
		out->container = dup_n(rest, (size_t)(at - rest));
		host = at + 1;
		path = strchr(host, '/');
		hostlen = path ? (size_t)(path - host) : strlen(host);
		vhost = 1;
	} else if (strncmp(url, "https://", 8) == 0 || strncmp(url, "http://", 7) == 0) {
		scheme = url[4] == 's' ? "https" : "http";
		host = url + (url[4] == 's' ? 8 : 7);
		path = strchr(host, '/');
		hostlen = path ? (size_t)(path - host) : strlen(host);
		/* ACCOUNT.blob.HOST is virtual-host style; anything else (an IP, localhost,
		 * an emulator) names the account in the path */
		const char *dot = memchr(host, '.', hostlen);
		vhost = dot && (size_t)(host + hostlen - dot) > 6 && strncmp(dot, ".blob.", 6) == 0;
	} else {
		snprintf(err, errlen, "bad store URL '%s'", shown);
		goto out;
	}
	if (hostlen == 0 || memchr(host, '?', hostlen) || memchr(host, '@', hostlen)) {
		snprintf(err, errlen, "bad store URL '%s': no host", shown);
		goto out;
	}
	const char *p = path ? path + 1 : "";
	if (vhost) {
		const char *dot = memchr(host, '.', hostlen);
		if (!dot || dot == host) {
			snprintf(err, errlen, "bad store URL '%s' (expected "
				 "wasbs://CONTAINER@ACCOUNT.blob.core.windows.net/PREFIX)", shown);
			goto out;
		}
		out->account = dup_n(host, (size_t)(dot - host));
		if (asprintf(&out->endpoint, "%s://%.*s", scheme, (int)hostlen, host) < 0)
			out->endpoint = NULL;
	} else {
		const char *slash = strchr(p, '/');
		size_t alen = slash ? (size_t)(slash - p) : strlen(p);
		if (alen == 0) {
			snprintf(err, errlen, "bad store URL '%s' (expected "
				 "http://HOST:PORT/ACCOUNT/CONTAINER/PREFIX)", shown);
			goto out;
		}
		out->account = dup_n(p, alen);
		if (asprintf(&out->endpoint, "%s://%.*s/%.*s", scheme, (int)hostlen, host,
			     (int)alen, p) < 0)
			out->endpoint = NULL;
		p = slash ? slash + 1 : p + alen;
	}
	if (!out->container) {
		const char *slash = strchr(p, '/');
		size_t clen = slash ? (size_t)(slash - p) : strlen(p);
		out->container = dup_n(p, clen);
		p = slash ? slash + 1 : p + clen;
	}
	if (!out->account || !out->endpoint || !out->container) {
		snprintf(err, errlen, "out of memory");
		ret = -ENOMEM;
		goto out;
	}
	if (!container_ok(out->container, strlen(out->container))) {
		snprintf(err, errlen, "bad store URL '%s': '%.64s' is not a container name "
			 "(3-63 of a-z, 0-9, -)", shown, out->container);
		goto out;
	}
	for (const char *a = out->account; *a || a == out->account; a++)
		if (!isalnum((unsigned char)*a)) {
			snprintf(err, errlen, "bad store URL '%s': bad account name", shown);
			goto out;
		}
	/* PREFIX: the rest, without leading or trailing '/', then one '/' */
	while (*p == '/')
		p++;
	size_t plen = strlen(p);
	while (plen && p[plen - 1] == '/')
		plen--;
	prefix_raw = dup_n(p, plen);
	if (!prefix_raw || asprintf(&out->prefix, "%s%s", prefix_raw, plen ? "/" : "") < 0) {
		out->prefix = NULL;
		snprintf(err, errlen, "out of memory");
		ret = -ENOMEM;
		goto out;
	}
	ret = 0;
out:
	free(prefix_raw);
	if (ret < 0)
		azure_url_release(out);
	return ret;
}
