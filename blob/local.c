/*
 * local.c: the file:// backend, a store kept in a local directory.
 *
 * Keys map to paths below the root; every key segment is checked (blob_name_ok) so
 * no key can leave the root. A blob's etag is derived from inode, size and
 * nanosecond mtime: any write or replacement of the file gives a new etag, which is
 * what lets the cache and the registry trust it.
 *
 * Writes are small records only: create-if-absent writes a temp file and link(2)s it
 * into place (link fails atomically when the name is taken); replace-if-unchanged
 * holds flock(2) on the parent directory while it compares the etag and renames.
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
	char *root; /* absolute, no trailing '/' */
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

static int local_path(struct blob_local *l, const char *key, int is_prefix, char *path,
		      size_t size)
{
	if (!local_key_ok(key, is_prefix))
		return -ENOENT;
	if ((size_t)snprintf(path, size, "%s/%s", l->root, key) >= size)
		return -ENAMETOOLONG;
	return 0;
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
	default:
		return -EIO;
	}
}

static int local_list(struct blob_store *s, const char *prefix, struct blob_list *out)
{
	struct blob_local *l = local_of(s);
	char path[PATH_MAX];
	struct dirent *d;
	DIR *dir = NULL;
	int ret;

	ret = local_path(l, prefix, 1, path, sizeof(path));
	if (ret < 0)
		goto out;
	dir = opendir(path);
	if (!dir) {
		ret = local_errno(errno);
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

static int local_stat(struct blob_store *s, const char *key, struct blob_stat *out)
{
	struct blob_local *l = local_of(s);
	char path[PATH_MAX];
	struct stat st;
	int ret;

	ret = local_path(l, key, 0, path, sizeof(path));
	if (ret < 0)
		return ret;
	if (lstat(path, &st) < 0)
		return local_errno(errno);
	if (!S_ISREG(st.st_mode))
		return -ENOENT;
	out->size = (uint64_t)st.st_size;
	out->mtime = st.st_mtim;
	local_etag(&st, out->etag);
	return 0;
}

#define LOCAL_PIECE (1u << 20)

static ssize_t local_read_to(struct blob_store *s, const char *key, const char *etag,
			     uint64_t off, size_t len, blob_sink_fn sink, void *ctx)
{
	struct blob_local *l = local_of(s);
	char path[PATH_MAX], now[BLOB_ETAG_MAX], after[BLOB_ETAG_MAX];
	char *buf = NULL;
	struct stat st;
	size_t done = 0;
	ssize_t ret;
	int fd = -1;

	ret = local_path(l, key, 0, path, sizeof(path));
	if (ret < 0)
		goto out;
	fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0) {
		ret = local_errno(errno);
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

/* Creates the folders above path (mkdir -p of its parent). */
static int local_mkparents(struct blob_local *l, const char *path)
{
	char tmp[PATH_MAX];
	size_t rootlen = strlen(l->root);

	snprintf(tmp, sizeof(tmp), "%s", path);
	for (char *p = tmp + rootlen + 1; (p = strchr(p, '/')); p++) {
		*p = '\0';
		if (mkdir(tmp, 0755) < 0 && errno != EEXIST)
			return local_errno(errno);
		*p = '/';
	}
	return 0;
}

/* Writes data to a new temp file beside path and returns its name in tmp. */
static int local_write_tmp(const char *path, const void *data, size_t len, char *tmp,
			   size_t size)
{
	const char *slash = strrchr(path, '/');
	int fd, ret = 0;

	snprintf(tmp, size, "%.*s/" LOCAL_TMP_PREFIX "XXXXXX", (int)(slash - path), path);
	fd = mkstemp(tmp);
	if (fd < 0)
		return local_errno(errno);
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
	if (ret == 0 && (fchmod(fd, 0644) < 0 || fsync(fd) < 0))
		ret = local_errno(errno);
	close(fd);
	if (ret < 0)
		unlink(tmp);
	return ret;
}

static int local_create(struct blob_store *s, const char *key, const void *data, size_t len)
{
	struct blob_local *l = local_of(s);
	char path[PATH_MAX], tmp[PATH_MAX + 32];
	int ret;

	ret = local_path(l, key, 0, path, sizeof(path));
	if (ret < 0)
		return ret == -ENOENT ? -EINVAL : ret;
	ret = local_mkparents(l, path);
	if (ret < 0)
		return ret;
	ret = local_write_tmp(path, data, len, tmp, sizeof(tmp));
	if (ret < 0)
		return ret;
	/* link(2) never replaces: of concurrent creators exactly one wins */
	if (link(tmp, path) < 0)
		ret = local_errno(errno);
	unlink(tmp);
	return ret;
}

static int local_replace(struct blob_store *s, const char *key, const char *etag,
			 const void *data, size_t len)
{
	struct blob_local *l = local_of(s);
	char path[PATH_MAX], tmp[PATH_MAX + 32], now[BLOB_ETAG_MAX];
	struct stat st;
	int dfd = -1, ret;

	ret = local_path(l, key, 0, path, sizeof(path));
	if (ret < 0)
		return ret == -ENOENT ? -EINVAL : ret;
	char *slash = strrchr(path, '/');
	*slash = '\0';
	dfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	*slash = '/';
	if (dfd < 0)
		return local_errno(errno);
	/* The folder lock serialises replacers of every record in it. */
	while (flock(dfd, LOCK_EX) < 0) {
		if (errno != EINTR) {
			ret = -EIO;
			goto out;
		}
	}
	if (lstat(path, &st) < 0) {
		ret = local_errno(errno);
		goto out;
	}
	local_etag(&st, now);
	if (strcmp(now, etag) != 0) {
		ret = -ESTALE;
		goto out;
	}
	ret = local_write_tmp(path, data, len, tmp, sizeof(tmp));
	if (ret < 0)
		goto out;
	if (rename(tmp, path) < 0) {
		ret = local_errno(errno);
		unlink(tmp);
	}
out:
	close(dfd); /* drops the lock */
	return ret;
}

static void local_destroy(struct blob_store *s)
{
	struct blob_local *l = local_of(s);

	free(l->root);
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
	l->root = strdup(strcmp(real, "/") == 0 ? "" : real);
	if (!l->root || asprintf(&l->base.id, "file://%s", real) < 0) {
		l->base.id = NULL;
		goto nomem;
	}
	*out = &l->base;
	return 0;
nomem:
	snprintf(err, errlen, "out of memory");
	ret = -ENOMEM;
	if (l) {
		free(l->root);
		free(l);
	}
fail:
	return ret;
}
