/*
 * front.c: what the FUSE callbacks need beyond the tree: how an open uses the page
 * cache, errno mapping with rate-limited logging, pinning a runs/ file to a version,
 * and the log line of a changed blob.
 */
#include "fs.h"
#include "fs_private.h"
#include "../blob/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the page cache of runs/ files ---- */

#define FS_OPEN_KEEP 4096 /* remembered closed paths; beyond, they are forgotten */

int fs_open_begin(struct fs *fs, const char *path, const char *etag, int *keep)
{
	size_t b = (size_t)(fs_hash(path) % FS_OPEN_BUCKETS);
	struct fs_open *o;
	int direct = 0;

	*keep = 0;
	pthread_mutex_lock(&fs->lock);
	for (o = fs->opens[b]; o && strcmp(o->path, path) != 0; o = o->next)
		;
	if (!o) {
		if (fs->nopens >= FS_OPEN_KEEP) {
			/* forget closed paths: only their keep-cache hint is lost */
			for (size_t i = 0; i < FS_OPEN_BUCKETS; i++) {
				struct fs_open **pp = &fs->opens[i];
				while (*pp) {
					struct fs_open *x = *pp;
					if (x->users == 0) {
						*pp = x->next;
						free(x);
						fs->nopens--;
					} else {
						pp = &x->next;
					}
				}
			}
		}
		o = calloc(1, sizeof(*o) + strlen(path) + 1);
		if (!o) {
			pthread_mutex_unlock(&fs->lock);
			return 1; /* bypassing the page cache is always safe */
		}
		memcpy(o->path, path, strlen(path) + 1);
		o->next = fs->opens[b];
		fs->opens[b] = o;
		fs->nopens++;
	}
	if (o->users > 0 && strcmp(o->etag, etag) != 0) {
		direct = 1;
	} else {
		*keep = o->etag[0] && strcmp(o->etag, etag) == 0;
		snprintf(o->etag, sizeof(o->etag), "%s", etag);
		o->users++;
	}
	pthread_mutex_unlock(&fs->lock);
	return direct;
}

void fs_open_end(struct fs *fs, const char *path)
{
	size_t b = (size_t)(fs_hash(path) % FS_OPEN_BUCKETS);
	struct fs_open *o;

	pthread_mutex_lock(&fs->lock);
	for (o = fs->opens[b]; o && strcmp(o->path, path) != 0; o = o->next)
		;
	if (o && o->users > 0)
		o->users--;
	pthread_mutex_unlock(&fs->lock);
}

/* ---- helpers for the FUSE front ---- */

/* Whether a store failure may be logged now: one line per few seconds at most, so a
 * dead store does not flood the log with one line per lookup. */
static int err_log_ok(struct fs *fs, unsigned *quiet)
{
	time_t now = fs_mono_now();
	int ok;

	pthread_mutex_lock(&fs->lock);
	ok = now - fs->err_logged >= 5;
	if (ok) {
		fs->err_logged = now;
		*quiet = fs->err_quiet;
		fs->err_quiet = 0;
	} else {
		fs->err_quiet++;
	}
	pthread_mutex_unlock(&fs->lock);
	return ok;
}

int fs_errno(struct fs *fs, int err, const char *path)
{
	unsigned quiet = 0;

	switch (err) {
	case -ENOENT:
	case -ENOTDIR:
	case -EISDIR:
	case -EROFS:
	case -ENOMEM:
	case -EINVAL:
		return err;
	case -ENAMETOOLONG:
		return -ENOENT; /* a path longer than the store can hold is not there */
	case -EBADMSG:
		return -EIO; /* integrity failure, logged where it was found */
	case -EACCES:
		if (err_log_ok(fs, &quiet))
			LOG_ERROR("%s: the store refused access (%u more failures not logged)",
				  path, quiet);
		return -EACCES;
	default:
		if (err_log_ok(fs, &quiet))
			LOG_ERROR("%s: the store failed: %s (%u more failures not logged)", path,
				  strerror(-err), quiet);
		return -EIO;
	}
}

int fs_pin_run_file(struct fs *fs, struct fs_node *n)
{
	struct blob_stat st;
	char parent[PATH_MAX];
	int ret;

	ret = cache_stat(fs->cache, n->key, &st);
	if (ret == 0 && strcmp(st.etag, n->etag) == 0)
		return 0;
	snprintf(parent, sizeof(parent), "%s", n->key);
	*(strrchr(parent, '/') + 1) = '\0';
	if (ret == 0 || ret == -ENOENT)
		cache_forget_listing(fs->cache, parent); /* the listing is out of date */
	if (ret == 0) {
		n->size = st.size;
		n->mtime = st.mtime;
		memcpy(n->etag, st.etag, sizeof(n->etag));
		return 0;
	}
	if (ret == -ENOENT || ret == -EACCES)
		return ret;
	LOG_DEBUG("%s: no answer of the store (%s); opening the version listed", n->key,
		  strerror(-ret));
	return 0;
}

void fs_log_changed(struct fs *fs, const char *path, int immutable, const char *etag)
{
	struct blob_stat st;
	char key[PATH_MAX];
	struct fs_node n;
	const char *now = "none (deleted)";

	if (fs_resolve(fs, path, &n) == 0)
		snprintf(key, sizeof(key), "%s", n.key);
	else
		snprintf(key, sizeof(key), "%s", path);
	int ret = cache_stat(fs->cache, key, &st);
	if (ret == 0)
		now = st.etag;
	else if (ret != -ENOENT)
		now = "unknown (store failing)";
	if (immutable)
		LOG_ERROR("%s: the store's blob %s changed after registration: registered etag "
			  "%s, store etag %s; refusing to serve it", path, key, etag, now);
	else
		LOG_WARN("%s: blob %s changed in the store while open (opened at etag %s, now "
			 "%s); reopen the file to read the new version", path, key, etag, now);
}
