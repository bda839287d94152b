/*
 * overlay.c: what a --writable mount has written and the store's listings do not
 * show yet: files being written (or whose upload failed), each a struct fs_wfile
 * over a staged file of the cache (cache/stage.c), and folders made with mkdir that
 * hold no file yet. The tree (tree.c) asks the overlay first for every runs/ path
 * and merges it into listings. An upload (fs_wfile_sync) makes the store's blob the
 * staged file and shows it in the cached listings (its size and etag), after which
 * a closed file leaves the overlay. Folders leave it once a file lands in them.
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

void fs_ts_now(struct timespec *ts)
{
	clock_gettime(CLOCK_REALTIME, ts);
}

/* "runs/..." for a path of the writable part of the tree (below /runs/), else NULL
 * with -EROFS (the rest of the tree, or a read-only mount) or -EINVAL (a name the
 * store cannot hold) in *err. */
const char *fs_wkey(struct fs *fs, const char *path, int *err)
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
void fs_parent_of(const char *key, char *out, size_t size)
{
	snprintf(out, size, "%s", key);
	char *slash = strrchr(out, '/');
	if (slash)
		slash[1] = '\0';
}

const char *fs_name_of(const char *key)
{
	const char *slash = strrchr(key, '/');

	return slash ? slash + 1 : key;
}

/* ---- the overlay (under wr->lock) ---- */

struct fs_wfile *fs_wfile_find(struct fs_writes *wr, const char *key)
{
	for (struct fs_wfile *wf = wr->files; wf; wf = wf->next)
		if (strcmp(wf->key, key) == 0)
			return wf;
	return NULL;
}

void fs_wfile_unlist(struct fs_writes *wr, struct fs_wfile *wf)
{
	struct fs_wfile **pp = &wr->files;

	while (*pp && *pp != wf)
		pp = &(*pp)->next;
	if (*pp)
		*pp = wf->next;
	wf->listed = 0;
}

ssize_t fs_wdir_index(struct fs_writes *wr, const char *dkey)
{
	for (size_t i = 0; i < wr->ndirs; i++)
		if (strcmp(wr->dirs[i], dkey) == 0)
			return (ssize_t)i;
	return -1;
}

int fs_wdir_add(struct fs_writes *wr, const char *dkey)
{
	if (fs_wdir_index(wr, dkey) >= 0)
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

void fs_wdir_del(struct fs_writes *wr, size_t i)
{
	free(wr->dirs[i]);
	wr->dirs[i] = wr->dirs[--wr->ndirs];
}

/* The folders made here that key is in: the store has them now. */
static void dirs_landed(struct fs_writes *wr, const char *key)
{
	for (size_t i = 0; i < wr->ndirs;) {
		if (strncmp(key, wr->dirs[i], strlen(wr->dirs[i])) == 0)
			fs_wdir_del(wr, i);
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
	struct fs_wfile *wf = fs_wfile_find(wr, key);
	if (wf) {
		wfile_node(wf, out);
		found = 1;
	} else if (fs_wdir_index(wr, dkey) >= 0) {
		memset(out, 0, sizeof(*out));
		out->kind = FS_DIR;
		out->mtime = fs->started;
		snprintf(out->key, sizeof(out->key), "%s", dkey);
		found = 1;
	}
	pthread_mutex_unlock(&wr->lock);
	return found;
}

/* The next free slot of a growing array of children, or NULL (-ENOMEM). */
static struct fs_ochild *ochild_next(struct fs_ochild **c, size_t n, size_t *cap)
{
	if (n == *cap) {
		size_t ncap = *cap ? *cap * 2 : 8;
		struct fs_ochild *nc = realloc(*c, ncap * sizeof(*nc));
		if (!nc)
			return NULL;
		*c = nc;
		*cap = ncap;
	}
	memset(&(*c)[n], 0, sizeof((*c)[n]));
	return &(*c)[n];
}

int fs_overlay_list(struct fs *fs, const char *prefix, struct fs_ochild **out, size_t *n)
{
	struct fs_writes *wr = fs->wr;
	size_t plen = strlen(prefix), cap = 0;
	struct fs_ochild *c = NULL, *o;
	int ret = 0;

	*out = NULL;
	*n = 0;
	if (!wr)
		return 0;
	pthread_mutex_lock(&wr->lock);
	for (struct fs_wfile *wf = wr->files; wf && ret == 0; wf = wf->next) {
		if (strncmp(wf->key, prefix, plen) != 0 || strchr(wf->key + plen, '/'))
			continue;
		if (!(o = ochild_next(&c, *n, &cap))) {
			ret = -ENOMEM;
			break;
		}
		snprintf(o->name, sizeof(o->name), "%s", wf->key + plen);
		wfile_node(wf, &o->node);
		(*n)++;
	}
	for (size_t i = 0; i < wr->ndirs && ret == 0; i++) {
		const char *d = wr->dirs[i];
		size_t dlen = strlen(d);
		if (strncmp(d, prefix, plen) != 0 || dlen <= plen + 1 ||
		    memchr(d + plen, '/', dlen - plen - 1))
			continue;
		if (!(o = ochild_next(&c, *n, &cap))) {
			ret = -ENOMEM;
			break;
		}
		snprintf(o->name, sizeof(o->name), "%.*s", (int)(dlen - plen - 1), d + plen);
		o->node.kind = FS_DIR;
		o->node.mtime = fs->started;
		snprintf(o->node.key, sizeof(o->node.key), "%s", d);
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

int fs_wfile_close(struct fs *fs, struct fs_wfile *wf)
{
	struct fs_writes *wr = fs->wr;
	int ret = 0;

	pthread_mutex_lock(&wr->lock);
	int last = --wf->opens == 0;
	pthread_mutex_unlock(&wr->lock);
	if (!last) {
		fs_wfile_unref(fs, wf, 1);
		return 0;
	}
	/* the last close: uploads what changed, and unless that failed the file leaves
	 * the overlay (its staged bytes go); a failed one stays, bytes kept */
	ret = fs_wfile_sync(fs, wf, 0);
	int broken = cache_stage_broken(wf->st);
	pthread_mutex_lock(&wr->lock);
	int keep = wf->failed && wf->listed && !broken;
	/* a file whose write failed goes: the writer was told, the disk is full */
	if (wf->listed && wf->opens == 0 && !keep && (broken || !cache_stage_dirty(wf->st)))
		fs_wfile_unlist(wr, wf);
	pthread_mutex_unlock(&wr->lock);
	fs_wfile_unref(fs, wf, keep);
	return ret;
}

/* Undoes fs_wfile_get's hold and open when the open goes no further: the last open
 * of the file it may be (another handle closed meanwhile), then it does what that
 * close would have done. */
void fs_wfile_unopen(struct fs *fs, struct fs_wfile *wf)
{
	int ret = fs_wfile_close(fs, wf);

	(void)ret; /* logged by the upload; this open fails anyway */
}

void fs_wfile_unref(struct fs *fs, struct fs_wfile *wf, int keep)
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

/* The wfile of key, held (refs) and opened (opens) in one step, made if absent
 * (with a new staged file, filled from the store's blob n when fill). *made tells
 * whether it is new. */
int fs_wfile_get(struct fs *fs, const char *key, const struct fs_node *blob, int fill,
		     int excl, struct fs_wfile **out, int *made)
{
	struct fs_writes *wr = fs->wr;
	struct fs_wfile *wf;
	int ret;

	*made = 0;
	pthread_mutex_lock(&wr->lock);
	wf = fs_wfile_find(wr, key);
	if (wf) {
		/* held and opened at once: a last close on its way cannot take it out
		 * of the overlay between the two */
		wf->refs++;
		wf->opens++;
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
	wf->opens = 1;
	wf->excl = excl;
	wf->in_store = blob != NULL;
	fs_ts_now(&wf->mtime);
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
	struct fs_wfile *other = fs_wfile_find(wr, key);
	if (other) {
		/* another thread made it meanwhile: use that one */
		other->refs++;
		other->opens++;
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
void fs_listings_show(struct fs *fs, const char *key, const struct blob_stat *st)
{
	char prefix[PATH_MAX];
	struct blob_entry e = { 0 };

	fs_parent_of(key, prefix, sizeof(prefix));
	e.size = st->size;
	e.mtime = st->mtime;
	memcpy(e.etag, st->etag, sizeof(e.etag));
	cache_listing_edit(fs->cache, prefix, fs_name_of(key), &e);
	/* the folders above, each in its parent, up to runs/ */
	while (strlen(prefix) > 5) {
		char name[NAME_MAX + 1];
		prefix[strlen(prefix) - 1] = '\0';
		snprintf(name, sizeof(name), "%s", fs_name_of(prefix));
		*(strrchr(prefix, '/') + 1) = '\0';
		struct blob_entry d = { .is_dir = 1 };
		cache_listing_edit(fs->cache, prefix, name, &d);
	}
}

/* Takes key out of the cached listing of its folder; with keep_folder the folder
 * stays on this mount (a folder made here) until rmdir, as on a disk. */
void fs_listings_hide(struct fs *fs, const char *key, int keep_folder)
{
	char prefix[PATH_MAX];

	fs_parent_of(key, prefix, sizeof(prefix));
	cache_listing_edit(fs->cache, prefix, fs_name_of(key), NULL);
	if (keep_folder && strlen(prefix) > 5) {
		pthread_mutex_lock(&fs->wr->lock);
		fs_wdir_add(fs->wr, prefix);
		pthread_mutex_unlock(&fs->wr->lock);
	}
}

/* Uploads wf if it changed: 0, or the upload's error (logged, with where the bytes
 * are kept). retry: also when its last upload failed and nothing changed since (else
 * that failure is answered again). */
int fs_wfile_sync(struct fs *fs, struct fs_wfile *wf, int retry)
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
		fs_listings_show(fs, key, &st);
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
int fs_sync_errno(int err)
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
