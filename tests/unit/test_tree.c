/*
 * test_tree.c: the tree's memory of models against the fake store: bounded, and
 * forgetting what the store no longer has.
 */
#include "check.h"
#include "fake_store.h"
#include "../../fs/fs.h"
#include "../../fs/registry.h"

#include <errno.h>

static struct fs *new_fs(struct blob_store *s, unsigned ttl)
{
	struct cache_config cfg = { .dir = check_dir, .max_bytes = 1 << 30, .ttl = ttl };
	struct cache *c = NULL;
	struct fs *fs = NULL;
	char err[256];
	if (cache_create(&cfg, s, &c, err, sizeof(err)) < 0 || fs_create(c, ttl, &fs) < 0) {
		fprintf(stderr, "fs: %s\n", err);
		exit(2);
	}
	return fs;
}

static void register_models(struct blob_store *s, int n)
{
	char name[32], err[256];
	for (int i = 0; i < n; i++) {
		snprintf(name, sizeof(name), "m%d", i);
		struct reg_request req = { .name = name, .source = "runs/e/r/" };
		int v = 0;
		if (reg_register(s, &req, &v, err, sizeof(err)) < 0 || v != 1) {
			fprintf(stderr, "register %s: %s\n", name, err);
			exit(2);
		}
	}
}

static int resolve_model(struct fs *fs, int i)
{
	char path[64];
	struct fs_node n;
	snprintf(path, sizeof(path), "/models/m%d/1/model.pth", i);
	int ret = fs_resolve(fs, path, &n);
	return ret == 0 && n.size != 7 ? -EINVAL : ret;
}

static void test_models_gone_from_the_store_leave_memory(void)
{
	struct blob_store *s = fake_store_create("fake://t");
	char key[64];
	fake_store_put(s, "runs/e/r/model.pth", "weights", 7);
	register_models(s, 20);
	struct fs *fs = new_fs(s, 0); /* every lookup asks the store */
	for (int i = 0; i < 20; i++)
		CHECK_EQ(resolve_model(fs, i), 0);
	CHECK_EQ(fs_model_count(fs), 20);
	for (int i = 0; i < 10; i++) {
		snprintf(key, sizeof(key), "registry/m%d/1.json", i);
		fake_store_delete(s, key);
	}
	for (int i = 0; i < 20; i++)
		CHECK_EQ(resolve_model(fs, i), i < 10 ? -ENOENT : 0);
	CHECK_EQ(fs_model_count(fs), 10);
	fs_destroy(fs);
}

static void test_model_table_stays_within_its_bound(void)
{
	struct blob_store *s = fake_store_create("fake://t");
	const int n = FS_MODELS_MAX + 40;
	fake_store_put(s, "runs/e/r/model.pth", "weights", 7);
	register_models(s, n);
	struct fs *fs = new_fs(s, 1000);
	for (int i = 0; i < n; i++) {
		CHECK_EQ(resolve_model(fs, i), 0);
		if (fs_model_count(fs) > FS_MODELS_MAX) {
			CHECK(fs_model_count(fs) <= FS_MODELS_MAX);
			break;
		}
	}
	CHECK_EQ(fs_model_count(fs), FS_MODELS_MAX);
	/* a model forgotten for room is read again when asked for */
	CHECK_EQ(resolve_model(fs, 0), 0);
	CHECK_EQ(fs_model_count(fs), FS_MODELS_MAX);
	fs_destroy(fs);
}

int main(void)
{
	RUN(test_models_gone_from_the_store_leave_memory);
	RUN(test_model_table_stays_within_its_bound);
	CHECK_DONE();
}
