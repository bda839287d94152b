/*
 * test_registry.c: names, record parsing (hostile records included), registration
 * and aliases against the fake store.
 */
#include "check.h"
#include "fake_store.h"
#include "../../fs/registry.h"

#include <errno.h>
#include <openssl/sha.h>
#include <pthread.h>

static void test_model_and_alias_names(void)
{
	CHECK(reg_name_ok("pt-dnn"));
	CHECK(reg_name_ok("A.b_c-9"));
	CHECK(!reg_name_ok(""));
	CHECK(!reg_name_ok("-x"));
	CHECK(!reg_name_ok(".hidden"));
	CHECK(!reg_name_ok("a/b"));
	CHECK(!reg_name_ok("a b"));
	char longname[140];
	memset(longname, 'a', 128);
	longname[128] = '\0';
	CHECK(reg_name_ok(longname));
	longname[128] = 'a';
	longname[129] = '\0';
	CHECK(!reg_name_ok(longname));
	CHECK(reg_alias_ok("production"));
	CHECK(!reg_alias_ok("latest"));
	CHECK(!reg_alias_ok("42"));
	CHECK(reg_alias_ok("v42"));
	CHECK_EQ(reg_version_of("3.json"), 3);
	CHECK_EQ(reg_version_of("03.json"), -1);
	CHECK_EQ(reg_version_of("3.jso"), -1);
	CHECK_EQ(reg_version_of("aliases.json"), -1);
	CHECK_EQ(reg_version_of("99999999999.json"), -1);
	CHECK_EQ(reg_version_name("12"), 12);
	CHECK_EQ(reg_version_name("12x"), -1);
	CHECK_EQ(reg_version_name("0"), -1);
}

static const char good[] =
	"{\"name\": \"m\", \"version\": 2, \"source\": \"runs/e/r/outputs/\","
	" \"created\": \"2026-11-23T07:00:00Z\", \"files\": ["
	"{\"path\": \"weights/b.bin\", \"size\": 10, \"etag\": \"\\\"e2\\\"\"},"
	"{\"path\": \"a.pth\", \"size\": 46827, \"etag\": \"\\\"0x8DB\\\"\","
	" \"sha256\": \"" "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" "\"}]}";

static void test_record_parses_sorted_with_fields(void)
{
	struct reg_version *v = NULL;
	CHECK_EQ(reg_version_parse(good, strlen(good), "m", 2, &v), 0);
	if (!v)
		return;
	CHECK_EQ(v->nfiles, 2);
	CHECK(strcmp(v->files[0].path, "a.pth") == 0);
	CHECK_EQ(v->files[0].size, 46827);
	CHECK(strcmp(v->files[0].etag, "\"0x8DB\"") == 0);
	CHECK(strlen(v->files[0].sha256) == 64);
	CHECK(v->files[1].sha256[0] == '\0');
	CHECK(strcmp(v->source, "runs/e/r/outputs/") == 0);
	CHECK_EQ(v->created.tv_sec, 1795417200);
	CHECK(reg_version_file(v, "weights/b.bin") != NULL);
	CHECK(reg_version_file(v, "weights") == NULL);
	reg_version_free(v);
}

static void test_record_with_wrong_name_or_version_is_refused(void)
{
	struct reg_version *v = NULL;
	CHECK_EQ(reg_version_parse(good, strlen(good), "other", 2, &v), -EBADMSG);
	CHECK(v == NULL);
	CHECK_EQ(reg_version_parse(good, strlen(good), "m", 3, &v), -EBADMSG);
	const char *bad[] = { "", "{", "[]", "null", "{\"name\":\"m\",\"version\":2}",
			      "{\"name\":\"m\",\"version\":2,\"source\":\"../x/\",\"files\":[]}",
			      "{\"name\":\"m\",\"version\":2,\"source\":\"a//b\",\"files\":[]}",
			      "{\"name\":\"m\",\"version\":2,\"source\":\"r/\",\"files\":{}}",
			      "{\"name\":1,\"version\":2,\"source\":\"r/\",\"files\":[]}" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
		CHECK_EQ(reg_version_parse(bad[i], strlen(bad[i]), "m", 2, &v), -EBADMSG);
		CHECK(v == NULL);
	}
}

static void test_record_bad_file_entries_are_skipped(void)
{
	const char *text =
		"{\"name\":\"m\",\"version\":1,\"source\":\"runs/e/r\",\"files\":["
		"{\"path\":\"../../etc/passwd\",\"size\":1,\"etag\":\"x\"},"
		"{\"path\":\"/abs\",\"size\":1,\"etag\":\"x\"},"
		"{\"path\":\"a/./b\",\"size\":1,\"etag\":\"x\"},"
		"{\"path\":\"a//b\",\"size\":1,\"etag\":\"x\"},"
		"{\"path\":\"ctl\\u0001\",\"size\":1,\"etag\":\"x\"},"
		"{\"path\":\"neg\",\"size\":-1,\"etag\":\"x\"},"
		"{\"path\":\"frac\",\"size\":1.5,\"etag\":\"x\"},"
		"{\"path\":\"noetag\",\"size\":1},"
		"{\"path\":\"badsha\",\"size\":1,\"etag\":\"x\",\"sha256\":\"zz\"},"
		"{\"path\":\"ok.bin\",\"size\":3,\"etag\":\"x\"},"
		"{\"path\":\"ok.bin\",\"size\":4,\"etag\":\"y\"},"
		"{\"path\":\"ok.bin/inner\",\"size\":4,\"etag\":\"y\"},"
		"{\"path\":\"dir/f\",\"size\":2,\"etag\":\"z\"}]}";
	struct reg_version *v = NULL;
	CHECK_EQ(reg_version_parse(text, strlen(text), "m", 1, &v), 0);
	if (!v)
		return;
	CHECK_EQ(v->nfiles, 2);
	CHECK(reg_version_file(v, "ok.bin") && reg_version_file(v, "ok.bin")->size == 3);
	CHECK(reg_version_file(v, "dir/f") != NULL);
	CHECK(strcmp(v->source, "runs/e/r/") == 0);
	reg_version_free(v);
}

static void test_aliases_parse_skips_bad_entries(void)
{
	const char *text = "{\"production\": 3, \"staging\": \"4\", \"latest\": 1, \"7\": 2,"
			   " \"neg\": -1, \"big\": 1e12, \"canary\": 4}";
	struct reg_alias *a = NULL;
	size_t n = 0;
	CHECK_EQ(reg_aliases_parse(text, strlen(text), "m", &a, &n), 0);
	CHECK_EQ(n, 2);
	CHECK(n == 2 && strcmp(a[0].name, "production") == 0 && a[0].version == 3);
	CHECK(n == 2 && strcmp(a[1].name, "canary") == 0 && a[1].version == 4);
	free(a);
	CHECK_EQ(reg_aliases_parse("[1]", 3, "m", &a, &n), -EBADMSG);
}

static struct blob_store *store_with_run(void)
{
	struct blob_store *s = fake_store_create("fake://r");
	fake_store_put(s, "runs/e/r1/outputs/model.pth", "weights", 7);
	fake_store_put(s, "runs/e/r1/outputs/sub/cfg.json", "{}", 2);
	fake_store_put(s, "runs/e/r1/metrics.txt", "m", 1);
	return s;
}

static void test_register_freezes_files_and_numbers_versions(void)
{
	struct blob_store *s = store_with_run();
	struct reg_request req = { .name = "m", .source = "runs/e/r1/outputs/" };
	char err[256], *data = NULL, etag[BLOB_ETAG_MAX];
	size_t len;
	int v = 0;
	CHECK_EQ(reg_register(s, &req, &v, err, sizeof(err)), 0);
	CHECK_EQ(v, 1);
	CHECK_EQ(reg_register(s, &req, &v, err, sizeof(err)), 0);
	CHECK_EQ(v, 2);
	CHECK_EQ(blob_get(s, "registry/m/1.json", 1 << 20, &data, &len, etag), 0);
	struct reg_version *rv = NULL;
	CHECK_EQ(reg_version_parse(data, len, "m", 1, &rv), 0);
	if (rv) {
		CHECK_EQ(rv->nfiles, 2);
		const struct reg_file *f = reg_version_file(rv, "model.pth");
		CHECK(f && f->size == 7);
		unsigned char md[32];
		char hex[65];
		SHA256((const unsigned char *)"weights", 7, md);
		for (int i = 0; i < 32; i++)
			snprintf(hex + 2 * i, 3, "%02x", md[i]);
		CHECK(f && strcmp(f->sha256, hex) == 0);
		CHECK(f && strcmp(f->etag, "\"v1\"") == 0);
		CHECK(reg_version_file(rv, "sub/cfg.json") != NULL);
		CHECK(strcmp(rv->source, "runs/e/r1/outputs/") == 0);
	}
	reg_version_free(rv);
	free(data);
	/* a single blob as SOURCE */
	req.source = "runs/e/r1/metrics.txt";
	CHECK_EQ(reg_register(s, &req, &v, err, sizeof(err)), 0);
	CHECK_EQ(v, 3);
	blob_destroy(s);
}

static void test_register_refuses_bad_input(void)
{
	struct blob_store *s = store_with_run();
	char err[256];
	int v = 0;
	struct reg_request req = { .name = "bad name", .source = "runs/e/r1/outputs/" };
	CHECK_EQ(reg_register(s, &req, &v, err, sizeof(err)), -EINVAL);
	req.name = "m";
	req.source = "runs/none/";
	CHECK_EQ(reg_register(s, &req, &v, err, sizeof(err)), -ENOENT);
	CHECK(strstr(err, "no files") != NULL);
	req.source = "runs/../registry/";
	CHECK_EQ(reg_register(s, &req, &v, err, sizeof(err)), -EINVAL);
	req.source = "registry/m/";
	CHECK_EQ(reg_register(s, &req, &v, err, sizeof(err)), -EINVAL);
	const char *tags[] = { "novalue" };
	req.source = "runs/e/r1/outputs/";
	req.tags = tags;
	req.ntags = 1;
	CHECK_EQ(reg_register(s, &req, &v, err, sizeof(err)), -EINVAL);
	blob_destroy(s);
}

struct reg_arg {
	struct blob_store *s;
	int version;
};

static void *registrar(void *p)
{
	struct reg_arg *a = p;
	struct reg_request req = { .name = "m", .source = "runs/e/r1/outputs/" };
	char err[256];
	if (reg_register(a->s, &req, &a->version, err, sizeof(err)) < 0)
		a->version = -1;
	return NULL;
}

static void test_concurrent_registrations_get_distinct_versions(void)
{
	struct blob_store *s = store_with_run();
	pthread_t t[8];
	struct reg_arg a[8];
	int seen[9] = { 0 };
	for (int i = 0; i < 8; i++) {
		a[i] = (struct reg_arg){ s, 0 };
		pthread_create(&t[i], NULL, registrar, &a[i]);
	}
	for (int i = 0; i < 8; i++) {
		pthread_join(t[i], NULL);
		CHECK(a[i].version >= 1 && a[i].version <= 8);
		if (a[i].version >= 1 && a[i].version <= 8)
			seen[a[i].version]++;
	}
	for (int v = 1; v <= 8; v++)
		CHECK_EQ(seen[v], 1);
	blob_destroy(s);
}

static void test_alias_set_and_delete(void)
{
	struct blob_store *s = store_with_run();
	struct reg_request req = { .name = "m", .source = "runs/e/r1/outputs/" };
	char err[256], *data = NULL, etag[BLOB_ETAG_MAX];
	size_t len;
	int v;
	reg_register(s, &req, &v, err, sizeof(err));
	reg_register(s, &req, &v, err, sizeof(err));
	CHECK_EQ(reg_alias_set(s, "m", "production", 1, err, sizeof(err)), 0);
	CHECK_EQ(reg_alias_set(s, "m", "staging", 2, err, sizeof(err)), 0);
	CHECK_EQ(reg_alias_set(s, "m", "production", 2, err, sizeof(err)), 0);
	CHECK_EQ(reg_alias_set(s, "m", "staging", 0, err, sizeof(err)), 0);
	CHECK_EQ(reg_alias_set(s, "m", "x", 9, err, sizeof(err)), -EINVAL);
	CHECK_EQ(reg_alias_set(s, "m", "latest", 1, err, sizeof(err)), -EINVAL);
	CHECK_EQ(blob_get(s, "registry/m/aliases.json", 1 << 20, &data, &len, etag), 0);
	struct reg_alias *a = NULL;
	size_t n = 0;
	CHECK_EQ(reg_aliases_parse(data, len, "m", &a, &n), 0);
	CHECK_EQ(n, 1);
	CHECK(n == 1 && strcmp(a[0].name, "production") == 0 && a[0].version == 2);
	free(a);
	free(data);
	blob_destroy(s);
}

int main(void)
{
	RUN(test_model_and_alias_names);
	RUN(test_record_parses_sorted_with_fields);
	RUN(test_record_with_wrong_name_or_version_is_refused);
	RUN(test_record_bad_file_entries_are_skipped);
	RUN(test_aliases_parse_skips_bad_entries);
	RUN(test_register_freezes_files_and_numbers_versions);
	RUN(test_register_refuses_bad_input);
	RUN(test_concurrent_registrations_get_distinct_versions);
	RUN(test_alias_set_and_delete);
	CHECK_DONE();
}
