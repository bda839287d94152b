/*
 * test_cache.c: the chunk cache and the listing/record cache against the fake store.
 */
#include "check.h"
#include "fake_store.h"
#include "../../cache/cache.h"
#include "../../cache/cache_private.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CS 65536u /* chunk size of these tests */

static char *pattern(size_t len, unsigned seed)
{
	char *p = malloc(len);
	for (size_t i = 0; i < len; i++)
		p[i] = (char)((i * 2654435761u + seed) >> 13);
	return p;
}

static struct cache *new_cache(struct blob_store *s, uint64_t max, unsigned workers)
{
	struct cache_config cfg = { .dir = check_dir, .max_bytes = max, .chunk_size = CS,
				    .ttl = 1000, .workers = workers, .readahead = 4 };
	struct cache *c = NULL;
	char err[256];
	int ret = cache_create(&cfg, s, &c, err, sizeof(err));
	if (ret < 0) {
		fprintf(stderr, "cache_create: %s\n", err);
		exit(2);
	}
	return c;
}

static struct cache_file *open_blob(struct cache *c, const char *key, const char *sha)
{
	struct blob_stat st;
	struct cache_file *f = NULL;
	if (blob_stat(cache_store(c), key, &st) < 0 ||
	    cache_file_open(c, key, st.etag, st.size, sha, &f) < 0)
		return NULL;
	return f;
}

/* Finds the one chunk file for index in the cache folder; "" when none. */
static void chunk_file(unsigned index, char *out, size_t size)
{
	char dir[512], suffix[32];
	snprintf(dir, sizeof(dir), "%s/chunks", check_dir);
	snprintf(suffix, sizeof(suffix), ".%u", index);
	out[0] = '\0';
	DIR *top = opendir(dir);
	struct dirent *e, *f;
	while (top && (e = readdir(top))) {
		if (e->d_name[0] == '.')
			continue;
		char sub[1024];
		snprintf(sub, sizeof(sub), "%s/%s", dir, e->d_name);
		DIR *d = opendir(sub);
		while (d && (f = readdir(d))) {
			size_t l = strlen(f->d_name), sl = strlen(suffix);
			if (l > sl && strcmp(f->d_name + l - sl, suffix) == 0)
				snprintf(out, size, "%s/%s", sub, f->d_name);
		}
		if (d)
			closedir(d);
	}
	if (top)
		closedir(top);
}

static void test_miss_fetches_once_hit_fetches_nothing(void)
{
	struct blob_store *s = fake_store_create("fake://a");
	char *data = pattern(3 * CS + 100, 1), buf[CS];
	fake_store_put(s, "runs/e/r/m.bin", data, 3 * CS + 100);
	struct cache *c = new_cache(s, 1 << 30, 0);
	struct cache_file *f = open_blob(c, "runs/e/r/m.bin", NULL);
	CHECK(f != NULL);
	CHECK_EQ(cache_file_read(f, buf, 1000, 10), 1000);
	CHECK(memcmp(buf, data + 10, 1000) == 0);
	CHECK_EQ(fake_store_reads(s), 1);
	CHECK_EQ(cache_file_read(f, buf, 4000, 2000), 4000);
	CHECK(memcmp(buf, data + 2000, 4000) == 0);
	CHECK_EQ(fake_store_reads(s), 1);
	/* across the boundary of chunks 0 and 1: one more fetch, for chunk 1 */
	CHECK_EQ(cache_file_read(f, buf, 3000, CS - 1000), 3000);
	CHECK(memcmp(buf, data + CS - 1000, 3000) == 0);
	CHECK_EQ(fake_store_reads(s), 2);
	/* the short last chunk, read past the end */
	CHECK_EQ(cache_file_read(f, buf, 500, 3 * CS), 100);
	CHECK(memcmp(buf, data + 3 * CS, 100) == 0);
	CHECK_EQ(cache_file_read(f, buf, 500, 3 * CS + 100), 0);
	CHECK_EQ(fake_store_reads(s), 3);
	cache_file_close(f);
	cache_destroy(c);
	free(data);
}

struct reader_arg {
	struct cache *c;
	const char *data;
	int ok;
};

static void *reader(void *p)
{
	struct reader_arg *a = p;
	char buf[CS];
	struct cache_file *f = open_blob(a->c, "k", NULL);
	a->ok = f && cache_file_read(f, buf, CS, 0) == CS && memcmp(buf, a->data, CS) == 0;
	cache_file_close(f);
	return NULL;
}

static void test_concurrent_miss_fetches_once(void)
{
	struct blob_store *s = fake_store_create("fake://a");
	char *data = pattern(CS, 2);
	fake_store_put(s, "k", data, CS);
	fake_store_set_delay_ms(s, 200); /* all eight ask while the first fetch runs */
	struct cache *c = new_cache(s, 1 << 30, 0);
	pthread_t t[8];
	struct reader_arg a[8];
	for (int i = 0; i < 8; i++) {
		a[i] = (struct reader_arg){ c, data, 0 };
		pthread_create(&t[i], NULL, reader, &a[i]);
	}
	for (int i = 0; i < 8; i++) {
		pthread_join(t[i], NULL);
		CHECK(a[i].ok);
	}
	CHECK_EQ(fake_store_reads(s), 1);
	cache_destroy(c);
	free(data);
}

static void test_eviction_keeps_cache_within_bound_lru_first(void)
{
	struct blob_store *s = fake_store_create("fake://a");
	char *data = pattern(10 * CS, 3), buf[100];
	struct cache_stats st;
	fake_store_put(s, "k", data, 10 * CS);
	/* room for four chunks with their trailers, not five */
	struct cache *c = new_cache(s, 4 * CS + 4 * 200, 0);
	struct cache_file *f = open_blob(c, "k", NULL);
	for (unsigned i = 0; i < 4; i++)
		CHECK_EQ(cache_file_read(f, buf, 100, i * CS), 100);
	CHECK_EQ(fake_store_reads(s), 4);
	CHECK_EQ(cache_file_read(f, buf, 100, 0), 100); /* chunk 0 is now the newest */
	CHECK_EQ(fake_store_reads(s), 4);
	CHECK_EQ(cache_file_read(f, buf, 100, 4 * CS), 100); /* evicts chunk 1 */
	cache_get_stats(c, &st);
	CHECK(st.disk_bytes <= 4 * CS + 4 * 200);
	CHECK_EQ(st.chunks, 4);
	CHECK_EQ(st.evicted, 1);
	cache_mem_trim(c); /* what is read next comes from disk or the store */
	CHECK_EQ(cache_file_read(f, buf, 100, 0), 100);
	CHECK_EQ(fake_store_reads(s), 5); /* chunk 0 was kept */
	CHECK_EQ(cache_file_read(f, buf, 100, CS), 100);
	CHECK(memcmp(buf, data + CS, 100) == 0);
	CHECK_EQ(fake_store_reads(s), 6); /* chunk 1 was the one evicted */
	for (unsigned i = 0; i < 10; i++)
		CHECK_EQ(cache_file_read(f, buf, 100, i * CS), 100);
	cache_get_stats(c, &st);
	CHECK(st.disk_bytes <= 4 * CS + 4 * 200);
	char path[2048];
	int files = 0;
	for (unsigned i = 0; i < 10; i++) {
		chunk_file(i, path, sizeof(path));
		files += path[0] != '\0';
	}
	CHECK_EQ(files, 4);
	cache_file_close(f);
	cache_destroy(c);
	free(data);
}

static void damage_and_reread(int how)
{
	struct blob_store *s = fake_store_create("fake://a");
	char *data = pattern(2 * CS, 4), buf[CS];
	char path[2048];
	struct cache_stats st;
	fake_store_put(s, "k", data, 2 * CS);
	struct cache *c = new_cache(s, 1 << 30, 0);
	struct cache_file *f = open_blob(c, "k", NULL);
	CHECK_EQ(cache_file_read(f, buf, CS, 0), CS);
	cache_mem_trim(c); /* from now on the chunk is read from its file */
	chunk_file(0, path, sizeof(path));
	CHECK(path[0] != '\0');
	if (how == 0) {
		CHECK(truncate(path, CS / 2) == 0);
	} else {
		/* flip one byte in place and put mtime back as it was */
		struct stat before;
		stat(path, &before);
		int fd = open(path, O_RDWR);
		char b;
		CHECK(pread(fd, &b, 1, 777) == 1);
		b ^= 0x40;
		CHECK(pwrite(fd, &b, 1, 777) == 1);
		struct timespec ts[2] = { before.st_atim, before.st_mtim };
		futimens(fd, ts);
		close(fd);
	}
	memset(buf, 0, sizeof(buf));
	CHECK_EQ(cache_file_read(f, buf, CS, 0), CS);
	CHECK(memcmp(buf, data, CS) == 0);
	CHECK_EQ(fake_store_reads(s), 2);
	cache_get_stats(c, &st);
	CHECK_EQ(st.damaged, 1);
	/* a new cache over the damaged-then-mended folder serves it without a fetch */
	cache_file_close(f);
	cache_destroy(c);
	s = fake_store_create("fake://a");
	fake_store_put(s, "k", data, 2 * CS);
	c = new_cache(s, 1 << 30, 0);
	f = open_blob(c, "k", NULL);
	CHECK_EQ(cache_file_read(f, buf, CS, 0), CS);
	CHECK(memcmp(buf, data, CS) == 0);
	CHECK_EQ(fake_store_reads(s), 0);
	cache_file_close(f);
	cache_destroy(c);
	free(data);
}

static void test_truncated_chunk_is_fetched_again(void)
{
	damage_and_reread(0);
}

static void test_corrupted_chunk_is_fetched_again(void)
{
	damage_and_reread(1);
}

static void test_corrupted_chunk_found_by_new_cache(void)
{
	struct blob_store *s = fake_store_create("fake://a");
	char *data = pattern(CS, 5), buf[CS], path[2048];
	fake_store_put(s, "k", data, CS);
	struct cache *c = new_cache(s, 1 << 30, 0);
	struct cache_file *f = open_blob(c, "k", NULL);
	CHECK_EQ(cache_file_read(f, buf, CS, 0), CS);
	cache_file_close(f);
	cache_destroy(c);
	chunk_file(0, path, sizeof(path));
	int fd = open(path, O_WRONLY);
	CHECK(pwrite(fd, "XXXX", 4, 100) == 4);
	close(fd);
	s = fake_store_create("fake://a");
	fake_store_put(s, "k", data, CS);
	c = new_cache(s, 1 << 30, 0);
	f = open_blob(c, "k", NULL);
	CHECK_EQ(cache_file_read(f, buf, CS, 0), CS);
	CHECK(memcmp(buf, data, CS) == 0);
	CHECK_EQ(fake_store_reads(s), 1);
	cache_file_close(f);
	cache_destroy(c);
	free(data);
}

/* A cache that ended cleanly tells the next one which chunk files it checked: those
 * are served without reading them whole first, unless written since (even with
 * their mtime put back), and a cache killed before it could say so leaves every
 * file to be checked again. */
static void test_checked_files_known_to_the_next_cache(void)
{
	struct blob_store *s = fake_store_create("fake://a");
	size_t len = 3 * CS;
	char *data = pattern(len, 41), *buf = malloc(len), path[2048];
	struct cache_stats st;
	fake_store_put(s, "k", data, len);
	fake_store_pin(s);
	struct cache *c = new_cache(s, 1 << 30, 0);
	struct cache_file *f = open_blob(c, "k", NULL);
	CHECK_EQ(cache_file_read(f, buf, len, 0), len);
	cache_file_close(f);
	cache_destroy(c);
	/* chunk 1 written while no cache runs, its mtime put back */
	chunk_file(1, path, sizeof(path));
	struct stat before;
	CHECK(stat(path, &before) == 0);
	int fd = open(path, O_WRONLY);
	CHECK(pwrite(fd, "XXXX", 4, 100) == 4);
	struct timespec ts[2] = { before.st_atim, before.st_mtim };
	futimens(fd, ts);
	close(fd);
	c = new_cache(s, 1 << 30, 0);
	f = open_blob(c, "k", NULL);
	memset(buf, 0, len);
	CHECK_EQ(cache_file_read(f, buf, len, 0), len);
	CHECK(memcmp(buf, data, len) == 0);
	cache_get_stats(c, &st);
	CHECK_EQ(st.checked, 1);  /* chunk 1 only: 0 and 2 are the files checked */
	CHECK_EQ(st.damaged, 1);
	CHECK_EQ(fake_store_reads(s), 4);
	cache_file_close(f);
	cache_destroy(c);
	/* the list is read once: without a clean end after it, every file is checked */
	char list[512];
	snprintf(list, sizeof(list), "%s/checked", check_dir);
	CHECK(access(list, F_OK) == 0);
	c = new_cache(s, 1 << 30, 0);
	CHECK(access(list, F_OK) != 0);
	f = open_blob(c, "k", NULL);
	CHECK_EQ(cache_file_read(f, buf, len, 0), len);
	cache_get_stats(c, &st);
	CHECK_EQ(st.checked, 0);
	cache_file_close(f);
	cache_destroy(c);
	/* as after a cache killed before its end, which leaves no list: the next one
	 * checks all three */
	unlink(list);
	c = new_cache(s, 1 << 30, 0);
	f = open_blob(c, "k", NULL);
	CHECK_EQ(cache_file_read(f, buf, len, 0), len);
	CHECK(memcmp(buf, data, len) == 0);
	cache_get_stats(c, &st);
	CHECK_EQ(st.checked, 3);
	CHECK_EQ(fake_store_reads(s), 4);
	cache_file_close(f);
	cache_destroy(c);
	fake_store_free(s);
	free(buf);
	free(data);
}

static void test_new_cache_reuses_chunks_on_disk(void)
{
	struct blob_store *s = fake_store_create("fake://a");
	char *data = pattern(3 * CS, 6), *buf = malloc(3 * CS);
	fake_store_put(s, "k", data, 3 * CS);
	struct cache *c = new_cache(s, 1 << 30, 0);
	struct cache_file *f = open_blob(c, "k", NULL);
	CHECK_EQ(cache_file_read(f, buf, 3 * CS, 0), 3 * CS);
	cache_file_close(f);
	cache_destroy(c);
	s = fake_store_create("fake://a");
	fake_store_put(s, "k", data, 3 * CS); /* same content, same etag */
	c = new_cache(s, 1 << 30, 0);
	struct cache_stats st;
	cache_get_stats(c, &st);
	CHECK_EQ(st.chunks, 3);
	f = open_blob(c, "k", NULL);
	memset(buf, 0, 3 * CS);
	CHECK_EQ(cache_file_read(f, buf, 3 * CS, 0), 3 * CS);
	CHECK(memcmp(buf, data, 3 * CS) == 0);
	CHECK_EQ(fake_store_reads(s), 0);
	cache_file_close(f);
	cache_destroy(c);
	/* another store id never sees those chunks */
	s = fake_store_create("fake://b");
	fake_store_put(s, "k", data, 3 * CS);
	c = new_cache(s, 1 << 30, 0);
	f = open_blob(c, "k", NULL);
	CHECK_EQ(cache_file_read(f, buf, 100, 0), 100);
	CHECK_EQ(fake_store_reads(s), 1);
	cache_file_close(f);
	cache_destroy(c);
	free(buf);
	free(data);
}

static void test_changed_blob_is_a_new_entry_and_old_pin_fails(void)
{
	struct blob_store *s = fake_store_create("fake://a");
	char *v1 = pattern(2 * CS, 7), *v2 = pattern(2 * CS, 8), buf[100];
	fake_store_put(s, "k", v1, 2 * CS);
	struct cache *c = new_cache(s, 1 << 30, 0);
	struct cache_file *old = open_blob(c, "k", NULL);
	CHECK_EQ(cache_file_read(old, buf, 100, 0), 100);
	fake_store_put(s, "k", v2, 2 * CS);
	struct cache_file *cur = open_blob(c, "k", NULL);
	CHECK_EQ(cache_file_read(cur, buf, 100, 0), 100);
	CHECK(memcmp(buf, v2, 100) == 0);
	/* the old open file still reads its cached chunk, never new bytes */
	CHECK_EQ(cache_file_read(old, buf, 100, 0), 100);
	CHECK(memcmp(buf, v1, 100) == 0);
	/* and an uncached chunk of the old version fails rather than mixing */
	CHECK_EQ(cache_file_read(old, buf, 100, CS), -ESTALE);
	cache_file_close(old);
	cache_file_close(cur);
	cache_destroy(c);
	free(v1);
	free(v2);
}

static void test_store_failure_is_returned_then_recovers(void)
{
	struct blob_store *s = fake_store_create("fake://a");
	char *data = pattern(CS, 9), buf[100];
	fake_store_put(s, "k", data, CS);
	struct cache *c = new_cache(s, 1 << 30, 0);
	struct cache_file *f = open_blob(c, "k", NULL);
	fake_store_set_fail(s, -EIO);
	CHECK_EQ(cache_file_read(f, buf, 100, 0), -EIO);
	fake_store_set_fail(s, 0);
	CHECK_EQ(cache_file_read(f, buf, 100, 0), 100);
	CHECK(memcmp(buf, data, 100) == 0);
	cache_file_close(f);
	cache_destroy(c);
	free(data);
}

static void sha_hex(const char *data, size_t len, char hex[65])
{
	unsigned char md[32];
	SHA256((const unsigned char *)data, len, md);
	for (int i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
}

static void test_sha256_checked_when_read_whole(void)
{
	struct blob_store *s = fake_store_create("fake://a");
	size_t len = 3 * CS + 5;
	char *data = pattern(len, 10), *buf = malloc(len), good[65], bad[65];
	fake_store_put(s, "k", data, len);
	sha_hex(data, len, good);
	memcpy(bad, good, 65);
	bad[0] = bad[0] == '0' ? '1' : '0';
	struct cache *c = new_cache(s, 1 << 30, 0);
	CHECK(cache_start(c) == 0); /* spans are handed out under leases */
	struct cache_file *f = open_blob(c, "k", good);
	ssize_t total = 0, n;
	while ((n = cache_file_read(f, buf + total, 4096, (uint64_t)total)) > 0)
		total += n;
	CHECK_EQ(n, 0);
	CHECK_EQ(total, len);
	cache_file_close(f);
	/* checked once: a new open of that version maps without passing the bytes */
	struct cache_span sp[4];
	int ns = 0;
	f = open_blob(c, "k", good);
	CHECK_EQ(cache_file_map(f, 0, 100, sp, 4, &ns), 100);
	CHECK_EQ(ns, 1);
	for (int i = 0; i < ns; i++)
		cache_span_release(c, &sp[i]);
	cache_file_close(f);
	f = open_blob(c, "k", bad);
	/* still to be checked: mapped all the same, the check follows the reads */
	CHECK_EQ(cache_file_map(f, 0, 100, sp, 4, &ns), 100);
	for (int i = 0; i < ns; i++)
		cache_span_release(c, &sp[i]);
	total = 0;
	while ((n = cache_file_read(f, buf + total, 4096, (uint64_t)total)) > 0)
		total += n;
	CHECK_EQ(n, -EBADMSG); /* the read that reaches the end fails */
	CHECK_EQ(cache_file_read(f, buf, 10, 0), -EBADMSG);
	cache_file_close(f);
	cache_destroy(c);
	free(buf);
	free(data);
}

/* Mapped (zero-copy) reads are checked too, by the hasher thread behind them: it never
 * fetches what no one read, and the map that completes the file gets the verdict. */
static void test_sha256_checked_behind_mapped_reads(void)
{
	struct blob_store *s = fake_store_create("fake://a");
	size_t len = 4 * CS;
	char *data = pattern(len, 17), good[65], bad[65];
	struct cache_span sp[4];
	struct cache_stats st;
	int ns = 0;
	fake_store_put(s, "k", data, len);
	sha_hex(data, len, good);
	memcpy(bad, good, 65);
	bad[9] = bad[9] == 'c' ? 'd' : 'c';
	struct cache *c = new_cache(s, 1 << 30, 0);
	CHECK(cache_start(c) == 0);
	struct cache_file *f = open_blob(c, "k", bad);
	for (unsigned i = 0; i < 3; i++) {
		CHECK_EQ(cache_file_map(f, (uint64_t)i * CS, CS, sp, 4, &ns), CS);
		for (int j = 0; j < ns; j++)
			cache_span_release(c, &sp[j]);
	}
	usleep(100 * 1000); /* the hasher has caught up with the reads */
	cache_get_stats(c, &st);
	CHECK_EQ(st.fetches, 3);
	CHECK_EQ(cache_file_map(f, 3 * CS, CS, sp, 4, &ns), -EBADMSG);
	CHECK_EQ(cache_file_map(f, 0, 10, sp, 4, &ns), -EBADMSG);
	cache_file_close(f);
	/* the good sum: the completing map is fine, and the version is marked checked */
	f = open_blob(c, "k", good);
	for (unsigned i = 4; i-- > 0;) {
		CHECK_EQ(cache_file_map(f, (uint64_t)i * CS, CS, sp, 4, &ns), CS);
		for (int j = 0; j < ns; j++)
			cache_span_release(c, &sp[j]);
	}
	cache_file_close(f);
	f = open_blob(c, "k", good);
	CHECK(f && f->sha == NULL);
	cache_file_close(f);
	cache_get_stats(c, &st);
	CHECK_EQ(st.fetches, 4);
	cache_destroy(c);
	free(data);
}

static void test_sha256_checked_when_read_whole_out_of_order(void)
{
	struct blob_store *s = fake_store_create("fake://a");
	size_t len = 5 * CS + 3;
	char *data = pattern(len, 13), buf[CS], good[65], bad[65];
	fake_store_put(s, "k", data, len);
	sha_hex(data, len, good);
	memcpy(bad, good, 65);
	bad[5] = bad[5] == 'a' ? 'b' : 'a';
	struct cache *c = new_cache(s, 1 << 30, 0);
	/* the chunks read last to first, as shuffled readahead may deliver them */
	for (int pass = 0; pass < 2; pass++) {
		struct cache_file *f = open_blob(c, "k", pass ? bad : good);
		ssize_t last = 0;
		for (int i = 5; i >= 0; i--) {
			size_t n = i == 5 ? 3 : CS;
			last = cache_file_read(f, buf, n, (uint64_t)i * CS);
			if (i > 0)
				CHECK_EQ(last, (ssize_t)n);
		}
		CHECK_EQ(last, pass ? -EBADMSG : (int)CS); /* the read that completes the file */
		cache_file_close(f);
	}
	/* a reader that skips a chunk is never checked and never fetches it */
	unsigned before = fake_store_reads(s);
	struct cache_file *f = open_blob(c, "k", bad);
	CHECK_EQ(cache_file_read(f, buf, 10, 0), 10);
	CHECK_EQ(cache_file_read(f, buf, 3, 5 * CS), 3);
	cache_file_close(f);
	CHECK_EQ(fake_store_reads(s), before);
	cache_destroy(c);
	free(data);
}

/* A span handed out for a reply keeps its chunk file from being written or truncated
 * until it is released; then a write shows up and the chunk is fetched again. */
static void test_span_holds_chunk_file_unchanged(void)
{
	struct blob_store *s = fake_store_create("fake://a");
	size_t len = 2 * CS;
	char *data = pattern(len, 21), buf[200], path[1024];
	struct cache_span sp[4];
	struct cache_stats st;
	int ns = 0;
	fake_store_put(s, "k", data, len);
	struct cache *c = new_cache(s, 1 << 30, 0);
	CHECK(cache_start(c) == 0);
	struct cache_file *f = open_blob(c, "k", NULL);
	CHECK_EQ(cache_file_map(f, 100, 200, sp, 4, &ns), 200);
	CHECK_EQ(ns, 1);
	CHECK(sp[0].in_mem); /* just fetched: served from memory */
	cache_span_release(c, &sp[0]);
	cache_mem_trim(c);
	CHECK_EQ(cache_file_map(f, 100, 200, sp, 4, &ns), 200);
	CHECK_EQ(ns, 1);
	CHECK(!sp[0].in_mem);
	chunk_file(0, path, sizeof(path));
	CHECK(path[0] != '\0');
	/* while the span is out, no writer gets in */
	int w = open(path, O_WRONLY | O_NONBLOCK);
	CHECK(w < 0 && errno == EWOULDBLOCK);
	CHECK_EQ(pread(sp[0].fd, buf, 200, (off_t)sp[0].off), 200);
	CHECK(memcmp(buf, data + 100, 200) == 0);
	cache_span_release(c, &sp[0]);
	/* released: the writer gets in, and the cache sees the change */
	w = open(path, O_WRONLY);
	CHECK(w >= 0);
	CHECK_EQ(pwrite(w, "XXXX", 4, 150), 4);
	close(w);
	CHECK_EQ(cache_file_map(f, 100, 200, sp, 4, &ns), 200);
	CHECK_EQ(pread(sp[0].fd, buf, 200, (off_t)sp[0].off), 200);
	CHECK(memcmp(buf, data + 100, 200) == 0);
	/* a writer that opened before the reader: the file is dropped, not served */
	cache_span_release(c, &sp[0]);
	cache_mem_trim(c);
	chunk_file(0, path, sizeof(path));
	w = open(path, O_WRONLY);
	CHECK(w >= 0);
	CHECK_EQ(cache_file_map(f, 100, 200, sp, 4, &ns), 200);
	CHECK_EQ(pwrite(w, "YYYY", 4, 150), 4); /* goes to the dropped file */
	CHECK_EQ(pread(sp[0].fd, buf, 200, (off_t)sp[0].off), 200);
	CHECK(memcmp(buf, data + 100, 200) == 0);
	cache_span_release(c, &sp[0]);
	close(w);
	cache_get_stats(c, &st);
	CHECK_EQ(st.damaged, 2);
	CHECK_EQ(st.fetches, 3);
	cache_file_close(f);
	cache_destroy(c);
	free(data);
}

static void test_sequential_reader_prefetches_each_chunk_once(void)
{
	struct blob_store *s = fake_store_create("fake://a");
	size_t len = 12 * CS;
	char *data = pattern(len, 11), *buf = malloc(len);
	fake_store_put(s, "k", data, len);
	fake_store_set_delay_ms(s, 5);
	fake_store_pin(s);
	struct cache *c = new_cache(s, 1 << 30, 4);
	CHECK(cache_start(c) == 0);
	struct cache_file *f = open_blob(c, "k", NULL);
	for (size_t off = 0; off < len; off += 8192)
		CHECK_EQ(cache_file_read(f, buf + off, 8192, off), 8192);
	CHECK(memcmp(buf, data, len) == 0);
	cache_file_close(f);
	cache_destroy(c); /* joins the workers */
	/* each byte once, in fewer reads than chunks once the reader is sequential */
	CHECK_EQ(fake_store_read_bytes(s), len);
	CHECK(fake_store_reads(s) < 12);
	fake_store_free(s);
	free(buf);
	free(data);
}

static void test_random_reader_fetches_only_what_it_touches(void)
{
	struct blob_store *s = fake_store_create("fake://a");
	size_t len = 16 * CS;
	char *data = pattern(len, 12), buf[4096];
	fake_store_put(s, "k", data, len);
	fake_store_pin(s);
	struct cache *c = new_cache(s, 1 << 30, 4);
	CHECK(cache_start(c) == 0);
	struct cache_file *f = open_blob(c, "k", NULL);
	const unsigned chunks[] = { 9, 2, 14, 5 };
	for (int i = 0; i < 4; i++) {
		CHECK_EQ(cache_file_read(f, buf, 4096, chunks[i] * CS + 100), 4096);
		CHECK(memcmp(buf, data + chunks[i] * CS + 100, 4096) == 0);
	}
	cache_file_close(f);
	cache_destroy(c);
	CHECK_EQ(fake_store_reads(s), 4);
	fake_store_free(s);
	free(data);
}

struct read_arg {
	struct cache_file *f;
	char *buf;
	size_t len;
	uint64_t off;
	ssize_t got;
};

static void *reader_thread(void *arg)
{
	struct read_arg *r = arg;
	r->got = cache_file_read(r->f, r->buf, r->len, r->off);
	return NULL;
}

/* A reader is served a chunk's first bytes while the rest is still on its way, and
 * the chunk is fetched once. */
static void test_reader_served_as_bytes_arrive(void)
{
	struct blob_store *s = fake_store_create("fake://a");
	char *data = pattern(CS, 31), *buf = malloc(CS), small[100];
	fake_store_put(s, "k", data, CS);
	fake_store_set_stream(s, 4, 400, 0); /* the last piece 1.2 s after the first */
	struct cache *c = new_cache(s, 1 << 30, 0);
	CHECK(cache_start(c) == 0);
	struct cache_file *f = open_blob(c, "k", NULL), *g = open_blob(c, "k", NULL);
	struct read_arg a = { .f = f, .buf = buf, .len = CS };
	pthread_t t;
	pthread_create(&t, NULL, reader_thread, &a);
	for (int i = 0; i < 500 && fake_store_active(s) == 0; i++)
		usleep(2000);
	CHECK_EQ(fake_store_active(s), 1);
	CHECK_EQ(cache_file_read(g, small, sizeof(small), 10), sizeof(small));
	CHECK(memcmp(small, data + 10, sizeof(small)) == 0);
	CHECK_EQ(fake_store_active(s), 1); /* served before the fetch ended */
	pthread_join(t, NULL);
	CHECK_EQ(a.got, CS);
	CHECK(memcmp(buf, data, CS) == 0);
	CHECK_EQ(fake_store_reads(s), 1);
	cache_file_close(g);
	cache_file_close(f);
	cache_destroy(c);
	free(buf);
	free(data);
}

/* From a store whose bytes are sure only once its read has returned (a local folder
 * changed during the read is told at the end), no reader has bytes before that, and
 * a sequential reader's chunks are fetched one a read. */
static void test_unpinned_store_serves_bytes_once_read_whole(void)
{
	struct blob_store *s = fake_store_create("fake://a");
	char *data = pattern(CS, 34), *buf = malloc(CS), small[100];
	fake_store_put(s, "k", data, CS);
	fake_store_set_unpinned(s);
	fake_store_set_stream(s, 4, 300, 0);
	struct cache *c = new_cache(s, 1 << 30, 0);
	CHECK(cache_start(c) == 0);
	struct cache_file *f = open_blob(c, "k", NULL), *g = open_blob(c, "k", NULL);
	struct read_arg a = { .f = f, .buf = buf, .len = CS };
	pthread_t t;
	pthread_create(&t, NULL, reader_thread, &a);
	for (int i = 0; i < 500 && fake_store_active(s) == 0; i++)
		usleep(2000);
	CHECK_EQ(fake_store_active(s), 1);
	CHECK_EQ(cache_file_read(g, small, sizeof(small), 10), sizeof(small));
	CHECK_EQ(fake_store_active(s), 0); /* served once the read was over */
	CHECK(memcmp(small, data + 10, sizeof(small)) == 0);
	pthread_join(t, NULL);
	CHECK_EQ(a.got, CS);
	CHECK(memcmp(buf, data, CS) == 0);
	CHECK_EQ(fake_store_reads(s), 1);
	cache_file_close(g);
	cache_file_close(f);
	cache_destroy(c);
	/* a sequential reader with prefetch: one chunk a read */
	s = fake_store_create("fake://a");
	size_t len = 12 * CS;
	char *big = pattern(len, 35), *all = malloc(len);
	fake_store_put(s, "k2", big, len);
	fake_store_set_unpinned(s);
	fake_store_pin(s);
	c = new_cache(s, 1 << 30, 4);
	CHECK(cache_start(c) == 0);
	f = open_blob(c, "k2", NULL);
	for (size_t off = 0; off < len; off += 8192)
		CHECK_EQ(cache_file_read(f, all + off, 8192, off), 8192);
	CHECK(memcmp(all, big, len) == 0);
	cache_file_close(f);
	cache_destroy(c);
	CHECK_EQ(fake_store_reads(s), 12);
	fake_store_free(s);
	free(all);
	free(big);
	free(buf);
	free(data);
}

/* An answer that breaks off and starts again keeps the bytes already here as they
 * were; the chunks on disk are whole and exact (read back after memory is dropped,
 * none damaged). With workers, the runs of a sequential reader restart too. */
static void restarted_answers(unsigned workers)
{
	struct blob_store *s = fake_store_create("fake://a");
	size_t len = 9 * CS + 123;
	char *data = pattern(len, 32), *buf = malloc(len);
	struct cache_stats st;
	fake_store_put(s, "k", data, len);
	fake_store_set_stream(s, 7, 0, 5);
	struct cache *c = new_cache(s, 1 << 30, workers);
	CHECK(cache_start(c) == 0);
	struct cache_file *f = open_blob(c, "k", NULL);
	memset(buf, 0, len);
	for (size_t off = 0; off < len; off += 4096) {
		size_t n = len - off < 4096 ? len - off : 4096;
		CHECK_EQ(cache_file_read(f, buf + off, n, off), n);
	}
	CHECK(memcmp(buf, data, len) == 0);
	cache_mem_trim(c);
	memset(buf, 0, len);
	unsigned reads = fake_store_reads(s);
	CHECK_EQ(cache_file_read(f, buf, len, 0), len);
	CHECK(memcmp(buf, data, len) == 0);
	CHECK_EQ(fake_store_reads(s), reads);
	cache_get_stats(c, &st);
	CHECK_EQ(st.damaged, 0);
	CHECK_EQ(st.chunks, 10);
	cache_file_close(f);
	cache_destroy(c);
	free(buf);
	free(data);
}

static void test_answer_restarted_midway_keeps_bytes_exact(void)
{
	restarted_answers(0);
}

static void test_run_restarted_midway_keeps_bytes_exact(void)
{
	restarted_answers(4);
}

/* However far ahead the prefetch runs, the chunk buffers stay within their bound;
 * chunks fetched ahead beyond it are read back from disk; each byte is fetched once. */
static void test_chunks_in_memory_stay_within_their_bound(void)
{
	struct blob_store *s = fake_store_create("fake://a");
	size_t len = 40 * CS;
	char *data = pattern(len, 33), *buf = malloc(len);
	struct cache_stats st;
	fake_store_put(s, "k", data, len);
	fake_store_pin(s);
	struct cache_config cfg = { .dir = check_dir, .max_bytes = 1 << 30, .chunk_size = CS,
				    .ttl = 1000, .workers = 8, .readahead = 32,
				    .mem_bytes = 4 * CS };
	struct cache *c = NULL;
	char err[256];
	CHECK_EQ(cache_create(&cfg, s, &c, err, sizeof(err)), 0);
	CHECK(cache_start(c) == 0);
	struct cache_file *f = open_blob(c, "k", NULL);
	uint64_t most = 0;
	for (size_t off = 0; off < len; off += 16384) {
		CHECK_EQ(cache_file_read(f, buf + off, 16384, off), 16384);
		cache_get_stats(c, &st);
		most = st.mem_bytes > most ? st.mem_bytes : most;
	}
	CHECK(memcmp(buf, data, len) == 0);
	CHECK(most > 0);
	CHECK(most <= 4 * CS);
	cache_file_close(f);
	cache_destroy(c);
	CHECK_EQ(fake_store_read_bytes(s), len);
	fake_store_free(s);
	free(buf);
	free(data);
}

/* A cache folder on tmpfs (which may refuse direct I/O): the chunk files written
 * behind the readers are whole and exact all the same. */
static void test_chunks_written_where_direct_io_may_be_refused(void)
{
	struct blob_store *s = fake_store_create("fake://a");
	size_t len = 3 * CS + 77;
	char *data = pattern(len, 36), *buf = malloc(len), dir[] = "/dev/shm/afs-unit.XXXXXX";
	struct cache_stats st;
	fake_store_put(s, "k", data, len);
	fake_store_pin(s);
	CHECK(mkdtemp(dir) != NULL);
	struct cache_config cfg = { .dir = dir, .max_bytes = 1 << 30, .chunk_size = CS,
				    .ttl = 1000 };
	struct cache *c = NULL;
	char err[256];
	CHECK_EQ(cache_create(&cfg, s, &c, err, sizeof(err)), 0);
	CHECK(cache_start(c) == 0);
	struct cache_file *f = open_blob(c, "k", NULL);
	CHECK_EQ(cache_file_read(f, buf, len, 0), len);
	CHECK(memcmp(buf, data, len) == 0);
	cache_mem_trim(c); /* now from the files */
	memset(buf, 0, len);
	CHECK_EQ(cache_file_read(f, buf, len, 0), len);
	CHECK(memcmp(buf, data, len) == 0);
	cache_get_stats(c, &st);
	CHECK_EQ(st.chunks, 4);
	CHECK_EQ(st.damaged, 0);
	CHECK_EQ(fake_store_reads(s), 4);
	cache_file_close(f);
	cache_destroy(c);
	fake_store_free(s);
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	CHECK(system(cmd) == 0);
	free(buf);
	free(data);
}

static void test_listing_is_cached_and_served_offline(void)
{
	struct blob_store *s = fake_store_create("fake://a");
	struct cache_listing *l = NULL;
	fake_store_put(s, "runs/e/r1/a.txt", "a", 1);
	fake_store_put(s, "runs/e/r1/b.txt", "bb", 2);
	fake_store_put(s, "runs/e/r2/c.txt", "c", 1);
	struct cache *c = new_cache(s, 1 << 30, 0);
	CHECK_EQ(cache_list(c, "runs/e/", &l), 0);
	CHECK_EQ(l->list.count, 2);
	CHECK(cache_listing_find(l, "r1") && cache_listing_find(l, "r1")->is_dir);
	cache_listing_unref(l);
	CHECK_EQ(cache_list(c, "runs/e/r1/", &l), 0);
	CHECK_EQ(l->list.count, 2);
	CHECK_EQ(cache_listing_find(l, "b.txt")->size, 2);
	cache_listing_unref(l);
	CHECK_EQ(cache_list(c, "runs/e/", &l), 0); /* within the TTL: no store call */
	cache_listing_unref(l);
	CHECK_EQ(fake_store_lists(s), 2);
	CHECK_EQ(cache_list(c, "runs/none/", &l), -ENOENT);
	cache_destroy(c);
	/* a new cache whose store fails serves the listings it kept on disk */
	s = fake_store_create("fake://a");
	fake_store_set_fail(s, -EIO);
	c = new_cache(s, 1 << 30, 0);
	CHECK_EQ(cache_list(c, "runs/e/r1/", &l), 0);
	CHECK(l && l->list.count == 2 && strcmp(l->list.entries[0].name, "a.txt") == 0);
	cache_listing_unref(l);
	CHECK_EQ(cache_list(c, "runs/other/", &l), -EIO); /* never seen: the failure */
	cache_destroy(c);
}

static void test_immutable_record_served_from_disk(void)
{
	struct blob_store *s = fake_store_create("fake://a");
	char *d = NULL;
	size_t len = 0;
	fake_store_put(s, "registry/m/1.json", "{\"x\":1}", 7);
	struct cache *c = new_cache(s, 1 << 30, 0);
	CHECK_EQ(cache_record(c, "registry/m/1.json", 1, &d, &len), 0);
	CHECK(len == 7 && strcmp(d, "{\"x\":1}") == 0);
	free(d);
	CHECK_EQ(cache_record(c, "registry/m/2.json", 1, &d, &len), -ENOENT);
	cache_destroy(c);
	s = fake_store_create("fake://a");
	c = new_cache(s, 1 << 30, 0);
	CHECK_EQ(cache_record(c, "registry/m/1.json", 1, &d, &len), 0);
	CHECK(d && strcmp(d, "{\"x\":1}") == 0);
	free(d);
	CHECK_EQ(fake_store_gets(s), 0);
	cache_destroy(c);
}

static void test_mutable_record_refreshes_after_ttl(void)
{
	struct blob_store *s = fake_store_create("fake://a");
	struct cache_config cfg = { .dir = check_dir, .max_bytes = 1 << 20, .chunk_size = CS,
				    .ttl = 0 };
	struct cache *c = NULL;
	char err[200], *d = NULL;
	size_t len;
	fake_store_put(s, "registry/m/aliases.json", "{\"p\":1}", 7);
	CHECK_EQ(cache_create(&cfg, s, &c, err, sizeof(err)), 0);
	CHECK_EQ(cache_record(c, "registry/m/aliases.json", 0, &d, &len), 0);
	CHECK(strcmp(d, "{\"p\":1}") == 0);
	free(d);
	fake_store_put(s, "registry/m/aliases.json", "{\"p\":2}", 7);
	CHECK_EQ(cache_record(c, "registry/m/aliases.json", 0, &d, &len), 0);
	CHECK(strcmp(d, "{\"p\":2}") == 0);
	free(d);
	/* the store fails: the last copy is served */
	fake_store_set_fail(s, -EIO);
	CHECK_EQ(cache_record(c, "registry/m/aliases.json", 0, &d, &len), 0);
	CHECK(d && strcmp(d, "{\"p\":2}") == 0);
	free(d);
	cache_destroy(c);
}

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* A cache with a TTL of one second and its refreshers running. */
static struct cache *new_started_cache(struct blob_store *s, uint64_t meta_bytes)
{
	struct cache_config cfg = { .dir = check_dir, .max_bytes = 1 << 30, .chunk_size = CS,
				    .ttl = 1, .meta_bytes = meta_bytes };
	struct cache *c = NULL;
	char err[256];
	if (cache_create(&cfg, s, &c, err, sizeof(err)) < 0 || cache_start(c) < 0) {
		fprintf(stderr, "cache: %s\n", err);
		exit(2);
	}
	return c;
}

struct lister {
	struct cache *c;
	uint64_t took_ms;
	size_t count;
	int ret;
};

static void *list_runs(void *arg)
{
	struct lister *l = arg;
	struct cache_listing *cl = NULL;
	uint64_t t0 = now_ms();
	l->ret = cache_list(l->c, "runs/e/", &cl);
	l->took_ms = now_ms() - t0;
	l->count = cl ? cl->list.count : 0;
	cache_listing_unref(cl);
	return NULL;
}

static void test_stale_listing_is_answered_while_its_refresh_hangs(void)
{
	struct blob_store *s = fake_store_create("fake://a");
	struct cache_listing *l = NULL;
	fake_store_pin(s);
	fake_store_put(s, "runs/e/r1/a.txt", "a", 1);
	struct cache *c = new_started_cache(s, 0);
	CHECK_EQ(cache_list(c, "runs/e/", &l), 0);
	CHECK_EQ(l->list.count, 1);
	cache_listing_unref(l);
	/* the store now takes 6 s per listing, and has a new run */
	fake_store_set_meta_delay_ms(s, 6000);
	fake_store_put(s, "runs/e/r2/b.txt", "b", 1);
	usleep(1200 * 1000); /* past the TTL */
	struct lister r[8];
	pthread_t t[8];
	for (int i = 0; i < 8; i++) {
		r[i] = (struct lister){ .c = c };
		pthread_create(&t[i], NULL, list_runs, &r[i]);
	}
	for (int i = 0; i < 8; i++) {
		pthread_join(t[i], NULL);
		CHECK_EQ(r[i].ret, 0);
		CHECK_EQ(r[i].count, 1);	/* the copy, not a wait for the store */
		CHECK(r[i].took_ms < 4000);	/* well before the store answers */
	}
	/* one refresh for all of them, going on in the background */
	CHECK_EQ(fake_store_lists(s), 2);
	struct lister late = { .c = c };
	list_runs(&late);
	CHECK_EQ(late.count, 1);
	CHECK(late.took_ms < 500);		/* its refresh has had its second */
	/* once the refresh comes back, readers get its answer */
	fake_store_set_meta_delay_ms(s, 0);
	uint64_t deadline = now_ms() + 20000;
	do {
		usleep(50 * 1000);
		list_runs(&late);
	} while (late.count != 2 && now_ms() < deadline);
	CHECK_EQ(late.count, 2);
	cache_destroy(c);
	fake_store_free(s);
}

static void test_listing_without_copy_waits_for_the_store(void)
{
	struct blob_store *s = fake_store_create("fake://a");
	struct cache_listing *l = NULL;
	fake_store_put(s, "runs/e/r1/a.txt", "a", 1);
	struct cache *c = new_started_cache(s, 0);
	fake_store_set_meta_delay_ms(s, 1500);
	uint64_t t0 = now_ms();
	CHECK_EQ(cache_list(c, "runs/e/", &l), 0);
	CHECK(now_ms() - t0 >= 1500);
	CHECK(l && l->list.count == 1);
	cache_listing_unref(l);
	/* a failing store and no copy: the failure */
	fake_store_set_meta_delay_ms(s, 0);
	fake_store_set_fail(s, -EIO);
	CHECK_EQ(cache_list(c, "runs/other/", &l), -EIO);
	cache_destroy(c);
}

static void test_stat_gives_up_after_a_second_one_question_per_key(void)
{
	struct blob_store *s = fake_store_create("fake://a");
	struct blob_stat st;
	fake_store_pin(s);
	fake_store_put(s, "runs/e/r1/a.txt", "abc", 3);
	struct cache *c = new_started_cache(s, 0);
	CHECK_EQ(cache_stat(c, "runs/e/r1/a.txt", &st), 0);
	CHECK_EQ(st.size, 3);
	CHECK_EQ(cache_stat(c, "runs/e/r1/none", &st), -ENOENT);
	fake_store_set_meta_delay_ms(s, 5000);
	unsigned before = fake_store_gets(s);
	uint64_t t0 = now_ms();
	CHECK_EQ(cache_stat(c, "runs/e/r1/a.txt", &st), -ETIMEDOUT);
	uint64_t took = now_ms() - t0;
	CHECK(took >= CACHE_STALE_WAIT_MS - 50 && took < 4000);
	t0 = now_ms();
	CHECK_EQ(cache_stat(c, "runs/e/r1/a.txt", &st), -ETIMEDOUT);
	CHECK(now_ms() - t0 < 500); /* the question asked a second ago still hangs */
	CHECK_EQ(fake_store_gets(s) - before, 1);
	fake_store_set_meta_delay_ms(s, 0);
	cache_destroy(c); /* does not wait for the store's answer */
	fake_store_free(s);
}

static void test_listings_in_memory_stay_within_their_bound(void)
{
	struct blob_store *s = fake_store_create("fake://a");
	struct cache_listing *l = NULL;
	char key[128], prefix[128];
	size_t count = 0, bytes = 0;
	const size_t bound = 64 << 10;
	struct cache *c = new_started_cache(s, bound);
	/* a store whose keys keep changing: a new run folder for every listing */
	for (int i = 0; i < 3000; i++) {
		snprintf(key, sizeof(key), "runs/e%d/r/file-%d.bin", i, i);
		fake_store_put(s, key, "x", 1);
		snprintf(prefix, sizeof(prefix), "runs/e%d/r/", i);
		CHECK_EQ(cache_list(c, prefix, &l), 0);
		cache_listing_unref(l);
		cache_meta_usage(c, &count, &bytes);
		if (bytes > bound) {
			CHECK(bytes <= bound);
			break;
		}
	}
	CHECK(count > 10 && count < 3000);
	/* a dropped listing comes back from its disk copy without the store */
	fake_store_set_fail(s, -EIO);
	CHECK_EQ(cache_list(c, "runs/e0/r/", &l), 0);
	CHECK(l && l->list.count == 1 && strcmp(l->list.entries[0].name, "file-0.bin") == 0);
	cache_listing_unref(l);
	cache_destroy(c);
}

static void test_second_cache_over_a_held_folder_is_refused(void)
{
	struct blob_store *s1 = fake_store_create("fake://a"), *s2 = fake_store_create("fake://a");
	struct cache_config cfg = { .dir = check_dir, .max_bytes = 1 << 20, .chunk_size = CS,
				    .ttl = 1, .holder = "/mnt/first" };
	struct cache *c1 = NULL, *c2 = NULL;
	char err[512] = "";
	CHECK_EQ(cache_create(&cfg, s1, &c1, err, sizeof(err)), 0);
	CHECK_EQ(cache_start(c1), 0);
	cfg.holder = "/mnt/second";
	CHECK_EQ(cache_create(&cfg, s2, &c2, err, sizeof(err)), -EBUSY);
	CHECK(c2 == NULL);
	CHECK(strstr(err, "in use by the mount on /mnt/first") != NULL);
	char pid[32];
	snprintf(pid, sizeof(pid), "pid %d", (int)getpid());
	CHECK(strstr(err, pid) != NULL);
	cache_destroy(c1);
	CHECK_EQ(cache_create(&cfg, s2, &c2, err, sizeof(err)), 0);
	cache_destroy(c2);
}

static void test_crc32c_known_value_and_fast_path_agree(void)
{
	CHECK_EQ(cache_crc32c(0, "123456789", 9), 0xE3069283u);
	CHECK_EQ(cache_crc32c_portable(0, "123456789", 9), 0xE3069283u);
	size_t sizes[] = { 0, 1, 7, 8, 255, 256, 767, 768, 769, 24575, 24576, 24577, 100000,
			   3 * 8192 * 5 + 3 * 256 + 13 };
	char *buf = pattern(200000, 99);
	for (size_t i = 0; i < sizeof(sizes) / sizeof(*sizes); i++) {
		for (size_t off = 0; off < 3; off++) {
			uint32_t fast = cache_crc32c(0, buf + off, sizes[i]);
			CHECK_EQ(fast, cache_crc32c_portable(0, buf + off, sizes[i]));
			/* in two calls, cut anywhere */
			size_t cut = sizes[i] / 3;
			uint32_t two = cache_crc32c(cache_crc32c(0, buf + off, cut), buf + off + cut,
						    sizes[i] - cut);
			CHECK_EQ(two, fast);
		}
	}
	free(buf);
}

static void test_cache_folder_is_private(void)
{
	struct blob_store *s = fake_store_create("fake://a");
	char dir[400];
	snprintf(dir, sizeof(dir), "%s/sub/cache", check_dir);
	struct cache_config cfg = { .dir = dir, .max_bytes = 1 << 20 };
	struct cache *c = NULL;
	char err[200];
	CHECK_EQ(cache_create(&cfg, s, &c, err, sizeof(err)), 0);
	struct stat st;
	CHECK(stat(dir, &st) == 0 && (st.st_mode & 0777) == 0700);
	cache_destroy(c);
}

int main(void)
{
	RUN(test_miss_fetches_once_hit_fetches_nothing);
	RUN(test_concurrent_miss_fetches_once);
	RUN(test_eviction_keeps_cache_within_bound_lru_first);
	RUN(test_truncated_chunk_is_fetched_again);
	RUN(test_corrupted_chunk_is_fetched_again);
	RUN(test_corrupted_chunk_found_by_new_cache);
	RUN(test_new_cache_reuses_chunks_on_disk);
	RUN(test_checked_files_known_to_the_next_cache);
	RUN(test_changed_blob_is_a_new_entry_and_old_pin_fails);
	RUN(test_store_failure_is_returned_then_recovers);
	RUN(test_sha256_checked_when_read_whole);
	RUN(test_sha256_checked_when_read_whole_out_of_order);
	RUN(test_span_holds_chunk_file_unchanged);
	RUN(test_sha256_checked_behind_mapped_reads);
	RUN(test_sequential_reader_prefetches_each_chunk_once);
	RUN(test_random_reader_fetches_only_what_it_touches);
	RUN(test_reader_served_as_bytes_arrive);
	RUN(test_answer_restarted_midway_keeps_bytes_exact);
	RUN(test_unpinned_store_serves_bytes_once_read_whole);
	RUN(test_run_restarted_midway_keeps_bytes_exact);
	RUN(test_chunks_in_memory_stay_within_their_bound);
	RUN(test_chunks_written_where_direct_io_may_be_refused);
	RUN(test_listing_is_cached_and_served_offline);
	RUN(test_immutable_record_served_from_disk);
	RUN(test_mutable_record_refreshes_after_ttl);
	RUN(test_stale_listing_is_answered_while_its_refresh_hangs);
	RUN(test_listing_without_copy_waits_for_the_store);
	RUN(test_stat_gives_up_after_a_second_one_question_per_key);
	RUN(test_listings_in_memory_stay_within_their_bound);
	RUN(test_second_cache_over_a_held_folder_is_refused);
	RUN(test_crc32c_known_value_and_fast_path_agree);
	RUN(test_cache_folder_is_private);
	CHECK_DONE();
}
