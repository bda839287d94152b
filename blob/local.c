/*
 * local.c: the file:// backend, a store kept in a local directory.
 *
 * Keys map to paths below the root; every key segment is checked (blob_name_ok) and
 * every path is walked from the root's fd one segment at a time without following
 * symlinks, so no key and no link inside the store can reach outside the root. A blob's etag is derived from inode, size and
 * nanosecond mtime: any write or replacement of the file gives a new etag, which is
 * what lets the cache and the registry trust it.
 *
 * Every write goes to a temp file first (its name starts with LOCAL_TMP_PREFIX, which
 * listings skip), made durable with fsync(2), then renamed into place, so a blob is
 * never seen half written. Create-if-absent link(2)s the temp file instead (link
 * fails atomically when the name is taken); replace-if-unchanged holds flock(2) on
 * the parent directory while it compares the etag and renames. Uploads in parts
 * write at their offsets into one temp file in LOCAL_UPLOADS at the root. A folder
 * left empty by a delete or a move is removed, as a blob store has no empty folders.
 */
#include "blob_private.h"
#include "log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define LOCAL_TMP_PREFIX ".artifactfs-tmp."

struct blob_local {
	struct blob_store base;
	int rootfd; /* the store's folder; every path is resolved below it */
};

static struct blob_local *local_of(struct blob_store *s)
{
	return (struct blob_local *)s;
}

static void local_etag(const struct stat *st, char etag[BLOB_ETAG_MAX])
{
	snprintf(etag, BLOB_ETAG_MAX, "\"%llx-%llx-%llx.%09ld\"", (unsigned long long)st->st_ino,
		 (unsigned long long)st->st_size, (unsigned long long)st->st_mtim.tv_sec,
		 st->st_mtim.tv_nsec);
}

/* Checks that every segment of key is a plain name (a prefix may end in '/'). */
static int local_key_ok(const char *key, int is_prefix)
{
	const char *p = key;

	if (*key == '\0')
		return is_prefix;
	for (;;) {
		const char *slash = strchr(p, '/');
		size_t len = slash ? (size_t)(slash - p) : strlen(p);
		if (!slash && len == 0 && is_prefix)
			return 1; /* the trailing '/' of a prefix */
		if (!blob_name_ok(p, len))
			return 0;
		if (!slash)
			return 1;
		p = slash + 1;
	}
}

static int local_errno(int e)
{
	switch (e) {
	case ENOENT:
	case ENOTDIR:
	case ENAMETOOLONG:
	case ELOOP:
		return -ENOENT;
	case EACCES:
	case EPERM:
		return -EACCES;
	case ENOMEM:
		return -ENOMEM;
	case EEXIST:
		return -EEXIST;
	case ENOSPC:
	case EDQUOT:
		return -ENOSPC;
	default:
		return -EIO;
	}
}

/*
 * Opens the folder named by the first len bytes of key (segments separated by '/'),
 * walking one segment at a time from the root with O_NOFOLLOW: a symlink anywhere in
 * the store is never followed, so nothing outside the root is reachable. With
 * create, missing folders are made. Returns an fd or -errno.
 */
static int local_dir(struct blob_local *l, const char *key, size_t len, int create)
{
	int dfd = dup(l->rootfd);
	const char *p = key, *end = key + len;

	if (dfd < 0)
		return -errno;
	while (p < end) {
		const char *slash = memchr(p, '/', (size_t)(end - p));
		size_t n = slash ? (size_t)(slash - p) : (size_t)(end - p);
		char seg[NAME_MAX + 1];
		int nfd;
		if (n == 0) { /* the '/' that ends a prefix */
			p++;
			continue;
		}
		if (!blob_name_ok(p, n)) {
			close(dfd);
			return -ENOENT;
		}
		memcpy(seg, p, n);
		seg[n] = '\0';
		if (create && mkdirat(dfd, seg, 0755) < 0 && errno != EEXIST) {
			int e = local_errno(errno);
			close(dfd);
			return e;
		}
		nfd = openat(dfd, seg, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		close(dfd);
		if (nfd < 0)
			return local_errno(errno);
		dfd = nfd;
		p += n + (slash ? 1 : 0);
	}
	return dfd;
}

/* Splits a blob key into its folder (an open fd) and its last segment. */
static int local_parent(struct blob_local *l, const char *key, int create, const char **name)
{
	const char *slash = strrchr(key, '/');
	const char *last = slash ? slash + 1 : key;

	if (!local_key_ok(key, 0))
		return -ENOENT;
	*name = last;
	return local_dir(l, key, (size_t)(last - key), create);
}

static int local_list(struct blob_store *s, const char *prefix, struct blob_list *out)
{
	struct blob_local *l = local_of(s);
	struct dirent *d;
	DIR *dir = NULL;
	int ret, fd;

	if (!local_key_ok(prefix, 1))
		return -ENOENT;
	fd = local_dir(l, prefix, strlen(prefix), 0);
	if (fd < 0)
		return fd;
	dir = fdopendir(fd);
	if (!dir) {
		ret = local_errno(errno);
		close(fd);
		goto out;
	}
	while ((d = readdir(dir))) {
		struct blob_entry e = { 0 };
		struct stat st;
		if (strcmp(d->d_name, ".") == 0 || strcmp(d->d_name, "..") == 0 ||
		    strncmp(d->d_name, LOCAL_TMP_PREFIX, strlen(LOCAL_TMP_PREFIX)) == 0)
			continue;
		if (fstatat(dirfd(dir), d->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue; /* removed since readdir */
		if (S_ISDIR(st.st_mode)) {
			e.is_dir = 1;
		} else if (S_ISREG(st.st_mode)) {
			e.size = (uint64_t)st.st_size;
			e.mtime = st.st_mtim;
			local_etag(&st, e.etag);
		} else {
			LOG_DEBUG("skipping '%s%s': neither file nor folder", prefix, d->d_name);
			continue;
		}
		e.name = d->d_name;
		ret = blob_list_add(out, &e);
		if (ret < 0)
			goto out;
	}
	ret = 0;
out:
	if (dir)
		closedir(dir);
	return ret;
}

/* Opens a blob (never through a symlink). */
static int local_open_blob(struct blob_local *l, const char *key, int flags)
{
	const char *name;
	int dfd = local_parent(l, key, 0, &name), fd;

	if (dfd < 0)
		return dfd;
	fd = openat(dfd, name, flags | O_NOFOLLOW | O_CLOEXEC);
	fd = fd < 0 ? local_errno(errno) : fd;
	close(dfd);
	return fd;
}

static int local_stat(struct blob_store *s, const char *key, struct blob_stat *out)
{
	struct stat st;
	int fd = local_open_blob(local_of(s), key, O_PATH), ret = 0;

	if (fd < 0)
		return fd;
	if (fstat(fd, &st) < 0)
		ret = local_errno(errno);
	else if (!S_ISREG(st.st_mode))
		ret = -ENOENT;
	if (ret == 0) {
		out->size = (uint64_t)st.st_size;
		out->mtime = st.st_mtim;
		local_etag(&st, out->etag);
	}
	close(fd);
	return ret;
}

#define LOCAL_PIECE (1u << 20)

static ssize_t local_read_to(struct blob_store *s, const char *key, const char *etag,
			     uint64_t off, size_t len, blob_sink_fn sink, void *ctx)
{
	char now[BLOB_ETAG_MAX], after[BLOB_ETAG_MAX];
	char *buf = NULL;
	struct stat st;
	size_t done = 0;
	ssize_t ret;
	int fd = local_open_blob(local_of(s), key, O_RDONLY);

	if (fd < 0 || fstat(fd, &st) < 0) {
		ret = fd < 0 ? fd : local_errno(errno);
		/* a pinned read of a deleted blob: that version is gone */
		if (ret == -ENOENT && etag && *etag)
			ret = -ESTALE;
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		ret = -ENOENT;
		goto out;
	}
	local_etag(&st, now);
	if (etag && *etag && strcmp(etag, now) != 0) {
		ret = -ESTALE;
		goto out;
	}
	buf = malloc(len < LOCAL_PIECE ? (len ? len : 1) : LOCAL_PIECE);
	if (!buf) {
		ret = -ENOMEM;
		goto out;
	}
	while (done < len) {
		size_t want = len - done < LOCAL_PIECE ? len - done : LOCAL_PIECE;
		ssize_t n = pread(fd, buf, want, (off_t)(off + done));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			ret = -EIO;
			goto out;
		}
		if (n == 0)
			break;
		ret = sink(ctx, buf, (size_t)n);
		if (ret < 0)
			goto out;
		done += (size_t)n;
	}
	/* A write in place during the read changes mtime: the bytes may be a mix. */
	if (fstat(fd, &st) < 0) {
		ret = -EIO;
		goto out;
	}
	local_etag(&st, after);
	if (strcmp(after, now) != 0) {
		ret = -ESTALE;
		goto out;
	}
	ret = (ssize_t)done;
out:
	free(buf);
	if (fd >= 0)
		close(fd);
	return ret;
}

/* Writes data to a new temp file in the folder dfd; its name goes into tmp. */
static int local_write_tmp(int dfd, const void *data, size_t len, char *tmp, size_t size)
{
	unsigned char rnd[8];
	int fd = -1, ret = 0;

	for (int tries = 0; fd < 0 && tries < 100; tries++) {
		if (getentropy(rnd, sizeof(rnd)) < 0)
			return -EIO;
		snprintf(tmp, size, LOCAL_TMP_PREFIX "%02x%02x%02x%02x%02x%02x%02x%02x", rnd[0],
			 rnd[1], rnd[2], rnd[3], rnd[4], rnd[5], rnd[6], rnd[7]);
		fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
		if (fd < 0 && errno != EEXIST)
			return local_errno(errno);
	}
	if (fd < 0)
		return -EIO;
	for (size_t done = 0; done < len;) {
		ssize_t n = write(fd, (const char *)data + done, len - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			ret = local_errno(errno);
			break;
		}
		done += (size_t)n;
	}
	if (ret == 0 && fsync(fd) < 0)
		ret = local_errno(errno);
	close(fd);
	if (ret < 0)
		unlinkat(dfd, tmp, 0);
	return ret;
}

static int local_create(struct blob_store *s, const char *key, const void *data, size_t len)
{
	char tmp[64];
	const char *name;
	int dfd, ret;

	if (!local_key_ok(key, 0))
		return -EINVAL;
	dfd = local_parent(local_of(s), key, 1, &name);
	if (dfd < 0)
		return dfd;
	ret = local_write_tmp(dfd, data, len, tmp, sizeof(tmp));
	if (ret == 0) {
		/* link(2) never replaces: of concurrent creators exactly one wins */
		if (linkat(dfd, tmp, dfd, name, 0) < 0)
			ret = local_errno(errno);
		unlinkat(dfd, tmp, 0);
	}
	close(dfd);
	return ret;
}

static int local_replace(struct blob_store *s, const char *key, const char *etag,
			 const void *data, size_t len)
{
	char tmp[64], now[BLOB_ETAG_MAX];
	const char *name;
	struct stat st;
	int dfd, ret;

	if (!local_key_ok(key, 0))
		return -EINVAL;
	dfd = local_parent(local_of(s), key, 0, &name);
	if (dfd < 0)
		return dfd;
	/* The folder lock serialises replacers of every record in it. */
	while (flock(dfd, LOCK_EX) < 0) {
		if (errno != EINTR) {
			ret = -EIO;
			goto out;
		}
	}
	if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
		ret = local_errno(errno);
		goto out;
	}
	local_etag(&st, now);
	if (!S_ISREG(st.st_mode) || strcmp(now, etag) != 0) {
		ret = -ESTALE;
		goto out;
	}
	ret = local_write_tmp(dfd, data, len, tmp, sizeof(tmp));
	if (ret == 0 && renameat(dfd, tmp, dfd, name) < 0) {
		ret = local_errno(errno);
		unlinkat(dfd, tmp, 0);
	}
out:
	close(dfd); /* drops the lock */
	return ret;
}

/* Makes a temp file in the folder dfd, its name into tmp: an fd or -errno. */
static int local_tmp_open(int dfd, char *tmp, size_t size)
{
	unsigned char rnd[8];

	for (int tries = 0; tries < 100; tries++) {
		if (getentropy(rnd, sizeof(rnd)) < 0)
			return -EIO;
		snprintf(tmp, size, LOCAL_TMP_PREFIX "%02x%02x%02x%02x%02x%02x%02x%02x", rnd[0],
			 rnd[1], rnd[2], rnd[3], rnd[4], rnd[5], rnd[6], rnd[7]);
		int fd = openat(dfd, tmp, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
		if (fd >= 0)
			return fd;
		if (errno != EEXIST)
			return local_errno(errno);
	}
	return -EIO;
}

static int local_pwrite_all(int fd, const void *data, size_t len, uint64_t off)
{
	for (size_t done = 0; done < len;) {
		ssize_t n = pwrite(fd, (const char *)data + done, len - done, (off_t)(off + done));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return local_errno(errno);
		done += (size_t)n;
	}
	return 0;
}

/* Removes the folders of key left empty, deepest first, up to (not including) the
 * top-level folder. Cannot fail. */
static void local_prune(struct blob_local *l, const char *key)
{
	size_t len = strlen(key);

	for (;;) {
		while (len > 0 && key[len - 1] != '/')
			len--;
		if (len == 0)
			return;
		len--; /* the folder key[0..len) */
		size_t plen = len;
		while (plen > 0 && key[plen - 1] != '/')
			plen--;
		if (plen == 0)
			return; /* a top-level folder stays */
		char name[NAME_MAX + 1];
		if (len - plen > NAME_MAX)
			return;
		memcpy(name, key + plen, len - plen);
		name[len - plen] = '\0';
		int dfd = local_dir(l, key, plen, 0);
		if (dfd < 0)
			return;
		int r = unlinkat(dfd, name, AT_REMOVEDIR);
		close(dfd);
		if (r < 0)
			return;
	}
}

/* Puts the file tmp of folder tfd at key: renamed over what is there, or with excl
 * linked only if the name is free (the caller then removes tmp). On failure tmp
 * stays where it was. */
static int local_place(struct blob_local *l, int tfd, const char *tmp, const char *key,
		       int excl, struct blob_stat *out)
{
	const char *name;
	struct stat st;
	int dfd = local_parent(l, key, 1, &name), ret = 0;

	if (dfd < 0)
		return dfd;
	if (excl ? linkat(tfd, tmp, dfd, name, 0) < 0 : renameat(tfd, tmp, dfd, name) < 0)
		ret = local_errno(errno);
	if (ret == 0 && fsync(dfd) < 0)
		ret = local_errno(errno);
	if (ret == 0 && out) {
		if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			ret = local_errno(errno);
		} else {
			out->size = (uint64_t)st.st_size;
			out->mtime = st.st_mtim;
			local_etag(&st, out->etag);
		}
	}
	close(dfd);
	return ret;
}

static int local_put(struct blob_store *s, const char *key, const void *data, size_t len,
		     int excl, struct blob_stat *out)
{
	struct blob_local *l = local_of(s);
	char tmp[64];
	const char *name;
	int dfd, ret;

	if (!local_key_ok(key, 0))
		return -EINVAL;
	dfd = local_parent(l, key, 1, &name);
	if (dfd < 0)
		return dfd;
	ret = local_write_tmp(dfd, data, len, tmp, sizeof(tmp));
	if (ret == 0) {
		ret = local_place(l, dfd, tmp, key, excl, out);
		if (ret < 0 || excl)
			unlinkat(dfd, tmp, 0);
	}
	close(dfd);
	return ret;
}

#define LOCAL_UPLOADS LOCAL_TMP_PREFIX "uploads"

struct blob_upload {
	int dfd;	/* LOCAL_UPLOADS */
	int fd;		/* the temp file */
	char tmp[64];
	char key[];
};

static int local_upload_begin(struct blob_store *s, const char *key, struct blob_upload **out)
{
	struct blob_local *l = local_of(s);
	struct blob_upload *u;

	if (!local_key_ok(key, 0))
		return -EINVAL;
	u = calloc(1, sizeof(*u) + strlen(key) + 1);
	if (!u)
		return -ENOMEM;
	memcpy(u->key, key, strlen(key) + 1);
	if (mkdirat(l->rootfd, LOCAL_UPLOADS, 0700) < 0 && errno != EEXIST) {
		int e = local_errno(errno);
		free(u);
		return e;
	}
	u->dfd = openat(l->rootfd, LOCAL_UPLOADS, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (u->dfd < 0) {
		int e = local_errno(errno);
		free(u);
		return e;
	}
	u->fd = local_tmp_open(u->dfd, u->tmp, sizeof(u->tmp));
	if (u->fd < 0) {
		int e = u->fd;
		close(u->dfd);
		free(u);
		return e;
	}
	*out = u;
	return 0;
}

static int local_upload_part(struct blob_store *s, struct blob_upload *u, unsigned index,
			     uint64_t off, const void *data, size_t len)
{
	(void)s;
	(void)index;
	return local_pwrite_all(u->fd, data, len, off);
}

static void local_upload_free(struct blob_upload *u, int drop)
{
	close(u->fd);
	if (drop)
		unlinkat(u->dfd, u->tmp, 0);
	close(u->dfd);
	free(u);
}

static int local_upload_commit(struct blob_store *s, struct blob_upload *u, unsigned nparts,
			       uint64_t size, int excl, struct blob_stat *out)
{
	int ret = 0;

	(void)nparts;
	if (ftruncate(u->fd, (off_t)size) < 0 || fsync(u->fd) < 0)
		ret = local_errno(errno);
	if (ret == 0)
		ret = local_place(local_of(s), u->dfd, u->tmp, u->key, excl, out);
	local_upload_free(u, ret < 0 || excl);
	return ret;
}

static void local_upload_abort(struct blob_store *s, struct blob_upload *u)
{
	(void)s;
	local_upload_free(u, 1);
}

static int local_remove(struct blob_store *s, const char *key)
{
	struct blob_local *l = local_of(s);
	const char *name;
	struct stat st;
	int dfd = local_parent(l, key, 0, &name), ret = 0;

	if (dfd < 0)
		return dfd;
	if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		ret = local_errno(errno);
	else if (!S_ISREG(st.st_mode))
		ret = -ENOENT;
	else if (unlinkat(dfd, name, 0) < 0)
		ret = local_errno(errno);
	close(dfd);
	if (ret == 0)
		local_prune(l, key);
	return ret;
}

static int local_move(struct blob_store *s, const char *src, const char *dst,
		      struct blob_stat *out)
{
	struct blob_local *l = local_of(s);
	const char *sname;
	struct stat st;
	int sfd, ret;

	if (!local_key_ok(dst, 0))
		return -EINVAL;
	sfd = local_parent(l, src, 0, &sname);
	if (sfd < 0)
		return sfd;
	if (fstatat(sfd, sname, &st, AT_SYMLINK_NOFOLLOW) < 0)
		ret = local_errno(errno);
	else if (!S_ISREG(st.st_mode))
		ret = -ENOENT;
	else
		ret = local_place(l, sfd, sname, dst, 0, out);
	close(sfd);
	if (ret == 0)
		local_prune(l, src);
	return ret;
}

static void local_destroy(struct blob_store *s)
{
	struct blob_local *l = local_of(s);

	if (l->rootfd >= 0)
		close(l->rootfd);
	free(l->base.id);
	free(l);
}

static const struct blob_ops local_ops = {
	.name = "file",
	.destroy = local_destroy,
	.list = local_list,
	.stat = local_stat,
	.read_to = local_read_to,
	.create = local_create,
	.replace = local_replace,
	.put = local_put,
	.upload_begin = local_upload_begin,
	.upload_part = local_upload_part,
	.upload_commit = local_upload_commit,
	.upload_abort = local_upload_abort,
	.remove = local_remove,
	.move = local_move,
};

int blob_local_open(const char *url, struct blob_store **out, char *err, size_t errlen)
{
	const char *path = url + strlen("file://");
	char real[PATH_MAX];
	struct blob_local *l = NULL;
	struct stat st;
	int ret;

	if (path[0] != '/') {
		snprintf(err, errlen, "bad store URL '%.200s': file:// needs an absolute path "
			 "(file:///abs/path)", url);
		ret = -EINVAL;
		goto fail;
	}
	if (!realpath(path, real) || stat(real, &st) < 0) {
		snprintf(err, errlen, "store %.200s: %s", url, strerror(errno));
		ret = -ENOENT;
		goto fail;
	}
	if (!S_ISDIR(st.st_mode)) {
		snprintf(err, errlen, "store %.200s: not a directory", url);
		ret = -ENOTDIR;
		goto fail;
	}
	l = calloc(1, sizeof(*l));
	if (!l)
		goto nomem;
	l->base.ops = &local_ops;
	l->rootfd = open(real, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (l->rootfd < 0) {
		snprintf(err, errlen, "store %.200s: %s", url, strerror(errno));
		ret = -errno;
		free(l);
		goto fail;
	}
	if (asprintf(&l->base.id, "file://%s", real) < 0) {
		l->base.id = NULL;
		close(l->rootfd);
		goto nomem;
	}
	*out = &l->base;
	return 0;
nomem:
	snprintf(err, errlen, "out of memory");
	ret = -ENOMEM;
	free(l);
fail:
	return ret;
}
