/*
 * blob_private.h: what the backends of blob/ share and nothing outside blob/ sees.
 */
#ifndef BLOB_PRIVATE_H
#define BLOB_PRIVATE_H

#include "blob.h"

/* Each backend's constructor: url is the whole STORE argument. Same contract as
 * blob_open(). */
int blob_local_open(const char *url, struct blob_store **out, char *err, size_t errlen);
int blob_azure_open(const char *url, const struct blob_options *opt, struct blob_store **out,
		    char *err, size_t errlen);
int blob_mlflow_open(const char *url, const struct blob_options *opt, struct blob_store **out,
		     char *err, size_t errlen);
int blob_s3_open(const char *url, const struct blob_options *opt, struct blob_store **out,
		 char *err, size_t errlen);

/* Decodes %XX escapes of s in place (with plus, '+' becomes a space, as in query
 * strings). Cannot fail. */
void blob_pct_decode(char *s, int plus);

/* Base64 of the MD5 of data (Content-MD5: a check of the bytes in transit), NUL-ended
 * into out. Cannot fail. */
void blob_md5_b64(const void *data, size_t len, char out[32]);

#endif
