/*
 * test_stage.c: staged files and their uploads (cache/stage.c), over a local store in
 * a temp folder (a real store: what reaches it is read back from its files), and the
 * local backend's writes.
 */
#include "check.h"
#include "../../blob/blob.h"
#include "../../cache/cache.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#define MiB (1u << 20)

static struct blob_store *store_here(void)
{
	char url[400], path[300], err[256];
	struct blob_store *s = NULL;
	snprintf(path, sizeof(path), "%s/store", check_dir);
	mkdir(path, 0755);
	snprintf(url, sizeof(url), "file://%s", path);
	CHECK_EQ(blob_open(url, NULL, &s, err, sizeof(err)), 0);
	return s;
}

static struct cache *cache_here(struct blob_store *s)
{
	char dir[300], err[256];
	struct cache *c = NULL;
	snprintf(dir, sizeof(dir), "%s/cache", check_dir);
	struct cache_config cfg = { .dir = dir, .max_bytes = 1ull << 30, .ttl = 60 };
	CHECK_EQ(cache_create(&cfg, s, &c, err, sizeof(err)), 0);
	return c;
}

/* The bytes of a blob of the store, read from its file; NULL when absent. */
static unsigned char *stored(const char *key, size_t *len)
{
	char path[600];
	struct stat st;
	snprintf(path, sizeof(path), "%s/store/%s", check_dir, key);
	int fd = open(path, O_RDONLY);
	if (fd < 0 || fstat(fd, &st) < 0) {
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	unsigned char *b = malloc((size_t)st.st_size + 1);
	CHECK(read(fd, b, (size_t)st.st_size) == st.st_size);
	close(fd);
	*len = (size_t)st.st_size;
	return b;
}

/* Files in a folder of the temp folder (names not starting with '.'). */
static int count_files(const char *rel)
{
	char path[600];
	int n = 0;
	snprintf(path, sizeof(path), "%s/%s", check_dir, rel);
	DIR *d = opendir(path);
	if (!d)
		return -1;
	for (struct dirent *e; (e = readdir(d));)
		n += e->d_name[0] != '.';
	closedir(d);
	return n;
}

/* Waits up to 10 s for the one upload under way in the store to reach size bytes. */
static int wait_upload_size(off_t size)
{
	char dir[400], path[700];
	snprintf(dir, sizeof(dir), "%s/store/.artifactfs-tmp.uploads", check_dir);
	for (int i = 0; i < 1000; i++) {
		DIR *d = opendir(dir);
		for (struct dirent *e; d && (e = readdir(d));) {
			struct stat st;
			snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
			if (e->d_name[0] == '.' && stat(path, &st) == 0 && S_ISREG(st.st_mode) &&
			    st.st_size >= size) {
				closedir(d);
				return 1;
			}
		}
		if (d)
			closedir(d);
		usleep(10000);
	}
	return 0;
}

static unsigned char *pattern(size_t len, unsigned seed)
{
	unsigned char *b = malloc(len);
	for (size_t i = 0; i < len; i++)
		b[i] = (unsigned char)((i * 2654435761u + seed) >> 13);
	return b;
}

static void test_a_small_file_goes_whole_in_one_put(void)
{
	struct blob_store *s = store_here();
	struct cache *c = cache_here(s);
	struct cache_stage *st;
	struct blob_stat bs;
	size_t len;

	CHECK_EQ(cache_stage_create(c, "runs/e/r/a.txt", &st), 0);
	CHECK_EQ(count_files("cache/staging"), 2); /* the bytes and the key */
	CHECK_EQ(cache_stage_write(st, "hello world", 11, 0), 11);
	CHECK_EQ(cache_stage_write(st, "W", 1, 6), 1);
	char back[16] = "";
	CHECK_EQ(cache_stage_read(st, back, sizeof(back), 0), 11);
	CHECK(memcmp(back, "hello World", 11) == 0);
	CHECK(stored("runs/e/r/a.txt", &len) == NULL); /* nothing before the upload */
	CHECK_EQ(cache_stage_upload(st, 0, &bs), 0);
	unsigned char *b = stored("runs/e/r/a.txt", &len);
	CHECK(b && len == 11 && memcmp(b, "hello World", 11) == 0);
	free(b);
	CHECK_EQ(bs.size, 11);
	struct blob_stat now;
	CHECK_EQ(blob_stat(s, "runs/e/r/a.txt", &now), 0);
	CHECK(strcmp(now.etag, bs.etag) == 0);
	CHECK_EQ(cache_stage_dirty(st), 0);
	CHECK_EQ(cache_stage_upload(st, 1, &bs), 0); /* nothing new: nothing sent */
	cache_stage_free(st, 0);
	CHECK_EQ(count_files("cache/staging"), 0);
	cache_destroy(c);
}

static void test_parts_go_up_while_writing_and_rewrites_are_sent_again(void)
{
	struct blob_store *s = store_here();
	struct cache *c = cache_here(s);
	struct cache_stage *st;
	size_t size = 3 * 8 * MiB + 12345, len;
	unsigned char *data = pattern(size, 1);

	CHECK_EQ(cache_stage_create(c, "runs/e/r/big.bin", &st), 0);
	for (size_t off = 0; off < size; off += MiB)
		CHECK_EQ(cache_stage_write(st, data + off, off + MiB < size ? MiB : size - off, off),
			 (ssize_t)(off + MiB < size ? MiB : size - off));
	/* the finished parts go up before any upload is asked for: the store's upload
	 * file (written at each part's offset) grows to the end of the third part */
	CHECK(wait_upload_size(3 * 8 * MiB));
	/* a part already sent, written again */
	memset(data + 5, 0xAB, 100);
	CHECK_EQ(cache_stage_write(st, data + 5, 100, 5), 100);
	CHECK_EQ(cache_stage_upload(st, 0, NULL), 0);
	unsigned char *b = stored("runs/e/r/big.bin", &len);
	CHECK(b && len == size && memcmp(b, data, size) == 0);
	free(b);
	/* shorter, then longer again with a hole: what the store gets is the file */
	CHECK_EQ(cache_stage_truncate(st, 9 * MiB), 0);
	CHECK_EQ(cache_stage_write(st, "end", 3, 20 * MiB), 3);
	CHECK_EQ(cache_stage_upload(st, 0, NULL), 0);
	b = stored("runs/e/r/big.bin", &len);
	CHECK(b && len == 20 * MiB + 3);
	CHECK(b && memcmp(b, data, 9 * MiB) == 0);
	int zeros = 1;
	for (size_t i = 9 * MiB; b && i < 20 * MiB; i++)
		zeros &= b[i] == 0;
	CHECK(zeros);
	CHECK(b && memcmp(b + 20 * MiB, "end", 3) == 0);
	free(b);
	cache_stage_free(st, 0);
	/* no upload left behind in the store */
	CHECK_EQ(count_files("store/.artifactfs-tmp.uploads"), 0);
	free(data);
	cache_destroy(c);
}

static void test_exclusive_upload_never_replaces(void)
{
	struct blob_store *s = store_here();
	struct cache *c = cache_here(s);
	struct cache_stage *st, *big;
	size_t len;

	CHECK_EQ(blob_put(s, "runs/e/r/lock", "theirs", 6, 1, NULL), 0);
	CHECK_EQ(cache_stage_create(c, "runs/e/r/lock", &st), 0);
	CHECK_EQ(cache_stage_write(st, "mine", 4, 0), 4);
	CHECK_EQ(cache_stage_upload(st, 1, NULL), -EEXIST);
	CHECK_EQ(cache_stage_dirty(st), 1); /* still to upload */
	unsigned char *b = stored("runs/e/r/lock", &len);
	CHECK(b && len == 6 && memcmp(b, "theirs", 6) == 0);
	free(b);
	/* in parts too */
	unsigned char *data = pattern(17 * MiB, 2);
	CHECK_EQ(cache_stage_create(c, "runs/e/r/lock", &big), 0);
	CHECK_EQ(cache_stage_write(big, data, 17 * MiB, 0), 17 * MiB);
	CHECK_EQ(cache_stage_upload(big, 1, NULL), -EEXIST);
	b = stored("runs/e/r/lock", &len);
	CHECK(b && len == 6);
	free(b);
	CHECK_EQ(cache_stage_upload(big, 0, NULL), 0); /* a plain upload replaces */
	b = stored("runs/e/r/lock", &len);
	CHECK(b && len == 17 * MiB && memcmp(b, data, len) == 0);
	free(b);
	free(data);
	cache_stage_free(st, 0);
	cache_stage_free(big, 0);
	cache_destroy(c);
}

static void test_rekey_uploads_under_the_new_name(void)
{
	struct blob_store *s = store_here();
	struct cache *c = cache_here(s);
	struct cache_stage *st;
	unsigned char *data = pattern(20 * MiB, 3);
	size_t len;

	CHECK_EQ(cache_stage_create(c, "runs/e/r/x.tmp", &st), 0);
	CHECK_EQ(cache_stage_write(st, data, 20 * MiB, 0), 20 * MiB);
	CHECK_EQ(cache_stage_rekey(st, "runs/e/r/x"), 0);
	CHECK_EQ(cache_stage_upload(st, 0, NULL), 0);
	CHECK(stored("runs/e/r/x.tmp", &len) == NULL);
	unsigned char *b = stored("runs/e/r/x", &len);
	CHECK(b && len == 20 * MiB && memcmp(b, data, len) == 0);
	free(b);
	free(data);
	cache_stage_free(st, 0);
	cache_destroy(c);
}

static void test_kept_staged_files_are_named_by_the_next_cache(void)
{
	struct blob_store *s = store_here();
	struct cache *c = cache_here(s);
	struct cache_stage *st;

	CHECK_EQ(cache_stage_create(c, "runs/e/r/lost.bin", &st), 0);
	CHECK_EQ(cache_stage_write(st, "precious", 8, 0), 8);
	cache_stage_free(st, 1); /* an upload that failed: its bytes stay */
	cache_destroy(c);
	CHECK_EQ(count_files("cache/staging"), 2);
	s = store_here();
	c = cache_here(s); /* logs it; keeps it */
	CHECK_EQ(count_files("cache/staging"), 2);
	cache_destroy(c);
}

static void test_local_writes_are_whole_and_moves_leave_no_empty_folder(void)
{
	struct blob_store *s = store_here();
	struct blob_upload *u;
	struct blob_stat st;
	size_t len;

	CHECK_EQ(blob_upload_begin(s, "runs/e/r/p.bin", &u), 0);
	CHECK_EQ(blob_upload_part(s, u, 1, 6 * MiB, "second", 6), 0);
	unsigned char *first = pattern(6 * MiB, 4);
	CHECK_EQ(blob_upload_part(s, u, 0, 0, first, 6 * MiB), 0);
	CHECK(stored("runs/e/r/p.bin", &len) == NULL); /* nothing until the commit */
	struct blob_list l;
	blob_list_init(&l);
	CHECK_EQ(blob_list(s, "", &l), 0);
	CHECK_EQ(l.count, 0); /* the upload is not in listings */
	blob_list_release(&l);
	CHECK_EQ(blob_upload_commit(s, u, 2, 6 * MiB + 6, 0, &st), 0);
	unsigned char *b = stored("runs/e/r/p.bin", &len);
	CHECK(b && len == 6 * MiB + 6 && memcmp(b, first, 6 * MiB) == 0 &&
	      memcmp(b + 6 * MiB, "second", 6) == 0);
	free(b);
	free(first);
	CHECK_EQ(st.size, 6 * MiB + 6);
	/* an aborted upload leaves nothing */
	CHECK_EQ(blob_upload_begin(s, "runs/e/r/q.bin", &u), 0);
	CHECK_EQ(blob_upload_part(s, u, 0, 0, "q", 1), 0);
	blob_upload_abort(s, u);
	CHECK(stored("runs/e/r/q.bin", &len) == NULL);
	CHECK_EQ(count_files("store/.artifactfs-tmp.uploads"), 0);
	/* move: the old folder goes when it empties, as on a blob store */
	CHECK_EQ(blob_move(s, "runs/e/r/p.bin", "runs/e/r2/sub/p.bin", &st), 0);
	CHECK(stored("runs/e/r/p.bin", &len) == NULL);
	CHECK_EQ(count_files("store/runs/e/r"), -1);
	CHECK_EQ(count_files("store/runs/e"), 1);
	CHECK_EQ(blob_move(s, "runs/e/r/none", "runs/e/r3/x", &st), -ENOENT);
	CHECK_EQ(blob_put(s, "runs/e/r2/sub/p.bin", "new", 3, 1, NULL), -EEXIST);
	CHECK_EQ(blob_remove(s, "runs/e/r2/sub/p.bin"), 0);
	CHECK_EQ(blob_remove(s, "runs/e/r2/sub/p.bin"), -ENOENT);
	CHECK_EQ(count_files("store/runs"), 0); /* runs/ itself stays */
	blob_destroy(s);
}

int main(void)
{
	RUN(test_a_small_file_goes_whole_in_one_put);
	RUN(test_parts_go_up_while_writing_and_rewrites_are_sent_again);
	RUN(test_exclusive_upload_never_replaces);
	RUN(test_rekey_uploads_under_the_new_name);
	RUN(test_kept_staged_files_are_named_by_the_next_cache);
	RUN(test_local_writes_are_whole_and_moves_leave_no_empty_folder);
	CHECK_DONE();
}
