/*
 * write.c: runs/ takes files from training jobs (--writable).
 *
 * A file opened for writing is a struct fs_wfile: a staged file in the cache folder
 * (cache/stage.c) that close(2) and fsync(2) upload as one blob, returning the
 * upload's error. While a file is written, and after its upload failed, the tree
 * shows it from here (the overlay), over what the store's listing says; once it is
 * in the store and closed, the cached listings are changed to show it (its new size
 * and etag) and it leaves the overlay. Folders made with mkdir live in the overlay
 * until a file lands in them, as a blob store has no empty folders.
 *
 * Renames: a file is moved inside the store (a rename on a local store; a copy and a
 * delete on a blob store); a folder blob by blob, which is not atomic. A file still
 * open moves with its staged bytes and uploads under its new name.
 *
 * Threads: wr->lock guards the overlay and the fields of every wfile; it is never
 * held across the store or the staged file's I/O, which a wfile's reference keeps
 * alive. Uploads of one file are one at a time (wf->sync_lock).
 */
#define FUSE_USE_VERSION 312
#include <fuse.h>

#include "fs.h"
#include "fs_private.h"
#include "../blob/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

struct fs_wfile {
	struct fs_wfile *next;
	struct cache_stage *st;
	pthread_mutex_t sync_lock;	/* one upload at a time */
	int refs;			/* handles, and threads at work on it */
	int listed;			/* in the overlay */
	int opens;			/* handles */
	int excl;			/* created O_EXCL: uploaded only if the key is free */
	int failed;			/* how the last upload failed (its bytes are kept) */
	int in_store;			/* the key has a blob this file made or replaces */
	uint64_t failed_at;		/* the staged file's changes when its upload failed */
	struct timespec mtime;
	char etag[BLOB_ETAG_MAX];	/* of the last upload, or "" */
	char *key;			/* "runs/..." */
};

struct fs_writes {
	pthread_mutex_t lock;
	struct fs_wfile *files;
	char **dirs;			/* folders made here, keys ending in '/' */
	size_t ndirs, capdirs;
};

/* An open file of the overlay: first member as for every handle. */
struct fs_whandle {
	struct fs_link link;
	struct fs_wfile *wf;
	int writer;			/* opened for writing */
	char path[];
};

#define W_LINK 2 /* struct fs_link.dir of a write handle */

static struct fs *fs_of(void)
{
	return fuse_get_context()->private_data;
}

static void ts_now(struct timespec *ts)
{
	clock_gettime(CLOCK_REALTIME, ts);
}

/* "runs/..." for a path of the writable part of the tree (below /runs/), else NULL
 * with -EROFS (the rest of the tree, or a read-only mount) or -EINVAL (a name the
 * store cannot hold) in *err. */
static const char *wkey(struct fs *fs, const char *path, int *err)
{
	if (!fs->wr || strncmp(path, "/runs/", 6) != 0 || !path[6]) {
		*err = -EROFS;
		return NULL;
	}
	for (const char *p = path + 6; *p;) {
		const char *slash = strchr(p, '/');
		size_t len = slash ? (size_t)(slash - p) : strlen(p);
		if (!blob_name_ok(p, len)) {
			*err = -EINVAL;
			return NULL;
		}
		p += len + (slash ? 1 : 0);
	}
	return path + 1;
}

/* The folder prefix of key ("runs/a/" for "runs/a/b") into out. */
static void parent_of(const char *key, char *out, size_t size)
{
	snprintf(out, size, "%s", key);
	char *slash = strrchr(out, '/');
	if (slash)
		slash[1] = '\0';
}

static const char *name_of(const char *key)
{
	const char *slash = strrchr(key, '/');

	return slash ? slash + 1 : key;
}

/* ---- the overlay (under wr->lock) ---- */

static struct fs_wfile *wfile_find(struct fs_writes *wr, const char *key)
{
	for (struct fs_wfile *wf = wr->files; wf; wf = wf->next)
		if (strcmp(wf->key, key) == 0)
			return wf;
	return NULL;
}

static void wfile_unlist(struct fs_writes *wr, struct fs_wfile *wf)
{
	struct fs_wfile **pp = &wr->files;

	while (*pp && *pp != wf)
		pp = &(*pp)->next;
	if (*pp)
		*pp = wf->next;
	wf->listed = 0;
}

static ssize_t dir_index(struct fs_writes *wr, const char *dkey)
{
	for (size_t i = 0; i < wr->ndirs; i++)
		if (strcmp(wr->dirs[i], dkey) == 0)
			return (ssize_t)i;
	return -1;
}

static int dir_add(struct fs_writes *wr, const char *dkey)
{
	if (dir_index(wr, dkey) >= 0)
		return 0;
	if (wr->ndirs == wr->capdirs) {
		size_t cap = wr->capdirs ? wr->capdirs * 2 : 16;
		char **nd = realloc(wr->dirs, cap * sizeof(*nd));
		if (!nd)
			return -ENOMEM;
		wr->dirs = nd;
		wr->capdirs = cap;
	}
	if (!(wr->dirs[wr->ndirs] = strdup(dkey)))
		return -ENOMEM;
	wr->ndirs++;
	return 0;
}

static void dir_del(struct fs_writes *wr, size_t i)
{
	free(wr->dirs[i]);
	wr->dirs[i] = wr->dirs[--wr->ndirs];
}

/* The folders made here that key is in: the store has them now. */
static void dirs_landed(struct fs_writes *wr, const char *key)
{
	for (size_t i = 0; i < wr->ndirs;) {
		if (strncmp(key, wr->dirs[i], strlen(wr->dirs[i])) == 0)
			dir_del(wr, i);
		else
			i++;
	}
}

static void wfile_node(const struct fs_wfile *wf, struct fs_node *n)
{
	memset(n, 0, sizeof(*n));
	n->kind = FS_FILE;
	n->size = cache_stage_size(wf->st);
	n->mtime = wf->mtime;
	snprintf(n->key, sizeof(n->key), "%s", wf->key);
	memcpy(n->etag, wf->etag, sizeof(n->etag));
}

int fs_overlay_node(struct fs *fs, const char *key, struct fs_node *out)
{
	struct fs_writes *wr = fs->wr;
	char dkey[PATH_MAX];
	int found = 0;

	if (!wr)
		return 0;
	snprintf(dkey, sizeof(dkey), "%s/", key);
	pthread_mutex_lock(&wr->lock);
	struct fs_wfile *wf = wfile_find(wr, key);
	if (wf) {
		wfile_node(wf, out);
		found = 1;
	} else if (dir_index(wr, dkey) >= 0) {
		memset(out, 0, sizeof(*out));
		out->kind = FS_DIR;
		out->mtime = fs->started;
		snprintf(out->key, sizeof(out->key), "%s", dkey);
		found = 1;
	}
	pthread_mutex_unlock(&wr->lock);
	return found;
}

int fs_overlay_list(struct fs *fs, const char *prefix, struct fs_ochild **out, size_t *n)
{
	struct fs_writes *wr = fs->wr;
	size_t plen = strlen(prefix), cap = 0;
	struct fs_ochild *c = NULL;
	int ret = 0;

	*out = NULL;
	*n = 0;
	if (!wr)
		return 0;
	pthread_mutex_lock(&wr->lock);
	for (struct fs_wfile *wf = wr->files; wf && ret == 0; wf = wf->next) {
		if (strncmp(wf->key, prefix, plen) != 0 || strchr(wf->key + plen, '/'))
			continue;
		if (*n == cap) {
			cap = cap ? cap * 2 : 8;
			struct fs_ochild *nc = realloc(c, cap * sizeof(*nc));
			if (!nc) {
				ret = -ENOMEM;
				break;
			}
			c = nc;
		}
		snprintf(c[*n].name, sizeof(c[*n].name), "%s", wf->key + plen);
		wfile_node(wf, &c[*n].node);
		(*n)++;
	}
	for (size_t i = 0; i < wr->ndirs && ret == 0; i++) {
		const char *d = wr->dirs[i];
		size_t dlen = strlen(d);
		if (strncmp(d, prefix, plen) != 0 || dlen <= plen + 1 ||
		    memchr(d + plen, '/', dlen - plen - 1))
			continue;
		if (*n == cap) {
			cap = cap ? cap * 2 : 8;
			struct fs_ochild *nc = realloc(c, cap * sizeof(*nc));
			if (!nc) {
				ret = -ENOMEM;
				break;
			}
			c = nc;
		}
		snprintf(c[*n].name, sizeof(c[*n].name), "%.*s", (int)(dlen - plen - 1), d + plen);
		memset(&c[*n].node, 0, sizeof(c[*n].node));
		c[*n].node.kind = FS_DIR;
		c[*n].node.mtime = fs->started;
		snprintf(c[*n].node.key, sizeof(c[*n].node.key), "%s", d);
		(*n)++;
	}
	pthread_mutex_unlock(&wr->lock);
	if (ret < 0) {
		free(c);
		*n = 0;
		return ret;
	}
	*out = c;
	return 0;
}

/* ---- wfiles ---- */

static void wfile_unref(struct fs *fs, struct fs_wfile *wf, int keep)
{
	struct fs_writes *wr = fs->wr;

	pthread_mutex_lock(&wr->lock);
	int last = --wf->refs == 0 && !wf->listed;
	pthread_mutex_unlock(&wr->lock);
	if (!last)
		return;
	cache_stage_free(wf->st, keep);
	pthread_mutex_destroy(&wf->sync_lock);
	free(wf->key);
	free(wf);
}

/* The wfile of key, held (refs), made if absent (with a new staged file, filled
 * from the store's blob n when fill). *made tells whether it is new. */
static int wfile_get(struct fs *fs, const char *key, const struct fs_node *blob, int fill,
		     int excl, struct fs_wfile **out, int *made)
{
	struct fs_writes *wr = fs->wr;
	struct fs_wfile *wf;
	int ret;

	*made = 0;
	pthread_mutex_lock(&wr->lock);
	wf = wfile_find(wr, key);
	if (wf) {
		wf->refs++;
		pthread_mutex_unlock(&wr->lock);
		*out = wf;
		return 0;
	}
	pthread_mutex_unlock(&wr->lock);
	wf = calloc(1, sizeof(*wf));
	if (!wf || !(wf->key = strdup(key))) {
		free(wf);
		return -ENOMEM;
	}
	pthread_mutex_init(&wf->sync_lock, NULL);
	wf->refs = 1;
	wf->excl = excl;
	wf->in_store = blob != NULL;
	ts_now(&wf->mtime);
	ret = cache_stage_create(fs->cache, key, &wf->st);
	if (ret == 0 && blob && fill) {
		ret = cache_stage_fill(wf->st, blob->etag, blob->size);
		wf->mtime = blob->mtime;
	}
	if (ret < 0) {
		cache_stage_free(wf->st, 0);
		pthread_mutex_destroy(&wf->sync_lock);
		free(wf->key);
		free(wf);
		return ret;
	}
	if (blob)
		memcpy(wf->etag, blob->etag, sizeof(wf->etag));
	pthread_mutex_lock(&wr->lock);
	struct fs_wfile *other = wfile_find(wr, key);
	if (other) {
		/* another thread made it meanwhile: use that one */
		other->refs++;
		pthread_mutex_unlock(&wr->lock);
		cache_stage_free(wf->st, 0);
		pthread_mutex_destroy(&wf->sync_lock);
		free(wf->key);
		free(wf);
		*out = other;
		return 0;
	}
	wf->next = wr->files;
	wr->files = wf;
	wf->listed = 1;
	pthread_mutex_unlock(&wr->lock);
	*out = wf;
	*made = 1;
	return 0;
}

/* Shows what an upload made in the cached listings: the file in its folder, and
 * every folder above it in theirs. */
static void listings_show(struct fs *fs, const char *key, const struct blob_stat *st)
{
	char prefix[PATH_MAX];
	struct blob_entry e = { 0 };

	parent_of(key, prefix, sizeof(prefix));
	e.size = st->size;
	e.mtime = st->mtime;
	memcpy(e.etag, st->etag, sizeof(e.etag));
	cache_listing_edit(fs->cache, prefix, name_of(key), &e);
	/* the folders above, each in its parent, up to runs/ */
	while (strlen(prefix) > 5) {
		char name[NAME_MAX + 1];
		prefix[strlen(prefix) - 1] = '\0';
		snprintf(name, sizeof(name), "%s", name_of(prefix));
		*(strrchr(prefix, '/') + 1) = '\0';
		struct blob_entry d = { .is_dir = 1 };
		cache_listing_edit(fs->cache, prefix, name, &d);
	}
}

/* Takes key out of the cached listing of its folder; with keep_folder the folder
 * stays on this mount (a folder made here) until rmdir, as on a disk. */
static void listings_hide(struct fs *fs, const char *key, int keep_folder)
{
	char prefix[PATH_MAX];

	parent_of(key, prefix, sizeof(prefix));
	cache_listing_edit(fs->cache, prefix, name_of(key), NULL);
	if (keep_folder && strlen(prefix) > 5) {
		pthread_mutex_lock(&fs->wr->lock);
		dir_add(fs->wr, prefix);
		pthread_mutex_unlock(&fs->wr->lock);
	}
}

/* Uploads wf if it changed: 0, or the upload's error (logged, with where the bytes
 * are kept). retry: also when its last upload failed and nothing changed since (else
 * that failure is answered again). */
static int wfile_sync(struct fs *fs, struct fs_wfile *wf, int retry)
{
	struct fs_writes *wr = fs->wr;
	struct blob_stat st;
	int ret = 0;

	pthread_mutex_lock(&wf->sync_lock);
	pthread_mutex_lock(&wr->lock);
	int gone = !wf->listed;
	int excl = wf->excl;
	int again = wf->failed && !retry && wf->failed_at == cache_stage_changes(wf->st);
	char *key = strdup(wf->key);
	pthread_mutex_unlock(&wr->lock);
	if (!key) {
		pthread_mutex_unlock(&wf->sync_lock);
		return -ENOMEM;
	}
	if (gone || !cache_stage_dirty(wf->st))
		goto out; /* unlinked, or nothing new */
	ret = cache_stage_broken(wf->st);
	if (ret < 0)
		goto out; /* a write failed (logged): the file never reaches the store */
	if (again) {
		ret = wf->failed; /* logged when it failed */
		goto out;
	}
	uint64_t changes = cache_stage_changes(wf->st);
	ret = cache_stage_upload(wf->st, excl, &st);
	pthread_mutex_lock(&wr->lock);
	if (ret == 0) {
		wf->failed = 0;
		wf->excl = 0; /* it is ours now: later uploads replace it */
		wf->in_store = 1;
		memcpy(wf->etag, st.etag, sizeof(wf->etag));
		dirs_landed(wr, key);
	} else {
		wf->failed = ret;
		wf->failed_at = changes;
	}
	pthread_mutex_unlock(&wr->lock);
	if (ret == 0) {
		listings_show(fs, key, &st);
	} else if (ret == -EEXIST) {
		LOG_ERROR("runs: '%s' was created exclusively but the store has it now; not "
			  "replaced, its bytes are kept in %s", key, cache_stage_path(wf->st));
	} else {
		LOG_ERROR("runs: upload of '%s' failed (%s); its bytes are kept in %s", key,
			  strerror(-ret), cache_stage_path(wf->st));
	}
out:
	pthread_mutex_unlock(&wf->sync_lock);
	free(key);
	return ret;
}

/* What an upload's error answers close(2) and fsync(2). */
static int sync_errno(int err)
{
	switch (err) {
	case 0:
	case -EACCES:
	case -ENOSPC:
	case -EEXIST:
	case -ENOMEM:
	case -EFBIG:
	case -EDQUOT:
		return err;
	default:
		return -EIO;
	}
}

/* ---- handles ---- */

static int whandle_new(struct fs *fs, const char *path, struct fs_wfile *wf, int writer,
		       struct fuse_file_info *fi)
{
	struct fs_whandle *h = calloc(1, sizeof(*h) + strlen(path) + 1);

	if (!h)
		return -ENOMEM;
	strcpy(h->path, path);
	h->wf = wf;
	h->writer = writer;
	pthread_mutex_lock(&fs->wr->lock);
	wf->opens++;
	pthread_mutex_unlock(&fs->wr->lock);
	fs_link_add(fs, &h->link, W_LINK);
	fi->fh = (uintptr_t)h;
	fi->keep_cache = 0;
	fi->direct_io = 0;
	return 0;
}

int fs_is_whandle(const struct fuse_file_info *fi)
{
	return ((const struct fs_link *)(uintptr_t)fi->fh)->dir == W_LINK;
}

/* The last close of a file: uploads what changed, and unless that failed the file
 * leaves the overlay (its staged bytes go); a failed one stays, bytes kept. */
static int whandle_close(struct fs *fs, struct fs_whandle *h)
{
	struct fs_wfile *wf = h->wf;
	struct fs_writes *wr = fs->wr;
	int ret = 0;

	fs_link_del(fs, &h->link);
	pthread_mutex_lock(&wr->lock);
	int last = --wf->opens == 0;
	pthread_mutex_unlock(&wr->lock);
	if (last) {
		ret = wfile_sync(fs, wf, 0);
		int broken = cache_stage_broken(wf->st);
		pthread_mutex_lock(&wr->lock);
		int keep = wf->failed && wf->listed && !broken;
		/* a file whose write failed goes: the writer was told, the disk is full */
		if (wf->listed && wf->opens == 0 && !keep && (broken || !cache_stage_dirty(wf->st)))
			wfile_unlist(wr, wf);
		pthread_mutex_unlock(&wr->lock);
		wfile_unref(fs, wf, keep);
	} else {
		wfile_unref(fs, wf, 1);
	}
	free(h);
	return ret;
}

void fs_whandle_free(struct fs *fs, struct fs_link *l)
{
	struct fs_whandle *h = (struct fs_whandle *)l;
	int ret = whandle_close(fs, h);

	(void)ret; /* logged by the upload */
}

/* ---- the operations ---- */

/* Opens path for reading or writing through the overlay. n: what the tree has at
 * path (NULL: nothing). Returns 1 when this is not the overlay's to open (a read of
 * a file the overlay does not hold), else 0 or -errno. */
int fs_w_open(struct fs *fs, const char *path, const struct fs_node *n,
	      struct fuse_file_info *fi)
{
	int writer = (fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC);
	struct fs_wfile *wf = NULL;
	int err = 0, made, ret;
	const char *key = wkey(fs, path, &err);

	if (!key) {
		if (writer)
			return err;
		return 1;
	}
	if (!writer) {
		pthread_mutex_lock(&fs->wr->lock);
		wf = wfile_find(fs->wr, key);
		if (wf)
			wf->refs++;
		pthread_mutex_unlock(&fs->wr->lock);
		if (!wf)
			return 1;
		ret = whandle_new(fs, path, wf, 0, fi);
		if (ret < 0)
			wfile_unref(fs, wf, 1);
		return ret;
	}
	if (n && n->kind != FS_FILE)
		return -EISDIR;
	struct fs_node pinned;
	if (n && !(fi->flags & O_TRUNC)) {
		/* changed in place: staged from the version the store has now */
		pinned = *n;
		ret = fs_overlay_node(fs, key, &pinned) ? 0 : fs_pin_run_file(fs, &pinned);
		if (ret < 0)
			return ret;
		n = &pinned;
	}
	ret = wfile_get(fs, key, n, !(fi->flags & O_TRUNC), 0, &wf, &made);
	if (ret < 0)
		return ret;
	if (!made && (fi->flags & O_TRUNC))
		ret = cache_stage_truncate(wf->st, 0);
	if (ret == 0 && (fi->flags & O_TRUNC))
		ts_now(&wf->mtime);
	if (ret == 0)
		ret = whandle_new(fs, path, wf, 1, fi);
	if (ret < 0)
		wfile_unref(fs, wf, 1);
	return ret;
}

static int op_create(const char *path, mode_t mode, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of();
	struct fs_wfile *wf;
	struct fs_node n, parent;
	char pkey[PATH_MAX];
	int err = 0, made, ret;
	const char *key = wkey(fs, path, &err);

	(void)mode;
	if (!key)
		return err;
	snprintf(pkey, sizeof(pkey), "%s", path);
	*strrchr(pkey, '/') = '\0';
	ret = fs_resolve(fs, pkey, &parent);
	if (ret < 0)
		return fs_errno(fs, ret, path);
	if (parent.kind != FS_DIR)
		return -ENOTDIR;
	ret = fs_resolve(fs, path, &n);
	if (ret == 0) {
		if (fi->flags & O_EXCL)
			return -EEXIST;
		return fs_w_open(fs, path, &n, fi);
	}
	if (ret != -ENOENT)
		return fs_errno(fs, ret, path);
	int excl = (fi->flags & O_EXCL) != 0;
	if (excl) {
		/* the listing may be older than the store: ask it */
		struct blob_stat st;
		ret = blob_stat(cache_store(fs->cache), key, &st);
		if (ret == 0)
			return -EEXIST;
		if (ret != -ENOENT)
			return fs_errno(fs, ret, path);
	}
	ret = wfile_get(fs, key, NULL, 0, excl, &wf, &made);
	if (ret < 0)
		return fs_errno(fs, ret, path);
	if (!made && excl) {
		wfile_unref(fs, wf, 1);
		return -EEXIST;
	}
	ret = whandle_new(fs, path, wf, 1, fi);
	if (ret < 0)
		wfile_unref(fs, wf, 1);
	return ret;
}

int fs_w_read(struct fuse_file_info *fi, char *buf, size_t size, off_t off)
{
	struct fs_whandle *h = (struct fs_whandle *)(uintptr_t)fi->fh;
	ssize_t n = cache_stage_read(h->wf->st, buf, size, (uint64_t)off);

	return n < 0 ? -EIO : (int)n;
}

int fs_w_read_buf(struct fuse_file_info *fi, struct fuse_bufvec **bufp, size_t size,
		  off_t off)
{
	struct fs_whandle *h = (struct fs_whandle *)(uintptr_t)fi->fh;
	struct fuse_bufvec *bv = malloc(sizeof(*bv));
	char *mem = malloc(size ? size : 1);
	int n;

	if (!bv || !mem) {
		free(bv);
		free(mem);
		return -ENOMEM;
	}
	n = fs_w_read(fi, mem, size, off);
	(void)h;
	if (n < 0) {
		free(bv);
		free(mem);
		return n;
	}
	*bv = FUSE_BUFVEC_INIT((size_t)n);
	bv->buf[0].mem = mem;
	*bufp = bv;
	return 0;
}

static int op_write(const char *path, const char *buf, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	struct fs_whandle *h = (struct fs_whandle *)(uintptr_t)fi->fh;
	ssize_t n;

	(void)path;
	if (!fs_of()->wr || !fs_is_whandle(fi) || !h->writer)
		return -EBADF;
	if (off < 0)
		return -EINVAL;
	n = cache_stage_write(h->wf->st, buf, size, (uint64_t)off);
	if (n < 0)
		return n == -ENOSPC || n == -EDQUOT || n == -EFBIG ? (int)n : -EIO;
	ts_now(&h->wf->mtime);
	return (int)n;
}

static int op_flush(const char *path, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of();
	struct fs_whandle *h = (struct fs_whandle *)(uintptr_t)fi->fh;

	(void)path;
	if (!fs->wr || !fs_is_whandle(fi) || !h->writer)
		return 0;
	return sync_errno(wfile_sync(fs, h->wf, 1));
}

static int op_fsync(const char *path, int datasync, struct fuse_file_info *fi)
{
	(void)datasync;
	return op_flush(path, fi);
}

int fs_w_release(struct fuse_file_info *fi)
{
	struct fs *fs = fs_of();

	return whandle_close(fs, (struct fs_whandle *)(uintptr_t)fi->fh);
}

static int op_truncate(const char *path, off_t size, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of();
	struct fs_wfile *wf;
	struct fs_node n;
	int err = 0, made, ret;
	const char *key;

	if (size < 0)
		return -EINVAL;
	if (fi && fs->wr && fs_is_whandle(fi)) {
		struct fs_whandle *h = (struct fs_whandle *)(uintptr_t)fi->fh;
		if (!h->writer)
			return -EBADF;
		ret = cache_stage_truncate(h->wf->st, (uint64_t)size);
		if (ret == 0)
			ts_now(&h->wf->mtime);
		return ret < 0 ? -EIO : 0;
	}
	key = wkey(fs, path, &err);
	if (!key)
		return err;
	ret = fs_resolve(fs, path, &n);
	if (ret < 0)
		return fs_errno(fs, ret, path);
	if (n.kind != FS_FILE)
		return -EISDIR;
	/* a file not open: staged (from the store unless emptied), changed, uploaded */
	int in_overlay = fs_overlay_node(fs, key, &n);
	if (!in_overlay && size > 0) {
		ret = fs_pin_run_file(fs, &n);
		if (ret < 0)
			return fs_errno(fs, ret, path);
	}
	ret = wfile_get(fs, key, &n, size > 0, 0, &wf, &made);
	if (ret < 0)
		return fs_errno(fs, ret, path);
	ret = cache_stage_truncate(wf->st, (uint64_t)size);
	if (ret == 0)
		ts_now(&wf->mtime);
	pthread_mutex_lock(&fs->wr->lock);
	wf->opens++;
	pthread_mutex_unlock(&fs->wr->lock);
	struct fs_whandle *h = calloc(1, sizeof(*h) + 1);
	if (!h) {
		pthread_mutex_lock(&fs->wr->lock);
		wf->opens--;
		pthread_mutex_unlock(&fs->wr->lock);
		wfile_unref(fs, wf, 1);
		return -ENOMEM;
	}
	h->wf = wf;
	h->writer = 1;
	fs_link_add(fs, &h->link, W_LINK);
	int up = whandle_close(fs, h); /* the last close uploads */
	return ret < 0 ? -EIO : sync_errno(up);
}

static int op_unlink(const char *path)
{
	struct fs *fs = fs_of();
	struct fs_node n;
	int err = 0, ret;
	const char *key = wkey(fs, path, &err);

	if (!key)
		return err;
	ret = fs_resolve(fs, path, &n);
	if (ret < 0)
		return fs_errno(fs, ret, path);
	if (n.kind != FS_FILE)
		return -EISDIR;
	int in_store = 1;
	pthread_mutex_lock(&fs->wr->lock);
	struct fs_wfile *wf = wfile_find(fs->wr, key);
	if (wf) {
		in_store = wf->in_store;
		wfile_unlist(fs->wr, wf);
		wf->refs++;
	}
	pthread_mutex_unlock(&fs->wr->lock);
	if (wf) {
		/* its handles read and write on; nothing of it is uploaded */
		wfile_unref(fs, wf, 0);
	}
	if (in_store) {
		ret = blob_remove(cache_store(fs->cache), key);
		if (ret == -ENOENT && wf)
			ret = 0;
		if (ret < 0 && ret != -ENOENT)
			return fs_errno(fs, ret, path);
	}
	listings_hide(fs, key, 1);
	return ret == -ENOENT ? -ENOENT : 0;
}

static int op_mkdir(const char *path, mode_t mode)
{
	struct fs *fs = fs_of();
	struct fs_node n;
	char dkey[PATH_MAX], pkey[PATH_MAX];
	int err = 0, ret;
	const char *key = wkey(fs, path, &err);

	(void)mode;
	if (!key)
		return err;
	ret = fs_resolve(fs, path, &n);
	if (ret == 0)
		return -EEXIST;
	if (ret != -ENOENT)
		return fs_errno(fs, ret, path);
	snprintf(pkey, sizeof(pkey), "%s", path);
	*strrchr(pkey, '/') = '\0';
	ret = fs_resolve(fs, pkey, &n);
	if (ret < 0)
		return fs_errno(fs, ret, path);
	if (n.kind != FS_DIR)
		return -ENOTDIR;
	if ((size_t)snprintf(dkey, sizeof(dkey), "%s/", key) >= sizeof(dkey))
		return -ENAMETOOLONG;
	pthread_mutex_lock(&fs->wr->lock);
	ret = dir_add(fs->wr, dkey);
	pthread_mutex_unlock(&fs->wr->lock);
	return ret;
}

/* Whether the folder dkey ("runs/.../") holds anything: overlay first, then the
 * store itself (a listing may be older). 0 empty, 1 not, or -errno. */
static int folder_used(struct fs *fs, const char *dkey)
{
	struct fs_ochild *c;
	struct blob_list l;
	size_t n;
	int ret = fs_overlay_list(fs, dkey, &c, &n);

	free(c);
	if (ret < 0)
		return ret;
	if (n)
		return 1;
	blob_list_init(&l);
	ret = blob_list(cache_store(fs->cache), dkey, &l);
	size_t count = l.count;
	blob_list_release(&l);
	if (ret == -ENOENT)
		return 0;
	return ret < 0 ? ret : count > 0;
}

static int op_rmdir(const char *path)
{
	struct fs *fs = fs_of();
	struct fs_node n;
	char dkey[PATH_MAX];
	int err = 0, ret;
	const char *key = wkey(fs, path, &err);

	if (!key)
		return err;
	ret = fs_resolve(fs, path, &n);
	if (ret < 0)
		return fs_errno(fs, ret, path);
	if (n.kind != FS_DIR)
		return -ENOTDIR;
	snprintf(dkey, sizeof(dkey), "%s/", key);
	ret = folder_used(fs, dkey);
	if (ret < 0)
		return fs_errno(fs, ret, path);
	if (ret > 0)
		return -ENOTEMPTY;
	pthread_mutex_lock(&fs->wr->lock);
	ssize_t i = dir_index(fs->wr, dkey);
	if (i >= 0)
		dir_del(fs->wr, (size_t)i);
	pthread_mutex_unlock(&fs->wr->lock);
	char prefix[PATH_MAX];
	parent_of(key, prefix, sizeof(prefix));
	cache_listing_edit(fs->cache, prefix, name_of(key), NULL);
	cache_forget_listing(fs->cache, dkey);
	return 0;
}

/* Moves the blob or open file at from to to (keys), to replaced; keep_folder: the
 * folder of from stays (a file moved out of it, not the folder itself moved). */
static int move_file(struct fs *fs, const char *from, const char *to, int keep_folder)
{
	struct fs_writes *wr = fs->wr;
	struct blob_stat st;
	int ret = 0;

	pthread_mutex_lock(&wr->lock);
	struct fs_wfile *dst = wfile_find(wr, to);
	if (dst) {
		/* what was being written at to is replaced: it never uploads */
		wfile_unlist(wr, dst);
		dst->refs++;
	}
	struct fs_wfile *wf = wfile_find(wr, from);
	if (wf)
		wf->refs++;
	pthread_mutex_unlock(&wr->lock);
	if (dst)
		wfile_unref(fs, dst, 0);
	if (wf) {
		/* staged here: it moves with its bytes and uploads under its new name */
		pthread_mutex_lock(&wf->sync_lock);
		ret = cache_stage_rekey(wf->st, to);
		char *nk = ret == 0 ? strdup(to) : NULL;
		pthread_mutex_lock(&wr->lock);
		int in_store = wf->in_store;
		if (nk) {
			free(wf->key);
			wf->key = nk;
			wf->in_store = 0;
			wf->excl = 0;
			wf->etag[0] = '\0';
		} else if (ret == 0) {
			ret = -ENOMEM;
		}
		int closed = wf->opens == 0;
		pthread_mutex_unlock(&wr->lock);
		pthread_mutex_unlock(&wf->sync_lock);
		if (ret == 0 && in_store) {
			int r = blob_remove(cache_store(fs->cache), from);
			if (r < 0 && r != -ENOENT)
				ret = r;
		}
		if (ret == 0)
			listings_hide(fs, from, keep_folder);
		if (ret == 0 && closed) {
			/* a file kept after a failed upload: it goes up now, as to; if that
			 * fails again its bytes stay kept (logged), and the rename stands */
			int up = wfile_sync(fs, wf, 1);
			pthread_mutex_lock(&wr->lock);
			if (up == 0 && wf->opens == 0 && wf->listed && !cache_stage_dirty(wf->st))
				wfile_unlist(wr, wf);
			int keep = wf->listed;
			pthread_mutex_unlock(&wr->lock);
			wfile_unref(fs, wf, keep);
			return ret;
		}
		wfile_unref(fs, wf, 1);
		return ret;
	}
	ret = blob_move(cache_store(fs->cache), from, to, &st);
	if (ret < 0)
		return ret;
	listings_hide(fs, from, keep_folder);
	listings_show(fs, to, &st);
	return 0;
}

/* Collects every blob key under the folder dkey, from the store. */
static int collect(struct fs *fs, const char *dkey, char ***keys, size_t *n, size_t *cap,
		   int depth)
{
	struct blob_list l;
	int ret;

	if (depth > 256)
		return -ELOOP;
	blob_list_init(&l);
	ret = blob_list(cache_store(fs->cache), dkey, &l);
	if (ret == -ENOENT) {
		blob_list_release(&l);
		return 0;
	}
	for (size_t i = 0; ret == 0 && i < l.count; i++) {
		char *k = NULL;
		if (asprintf(&k, "%s%s%s", dkey, l.entries[i].name, l.entries[i].is_dir ? "/" : "") < 0) {
			ret = -ENOMEM;
			break;
		}
		if (l.entries[i].is_dir) {
			ret = collect(fs, k, keys, n, cap, depth + 1);
			free(k);
			continue;
		}
		if (*n == *cap) {
			size_t nc = *cap ? *cap * 2 : 64;
			char **nk = realloc(*keys, nc * sizeof(*nk));
			if (!nk) {
				free(k);
				ret = -ENOMEM;
				break;
			}
			*keys = nk;
			*cap = nc;
		}
		(*keys)[(*n)++] = k;
	}
	blob_list_release(&l);
	return ret;
}

/* Moves a folder: every blob and open file under it, one by one (not atomic). */
static int move_folder(struct fs *fs, const char *from, const char *to)
{
	char fk[PATH_MAX], tk[PATH_MAX], nk[PATH_MAX * 2];
	char **keys = NULL;
	size_t n = 0, cap = 0, flen;
	int ret;

	snprintf(fk, sizeof(fk), "%s/", from);
	snprintf(tk, sizeof(tk), "%s/", to);
	flen = strlen(fk);
	ret = collect(fs, fk, &keys, &n, &cap, 0);
	/* the overlay's files under it (being written, or kept) */
	pthread_mutex_lock(&fs->wr->lock);
	for (struct fs_wfile *wf = fs->wr->files; ret == 0 && wf; wf = wf->next) {
		if (strncmp(wf->key, fk, flen) != 0)
			continue;
		int dup = 0;
		for (size_t i = 0; i < n && !dup; i++)
			dup = strcmp(keys[i], wf->key) == 0;
		if (dup)
			continue;
		if (n == cap) {
			size_t nc = cap ? cap * 2 : 64;
			char **nkeys = realloc(keys, nc * sizeof(*nkeys));
			if (!nkeys) {
				ret = -ENOMEM;
				break;
			}
			keys = nkeys;
			cap = nc;
		}
		if (!(keys[n] = strdup(wf->key)))
			ret = -ENOMEM;
		else
			n++;
	}
	/* the folders made here under it */
	for (size_t i = 0; ret == 0 && i < fs->wr->ndirs; i++) {
		char *d = fs->wr->dirs[i];
		if (strncmp(d, fk, flen) == 0 || strcmp(d, fk) == 0) {
			snprintf(nk, sizeof(nk), "%s%s", tk, d + flen);
			char *nd = strdup(nk);
			if (!nd) {
				ret = -ENOMEM;
				break;
			}
			free(d);
			fs->wr->dirs[i] = nd;
		}
	}
	if (ret == 0)
		ret = dir_add(fs->wr, tk);
	pthread_mutex_unlock(&fs->wr->lock);
	for (size_t i = 0; ret == 0 && i < n; i++) {
		snprintf(nk, sizeof(nk), "%s%s", tk, keys[i] + flen);
		ret = move_file(fs, keys[i], nk, 0);
	}
	for (size_t i = 0; i < n; i++)
		free(keys[i]);
	free(keys);
	char prefix[PATH_MAX];
	parent_of(from, prefix, sizeof(prefix));
	cache_listing_edit(fs->cache, prefix, name_of(from), NULL);
	cache_forget_listing(fs->cache, fk);
	cache_forget_listing(fs->cache, tk);
	return ret;
}

static int op_rename(const char *from, const char *to, unsigned int flags)
{
	struct fs *fs = fs_of();
	struct fs_node a, b;
	int err = 0, ret;
	const char *fkey = wkey(fs, from, &err);
	const char *tkey = fkey ? wkey(fs, to, &err) : NULL;

	if (!fkey || !tkey)
		return err;
	if (flags & RENAME_EXCHANGE)
		return -EINVAL;
	ret = fs_resolve(fs, from, &a);
	if (ret < 0)
		return fs_errno(fs, ret, from);
	ret = fs_resolve(fs, to, &b);
	if (ret < 0 && ret != -ENOENT)
		return fs_errno(fs, ret, to);
	int exists = ret == 0;
	if (exists && (flags & RENAME_NOREPLACE))
		return -EEXIST;
	if (strcmp(fkey, tkey) == 0)
		return 0;
	char pkey[PATH_MAX];
	struct fs_node parent;
	snprintf(pkey, sizeof(pkey), "%s", to);
	*strrchr(pkey, '/') = '\0';
	ret = fs_resolve(fs, pkey, &parent);
	if (ret < 0)
		return fs_errno(fs, ret, to);
	if (parent.kind != FS_DIR)
		return -ENOTDIR;
	if (a.kind == FS_FILE) {
		if (exists && b.kind == FS_DIR)
			return -EISDIR;
		ret = move_file(fs, fkey, tkey, 1);
		return ret < 0 ? fs_errno(fs, ret, from) : 0;
	}
	size_t flen = strlen(fkey);
	if (strncmp(tkey, fkey, flen) == 0 && tkey[flen] == '/')
		return -EINVAL; /* into itself */
	if (exists) {
		if (b.kind != FS_DIR)
			return -ENOTDIR;
		char dk[PATH_MAX];
		snprintf(dk, sizeof(dk), "%s/", tkey);
		ret = folder_used(fs, dk);
		if (ret < 0)
			return fs_errno(fs, ret, to);
		if (ret > 0)
			return -ENOTEMPTY;
	}
	ret = move_folder(fs, fkey, tkey);
	return ret < 0 ? fs_errno(fs, ret, from) : 0;
}

/* chmod, chown, utimens: succeed and change nothing where writes are allowed (so
 * cp -p and rsync work), as the store keeps no such thing. */
static int nochange(const char *path)
{
	struct fs *fs = fs_of();
	struct fs_node n;
	int err = 0;

	if (!wkey(fs, path, &err))
		return err;
	int ret = fs_resolve(fs, path, &n);
	return ret < 0 ? fs_errno(fs, ret, path) : 0;
}

static int op_chmod(const char *p, mode_t m, struct fuse_file_info *fi)
{
	(void)m;
	(void)fi;
	return nochange(p);
}

static int op_chown(const char *p, uid_t u, gid_t g, struct fuse_file_info *fi)
{
	(void)u;
	(void)g;
	(void)fi;
	return nochange(p);
}

static int op_utimens(const char *p, const struct timespec tv[2], struct fuse_file_info *fi)
{
	(void)tv;
	(void)fi;
	return nochange(p);
}

/* What a blob store has no use for: a clear refusal where writes are allowed. */
static int refuse(const char *path, int err)
{
	struct fs *fs = fs_of();
	int e = 0;

	return wkey(fs, path, &e) ? err : e;
}

static int op_mknod(const char *p, mode_t m, dev_t d)
{
	(void)d;
	return refuse(p, S_ISREG(m) ? -EOPNOTSUPP : -EPERM);
}

static int op_symlink(const char *t, const char *p)
{
	(void)t;
	return refuse(p, -EPERM);
}

static int op_link(const char *a, const char *b)
{
	(void)b;
	return refuse(a, -EPERM);
}

static int op_setxattr(const char *p, const char *n, const char *v, size_t s, int f)
{
	(void)n;
	(void)v;
	(void)s;
	(void)f;
	return refuse(p, -EOPNOTSUPP);
}

static int op_removexattr(const char *p, const char *n)
{
	(void)n;
	return refuse(p, -EOPNOTSUPP);
}

static int op_fallocate(const char *p, int mode, off_t o, off_t l, struct fuse_file_info *fi)
{
	(void)mode;
	(void)o;
	(void)l;
	(void)fi;
	return refuse(p, -EOPNOTSUPP);
}

int fs_w_statfs(struct fs *fs, struct statvfs *st)
{
	struct statvfs cst;

	if (!fs->wr)
		return 0;
	st->f_flag &= ~(unsigned long)ST_RDONLY;
	if (statvfs(cache_folder(fs->cache), &cst) == 0) {
		st->f_bsize = cst.f_bsize;
		st->f_frsize = cst.f_frsize;
		st->f_blocks = cst.f_blocks;
		st->f_bfree = cst.f_bfree;
		st->f_bavail = cst.f_bavail;
	}
	return 0;
}

void fs_w_ops(struct fuse_operations *ops)
{
	ops->create = op_create;
	ops->write = op_write;
	ops->flush = op_flush;
	ops->fsync = op_fsync;
	ops->truncate = op_truncate;
	ops->unlink = op_unlink;
	ops->mkdir = op_mkdir;
	ops->rmdir = op_rmdir;
	ops->rename = op_rename;
	ops->chmod = op_chmod;
	ops->chown = op_chown;
	ops->utimens = op_utimens;
	ops->mknod = op_mknod;
	ops->symlink = op_symlink;
	ops->link = op_link;
	ops->setxattr = op_setxattr;
	ops->removexattr = op_removexattr;
	ops->fallocate = op_fallocate;
}

/* ---- life cycle ---- */

int fs_writes_init(struct fs *fs)
{
	struct fs_writes *wr = calloc(1, sizeof(*wr));

	if (!wr)
		return -ENOMEM;
	pthread_mutex_init(&wr->lock, NULL);
	fs->wr = wr;
	return 0;
}

void fs_writes_free(struct fs *fs)
{
	struct fs_writes *wr = fs->wr;

	if (!wr)
		return;
	while (wr->files) {
		struct fs_wfile *wf = wr->files;
		wr->files = wf->next;
		wf->listed = 0;
		LOG_WARN("runs: '%s' is not in the store (its upload failed); its bytes are "
			 "kept in %s", wf->key, cache_stage_path(wf->st));
		if (wf->refs == 0) {
			cache_stage_free(wf->st, 1);
			pthread_mutex_destroy(&wf->sync_lock);
			free(wf->key);
			free(wf);
		}
	}
	for (size_t i = 0; i < wr->ndirs; i++)
		free(wr->dirs[i]);
	free(wr->dirs);
	pthread_mutex_destroy(&wr->lock);
	free(wr);
	fs->wr = NULL;
}
