/*
 * test_azure.c: the pure parts of the Azure backend: Shared Key string-to-sign and
 * signature (vectors worked out by hand from the documented layout, the signature
 * checked with an independent HMAC), connection strings, STORE URLs, listing XML.
 */
#include "check.h"
#include "../../blob/azure.h"

#include <errno.h>

static void test_string_to_sign_for_list_blobs(void)
{
	const char *ms[] = { "x-ms-version:2021-08-06", "x-ms-date:Tue, 19 Aug 2026 13:41:01 GMT",
			     NULL };
	struct azure_sign_input in = {
		.verb = "GET", .content_length = "", .content_type = "", .if_match = "",
		.if_none_match = "", .range = "", .ms_headers = ms, .account = "devstoreaccount1",
		.path = "/devstoreaccount1/mycont",
		.query = "restype=container&comp=list&prefix=runs%2F&delimiter=%2F&maxresults=5000",
	};
	char *sts = azure_string_to_sign(&in);
	const char *want = "GET\n\n\n\n\n\n\n\n\n\n\n\n"
			   "x-ms-date:Tue, 19 Aug 2026 13:41:01 GMT\n"
			   "x-ms-version:2021-08-06\n"
			   "/devstoreaccount1/devstoreaccount1/mycont\n"
			   "comp:list\ndelimiter:/\nmaxresults:5000\nprefix:runs/\nrestype:container";
	CHECK(sts && strcmp(sts, want) == 0);
	if (sts && strcmp(sts, want) != 0)
		fprintf(stderr, "got:\n%s\n", sts);
	char sig[128];
	CHECK_EQ(azure_signature(AZURE_DEV_KEY, sts, sig, sizeof(sig)), 0);
	CHECK(strcmp(sig, "s6hG6F1Pljf02+wEj61/6EOBvOqeamk1/KFff6Vqfjo=") == 0);
	free(sts);
}

static void test_string_to_sign_for_conditional_put_and_ranged_get(void)
{
	const char *ms[] = { "X-MS-Version:2021-08-06", "x-ms-blob-type:BlockBlob",
			     "x-ms-date:Tue, 19 Aug 2026 13:41:01 GMT", NULL };
	struct azure_sign_input put = {
		.verb = "PUT", .content_length = "17", .content_type = "", .if_match = "",
		.if_none_match = "*", .range = "", .ms_headers = ms, .account = "acct",
		.path = "/c/registry/m/1.json", .query = "",
	};
	char *sts = azure_string_to_sign(&put);
	CHECK(sts && strcmp(sts, "PUT\n\n\n17\n\n\n\n\n\n*\n\n\n"
				 "x-ms-blob-type:BlockBlob\n"
				 "x-ms-date:Tue, 19 Aug 2026 13:41:01 GMT\n"
				 "x-ms-version:2021-08-06\n"
				 "/acct/c/registry/m/1.json") == 0);
	free(sts);
	const char *ms2[] = { "x-ms-range:bytes=0-1023", "x-ms-date:D", "x-ms-version:V", NULL };
	struct azure_sign_input get = {
		.verb = "GET", .content_length = "", .content_type = "", .if_match = "\"0x8D\"",
		.if_none_match = "", .range = "", .ms_headers = ms2, .account = "a",
		.path = "/a/c/runs/with%20space/%C3%A9.bin", .query = "",
	};
	sts = azure_string_to_sign(&get);
	CHECK(sts && strcmp(sts, "GET\n\n\n\n\n\n\n\n\"0x8D\"\n\n\n\n"
				 "x-ms-date:D\nx-ms-range:bytes=0-1023\nx-ms-version:V\n"
				 "/a/a/c/runs/with%20space/%C3%A9.bin") == 0);
	free(sts);
}

static void test_bad_key_is_refused(void)
{
	char sig[128];
	CHECK_EQ(azure_signature("not base64!", "x", sig, sizeof(sig)), -EINVAL);
	CHECK_EQ(azure_signature("abc", "x", sig, sizeof(sig)), -EINVAL);
}

static void test_connection_strings(void)
{
	struct azure_conn c;
	char err[256];
	CHECK_EQ(azure_conn_parse("DefaultEndpointsProtocol=http;AccountName=acct;"
				  "AccountKey=a2V5a2V5==;BlobEndpoint=http://127.0.0.1:1/acct;",
				  &c, err, sizeof(err)), 0);
	CHECK(strcmp(c.protocol, "http") == 0 && strcmp(c.account, "acct") == 0);
	CHECK(strcmp(c.key, "a2V5a2V5==") == 0); /* split at the first '=' only */
	CHECK(strcmp(c.blob_endpoint, "http://127.0.0.1:1/acct") == 0);
	CHECK(strcmp(c.suffix, "core.windows.net") == 0 && !c.dev && c.sas[0] == '\0');
	azure_conn_release(&c);
	CHECK_EQ(azure_conn_parse("UseDevelopmentStorage=true", &c, err, sizeof(err)), 0);
	CHECK(c.dev && strcmp(c.protocol, "https") == 0);
	azure_conn_release(&c);
	CHECK_EQ(azure_conn_parse("BlobEndpoint=https://a.blob.core.windows.net;"
				  "SharedAccessSignature=?sv=2021&sig=ab%2Bc=", &c, err, sizeof(err)), 0);
	CHECK(strcmp(c.sas, "sv=2021&sig=ab%2Bc=") == 0);
	azure_conn_release(&c);
	CHECK_EQ(azure_conn_parse("AccountName=a;garbage;AccountKey=k", &c, err, sizeof(err)),
		 -EINVAL);
	CHECK(strstr(err, "Key=Value") != NULL);
}

static void test_store_urls(void)
{
	struct azure_url u;
	char err[256];
	CHECK_EQ(azure_url_parse("wasbs://models@acct1.blob.core.windows.net/team/a/", &u, err,
				 sizeof(err)), 0);
	CHECK(strcmp(u.endpoint, "https://acct1.blob.core.windows.net") == 0);
	CHECK(strcmp(u.account, "acct1") == 0 && strcmp(u.container, "models") == 0);
	CHECK(strcmp(u.prefix, "team/a/") == 0);
	azure_url_release(&u);
	CHECK_EQ(azure_url_parse("https://acct1.blob.core.windows.net/models", &u, err,
				 sizeof(err)), 0);
	CHECK(strcmp(u.container, "models") == 0 && strcmp(u.prefix, "") == 0);
	azure_url_release(&u);
	CHECK_EQ(azure_url_parse("http://127.0.0.1:10000/devstoreaccount1/arts/p/q", &u, err,
				 sizeof(err)), 0);
	CHECK(strcmp(u.endpoint, "http://127.0.0.1:10000/devstoreaccount1") == 0);
	CHECK(strcmp(u.account, "devstoreaccount1") == 0 && strcmp(u.container, "arts") == 0);
	CHECK(strcmp(u.prefix, "p/q/") == 0);
	azure_url_release(&u);
	const char *bad[] = { "wasbs://acct.blob.core.windows.net/x", "http://127.0.0.1:10000/",
			      "https://acct.blob.core.windows.net/UPPER",
			      "https://acct.blob.core.windows.net/c?sv=secret", "https:///c" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
		CHECK_EQ(azure_url_parse(bad[i], &u, err, sizeof(err)), -EINVAL);
		CHECK(strstr(err, "secret") == NULL);
	}
}

static const char page1[] =
	"<?xml version=\"1.0\" encoding=\"utf-8\"?>"
	"<EnumerationResults ServiceEndpoint=\"http://x/\" ContainerName=\"c\">"
	"<Prefix>runs/e/</Prefix><MaxResults>3</MaxResults><Delimiter>/</Delimiter><Blobs>"
	"<Blob><Name>runs/e/a&amp;b.txt</Name><Properties>"
	"<Last-Modified>Tue, 19 Aug 2026 13:41:01 GMT</Last-Modified><Etag>0x8DC1</Etag>"
	"<Content-Length>123</Content-Length><Content-MD5/></Properties>"
	"<Metadata><Name>runs/e/injected</Name></Metadata></Blob>"
	"<BlobPrefix><Name>runs/e/run-1/</Name></BlobPrefix>"
	"<Blob><Name Encoded=\"true\">runs%2Fe%2Fctl%01x</Name><Properties>"
	"<Content-Length>1</Content-Length><Etag>0x2</Etag></Properties></Blob>"
	"</Blobs><NextMarker>2!72!MDAwMDM0</NextMarker></EnumerationResults>";

static const char page2[] =
	"<EnumerationResults><Blobs><Blob><Name>runs/e/z.bin</Name><Properties>"
	"<Content-Length>9999999999</Content-Length><Etag>\"0x3\"</Etag></Properties></Blob>"
	"<Blob><Name>elsewhere/x</Name><Properties><Content-Length>1</Content-Length>"
	"</Properties></Blob></Blobs><NextMarker /></EnumerationResults>";

static void test_listing_pages(void)
{
	struct blob_list l;
	char *next = NULL;
	blob_list_init(&l);
	CHECK_EQ(azure_parse_list(page1, strlen(page1), "runs/e/", &l, &next), 0);
	CHECK(next && strcmp(next, "2!72!MDAwMDM0") == 0);
	free(next);
	CHECK_EQ(l.count, 3);
	CHECK(strcmp(l.entries[0].name, "a&b.txt") == 0 && !l.entries[0].is_dir);
	CHECK_EQ(l.entries[0].size, 123);
	CHECK(strcmp(l.entries[0].etag, "\"0x8DC1\"") == 0);
	CHECK_EQ(l.entries[0].mtime.tv_sec, 1787146861);
	CHECK(strcmp(l.entries[1].name, "run-1") == 0 && l.entries[1].is_dir);
	CHECK(strcmp(l.entries[2].name, "ctl\x01x") == 0);
	CHECK_EQ(azure_parse_list(page2, strlen(page2), "runs/e/", &l, &next), 0);
	CHECK(next && next[0] == '\0');
	free(next);
	CHECK_EQ(l.count, 4); /* elsewhere/x is not under the prefix */
	CHECK(strcmp(l.entries[3].name, "z.bin") == 0 && l.entries[3].size == 9999999999ull);
	CHECK(strcmp(l.entries[3].etag, "\"0x3\"") == 0);
	blob_list_clean(&l, "runs/e/"); /* the control character goes */
	CHECK_EQ(l.count, 3);
	blob_list_release(&l);
}

static void test_listing_empty_and_malformed(void)
{
	struct blob_list l;
	char *next = NULL;
	const char *empty = "<EnumerationResults><Blobs/><NextMarker/></EnumerationResults>";
	blob_list_init(&l);
	CHECK_EQ(azure_parse_list(empty, strlen(empty), "", &l, &next), 0);
	CHECK(l.count == 0 && next && next[0] == '\0');
	free(next);
	const char *bad[] = { "", "<EnumerationResults>", "not xml", "<a><b></a>" };
	for (size_t i = 0; i < 4; i++) {
		next = NULL;
		CHECK_EQ(azure_parse_list(bad[i], strlen(bad[i]), "", &l, &next), -EBADMSG);
		CHECK(next == NULL);
	}
	blob_list_release(&l);
	char code[64];
	const char *err = "<?xml version=\"1.0\"?><Error><Code>ContainerNotFound</Code>"
			  "<Message>x</Message></Error>";
	azure_parse_error(err, strlen(err), code, sizeof(code));
	CHECK(strcmp(code, "ContainerNotFound") == 0);
	azure_parse_error("junk", 4, code, sizeof(code));
	CHECK(code[0] == '\0');
}

static void test_dates(void)
{
	CHECK_EQ(azure_parse_date("Tue, 19 Aug 2026 13:41:01 GMT"), 1787146861);
	CHECK_EQ(azure_parse_date("yesterday"), 0);
}

int main(void)
{
	RUN(test_string_to_sign_for_list_blobs);
	RUN(test_string_to_sign_for_conditional_put_and_ranged_get);
	RUN(test_bad_key_is_refused);
	RUN(test_connection_strings);
	RUN(test_store_urls);
	RUN(test_listing_pages);
	RUN(test_listing_empty_and_malformed);
	RUN(test_dates);
	CHECK_DONE();
}
