/*
 * test_local.c: the file:// backend on a temp folder.
 */
#include "check.h"
#include "../../blob/blob.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

static struct blob_store *open_here(void)
{
	char url[400], err[256];
	struct blob_store *s = NULL;
	snprintf(url, sizeof(url), "file://%s", check_dir);
	CHECK_EQ(blob_open(url, NULL, &s, err, sizeof(err)), 0);
	return s;
}

static void put(const char *rel, const char *text)
{
	char path[600], cmd[800];
	snprintf(path, sizeof(path), "%s/%s", check_dir, rel);
	snprintf(cmd, sizeof(cmd), "mkdir -p \"$(dirname '%s')\"", path);
	CHECK(system(cmd) == 0);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	CHECK(fd >= 0 && write(fd, text, strlen(text)) == (ssize_t)strlen(text));
	close(fd);
}

static void test_bad_urls_are_refused_with_a_message(void)
{
	struct blob_store *s = NULL;
	char err[256] = "";
	CHECK_EQ(blob_open("file://relative/path", NULL, &s, err, sizeof(err)), -EINVAL);
	CHECK(strstr(err, "absolute") != NULL);
	CHECK_EQ(blob_open("file:///no/such/store/here", NULL, &s, err, sizeof(err)), -ENOENT);
	CHECK(strstr(err, "/no/such/store/here") != NULL);
	CHECK_EQ(blob_open("ftp://x/y", NULL, &s, err, sizeof(err)), -EINVAL);
	CHECK(strstr(err, "unsupported") != NULL);
}

static void test_list_stat_read(void)
{
	put("runs/e/r/a.txt", "hello");
	put("runs/e/r/sub/b.txt", "x");
	struct blob_store *s = open_here();
	struct blob_list l;
	blob_list_init(&l);
	CHECK_EQ(blob_list(s, "runs/e/r/", &l), 0);
	blob_list_clean(&l, "runs/e/r/");
	CHECK_EQ(l.count, 2);
	CHECK(l.count == 2 && strcmp(l.entries[0].name, "a.txt") == 0 && !l.entries[0].is_dir &&
	      l.entries[0].size == 5);
	CHECK(l.count == 2 && strcmp(l.entries[1].name, "sub") == 0 && l.entries[1].is_dir);
	blob_list_release(&l);
	CHECK_EQ(blob_list(s, "runs/none/", &l), -ENOENT);
	struct blob_stat st;
	CHECK_EQ(blob_stat(s, "runs/e/r/a.txt", &st), 0);
	CHECK_EQ(st.size, 5);
	char buf[16] = "";
	CHECK_EQ(blob_read(s, "runs/e/r/a.txt", st.etag, 1, 10, buf), 4);
	CHECK(memcmp(buf, "ello", 4) == 0);
	CHECK_EQ(blob_stat(s, "runs/e/r/sub", &st), -ENOENT);
	blob_destroy(s);
}

static void test_keys_cannot_leave_the_store(void)
{
	struct blob_store *s = open_here();
	struct blob_stat st;
	struct blob_list l;
	char buf[4];
	blob_list_init(&l);
	CHECK_EQ(blob_stat(s, "../etc/passwd", &st), -ENOENT);
	CHECK_EQ(blob_stat(s, "runs/../../etc/passwd", &st), -ENOENT);
	CHECK_EQ(blob_read(s, "/etc/passwd", "", 0, 4, buf), -ENOENT);
	CHECK_EQ(blob_list(s, "../", &l), -ENOENT);
	CHECK_EQ(blob_list(s, "a//", &l), -ENOENT);
	CHECK_EQ(blob_create(s, "registry/../../x", "x", 1), -EINVAL);
	blob_destroy(s);
}

static void test_symlinks_in_the_store_are_never_followed(void)
{
	char path[600], outside[600];
	put("runs/e/r/a.txt", "inside");
	snprintf(outside, sizeof(outside), "%s/outside", check_dir);
	CHECK(mkdir(outside, 0755) == 0);
	snprintf(path, sizeof(path), "%s/outside/secret", check_dir);
	int fd = open(path, O_WRONLY | O_CREAT, 0644);
	CHECK(fd >= 0 && write(fd, "secret", 6) == 6);
	close(fd);
	/* the store is a folder inside check_dir: links point out of it */
	char store[600], link[700];
	snprintf(store, sizeof(store), "%s/runs", check_dir);
	snprintf(link, sizeof(link), "%s/e/r/link", store);
	CHECK(symlink(path, link) == 0);
	snprintf(link, sizeof(link), "%s/e/dirlink", store);
	CHECK(symlink(outside, link) == 0);
	char url[700], err[256], buf[16];
	struct blob_store *s = NULL;
	snprintf(url, sizeof(url), "file://%s", store);
	CHECK_EQ(blob_open(url, NULL, &s, err, sizeof(err)), 0);
	struct blob_stat st;
	CHECK_EQ(blob_stat(s, "e/r/link", &st), -ENOENT);
	CHECK_EQ(blob_read(s, "e/r/link", "", 0, 6, buf), -ENOENT);
	CHECK_EQ(blob_stat(s, "e/dirlink/secret", &st), -ENOENT);
	CHECK_EQ(blob_read(s, "e/dirlink/secret", "", 0, 6, buf), -ENOENT);
	struct blob_list l;
	blob_list_init(&l);
	CHECK_EQ(blob_list(s, "e/dirlink/", &l), -ENOENT);
	CHECK_EQ(blob_list(s, "e/r/", &l), 0);
	CHECK_EQ(l.count, 1); /* a.txt only */
	blob_list_release(&l);
	CHECK_EQ(blob_create(s, "e/dirlink/new.json", "{}", 2), -ENOENT);
	snprintf(path, sizeof(path), "%s/outside/new.json", check_dir);
	CHECK(access(path, F_OK) < 0);
	blob_destroy(s);
}

static void test_etag_changes_with_content_and_read_is_pinned(void)
{
	put("f", "one");
	struct blob_store *s = open_here();
	struct blob_stat a, b;
	char buf[8];
	CHECK_EQ(blob_stat(s, "f", &a), 0);
	put("f", "two"); /* same size, rewritten in place */
	CHECK_EQ(blob_stat(s, "f", &b), 0);
	CHECK(strcmp(a.etag, b.etag) != 0);
	CHECK_EQ(blob_read(s, "f", a.etag, 0, 3, buf), -ESTALE);
	CHECK_EQ(blob_read(s, "f", b.etag, 0, 3, buf), 3);
	CHECK(memcmp(buf, "two", 3) == 0);
	blob_destroy(s);
}

static void test_create_if_absent_and_replace_if_unchanged(void)
{
	struct blob_store *s = open_here();
	char *data = NULL, etag[BLOB_ETAG_MAX], old[BLOB_ETAG_MAX];
	size_t len;
	CHECK_EQ(blob_create(s, "registry/m/1.json", "{}", 2), 0);
	CHECK_EQ(blob_create(s, "registry/m/1.json", "{\"x\":1}", 7), -EEXIST);
	CHECK_EQ(blob_get(s, "registry/m/1.json", 100, &data, &len, etag), 0);
	CHECK(len == 2 && strcmp(data, "{}") == 0);
	free(data);
	memcpy(old, etag, sizeof(old));
	CHECK_EQ(blob_replace(s, "registry/m/1.json", etag, "[1]", 3), 0);
	CHECK_EQ(blob_replace(s, "registry/m/1.json", old, "[2]", 3), -ESTALE);
	CHECK_EQ(blob_get(s, "registry/m/1.json", 100, &data, &len, etag), 0);
	CHECK(strcmp(data, "[1]") == 0);
	free(data);
	CHECK_EQ(blob_get(s, "registry/m/1.json", 2, &data, &len, etag), -EFBIG);
	/* no temp file is left beside the records */
	struct blob_list l;
	blob_list_init(&l);
	CHECK_EQ(blob_list(s, "registry/m/", &l), 0);
	CHECK_EQ(l.count, 1);
	blob_list_release(&l);
	blob_destroy(s);
}

static void test_clean_drops_bad_names_and_shadowed_blobs(void)
{
	struct blob_list l;
	blob_list_init(&l);
	const char *names[] = { "b", "a", "..", ".", "", "ctl\x01", "a" };
	int dirs[] = { 0, 0, 1, 1, 1, 0, 1 };
	for (int i = 0; i < 7; i++) {
		struct blob_entry e = { .name = (char *)names[i], .is_dir = dirs[i] };
		blob_list_add(&l, &e);
	}
	char longname[300];
	memset(longname, 'x', 299);
	longname[299] = '\0';
	struct blob_entry e = { .name = longname };
	blob_list_add(&l, &e);
	blob_list_clean(&l, "p/");
	CHECK_EQ(l.count, 2);
	CHECK(strcmp(l.entries[0].name, "a") == 0 && l.entries[0].is_dir);
	CHECK(strcmp(l.entries[1].name, "b") == 0 && !l.entries[1].is_dir);
	blob_list_release(&l);
}

int main(void)
{
	RUN(test_bad_urls_are_refused_with_a_message);
	RUN(test_list_stat_read);
	RUN(test_keys_cannot_leave_the_store);
	RUN(test_symlinks_in_the_store_are_never_followed);
	RUN(test_etag_changes_with_content_and_read_is_pinned);
	RUN(test_create_if_absent_and_replace_if_unchanged);
	RUN(test_clean_drops_bad_names_and_shadowed_blobs);
	CHECK_DONE();
}
