/*
 * azure.h: the pieces of the Azure Blob backend that are pure functions, kept apart
 * so that the unit tests can check them (private to blob/ and tests/).
 */
#ifndef BLOB_AZURE_H
#define BLOB_AZURE_H

#include <stddef.h>

#include "blob.h"

#define AZURE_DEV_ACCOUNT "devstoreaccount1"
#define AZURE_DEV_KEY \
	"Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

/* A parsed connection string. Every field is owned ("" when absent). */
struct azure_conn {
	char *protocol;		/* DefaultEndpointsProtocol, default "https" */
	char *account;
	char *key;		/* base64, secret */
	char *suffix;		/* EndpointSuffix, default core.windows.net */
	char *blob_endpoint;	/* BlobEndpoint */
	char *sas;		/* SharedAccessSignature, secret */
	int dev;		/* UseDevelopmentStorage=true */
};

/* Parses "K=V;K=V" (values split at the first '='). -EINVAL with a message in err
 * (never the secret) when malformed. Free with azure_conn_release (wipes secrets). */
int azure_conn_parse(const char *text, struct azure_conn *out, char *err, size_t errlen);
void azure_conn_release(struct azure_conn *c);

/* The parts of a request that Shared Key signs. */
struct azure_sign_input {
	const char *verb;
	const char *content_length;	/* "" when none or 0 */
	const char *content_md5;	/* base64, or NULL */
	const char *content_type;
	const char *if_match;
	const char *if_none_match;
	const char *range;
	const char *const *ms_headers;	/* "x-ms-name:value", any order, NULL-terminated */
	const char *account;
	const char *path;		/* the URI path as sent, encoded, starting with '/' */
	const char *query;		/* the query as sent (encoded, no '?'), or "" */
};

/* The Shared Key string-to-sign; caller frees. NULL on -ENOMEM. */
char *azure_string_to_sign(const struct azure_sign_input *in);

/* Base64(HMAC-SHA256(key, sts)) into out (at least 64 bytes). -EINVAL for a key that
 * is not base64. */
int azure_signature(const char *key_b64, const char *sts, char *out, size_t outlen);

/*
 * Parses one page of a List Blobs answer: the entries under prefix (names made
 * relative to it; folders without their '/') are appended to out, and *next is the
 * NextMarker (heap, "" when the listing is complete). -EBADMSG for malformed XML.
 */
int azure_parse_list(const char *xml, size_t len, const char *prefix, struct blob_list *out,
		     char **next);

/* The <Code> of an error body, "" when there is none. */
void azure_parse_error(const char *xml, size_t len, char *code, size_t size);

/* Parses an RFC 1123 date ("Tue, 19 Aug 2026 13:41:01 GMT"); 0 when malformed. */
long long azure_parse_date(const char *s);

/* The parts of a STORE URL: wasbs://C@A.blob.../P, https://A.blob.../C/P, or the
 * path-style http://HOST:PORT/A/C/P. Fields owned; prefix "" or ending in '/'. */
struct azure_url {
	char *endpoint;		/* scheme://host[:port] plus "/account" when path-style */
	char *account;
	char *container;
	char *prefix;
};
int azure_url_parse(const char *url, struct azure_url *out, char *err, size_t errlen);
void azure_url_release(struct azure_url *u);

#endif
