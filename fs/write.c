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
 * The overlay these operations keep (files being written, folders made here) is in
 * overlay.c.
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

/* An open file of the overlay: first member as for every handle. */
struct fs_whandle {
	struct fs_link link;
	struct fs_wfile *wf;
	int writer;			/* opened for writing */
	int append;			/* O_APPEND: every write at the staged end */
	char path[];
};

#define W_LINK 2 /* struct fs_link.dir of a write handle */

static struct fs *fs_of(void)
{
	return fuse_get_context()->private_data;
}

/* ---- handles ---- */

static int whandle_new(struct fs *fs, const char *path, struct fs_wfile *wf, int writer,
		       struct fuse_file_info *fi)
{
	struct fs_whandle *h = calloc(1, sizeof(*h) + strlen(path) + 1);

	if (!h)
		return -ENOMEM;
	memcpy(h->path, path, strlen(path) + 1);
	h->wf = wf;
	h->writer = writer;
	h->append = writer && (fi->flags & O_APPEND);
	fs_link_add(fs, &h->link, W_LINK);
	fi->fh = (uintptr_t)h;
	/* every read and write goes to the staged file: no page cache to keep coherent
	 * with other opens of the path (nor with a reader pinned to the blob's old
	 * version), and large writes go to the daemon without a copy into it */
	fi->keep_cache = 0;
	fi->direct_io = 1;
	return 0;
}

int fs_is_whandle(const struct fuse_file_info *fi)
{
	return ((const struct fs_link *)(uintptr_t)fi->fh)->dir == W_LINK;
}

static int whandle_close(struct fs *fs, struct fs_whandle *h)
{
	struct fs_wfile *wf = h->wf;

	fs_link_del(fs, &h->link);
	free(h);
	return fs_wfile_close(fs, wf);
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
	const char *key = fs_wkey(fs, path, &err);

	if (!key) {
		if (writer)
			return err;
		return 1;
	}
	if (!writer) {
		pthread_mutex_lock(&fs->wr->lock);
		wf = fs_wfile_find(fs->wr, key);
		if (wf) {
			wf->refs++;
			wf->opens++;
		}
		pthread_mutex_unlock(&fs->wr->lock);
		if (!wf)
			return 1;
		ret = whandle_new(fs, path, wf, 0, fi);
		if (ret < 0)
			fs_wfile_unopen(fs, wf);
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
	ret = fs_wfile_get(fs, key, n, !(fi->flags & O_TRUNC), 0, &wf, &made);
	if (ret < 0)
		return ret;
	if (!made && (fi->flags & O_TRUNC))
		ret = cache_stage_truncate(wf->st, 0);
	if (ret == 0 && (fi->flags & O_TRUNC))
		fs_ts_now(&wf->mtime);
	if (ret == 0)
		ret = whandle_new(fs, path, wf, 1, fi);
	if (ret < 0)
		fs_wfile_unopen(fs, wf);
	return ret;
}

/* A create of a file that exists: opened as open(2) would (O_RDONLY|O_CREAT reads it). */
static int create_open(struct fs *fs, const char *path, const struct fs_node *n,
		       struct fuse_file_info *fi)
{
	int ret = fs_w_open(fs, path, n, fi);

	return ret == 1 ? fs_ops.open(path, fi) : ret;
}

static int op_create(const char *path, mode_t mode, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of();
	struct fs_wfile *wf;
	struct fs_node n, parent;
	char pkey[PATH_MAX];
	int err = 0, made, ret;
	const char *key = fs_wkey(fs, path, &err);

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
		return create_open(fs, path, &n, fi);
	}
	if (ret != -ENOENT)
		return fs_errno(fs, ret, path);
	int excl = (fi->flags & O_EXCL) != 0;
	if (excl || !(fi->flags & O_TRUNC)) {
		/* the listing may be older than the store: ask it. A blob there is not
		 * made anew (O_EXCL) nor emptied (no O_TRUNC: its bytes are kept). */
		struct blob_stat st;
		ret = blob_stat(cache_store(fs->cache), key, &st);
		if (ret == 0 && excl)
			return -EEXIST;
		if (ret == 0) {
			char folder[PATH_MAX];
			fs_parent_of(key, folder, sizeof(folder));
			cache_forget_listing(fs->cache, folder);
			memset(&n, 0, sizeof(n));
			n.kind = FS_FILE;
			n.size = st.size;
			n.mtime = st.mtime;
			snprintf(n.key, sizeof(n.key), "%s", key);
			memcpy(n.etag, st.etag, sizeof(n.etag));
			return create_open(fs, path, &n, fi);
		}
		if (ret != -ENOENT)
			return fs_errno(fs, ret, path);
	}
	ret = fs_wfile_get(fs, key, NULL, 0, excl, &wf, &made);
	if (ret < 0)
		return fs_errno(fs, ret, path);
	if (!made && excl) {
		fs_wfile_unopen(fs, wf);
		return -EEXIST;
	}
	ret = whandle_new(fs, path, wf, 1, fi);
	if (ret < 0)
		fs_wfile_unopen(fs, wf);
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
	if (h->append)
		n = cache_stage_append(h->wf->st, buf, size);
	else
		n = cache_stage_write(h->wf->st, buf, size, (uint64_t)off);
	if (n < 0)
		return n == -ENOSPC || n == -EDQUOT || n == -EFBIG ? (int)n : -EIO;
	fs_ts_now(&h->wf->mtime);
	return (int)n;
}

static int op_flush(const char *path, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of();
	struct fs_whandle *h = (struct fs_whandle *)(uintptr_t)fi->fh;

	(void)path;
	if (!fs->wr || !fs_is_whandle(fi) || !h->writer)
		return 0;
	return fs_sync_errno(fs_wfile_sync(fs, h->wf, 1));
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
			fs_ts_now(&h->wf->mtime);
		return ret < 0 ? -EIO : 0;
	}
	key = fs_wkey(fs, path, &err);
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
	ret = fs_wfile_get(fs, key, &n, size > 0, 0, &wf, &made);
	if (ret < 0)
		return fs_errno(fs, ret, path);
	ret = cache_stage_truncate(wf->st, (uint64_t)size);
	if (ret == 0)
		fs_ts_now(&wf->mtime);
	struct fs_whandle *h = calloc(1, sizeof(*h) + 1);
	if (!h) {
		fs_wfile_unopen(fs, wf);
		return -ENOMEM;
	}
	h->wf = wf;
	h->writer = 1;
	fs_link_add(fs, &h->link, W_LINK);
	/* uploaded now, even while another handle (one whose release has not come in
	 * yet) keeps the file open: truncate(2) returns with the store changed */
	int up = ret < 0 ? 0 : fs_wfile_sync(fs, wf, 1);
	int last = whandle_close(fs, h);
	if (up == 0)
		up = last;
	return ret < 0 ? -EIO : fs_sync_errno(up);
}

static int op_unlink(const char *path)
{
	struct fs *fs = fs_of();
	struct fs_node n;
	int err = 0, ret;
	const char *key = fs_wkey(fs, path, &err);

	if (!key)
		return err;
	ret = fs_resolve(fs, path, &n);
	if (ret < 0)
		return fs_errno(fs, ret, path);
	if (n.kind != FS_FILE)
		return -EISDIR;
	int in_store = 1;
	pthread_mutex_lock(&fs->wr->lock);
	struct fs_wfile *wf = fs_wfile_find(fs->wr, key);
	if (wf) {
		in_store = wf->in_store;
		fs_wfile_unlist(fs->wr, wf);
		wf->refs++;
	}
	pthread_mutex_unlock(&fs->wr->lock);
	if (wf) {
		/* its handles read and write on; nothing of it is uploaded */
		fs_wfile_unref(fs, wf, 0);
	}
	if (in_store) {
		ret = blob_remove(cache_store(fs->cache), key);
		if (ret == -ENOENT && wf)
			ret = 0;
		if (ret < 0 && ret != -ENOENT)
			return fs_errno(fs, ret, path);
	}
	fs_listings_hide(fs, key, 1);
	return ret == -ENOENT ? -ENOENT : 0;
}

static int op_mkdir(const char *path, mode_t mode)
{
	struct fs *fs = fs_of();
	struct fs_node n;
	char dkey[PATH_MAX], pkey[PATH_MAX];
	int err = 0, ret;
	const char *key = fs_wkey(fs, path, &err);

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
	ret = fs_wdir_add(fs->wr, dkey);
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
	const char *key = fs_wkey(fs, path, &err);

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
	ssize_t i = fs_wdir_index(fs->wr, dkey);
	if (i >= 0)
		fs_wdir_del(fs->wr, (size_t)i);
	pthread_mutex_unlock(&fs->wr->lock);
	char prefix[PATH_MAX];
	fs_parent_of(key, prefix, sizeof(prefix));
	cache_listing_edit(fs->cache, prefix, fs_name_of(key), NULL);
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
	struct fs_wfile *dst = fs_wfile_find(wr, to);
	if (dst) {
		/* what was being written at to is replaced: it never uploads */
		fs_wfile_unlist(wr, dst);
		dst->refs++;
	}
	struct fs_wfile *wf = fs_wfile_find(wr, from);
	if (wf)
		wf->refs++;
	pthread_mutex_unlock(&wr->lock);
	if (dst)
		fs_wfile_unref(fs, dst, 0);
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
			fs_listings_hide(fs, from, keep_folder);
		if (ret == 0 && closed) {
			/* a file kept after a failed upload: it goes up now, as to; if that
			 * fails again its bytes stay kept (logged), and the rename stands */
			int up = fs_wfile_sync(fs, wf, 1);
			pthread_mutex_lock(&wr->lock);
			if (up == 0 && wf->opens == 0 && wf->listed && !cache_stage_dirty(wf->st))
				fs_wfile_unlist(wr, wf);
			int keep = wf->listed;
			pthread_mutex_unlock(&wr->lock);
			fs_wfile_unref(fs, wf, keep);
			return ret;
		}
		fs_wfile_unref(fs, wf, 1);
		return ret;
	}
	ret = blob_move(cache_store(fs->cache), from, to, &st);
	if (ret < 0)
		return ret;
	fs_listings_hide(fs, from, keep_folder);
	fs_listings_show(fs, to, &st);
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
		ret = fs_wdir_add(fs->wr, tk);
	pthread_mutex_unlock(&fs->wr->lock);
	for (size_t i = 0; ret == 0 && i < n; i++) {
		snprintf(nk, sizeof(nk), "%s%s", tk, keys[i] + flen);
		ret = move_file(fs, keys[i], nk, 0);
	}
	for (size_t i = 0; i < n; i++)
		free(keys[i]);
	free(keys);
	char prefix[PATH_MAX];
	fs_parent_of(from, prefix, sizeof(prefix));
	cache_listing_edit(fs->cache, prefix, fs_name_of(from), NULL);
	cache_forget_listing(fs->cache, fk);
	cache_forget_listing(fs->cache, tk);
	return ret;
}

static int op_rename(const char *from, const char *to, unsigned int flags)
{
	struct fs *fs = fs_of();
	struct fs_node a, b;
	int err = 0, ret;
	const char *fkey = fs_wkey(fs, from, &err);
	const char *tkey = fkey ? fs_wkey(fs, to, &err) : NULL;

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
	if (exists && b.kind != FS_DIR)
		return -ENOTDIR;
	/* the target may hold blobs (another node's) that the listing here does not
	 * show yet: the store is asked, as rmdir asks it */
	char dk[PATH_MAX];
	snprintf(dk, sizeof(dk), "%s/", tkey);
	ret = folder_used(fs, dk);
	if (ret < 0)
		return fs_errno(fs, ret, to);
	if (ret > 0)
		return flags & RENAME_NOREPLACE ? -EEXIST : -ENOTEMPTY;
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

	if (!fs_wkey(fs, path, &err))
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

	return fs_wkey(fs, path, &e) ? err : e;
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

