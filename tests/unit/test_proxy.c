/*
 * test_proxy.c: the proxy list (CernVM-FS's form) and the choice of a group's member.
 */
#include "check.h"
#include "../../blob/proxy.h"

#include <errno.h>

static struct blob_proxies *parse(const char *list, int want)
{
	struct blob_proxies *p = NULL;
	char err[256] = "";
	int ret = blob_proxies_parse(list, NULL, &p, err, sizeof(err));

	CHECK_EQ(ret, want);
	if (ret != want)
		fprintf(stderr, "  for '%s': %s\n", list, err);
	if (want < 0)
		CHECK(p == NULL && err[0] != '\0');
	return p;
}

static void test_groups_members_and_direct(void)
{
	struct blob_proxies *p = parse("http://p1:3128|http://p2:3128;http://p3:8080/;DIRECT", 0);
	CHECK(p && p->ng == 3);
	if (p && p->ng == 3) {
		CHECK(p->g[0].n == 2 && strcmp(p->g[0].m[0].url, "http://p1:3128") == 0 &&
		      strcmp(p->g[0].m[1].url, "http://p2:3128") == 0);
		CHECK(p->g[1].n == 1 && strcmp(p->g[1].m[0].url, "http://p3:8080") == 0);
		CHECK(p->g[2].n == 1 && p->g[2].m[0].url[0] == '\0'); /* DIRECT */
	}
	blob_proxies_free(p);
	p = parse(" http://[::1]:3128 | https://cache.example.com ; direct ", 0);
	CHECK(p && p->ng == 2 && p->g[0].n == 2 && strcmp(p->g[0].m[0].url, "http://[::1]:3128") == 0);
	blob_proxies_free(p);
	p = parse("http://only:1", 0);
	CHECK(p && p->ng == 1 && p->g[0].n == 1);
	blob_proxies_free(p);
}

static void test_bad_lists_are_refused(void)
{
	const char *bad[] = { "", ";", "http://a:1;", "|http://a:1", "http://a:1||http://b:2",
			      "ftp://a:1", "http://", "a:3128", "http://a:1/path?x",
			      "http://user:pw@a:1", "DIRECT|", NULL };
	for (int i = 0; bad[i]; i++)
		blob_proxies_free(parse(bad[i], -EINVAL));
}

static void test_the_member_chosen_is_stable_and_spread(void)
{
	size_t count[3] = { 0 };
	for (uint64_t off = 0; off < 3000 * 8ull * 1024 * 1024; off += 8ull * 1024 * 1024) {
		size_t k = proxy_pick("/c/runs/e/r/model.bin", off, 3);
		CHECK(k < 3);
		CHECK_EQ(k, proxy_pick("/c/runs/e/r/model.bin", off, 3));
		if (k < 3)
			count[k]++;
	}
	for (int i = 0; i < 3; i++)
		CHECK(count[i] > 800 && count[i] < 1200);
	CHECK_EQ(proxy_pick("/x", 0, 1), 0);
}

int main(void)
{
	RUN(test_groups_members_and_direct);
	RUN(test_bad_lists_are_refused);
	RUN(test_the_member_chosen_is_stable_and_spread);
	CHECK_DONE();
}
