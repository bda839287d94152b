/*
 * s3_proto.c: S3's protocol as pure functions: Signature Version 4 (with OpenSSL's
 * HMAC and SHA-256), the XML answers (read with expat, elements matched by their
 * full path), times, STORE URLs and the AWS shared files.
 */
#include "s3.h"
#include "blob_private.h"

#include <ctype.h>
#include <errno.h>
#include <expat.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- Signature Version 4 ---- */

static void hex(const unsigned char *d, size_t n, char *out)
{
	for (size_t i = 0; i < n; i++)
		snprintf(out + 2 * i, 3, "%02x", d[i]);
}

static void sha256_hex(const void *data, size_t len, char out[65])
{
	unsigned char md[32];
	unsigned int mdlen = 0;

	EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL);
	hex(md, 32, out);
}

static void hmac256(const void *key, size_t klen, const char *msg, unsigned char out[32])
{
	unsigned int olen = 32;

	HMAC(EVP_sha256(), key, (int)klen, (const unsigned char *)msg, strlen(msg), out, &olen);
}

struct sbuf {
	char *s;
	size_t len, cap;
	int failed;
};

static void sb_add(struct sbuf *b, const char *s, size_t n)
{
	if (b->failed)
		return;
	if (b->len + n + 1 > b->cap) {
		size_t cap = (b->len + n + 1) * 2;
		char *ns = realloc(b->s, cap);
		if (!ns) {
			b->failed = 1;
			return;
		}
		b->s = ns;
		b->cap = cap;
	}
	memcpy(b->s + b->len, s, n);
	b->len += n;
	b->s[b->len] = '\0';
}

static void sb_str(struct sbuf *b, const char *s)
{
	sb_add(b, s, strlen(s));
}

static int str_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Splits s at sep into a sorted array of heap strings (for headers: names lowered
 * and values trimmed). */
static char **sorted_parts(const char *s, char sep, int headers, size_t *n)
{
	size_t cap = 8;
	char **v = calloc(cap, sizeof(*v));

	*n = 0;
	for (const char *p = s; v && p && *p;) {
		const char *end = strchr(p, sep);
		size_t len = end ? (size_t)(end - p) : strlen(p);
		if (*n + 1 >= cap) {
			char **nv = realloc(v, 2 * cap * sizeof(*nv));
			if (!nv)
				goto fail;
			v = nv;
			cap *= 2;
		}
		char *item = strndup(p, len);
		if (!item)
			goto fail;
		if (headers) {
			char *colon = strchr(item, ':');
			if (colon) {
				for (char *c = item; c < colon; c++)
					*c = (char)tolower((unsigned char)*c);
				char *val = colon + 1, *e;
				while (*val == ' ' || *val == '\t')
					val++;
				memmove(colon + 1, val, strlen(val) + 1);
				e = colon + strlen(colon);
				while (e > colon + 1 && (e[-1] == ' ' || e[-1] == '\t'))
					*--e = '\0';
			}
		}
		v[(*n)++] = item;
		p = end ? end + 1 : NULL;
	}
	if (v)
		qsort(v, *n, sizeof(*v), str_cmp);
	return v;
fail:
	for (size_t i = 0; i < *n; i++)
		free(v[i]);
	free(v);
	return NULL;
}

static void free_parts(char **v, size_t n)
{
	for (size_t i = 0; v && i < n; i++)
		free(v[i]);
	free(v);
}

int s3_authorization(const struct s3_sign_input *in, char *out, size_t outlen)
{
	struct sbuf canon = { 0 }, hdrs = { 0 }, names = { 0 };
	char **q = NULL, **h = NULL;
	size_t nq = 0, nh = 0;
	int ret = -ENOMEM;

	for (const char *const *p = in->headers; *p; p++) {
		if (hdrs.len)
			sb_add(&hdrs, "\n", 1);
		sb_str(&hdrs, *p);
	}
	q = sorted_parts(in->query ? in->query : "", '&', 0, &nq);
	h = sorted_parts(hdrs.s ? hdrs.s : "", '\n', 1, &nh);
	if (!q || !h || hdrs.failed)
		goto out;
	sb_str(&canon, in->method);
	sb_add(&canon, "\n", 1);
	sb_str(&canon, in->path);
	sb_add(&canon, "\n", 1);
	for (size_t i = 0; i < nq; i++) {
		if (i)
			sb_add(&canon, "&", 1);
		sb_str(&canon, q[i]);
		if (!strchr(q[i], '='))
			sb_add(&canon, "=", 1);
	}
	sb_add(&canon, "\n", 1);
	for (size_t i = 0; i < nh; i++) {
		sb_str(&canon, h[i]);
		sb_add(&canon, "\n", 1);
		const char *colon = strchr(h[i], ':');
		if (names.len)
			sb_add(&names, ";", 1);
		sb_add(&names, h[i], colon ? (size_t)(colon - h[i]) : strlen(h[i]));
	}
	sb_add(&canon, "\n", 1);
	sb_str(&canon, names.s ? names.s : "");
	sb_add(&canon, "\n", 1);
	sb_str(&canon, in->payload_hash);
	if (canon.failed || names.failed)
		goto out;

	char date[9], scope[128], chash[65], sts[512], sig[65];
	unsigned char k1[32], k2[32], k3[32], k4[32], mac[32];
	snprintf(date, sizeof(date), "%.8s", in->amz_date);
	snprintf(scope, sizeof(scope), "%s/%s/%s/aws4_request", date, in->region, in->service);
	sha256_hex(canon.s, canon.len, chash);
	snprintf(sts, sizeof(sts), "AWS4-HMAC-SHA256\n%s\n%s\n%s", in->amz_date, scope, chash);
	size_t slen = strlen(in->secret) + 5;
	char *secret = malloc(slen);
	if (!secret)
		goto out;
	snprintf(secret, slen, "AWS4%s", in->secret);
	hmac256(secret, strlen(secret), date, k1);
	OPENSSL_cleanse(secret, slen);
	free(secret);
	hmac256(k1, 32, in->region, k2);
	hmac256(k2, 32, in->service, k3);
	hmac256(k3, 32, "aws4_request", k4);
	hmac256(k4, 32, sts, mac);
	hex(mac, 32, sig);
	OPENSSL_cleanse(k1, 32);
	OPENSSL_cleanse(k2, 32);
	OPENSSL_cleanse(k3, 32);
	OPENSSL_cleanse(k4, 32);
	int n = snprintf(out, outlen,
			 "AWS4-HMAC-SHA256 Credential=%s/%s, SignedHeaders=%s, Signature=%s",
			 in->akid, scope, names.s ? names.s : "", sig);
	ret = n < 0 || (size_t)n >= outlen ? -ENOSPC : 0;
out:
	free_parts(q, nq);
	free_parts(h, nh);
	free(canon.s);
	free(hdrs.s);
	free(names.s);
	return ret;
}

/* ---- XML ---- */

#define XML_PATH_MAX 512
#define XML_TEXT_MAX (64u << 10)

struct xml_state {
	char path[XML_PATH_MAX];
	size_t plen, overflow;
	struct sbuf text;
	int failed;
	/* what is asked for */
	const char *field;		/* s3_parse_field / s3_parse_error */
	char *found;
	/* ListObjectsV2 */
	const char *prefix;
	struct blob_list *out;
	char *next;
	int url_encoded;
	char *key;
	unsigned long long size;
	long long mtime;
	char etag[BLOB_ETAG_MAX];
	struct blob_list raw;		/* entries before decoding: names as given */
	unsigned char *raw_dir;
};

static void on_start(void *ud, const XML_Char *el, const XML_Char **attrs)
{
	struct xml_state *x = ud;
	size_t n = strlen(el);

	(void)attrs;
	if (x->overflow || x->plen + n + 2 > sizeof(x->path)) {
		x->overflow++;
		return;
	}
	if (x->plen)
		x->path[x->plen++] = '/';
	memcpy(x->path + x->plen, el, n + 1);
	x->plen += n;
	x->text.len = 0;
	if (x->text.s)
		x->text.s[0] = '\0';
	if (strcmp(x->path, "ListBucketResult/Contents") == 0 ||
	    strcmp(x->path, "ListBucketResult/CommonPrefixes") == 0) {
		free(x->key);
		x->key = NULL;
		x->size = 0;
		x->mtime = 0;
		x->etag[0] = '\0';
	}
}

static void on_text(void *ud, const XML_Char *s, int len)
{
	struct xml_state *x = ud;

	if (x->overflow)
		return;
	if (x->text.len + (size_t)len > XML_TEXT_MAX) {
		x->failed = 1;
		return;
	}
	sb_add(&x->text, s, (size_t)len);
}

static const char *last_seg(const char *path)
{
	const char *s = strrchr(path, '/');

	return s ? s + 1 : path;
}

static void on_end(void *ud, const XML_Char *el)
{
	struct xml_state *x = ud;
	const char *t = x->text.s ? x->text.s : "";

	(void)el;
	if (x->overflow) {
		x->overflow--;
		return;
	}
	if (x->field && !x->found && strcmp(last_seg(x->path), x->field) == 0)
		x->found = strdup(t);
	if (x->out) {
		const char *p = x->path;
		if (strcmp(p, "ListBucketResult/Contents/Key") == 0 ||
		    strcmp(p, "ListBucketResult/CommonPrefixes/Prefix") == 0) {
			free(x->key);
			x->key = strdup(t);
		} else if (strcmp(p, "ListBucketResult/Contents/Size") == 0) {
			x->size = strtoull(t, NULL, 10);
		} else if (strcmp(p, "ListBucketResult/Contents/LastModified") == 0) {
			x->mtime = s3_parse_time(t);
		} else if (strcmp(p, "ListBucketResult/Contents/ETag") == 0) {
			/* quoted in the header; here sometimes not */
			if (t[0] == '"')
				snprintf(x->etag, sizeof(x->etag), "%s", t);
			else
				snprintf(x->etag, sizeof(x->etag), "\"%.*s\"", BLOB_ETAG_MAX - 3, t);
		} else if (strcmp(p, "ListBucketResult/NextContinuationToken") == 0) {
			free(x->next);
			x->next = strdup(t);
		} else if (strcmp(p, "ListBucketResult/EncodingType") == 0) {
			x->url_encoded = strcmp(t, "url") == 0;
		} else if (strcmp(p, "ListBucketResult/Contents") == 0 ||
			   strcmp(p, "ListBucketResult/CommonPrefixes") == 0) {
			int is_dir = strcmp(p, "ListBucketResult/CommonPrefixes") == 0;
			struct blob_entry e = { .name = x->key, .is_dir = is_dir, .size = x->size };
			e.mtime.tv_sec = (time_t)x->mtime;
			memcpy(e.etag, x->etag, sizeof(e.etag));
			if (x->key) {
				if (blob_list_add(&x->raw, &e) < 0)
					x->failed = 1;
			}
			free(x->key);
			x->key = NULL;
		}
	}
	while (x->plen && x->path[x->plen - 1] != '/')
		x->plen--;
	if (x->plen)
		x->plen--;
	x->path[x->plen] = '\0';
	x->text.len = 0;
	if (x->text.s)
		x->text.s[0] = '\0';
}

static int xml_run(struct xml_state *x, const char *xml, size_t len)
{
	XML_Parser p = XML_ParserCreate(NULL);
	int ok;

	if (!p)
		return -ENOMEM;
	XML_SetUserData(p, x);
	XML_SetElementHandler(p, on_start, on_end);
	XML_SetCharacterDataHandler(p, on_text);
	ok = XML_Parse(p, xml, (int)len, 1) == XML_STATUS_OK;
	XML_ParserFree(p);
	free(x->text.s);
	x->text.s = NULL;
	if (x->failed && x->text.failed)
		return -ENOMEM;
	return ok && !x->failed ? 0 : -EBADMSG;
}

int s3_parse_list(const char *xml, size_t len, const char *prefix, struct blob_list *out,
		  char **next)
{
	struct xml_state x = { .prefix = prefix, .out = out };
	size_t plen = strlen(prefix);
	int ret;

	*next = NULL;
	blob_list_init(&x.raw);
	ret = xml_run(&x, xml, len);
	for (size_t i = 0; ret == 0 && i < x.raw.count; i++) {
		struct blob_entry e = x.raw.entries[i];
		char *key = e.name;
		if (x.url_encoded)
			blob_pct_decode(key, 1);
		if (strncmp(key, prefix, plen) != 0)
			continue; /* not under the prefix: never shown */
		char *rel = key + plen;
		size_t rlen = strlen(rel);
		if (!e.is_dir && rlen > 0 && rel[rlen - 1] == '/' && e.size == 0)
			continue; /* a folder marker a console made */
		if (e.is_dir) {
			if (rlen == 0 || rel[rlen - 1] != '/')
				continue;
			rel[rlen - 1] = '\0';
		}
		if (!rel[0])
			continue; /* the marker of the prefix itself */
		e.name = rel;
		if (blob_list_add(out, &e) < 0)
			ret = -ENOMEM;
	}
	blob_list_release(&x.raw);
	free(x.key);
	if (ret == 0) {
		if (x.next && x.url_encoded)
			blob_pct_decode(x.next, 1);
		*next = x.next ? x.next : strdup("");
		if (!*next)
			ret = -ENOMEM;
	} else {
		free(x.next);
	}
	return ret;
}

void s3_parse_error(const char *xml, size_t len, char *code, size_t size)
{
	char *c = s3_parse_field(xml, len, "Code");

	snprintf(code, size, "%s", c ? c : "");
	free(c);
}

char *s3_parse_field(const char *xml, size_t len, const char *name)
{
	struct xml_state x = { .field = name };

	if (!xml || len == 0)
		return NULL;
	if (xml_run(&x, xml, len) < 0) {
		free(x.found);
		return NULL;
	}
	return x.found;
}

long long s3_parse_time(const char *s)
{
	struct tm tm;
	const char *end;

	memset(&tm, 0, sizeof(tm));
	if ((end = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm)) != NULL)
		return (long long)timegm(&tm);
	memset(&tm, 0, sizeof(tm));
	if ((end = strptime(s, "%a, %d %b %Y %H:%M:%S GMT", &tm)) != NULL)
		return (long long)timegm(&tm);
	return 0;
}

/* ---- STORE URLs ---- */

int s3_url_parse(const char *url, struct s3_url *out, char *err, size_t errlen)
{
	const char *p = url + strlen("s3://");
	size_t blen = strcspn(p, "/?#");
	/* messages never echo a query: it may hold a signature */
	int shown = (int)(strcspn(url, "?#") < 200 ? strcspn(url, "?#") : 200);

	memset(out, 0, sizeof(*out));
	if (blen < 3 || blen > 63) {
		snprintf(err, errlen, "bad store URL '%.*s': expected s3://BUCKET/PREFIX", shown, url);
		return -EINVAL;
	}
	for (size_t i = 0; i < blen; i++) {
		char c = p[i];
		if (!(islower((unsigned char)c) || isdigit((unsigned char)c) || c == '-' || c == '.')) {
			snprintf(err, errlen, "bad store URL '%.*s': the bucket name is not 3-63 of "
				 "a-z, 0-9, '-', '.'", shown, url);
			return -EINVAL;
		}
	}
	if (p[blen] && p[blen] != '/') {
		snprintf(err, errlen, "bad store URL '%.*s': a query or fragment has no place in "
			 "it", shown, url);
		return -EINVAL;
	}
	out->bucket = strndup(p, blen);
	const char *pre = p[blen] ? p + blen + 1 : "";
	while (*pre == '/')
		pre++;
	size_t plen = strlen(pre);
	out->prefix = malloc(plen + 2);
	if (!out->bucket || !out->prefix) {
		s3_url_release(out);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	memcpy(out->prefix, pre, plen + 1);
	if (plen && pre[plen - 1] != '/') {
		out->prefix[plen] = '/';
		out->prefix[plen + 1] = '\0';
	}
	if (strstr(out->prefix, "//") || strpbrk(out->prefix, "?#")) {
		snprintf(err, errlen, "bad store URL '%.*s': empty segment, query or fragment in "
			 "the prefix", shown, url);
		s3_url_release(out);
		return -EINVAL;
	}
	return 0;
}

void s3_url_release(struct s3_url *u)
{
	free(u->bucket);
	free(u->prefix);
	u->bucket = u->prefix = NULL;
}

/* ---- AWS shared files ---- */

char *s3_ini_get(const char *path, const char *profile, int config, const char *key)
{
	FILE *f = fopen(path, "r");
	char line[4096], want[300];
	int in = 0;
	char *val = NULL;

	if (!f)
		return NULL;
	if (config && strcmp(profile, "default") != 0)
		snprintf(want, sizeof(want), "profile %s", profile);
	else
		snprintf(want, sizeof(want), "%s", profile);
	while (!val && fgets(line, sizeof(line), f)) {
		char *s = line, *e;
		while (isspace((unsigned char)*s))
			s++;
		e = s + strlen(s);
		while (e > s && isspace((unsigned char)e[-1]))
			*--e = '\0';
		if (*s == '#' || *s == ';' || !*s)
			continue;
		if (*s == '[') {
			char *close = strchr(s, ']');
			if (!close)
				continue;
			*close = '\0';
			s++;
			while (isspace((unsigned char)*s))
				s++;
			e = s + strlen(s);
			while (e > s && isspace((unsigned char)e[-1]))
				*--e = '\0';
			in = strcmp(s, want) == 0;
			continue;
		}
		char *eq = strchr(s, '=');
		if (!in || !eq)
			continue;
		*eq = '\0';
		e = eq;
		while (e > s && isspace((unsigned char)e[-1]))
			*--e = '\0';
		char *v = eq + 1;
		while (isspace((unsigned char)*v))
			v++;
		if (strcmp(s, key) == 0)
			val = strdup(v);
	}
	OPENSSL_cleanse(line, sizeof(line));
	fclose(f);
	return val;
}
