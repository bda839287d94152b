/*
 * fuzz_url.c: libFuzzer target for what names a store: STORE URLs
 * (azure_url_parse), connection strings (azure_conn_parse) and blob_open(), each fed
 * a NUL-terminated copy of the input.
 *
 * Invariants:
 *   - azure_url_parse() success: every field is set, the endpoint starts with
 *     http:// or https://, the container is 3-63 of [a-z0-9-] or $root/$web, the
 *     prefix is "" or ends in '/' and does not start with '/'; failure: every field
 *     NULL and a message in err;
 *   - azure_conn_parse() success: every field is set, protocol and suffix are not
 *     empty; failure: every field cleared;
 *   - blob_open() success gives a store with ops and id; failure gives no store and
 *     a message;
 *   - no error message and no store id carries a secret of the input: the value of
 *     sig= after a '?' (a SAS signature) or of AccountKey= / SharedAccessSignature=
 *     (blob_open() of a file:// URL excepted: there a '?' belongs to a local path).
 *
 * The Azure credential variables are cleared at start so that every run sees the
 * same (anonymous) environment. blob_open() does no network I/O; a file:// input may
 * open a local folder read-only, and the target never lists, reads or writes a store.
 */
#include "blob/azure.h"
#include "blob/blob.h"
#include "blob/log.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ERR_SIZE 512
#define SECRETS_MAX 8

static void fail(const char *what, const char *detail)
{
	fprintf(stderr, "fuzz_url: invariant broken: %s: '%.300s'\n", what,
		detail ? detail : "");
	abort();
}

struct secret {
	const char *from;	/* where an echo of it starts: its key, or the '?' */
	const char *start;	/* the value, in the input */
	size_t len;
};

/* The values of key found in text, each up to one of stops. With after_query only
 * those after the first '?', and an echo is matched from that '?' on: no message
 * has a '?' of its own, so the part of the input before it (which messages may
 * show) can never complete a match. */
static size_t find_secrets(const char *text, const char *key, int after_query,
			   const char *stops, struct secret *out, size_t n, size_t max)
{
	const char *q = after_query ? strchr(text, '?') : NULL, *p = q ? q : text;

	if (after_query && !q)
		return n;
	while (n < max && (p = strstr(p, key))) {
		const char *k = p;
		p += strlen(key);
		size_t len = strcspn(p, stops);
		if (len > 0) {
			out[n].from = q ? q : k;
			out[n].start = p;
			out[n].len = len;
			n++;
		}
	}
	return n;
}

/* Whether msg shows a secret as an echo of the input would: the input from the
 * secret's key (or the query's '?') through the first bytes of the value (an echo
 * may be cut short). */
static int leaks(const char *msg, const struct secret *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		size_t hlen = s[i].len < 4 ? s[i].len : 4;
		size_t mlen = (size_t)(s[i].start - s[i].from) + hlen;
		if (memmem(msg, strlen(msg), s[i].from, mlen))
			return 1;
	}
	return 0;
}

static int container_ok(const char *c)
{
	size_t n = strlen(c);

	if (strcmp(c, "$root") == 0 || strcmp(c, "$web") == 0)
		return 1;
	if (n < 3 || n > 63)
		return 0;
	for (; *c; c++)
		if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '-'))
			return 0;
	return 1;
}

static void check_message(const char *err, const struct secret *s, size_t n)
{
	if (!memchr(err, '\0', ERR_SIZE))
		fail("message not NUL-terminated", NULL);
	if (leaks(err, s, n))
		fail("message shows a secret", err);
}

static void fuzz_url(const char *text, char *err, const struct secret *s, size_t n)
{
	struct azure_url u;
	int ret;

	err[0] = '\0';
	memset(&u, 0xa5, sizeof(u));
	ret = azure_url_parse(text, &u, err, ERR_SIZE);
	if (ret == 0) {
		if (!u.endpoint || !u.account || !u.container || !u.prefix)
			fail("url field missing", text);
		if (strncmp(u.endpoint, "http://", 7) != 0 &&
		    strncmp(u.endpoint, "https://", 8) != 0)
			fail("endpoint is not http(s)", u.endpoint);
		if (!container_ok(u.container))
			fail("container breaks Azure's rule", u.container);
		size_t plen = strlen(u.prefix);
		if (plen && (u.prefix[plen - 1] != '/' || u.prefix[0] == '/'))
			fail("bad prefix", u.prefix);
		if (leaks(u.endpoint, s, n) || leaks(u.prefix, s, n))
			fail("url field shows a secret", text);
		azure_url_release(&u);
	} else {
		if (ret != -EINVAL && ret != -ENOMEM)
			fail("url: unexpected error code", strerror(-ret));
		if (u.endpoint || u.account || u.container || u.prefix)
			fail("url fields left after failure", text);
		if (!err[0])
			fail("url: failure without a message", text);
		check_message(err, s, n);
	}
}

static void fuzz_conn(const char *text, char *err, const struct secret *s, size_t n)
{
	struct azure_conn c;
	int ret;

	err[0] = '\0';
	memset(&c, 0xa5, sizeof(c));
	ret = azure_conn_parse(text, &c, err, ERR_SIZE);
	if (ret == 0) {
		if (!c.protocol || !c.account || !c.key || !c.suffix || !c.blob_endpoint ||
		    !c.sas)
			fail("connection string field missing", text);
		if (!c.protocol[0] || !c.suffix[0])
			fail("connection string default missing", text);
		azure_conn_release(&c);
		if (c.protocol || c.key || c.sas)
			fail("connection string fields left after release", NULL);
	} else {
		if (ret != -EINVAL && ret != -ENOMEM)
			fail("conn: unexpected error code", strerror(-ret));
		if (c.protocol || c.account || c.key || c.suffix || c.blob_endpoint || c.sas)
			fail("connection string fields left after failure", NULL);
		if (!err[0])
			fail("conn: failure without a message", NULL);
		check_message(err, s, n);
	}
}

static void fuzz_open(const char *text, char *err, const struct secret *s, size_t n)
{
	struct blob_store *st = (struct blob_store *)&st;
	int ret;

	err[0] = '\0';
	ret = blob_open(text, NULL, &st, err, ERR_SIZE);
	if (ret == 0) {
		if (!st || !st->ops || !st->ops->destroy || !st->id)
			fail("open: store incomplete", text);
		if (leaks(st->id, s, n))
			fail("store id shows a secret", st->id);
		blob_destroy(st);
	} else {
		if (ret > 0)
			fail("open: positive error code", text);
		if (st)
			fail("open: store after failure", text);
		if (!err[0])
			fail("open: failure without a message", text);
		check_message(err, s, n);
	}
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	static const char *const vars[] = {
		"AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_ACCOUNT", "AZURE_STORAGE_KEY",
		"AZURE_STORAGE_SAS_TOKEN", "ARTIFACTFS_LIST_PAGE_SIZE",
	};

	(void)argc;
	(void)argv;
	for (size_t i = 0; i < sizeof(vars) / sizeof(*vars); i++)
		unsetenv(vars[i]);
	log_setup(LOG_LVL_ERROR, 0);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct secret s[SECRETS_MAX];
	char *text = malloc(size + 1);
	char *err = malloc(ERR_SIZE);
	size_t n;

	if (!text || !err)
		goto out;
	memcpy(text, data, size);
	text[size] = '\0';
	n = find_secrets(text, "sig=", 1, "&#?", s, 0, SECRETS_MAX);
	fuzz_url(text, err, s, n);
	/* a file:// URL has no query: a '?' there is part of a local path */
	fuzz_open(text, err, s, strncmp(text, "file://", 7) == 0 ? 0 : n);
	n = find_secrets(text, "AccountKey=", 0, ";", s, n, SECRETS_MAX);
	n = find_secrets(text, "SharedAccessSignature=", 0, ";", s, n, SECRETS_MAX);
	fuzz_conn(text, err, s, n);
out:
	free(text);
	free(err);
	return 0;
}
