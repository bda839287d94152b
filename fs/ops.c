/*
 * ops.c: the FUSE callbacks. Each one translates, calls the tree or the cache, and
 * answers; errors are -errno as the high-level FUSE API wants them.
 *
 * Consistency: a runs/ file is opened at the etag the store has at open time (one
 * properties request; the cached listing's etag when the store is unreachable), and
 * every read of that open file is pinned to it, so a file replaced in the store
 * while open fails with EIO rather than mixing versions. A registered file is pinned
 * to the record's etag for good and keeps the kernel page cache between opens.
 */
#define FUSE_USE_VERSION 312
#include <fuse.h>

#include "fs.h"
#include "fs_private.h"
#include "../blob/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

void fs_link_add(struct fs *fs, struct fs_link *l, int dir)
{
	l->dir = dir;
	l->prev = NULL;
	pthread_mutex_lock(&fs->lock);
	l->next = fs->opened;
	if (l->next)
		l->next->prev = l;
	fs->opened = l;
	pthread_mutex_unlock(&fs->lock);
}

void fs_link_del(struct fs *fs, struct fs_link *l)
{
	pthread_mutex_lock(&fs->lock);
	if (l->prev)
		l->prev->next = l->next;
	else
		fs->opened = l->next;
	if (l->next)
		l->next->prev = l->prev;
	pthread_mutex_unlock(&fs->lock);
}

struct fs_handle {
	struct fs_link link;
	struct cache_file *cf;
	int immutable;
	int page_cache;		/* counted by fs_open_begin */
	int logged;		/* the etag change has been logged once */
	char etag[BLOB_ETAG_MAX];
	char path[];		/* the mount path, for log lines */
};

/* The control file: the mount's figures as JSON (stats.c), made at each open. No
 * listing shows it; `artifactfs stats MOUNTPOINT` reads it. */
#define STATS_FILE "/.artifactfs-stats"
#define STATS_LINK 3

struct stats_handle {
	struct fs_link link;
	size_t len;
	char *text;
};

static int is_stats(const struct fuse_file_info *fi)
{
	return ((const struct fs_link *)(uintptr_t)fi->fh)->dir == STATS_LINK;
}

static struct fs *fs_of(void)
{
	return fuse_get_context()->private_data;
}

static void *op_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
	struct fs *fs = fs_of();

	/* Entries, attributes and absences stay in the kernel for the TTL: the same
	 * time the tree itself trusts a listing. */
	cfg->entry_timeout = fs->ttl;
	cfg->attr_timeout = fs->ttl;
	cfg->negative_timeout = fs->ttl;
	cfg->use_ino = 0;
	/* an unlinked open file is ours to keep until its close (write.c), not renamed
	 * to a hidden name by libfuse */
	cfg->hard_remove = 1;
	conn->max_readahead = FS_READ_MAX; /* the kernel keeps at most its own offer */
	conn->max_write = FS_READ_MAX;
	conn->want |= FUSE_CAP_ASYNC_READ;
	/* open(O_TRUNC) comes as one open, not a truncate of the blob first */
	conn->want |= conn->capable & FUSE_CAP_ATOMIC_O_TRUNC;
	/* zero-copy replies from cache files (see op_read_buf) */
	conn->want |= conn->capable & (FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE);
	if (cache_start(fs->cache) < 0)
		LOG_ERROR("cannot start the prefetch threads; reads go on without prefetch");
	return fs;
}

static int op_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of();
	struct fs_node n;
	int ret;

	(void)fi;
	if (strcmp(path, STATS_FILE) == 0) {
		memset(&n, 0, sizeof(n));
		n.kind = FS_FILE;
		n.mtime = fs->started;
		fs_node_stat(fs, &n, st);
		return 0;
	}
	ret = fs_resolve(fs, path, &n);
	if (ret < 0)
		return fs_errno(fs, ret, path);
	fs_node_stat(fs, &n, st);
	return 0;
}

/*
 * An open folder: its entries as they were at the first readdir, so that the offsets
 * libfuse resumes from mean the same entries however long the listing takes, and the
 * folder is listed from the store once per opendir.
 */
struct dir_entry {
	char *name;
	struct stat st;
};

struct dir_handle {
	struct fs_link link;
	struct dir_entry *e;
	size_t n, cap;
	int filled;
	int err;
};

struct fill_ctx {
	struct fs *fs;
	struct dir_handle *d;
};

static int fill_one(void *arg, const char *name, const struct fs_node *n)
{
	struct fill_ctx *ctx = arg;
	struct dir_handle *d = ctx->d;

	if (d->n == d->cap) {
		size_t cap = d->cap ? d->cap * 2 : 64;
		struct dir_entry *ne = realloc(d->e, cap * sizeof(*ne));
		if (!ne) {
			d->err = -ENOMEM;
			return 1;
		}
		d->e = ne;
		d->cap = cap;
	}
	d->e[d->n].name = strdup(name);
	if (!d->e[d->n].name) {
		d->err = -ENOMEM;
		return 1;
	}
	fs_node_stat(ctx->fs, n, &d->e[d->n].st);
	d->n++;
	return 0;
}

static void dir_free(struct fs *fs, struct dir_handle *d)
{
	fs_link_del(fs, &d->link);
	for (size_t i = 0; i < d->n; i++)
		free(d->e[i].name);
	free(d->e);
	free(d);
}

static int op_opendir(const char *path, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of();
	struct dir_handle *d = calloc(1, sizeof(*d));

	(void)path;
	if (!d)
		return -ENOMEM;
	fs_link_add(fs, &d->link, 1);
	fi->fh = (uintptr_t)d;
	return 0;
}

static int op_releasedir(const char *path, struct fuse_file_info *fi)
{
	(void)path;
	dir_free(fs_of(), (struct dir_handle *)(uintptr_t)fi->fh);
	return 0;
}

static int op_readdir(const char *path, void *buf, fuse_fill_dir_t filler, off_t off,
		      struct fuse_file_info *fi, enum fuse_readdir_flags flags)
{
	struct fs *fs = fs_of();
	struct dir_handle *d = (struct dir_handle *)(uintptr_t)fi->fh;

	(void)flags;
	if (off < 0)
		return -EINVAL;
	if (!d->filled || off == 0) {
		/* a new listing at offset 0 (rewinddir) */
		struct fill_ctx ctx = { fs, d };
		for (size_t i = 0; i < d->n; i++)
			free(d->e[i].name);
		d->n = 0;
		d->err = 0;
		int ret = fs_list(fs, path, fill_one, &ctx);
		if (ret == 0)
			ret = d->err;
		if (ret < 0)
			return fs_errno(fs, ret, path);
		d->filled = 1;
	}
	/* Entries carry offsets, so that libfuse answers READDIRPLUS with the entries'
	 * attributes and node ids: ls -l then needs no lookup per file. */
	if (off < 1 && filler(buf, ".", NULL, 1, 0))
		return 0;
	if (off < 2 && filler(buf, "..", NULL, 2, 0))
		return 0;
	for (size_t i = off > 2 ? (size_t)off - 2 : 0; i < d->n; i++)
		if (filler(buf, d->e[i].name, &d->e[i].st, (off_t)i + 3, FUSE_FILL_DIR_PLUS))
			break;
	return 0;
}

static int op_open(const char *path, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of();
	struct fs_handle *h = NULL;
	struct fs_node n;
	int ret;

	int writer = (fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC);

	if (strcmp(path, STATS_FILE) == 0) {
		if (writer)
			return -EROFS;
		struct stats_handle *sh = calloc(1, sizeof(*sh));
		if (!sh || !(sh->text = fs_stats_json(fs))) {
			free(sh);
			return -ENOMEM;
		}
		sh->len = strlen(sh->text);
		fi->direct_io = 1;
		fi->fh = (uintptr_t)sh;
		fs_link_add(fs, &sh->link, STATS_LINK);
		return 0;
	}
	if (writer && !fs->wr)
		return -EROFS;
	ret = fs_resolve(fs, path, &n);
	if (ret < 0)
		return fs_errno(fs, ret, path);
	if (n.kind != FS_FILE)
		return -EISDIR;
	if (fs->wr) {
		ret = fs_w_open(fs, path, &n, fi);
		if (ret <= 0)
			return ret < 0 ? fs_errno(fs, ret, path) : 0;
	}
	if (!n.immutable) {
		ret = fs_pin_run_file(fs, &n);
		if (ret < 0)
			return fs_errno(fs, ret, path);
	}
	h = calloc(1, sizeof(*h) + strlen(path) + 1);
	if (!h)
		return -ENOMEM;
	memcpy(h->path, path, strlen(path) + 1);
	memcpy(h->etag, n.etag, sizeof(h->etag));
	h->immutable = n.immutable;
	ret = cache_file_open(fs->cache, n.key, n.etag, n.size, n.sha256[0] ? n.sha256 : NULL,
			      &h->cf);
	if (ret < 0) {
		free(h);
		return fs_errno(fs, ret, path);
	}
	fi->fh = (uintptr_t)h;
	fs_link_add(fs, &h->link, 0);
	if (n.immutable) {
		fi->keep_cache = 1; /* a registered version never changes */
	} else {
		int keep = 0;
		fi->direct_io = fs_open_begin(fs, path, n.etag, &keep);
		fi->keep_cache = keep;
		h->page_cache = !fi->direct_io;
	}
	return 0;
}

static int op_read(const char *path, char *buf, size_t size, off_t off,
		   struct fuse_file_info *fi)
{
	struct fs_handle *h = (struct fs_handle *)(uintptr_t)fi->fh;
	ssize_t n;

	(void)path;
	if (off < 0)
		return -EINVAL;
	if (is_stats(fi)) {
		struct stats_handle *sh = (struct stats_handle *)(uintptr_t)fi->fh;
		size_t from = (uint64_t)off < sh->len ? (size_t)off : sh->len;
		size_t take = sh->len - from < size ? sh->len - from : size;
		memcpy(buf, sh->text + from, take);
		return (int)take;
	}
	if (fs_is_whandle(fi))
		return fs_w_read(fi, buf, size, off);
	n = cache_file_read(h->cf, buf, size, (uint64_t)off);
	if (n == -ESTALE) {
		if (!h->logged) {
			h->logged = 1;
			fs_log_changed(fs_of(), h->path, h->immutable, h->etag);
		}
		return -EIO;
	}
	if (n < 0)
		return fs_errno(fs_of(), (int)n, h->path);
	return (int)n;
}

/* Without a copy through the daemon: the reply points libfuse at the cache files,
 * which it splices to the kernel. Reads the cache cannot map (a cache that cannot
 * store, or that cannot hold its files unchanged) take the copying path. */
static int op_read_buf(const char *path, struct fuse_bufvec **bufp, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	struct fs *fs = fs_of();
	struct fs_handle *h = (struct fs_handle *)(uintptr_t)fi->fh;
	struct cache_span sp[FS_SPANS_MAX];
	struct fuse_bufvec *bv;
	int n = 0;
	ssize_t got;

	if (off < 0)
		return -EINVAL;
	if (fs_is_whandle(fi))
		return fs_w_read_buf(fi, bufp, size, off);
	fs_sent_release(); /* this thread's previous reply is sent */
	got = is_stats(fi) ? -EAGAIN
			   : cache_file_map(h->cf, (uint64_t)off, size, sp, FS_SPANS_MAX, &n);
	if (got == -EAGAIN) {
		bv = malloc(sizeof(*bv));
		char *mem = malloc(size ? size : 1);
		if (!bv || !mem) {
			free(bv);
			free(mem);
			return -ENOMEM;
		}
		int ret = op_read(path, mem, size, off, fi);
		if (ret < 0) {
			free(bv);
			free(mem);
			return ret;
		}
		*bv = FUSE_BUFVEC_INIT((size_t)ret);
		bv->buf[0].mem = mem;
		*bufp = bv;
		return 0;
	}
	if (got < 0) {
		if (got == -ESTALE) {
			if (!h->logged) {
				h->logged = 1;
				fs_log_changed(fs, h->path, h->immutable, h->etag);
			}
			return -EIO;
		}
		return fs_errno(fs, (int)got, h->path);
	}
	bv = malloc(sizeof(*bv) + (n > 1 ? (size_t)(n - 1) * sizeof(struct fuse_buf) : 0));
	if (!bv || fs_sent_keep(fs, sp, n) < 0) {
		for (int i = 0; i < n; i++)
			cache_span_release(fs->cache, &sp[i]);
		free(bv);
		return -ENOMEM;
	}
	*bv = FUSE_BUFVEC_INIT(0);
	bv->count = n ? (size_t)n : 1;
	for (int i = 0; i < n; i++) {
		bv->buf[i] = (struct fuse_buf){ .size = sp[i].len,
						.flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK,
						.fd = sp[i].fd, .pos = (off_t)sp[i].off };
	}
	*bufp = bv;
	return 0;
}

static void handle_free(struct fs *fs, struct fs_handle *h)
{
	fs_link_del(fs, &h->link);
	if (h->page_cache)
		fs_open_end(fs, h->path);
	cache_file_close(h->cf);
	free(h);
}

static void stats_free(struct fs *fs, struct stats_handle *sh)
{
	fs_link_del(fs, &sh->link);
	free(sh->text);
	free(sh);
}

static int op_release(const char *path, struct fuse_file_info *fi)
{
	(void)path;
	if (is_stats(fi)) {
		stats_free(fs_of(), (struct stats_handle *)(uintptr_t)fi->fh);
		return 0;
	}
	if (fs_is_whandle(fi))
		return fs_w_release(fi);
	handle_free(fs_of(), (struct fs_handle *)(uintptr_t)fi->fh);
	return 0;
}

void fs_release_all(struct fs *fs)
{
	/* files whose release the kernel had not sent when the mount ended */
	while (fs->opened) {
		struct fs_link *l = fs->opened;
		if (l->dir == STATS_LINK)
			stats_free(fs, (struct stats_handle *)l);
		else if (l->dir == 2)
			fs_whandle_free(fs, l);
		else if (l->dir)
			dir_free(fs, (struct dir_handle *)l);
		else
			handle_free(fs, (struct fs_handle *)l);
	}
}

static int op_readlink(const char *path, char *buf, size_t size)
{
	struct fs *fs = fs_of();
	struct fs_node n;
	int ret = fs_resolve(fs, path, &n);

	if (ret < 0)
		return fs_errno(fs, ret, path);
	if (n.kind != FS_LINK)
		return -EINVAL;
	snprintf(buf, size, "%s", n.target);
	return 0;
}

static int op_statfs(const char *path, struct statvfs *st)
{
	(void)path;
	memset(st, 0, sizeof(*st));
	st->f_bsize = 4096;
	st->f_frsize = 4096;
	st->f_namemax = 255;
	st->f_flag = ST_RDONLY | ST_NOSUID | ST_NODEV;
	return fs_w_statfs(fs_of(), st);
}

/* Extended attributes: where each file comes from, for getfattr. */
static const char *const xattr_names[] = { "user.artifactfs.key", "user.artifactfs.etag",
					   "user.artifactfs.sha256", "user.artifactfs.store" };

/* Without --xattrs, ENOSYS: the kernel then stops asking, so the extended attribute
 * queries of ls -l (SELinux label, ACL: two per file) never reach the daemon. */
static int op_getxattr(const char *path, const char *name, char *value, size_t size)
{
	struct fs *fs = fs_of();
	struct fs_node n;
	const char *v = NULL;
	int ret;

	if (!fs->xattrs)
		return -ENOSYS;
	if (strncmp(name, "user.artifactfs.", 16) != 0)
		return -ENODATA;
	ret = fs_resolve(fs, path, &n);

	if (ret < 0)
		return fs_errno(fs, ret, path);
	if (n.kind == FS_FILE) {
		if (strcmp(name, xattr_names[0]) == 0)
			v = n.key;
		else if (strcmp(name, xattr_names[1]) == 0)
			v = n.etag;
		else if (strcmp(name, xattr_names[2]) == 0 && n.sha256[0])
			v = n.sha256;
		else if (strcmp(name, xattr_names[3]) == 0)
			v = cache_store(fs->cache)->id;
	}
	if (!v)
		return -ENODATA;
	size_t len = strlen(v);
	if (size == 0)
		return (int)len;
	if (size < len)
		return -ERANGE;
	memcpy(value, v, len);
	return (int)len;
}

static int op_listxattr(const char *path, char *list, size_t size)
{
	struct fs *fs = fs_of();
	struct fs_node n;
	size_t len = 0;
	int ret;

	if (!fs->xattrs)
		return -ENOSYS;
	ret = fs_resolve(fs, path, &n);

	if (ret < 0)
		return fs_errno(fs, ret, path);
	if (n.kind != FS_FILE)
		return 0;
	for (size_t i = 0; i < sizeof(xattr_names) / sizeof(*xattr_names); i++) {
		if (i == 2 && !n.sha256[0])
			continue;
		size_t l = strlen(xattr_names[i]) + 1;
		if (size && len + l <= size)
			memcpy(list + len, xattr_names[i], l);
		else if (size)
			return -ERANGE;
		len += l;
	}
	return (int)len;
}

/* Everything that would change the tree: the mount is read-only. */
static int op_rofs_path(const char *path)
{
	(void)path;
	return -EROFS;
}

static int op_mknod(const char *p, mode_t m, dev_t d)
{
	(void)m;
	(void)d;
	return op_rofs_path(p);
}

static int op_mkdir(const char *p, mode_t m)
{
	(void)m;
	return op_rofs_path(p);
}

static int op_symlink(const char *t, const char *p)
{
	(void)t;
	return op_rofs_path(p);
}

static int op_rename(const char *a, const char *b, unsigned int flags)
{
	(void)b;
	(void)flags;
	return op_rofs_path(a);
}

static int op_link(const char *a, const char *b)
{
	(void)b;
	return op_rofs_path(a);
}

static int op_chmod(const char *p, mode_t m, struct fuse_file_info *fi)
{
	(void)m;
	(void)fi;
	return op_rofs_path(p);
}

static int op_chown(const char *p, uid_t u, gid_t g, struct fuse_file_info *fi)
{
	(void)u;
	(void)g;
	(void)fi;
	return op_rofs_path(p);
}

static int op_truncate(const char *p, off_t o, struct fuse_file_info *fi)
{
	(void)o;
	(void)fi;
	return op_rofs_path(p);
}

static int op_write(const char *p, const char *b, size_t s, off_t o, struct fuse_file_info *fi)
{
	(void)b;
	(void)s;
	(void)o;
	(void)fi;
	return op_rofs_path(p);
}

static int op_create(const char *p, mode_t m, struct fuse_file_info *fi)
{
	(void)m;
	(void)fi;
	return op_rofs_path(p);
}

static int op_utimens(const char *p, const struct timespec tv[2], struct fuse_file_info *fi)
{
	(void)tv;
	(void)fi;
	return op_rofs_path(p);
}

static int op_setxattr(const char *p, const char *n, const char *v, size_t s, int f)
{
	(void)n;
	(void)v;
	(void)s;
	(void)f;
	return op_rofs_path(p);
}

static int op_removexattr(const char *p, const char *n)
{
	(void)n;
	return op_rofs_path(p);
}

static int op_fallocate(const char *p, int mode, off_t o, off_t l, struct fuse_file_info *fi)
{
	(void)mode;
	(void)o;
	(void)l;
	(void)fi;
	return op_rofs_path(p);
}

const struct fuse_operations fs_ops = {
	.init = op_init,
	.getattr = op_getattr,
	.opendir = op_opendir,
	.readdir = op_readdir,
	.releasedir = op_releasedir,
	.open = op_open,
	.read = op_read,
	.read_buf = op_read_buf,
	.release = op_release,
	.readlink = op_readlink,
	.statfs = op_statfs,
	.getxattr = op_getxattr,
	.listxattr = op_listxattr,
	.mknod = op_mknod,
	.mkdir = op_mkdir,
	.unlink = op_rofs_path,
	.rmdir = op_rofs_path,
	.symlink = op_symlink,
	.rename = op_rename,
	.link = op_link,
	.chmod = op_chmod,
	.chown = op_chown,
	.truncate = op_truncate,
	.write = op_write,
	.create = op_create,
	.utimens = op_utimens,
	.setxattr = op_setxattr,
	.removexattr = op_removexattr,
	.fallocate = op_fallocate,
};
