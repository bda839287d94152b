/*
 * s3.h: the pieces of the S3 backend that are pure functions, kept apart so that the
 * unit tests can check them (private to blob/ and tests/).
 */
#ifndef BLOB_S3_H
#define BLOB_S3_H

#include <stddef.h>
#include <stdint.h>

#include "blob.h"

/* SHA-256 of nothing: the payload hash of a request without a body. */
#define S3_EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

/* What Signature Version 4 signs of one request. */
struct s3_sign_input {
	const char *method;
	const char *path;		/* the URI path as sent (each segment encoded) */
	const char *query;		/* the query as sent, encoded, without '?'; or "" */
	const char *const *headers;	/* "name:value", any case and order, NULL-ended:
					 * every header signed (host, x-amz-date, ...) */
	const char *payload_hash;	/* hex SHA-256 of the body, or UNSIGNED-PAYLOAD */
	const char *amz_date;		/* YYYYMMDD'T'HHMMSS'Z' */
	const char *region;
	const char *service;		/* "s3" */
	const char *akid;
	const char *secret;
};

/* The Authorization header's value into out: 0, -ENOMEM or -ENOSPC (out too small). */
int s3_authorization(const struct s3_sign_input *in, char *out, size_t outlen);

/* One page of ListObjectsV2 under prefix: entries (names relative to prefix, folders
 * without their '/'; zero-byte folder markers "dir/" skipped) appended to out, *next
 * the continuation token (heap, "" when done). Keys are decoded when the answer says
 * EncodingType url. -EBADMSG for malformed XML. */
int s3_parse_list(const char *xml, size_t len, const char *prefix, struct blob_list *out,
		  char **next);
/* The <Code> of an error body into code ("" when none). */
void s3_parse_error(const char *xml, size_t len, char *code, size_t size);
/* The text of the first element named name anywhere (UploadId, ...): heap, or NULL. */
char *s3_parse_field(const char *xml, size_t len, const char *name);
/* ISO 8601 (2026-12-05T10:00:00.000Z) or RFC 1123 seconds; 0 when malformed. */
long long s3_parse_time(const char *s);

/* The parts of s3://BUCKET/PREFIX; fields owned, prefix "" or ending in '/'. */
struct s3_url {
	char *bucket;
	char *prefix;
};
int s3_url_parse(const char *url, struct s3_url *out, char *err, size_t errlen);
void s3_url_release(struct s3_url *u);

/* A profile's settings from an AWS shared file (credentials or config): the value
 * of key in section [profile] (config files: [profile NAME], or [default]). Heap,
 * or NULL when absent or unreadable. */
char *s3_ini_get(const char *path, const char *profile, int config, const char *key);

#endif
