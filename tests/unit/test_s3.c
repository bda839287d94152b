/*
 * test_s3.c: the S3 backend's pure parts: Signature Version 4 against the examples
 * AWS publishes, ListObjectsV2 and error answers, STORE URLs, shared files.
 */
#include "check.h"
#include "../../blob/s3.h"

#include <errno.h>

#define AKID "AKIAIOSFODNN7EXAMPLE"
#define SECRET "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"

static void test_sigv4_matches_the_published_examples(void)
{
	char auth[512];
	/* "GET Object" of the S3 SigV4 documentation */
	const char *h1[] = { "Host:examplebucket.s3.amazonaws.com", "Range: bytes=0-9",
			     "x-amz-content-sha256:" S3_EMPTY_SHA256,
			     "x-amz-date:20130524T000000Z", NULL };
	struct s3_sign_input in = { .method = "GET", .path = "/test.txt", .query = "",
				    .headers = h1, .payload_hash = S3_EMPTY_SHA256,
				    .amz_date = "20130524T000000Z", .region = "us-east-1",
				    .service = "s3", .akid = AKID, .secret = SECRET };
	CHECK_EQ(s3_authorization(&in, auth, sizeof(auth)), 0);
	CHECK(strcmp(auth, "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/"
		     "s3/aws4_request, SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
		     "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41") == 0);
	/* "GET Bucket (List Objects)": the query is sorted by name */
	const char *h2[] = { "host:examplebucket.s3.amazonaws.com",
			     "x-amz-content-sha256:" S3_EMPTY_SHA256,
			     "x-amz-date:20130524T000000Z", NULL };
	in.path = "/";
	in.query = "prefix=J&max-keys=2";
	in.headers = h2;
	CHECK_EQ(s3_authorization(&in, auth, sizeof(auth)), 0);
	CHECK(strstr(auth, "Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"));
	/* "GET Bucket Lifecycle": a parameter without a value */
	in.query = "lifecycle";
	CHECK_EQ(s3_authorization(&in, auth, sizeof(auth)), 0);
	CHECK(strstr(auth, "Signature=fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"));
	CHECK_EQ(s3_authorization(&in, auth, 20), -ENOSPC);
}

static void test_list_pages_markers_and_encoding(void)
{
	const char *xml =
		"<?xml version=\"1.0\" encoding=\"UTF-8\"?>"
		"<ListBucketResult><Name>b</Name><Prefix>p/runs/</Prefix><KeyCount>4</KeyCount>"
		"<EncodingType>url</EncodingType>"
		"<Contents><Key>p/runs/</Key><Size>0</Size></Contents>"
		"<Contents><Key>p/runs/a%20b.bin</Key><LastModified>2026-12-05T10:00:00.000Z</LastModified>"
		"<ETag>&quot;abc&quot;</ETag><Size>12</Size></Contents>"
		"<Contents><Key>p/runs/empty/</Key><Size>0</Size></Contents>"
		"<Contents><Key>elsewhere/x</Key><Size>1</Size></Contents>"
		"<CommonPrefixes><Prefix>p/runs/exp/</Prefix></CommonPrefixes>"
		"<IsTruncated>true</IsTruncated><NextContinuationToken>t%2B1</NextContinuationToken>"
		"</ListBucketResult>";
	struct blob_list l;
	char *next = NULL;
	blob_list_init(&l);
	CHECK_EQ(s3_parse_list(xml, strlen(xml), "p/runs/", &l, &next), 0);
	CHECK_EQ(l.count, 2);
	CHECK(l.count == 2 && strcmp(l.entries[0].name, "a b.bin") == 0 && l.entries[0].size == 12 &&
	      strcmp(l.entries[0].etag, "\"abc\"") == 0 && l.entries[0].mtime.tv_sec == 1796464800);
	CHECK(l.count == 2 && strcmp(l.entries[1].name, "exp") == 0 && l.entries[1].is_dir);
	CHECK(next && strcmp(next, "t+1") == 0);
	free(next);
	blob_list_release(&l);
	CHECK_EQ(s3_parse_list("<ListBucketResult><Contents>", 28, "", &l, &next), -EBADMSG);
	blob_list_release(&l);
}

static void test_errors_fields_and_urls(void)
{
	const char *err = "<?xml version=\"1.0\"?><Error><Code>NoSuchKey</Code><Message>m</Message>"
			  "</Error>";
	char code[64];
	s3_parse_error(err, strlen(err), code, sizeof(code));
	CHECK(strcmp(code, "NoSuchKey") == 0);
	s3_parse_error("not xml", 7, code, sizeof(code));
	CHECK(strcmp(code, "") == 0);
	const char *init = "<InitiateMultipartUploadResult><Bucket>b</Bucket><Key>k</Key>"
			   "<UploadId>u-1</UploadId></InitiateMultipartUploadResult>";
	char *id = s3_parse_field(init, strlen(init), "UploadId");
	CHECK(id && strcmp(id, "u-1") == 0);
	free(id);
	CHECK_EQ(s3_parse_time("Tue, 19 Aug 2026 13:41:01 GMT"), 1787146861);

	struct s3_url u;
	char msg[256];
	CHECK_EQ(s3_url_parse("s3://my-bucket/team/ml", &u, msg, sizeof(msg)), 0);
	CHECK(strcmp(u.bucket, "my-bucket") == 0 && strcmp(u.prefix, "team/ml/") == 0);
	s3_url_release(&u);
	CHECK_EQ(s3_url_parse("s3://my.bucket", &u, msg, sizeof(msg)), 0);
	CHECK(strcmp(u.prefix, "") == 0);
	s3_url_release(&u);
	CHECK_EQ(s3_url_parse("s3://Bad_Bucket/x", &u, msg, sizeof(msg)), -EINVAL);
	CHECK(strstr(msg, "bucket") != NULL);
	CHECK_EQ(s3_url_parse("s3://ab", &u, msg, sizeof(msg)), -EINVAL);
	/* a query is refused and never echoed: it may hold a signature */
	const char *bad[] = { "s3://a?sig=SECRET", "s3://bucket?sig=SECRET",
			      "s3://bucket/p/?sig=SECRET", "s3://bucket/p#SECRET" };
	for (int i = 0; i < 4; i++) {
		CHECK_EQ(s3_url_parse(bad[i], &u, msg, sizeof(msg)), -EINVAL);
		CHECK(strstr(msg, "SECRET") == NULL);
	}
}

static void test_shared_files(void)
{
	char path[300];
	snprintf(path, sizeof(path), "%s/credentials", check_dir);
	FILE *f = fopen(path, "w");
	fputs("[default]\naws_access_key_id = AKDEFAULT\n\n[ml]\n  aws_access_key_id=AKML \n"
	      "aws_secret_access_key = s3cr=t\n# aws_session_token = no\n", f);
	fclose(f);
	char *v = s3_ini_get(path, "ml", 0, "aws_secret_access_key");
	CHECK(v && strcmp(v, "s3cr=t") == 0);
	free(v);
	v = s3_ini_get(path, "default", 0, "aws_access_key_id");
	CHECK(v && strcmp(v, "AKDEFAULT") == 0);
	free(v);
	CHECK(s3_ini_get(path, "ml", 0, "aws_session_token") == NULL);
	snprintf(path, sizeof(path), "%s/config", check_dir);
	f = fopen(path, "w");
	fputs("[profile ml]\nregion = eu-west-1\n[default]\nregion=us-west-2\n", f);
	fclose(f);
	v = s3_ini_get(path, "ml", 1, "region");
	CHECK(v && strcmp(v, "eu-west-1") == 0);
	free(v);
	v = s3_ini_get(path, "default", 1, "region");
	CHECK(v && strcmp(v, "us-west-2") == 0);
	free(v);
}

int main(void)
{
	RUN(test_sigv4_matches_the_published_examples);
	RUN(test_list_pages_markers_and_encoding);
	RUN(test_errors_fields_and_urls);
	RUN(test_shared_files);
	CHECK_DONE();
}
