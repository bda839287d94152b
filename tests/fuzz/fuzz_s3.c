/*
 * fuzz_s3.c: libFuzzer target for the ListObjectsV2, error and field parsers of the
 * S3 backend.
 *
 * Input: PREFIX '\n' XML. Without a '\n' the prefix is "" and the whole input is XML.
 * The XML goes to s3_parse_list() under that prefix, to s3_parse_error() and to
 * s3_parse_field(); its first bytes go to s3_parse_time().
 *
 * Invariants, for any input:
 *   - s3_parse_list() returns 0 with a continuation token, or -EBADMSG/-ENOMEM without one;
 *   - every entry has a name, a NUL-terminated etag, and folders carry no etag, size
 *     or mtime;
 *   - after blob_list_clean() every name passes blob_name_ok() and has no '/', and
 *     the names are sorted by strcmp() and unique;
 *   - s3_parse_error() leaves a NUL-terminated code inside its buffer.
 * A broken invariant aborts, so libFuzzer keeps the input.
 */
#include "blob/s3.h"
#include "blob/blob.h"
#include "blob/log.h"

#define FUZZ_NAME "fuzz_s3"
#include "listing_checks.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PREFIX_MAX 1024
#define CODE_SIZE 64

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	log_setup(LOG_LVL_ERROR, 0);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *nl = memchr(data, '\n', size < PREFIX_MAX ? size : PREFIX_MAX);
	size_t plen = nl ? (size_t)(nl - data) : 0;
	const char *xml = (const char *)data + (nl ? plen + 1 : 0);
	size_t xlen = size - (size_t)(xml - (const char *)data);
	char prefix[PREFIX_MAX + 1];
	struct blob_list l;
	char *next = (char *)&l;
	char *code;
	int ret;

	memcpy(prefix, data, plen);
	prefix[plen] = '\0';

	blob_list_init(&l);
	ret = s3_parse_list(xml, xlen, prefix, &l, &next);
	if (ret == 0 && !next)
		fail("success without a continuation token", NULL);
	if (ret < 0 && next)
		fail("failure with a continuation token", next);
	if (ret != 0 && ret != -EBADMSG && ret != -ENOMEM)
		fail("unexpected error code", strerror(-ret));
	check_entries(&l);
	blob_list_clean(&l, prefix);
	check_entries(&l);
	check_clean(&l);
	blob_list_release(&l);
	free(next);

	code = malloc(CODE_SIZE);
	if (!code)
		return 0;
	memset(code, 'x', CODE_SIZE);
	s3_parse_error(xml, xlen, code, CODE_SIZE);
	if (!memchr(code, '\0', CODE_SIZE))
		fail("error code not NUL-terminated", NULL);
	free(code);
	free(s3_parse_field(xml, xlen, "UploadId"));
	char text[64];
	size_t tlen = xlen < sizeof(text) - 1 ? xlen : sizeof(text) - 1;
	memcpy(text, xml, tlen);
	text[tlen] = '\0';
	(void)s3_parse_time(text);
	return 0;
}
