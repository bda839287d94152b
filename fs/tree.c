/*
 * tree.c: resolving paths of the mount to nodes, and listing folders.
 *
 * runs/ mirrors the store folder by folder: each path segment is looked up in the
 * cached listing of its parent (sorted, so a binary search). models/ is built from
 * the registry: a model's versions are the records that parse, and its links are
 * latest plus the aliases that point at one of those versions.
 */
#include "fs.h"
#include "fs_private.h"
#include "registry.h"
#include "../blob/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* One model as last read from the registry. Fields protected by fs->lock. Parsed
 * versions are immutable and freed only with their model, which a view holds (refs):
 * a pointer to one stays good without the lock while the view lives. The table keeps
 * at most FS_MODELS_MAX models, the least recently used dropped first, and drops a
 * model the registry no longer has. */
struct fs_model {
	struct fs_model *next;
	int refs;			/* views and refreshes using it */
	int dropped;			/* out of the table: freed by the last unref */
	time_t used;			/* monotonic seconds of the last view */
	char name[REG_NAME_MAX + 1];
	time_t checked;			/* monotonic seconds; 0 = never */
	struct reg_version **all;	/* every version parsed, in no order */
	size_t nall;
	int *bad;			/* versions whose record is unusable */
	size_t nbad;
	int *present;			/* versions in the last listing that parsed, sorted */
	size_t npresent;
	struct reg_alias *aliases;
	size_t naliases;
	char *aliases_text;		/* to warn about a bad table only when it changes */
};

/* A model's state copied out for one lookup; holds the model. */
struct model_view {
	struct fs_model *model;
	struct reg_version **versions;	/* sorted by version; borrowed pointers */
	size_t n;
	struct reg_alias *aliases;	/* owned copy */
	size_t naliases;
};

static void model_unlink(struct fs *fs, struct fs_model **pp);

uint64_t fs_hash(const char *s)
{
	return blob_fnv(s, strlen(s), BLOB_FNV_INIT);
}

/* Whether what (a bad store entry) has not been warned of yet: each once per mount,
 * not at every refresh of its listing. */
static int warn_once(struct fs *fs, const char *what)
{
	uint64_t h = fs_hash(what);
	int fresh = 1;

	pthread_mutex_lock(&fs->lock);
	for (size_t i = 0; i < fs->nwarned && fresh; i++)
		fresh = fs->warned[i] != h;
	if (fresh && fs->nwarned < 10000) {
		if (fs->nwarned == fs->capwarned) {
			size_t cap = fs->capwarned ? 2 * fs->capwarned : 64;
			uint64_t *n = realloc(fs->warned, cap * sizeof(*n));
			if (n) {
				fs->warned = n;
				fs->capwarned = cap;
			}
		}
		if (fs->nwarned < fs->capwarned)
			fs->warned[fs->nwarned++] = h;
	}
	pthread_mutex_unlock(&fs->lock);
	return fresh;
}

time_t fs_mono_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec;
}

int fs_create(struct cache *cache, unsigned ttl, struct fs **out)
{
	struct fs *fs = calloc(1, sizeof(*fs));

	if (!fs)
		return -ENOMEM;
	fs->cache = cache;
	fs->ttl = ttl;
	fs->uid = getuid();
	fs->gid = getgid();
	clock_gettime(CLOCK_REALTIME, &fs->started);
	fs->err_logged = fs_mono_now() - 60;
	pthread_mutex_init(&fs->lock, NULL);
	*out = fs;
	return 0;
}

void fs_destroy(struct fs *fs)
{
	if (!fs)
		return;
	fs_release_all(fs);
	fs_writes_free(fs);
	for (size_t i = 0; i < FS_OPEN_BUCKETS; i++) {
		while (fs->opens[i]) {
			struct fs_open *o = fs->opens[i];
			fs->opens[i] = o->next;
			free(o);
		}
	}
	while (fs->models)
		model_unlink(fs, &fs->models);
	cache_destroy(fs->cache);
	free(fs->warned);
	pthread_mutex_destroy(&fs->lock);
	free(fs);
}

static void model_free(struct fs_model *m)
{
	for (size_t i = 0; i < m->nall; i++)
		reg_version_free(m->all[i]);
	free(m->all);
	free(m->bad);
	free(m->present);
	free(m->aliases);
	free(m->aliases_text);
	free(m);
}

/* Takes *pp out of the table; freed now or by its last unref. Under fs->lock. */
static void model_unlink(struct fs *fs, struct fs_model **pp)
{
	struct fs_model *m = *pp;

	*pp = m->next;
	fs->nmodels--;
	m->dropped = 1;
	if (m->refs == 0)
		model_free(m);
}

static void model_unref(struct fs *fs, struct fs_model *m)
{
	pthread_mutex_lock(&fs->lock);
	if (--m->refs == 0 && m->dropped)
		model_free(m);
	pthread_mutex_unlock(&fs->lock);
}

/* Forgets a model the registry no longer has. */
static void model_drop(struct fs *fs, const char *name)
{
	pthread_mutex_lock(&fs->lock);
	for (struct fs_model **pp = &fs->models; *pp; pp = &(*pp)->next)
		if (strcmp((*pp)->name, name) == 0) {
			model_unlink(fs, pp);
			break;
		}
	pthread_mutex_unlock(&fs->lock);
}

/* The model of name, held (model_unref), made when new; under fs->lock. */
static struct fs_model *model_find(struct fs *fs, const char *name)
{
	struct fs_model *m, **oldest = NULL;

	for (m = fs->models; m; m = m->next)
		if (strcmp(m->name, name) == 0)
			goto found;
	if (fs->nmodels >= FS_MODELS_MAX) {
		for (struct fs_model **pp = &fs->models; *pp; pp = &(*pp)->next)
			if ((*pp)->refs == 0 && (!oldest || (*pp)->used <= (*oldest)->used))
				oldest = pp;
		if (oldest)
			model_unlink(fs, oldest);
	}
	m = calloc(1, sizeof(*m));
	if (!m)
		return NULL;
	snprintf(m->name, sizeof(m->name), "%s", name);
	m->next = fs->models;
	fs->models = m;
	fs->nmodels++;
found:
	m->refs++;
	m->used = fs_mono_now();
	return m;
}

size_t fs_model_count(struct fs *fs)
{
	pthread_mutex_lock(&fs->lock);
	size_t n = fs->nmodels;
	pthread_mutex_unlock(&fs->lock);
	return n;
}

static struct reg_version *model_version(struct fs_model *m, int v)
{
	for (size_t i = 0; i < m->nall; i++)
		if (m->all[i]->version == v)
			return m->all[i];
	return NULL;
}

static int model_is_bad(struct fs_model *m, int v)
{
	for (size_t i = 0; i < m->nbad; i++)
		if (m->bad[i] == v)
			return 1;
	return 0;
}

static int int_cmp(const void *a, const void *b)
{
	int x = *(const int *)a, y = *(const int *)b;

	return (x > y) - (x < y);
}

/* Re-reads a model's folder in the registry. Called without fs->lock. */
static int model_refresh(struct fs *fs, struct fs_model *m)
{
	struct cache_listing *cl = NULL;
	char prefix[PATH_MAX], key[PATH_MAX + 32];
	int *present = NULL;
	size_t npresent = 0;
	char *text = NULL;
	size_t len;
	int ret;

	snprintf(prefix, sizeof(prefix), "registry/%s/", m->name);
	ret = cache_list(fs->cache, prefix, &cl);
	if (ret < 0)
		goto out;
	present = calloc(cl->list.count + 1, sizeof(*present));
	if (!present) {
		ret = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < cl->list.count; i++) {
		const struct blob_entry *e = &cl->list.entries[i];
		int v = e->is_dir ? -1 : reg_version_of(e->name);
		if (v < 0)
			continue;
		pthread_mutex_lock(&fs->lock);
		int known = model_version(m, v) != NULL, bad = model_is_bad(m, v);
		pthread_mutex_unlock(&fs->lock);
		if (bad)
			continue;
		if (!known) {
			struct reg_version *rv = NULL;
			snprintf(key, sizeof(key), "%s%s", prefix, e->name);
			ret = cache_record(fs->cache, key, 1, &text, &len);
			if (ret == -ENOENT)
				continue; /* deleted since the listing */
			if (ret == -EBADMSG) {
				/* a version the store cannot make a record of (said) */
				text = NULL;
				len = 0;
				goto refuse;
			}
			if (ret == -EFBIG) {
				LOG_WARN("registry record of model %s version %d is too large; "
					 "skipped", m->name, v);
				ret = -EBADMSG; /* remembered as unusable below */
				text = NULL;
				len = 0;
				goto refuse;
			}
			if (ret < 0)
				goto out;
			ret = reg_version_parse_quiet(text, len, m->name, v, &rv);
			free(text);
			text = NULL;
			if (ret == -EBADMSG) {
				/* the kept copy may be what is damaged: ask the store */
				cache_record_forget(fs->cache, key);
				ret = cache_record(fs->cache, key, 1, &text, &len);
				if (ret == -ENOENT)
					continue;
				if (ret < 0)
					goto out;
				ret = reg_version_parse(text, len, m->name, v, &rv);
				free(text);
				text = NULL;
			}
refuse:
			pthread_mutex_lock(&fs->lock);
			if (ret == -EBADMSG) {
				if (!model_is_bad(m, v)) {
					int *nb = realloc(m->bad, (m->nbad + 1) * sizeof(*nb));
					if (nb) {
						m->bad = nb;
						m->bad[m->nbad++] = v;
					}
				}
			} else if (ret == 0 && !model_version(m, v)) {
				struct reg_version **na =
					realloc(m->all, (m->nall + 1) * sizeof(*na));
				if (na) {
					m->all = na;
					m->all[m->nall++] = rv;
					rv = NULL;
				}
			}
			pthread_mutex_unlock(&fs->lock);
			reg_version_free(rv);
			if (ret == -EBADMSG)
				continue;
			if (ret < 0)
				goto out;
		}
		present[npresent++] = v;
	}
	qsort(present, npresent, sizeof(*present), int_cmp);

	/* aliases */
	struct reg_alias *aliases = NULL;
	size_t naliases = 0;
	snprintf(key, sizeof(key), "%saliases.json", prefix);
	const struct blob_entry *ae = cache_listing_find(cl, "aliases.json");
	ret = ae && !ae->is_dir ? cache_record(fs->cache, key, 0, &text, &len) : -ENOENT;
	if (ret == -EFBIG) {
		char what[PATH_MAX + 48];
		snprintf(what, sizeof(what), "big:%s", key);
		if (warn_once(fs, what))
			LOG_WARN("aliases of model %s are too large; ignored", m->name);
		ret = -ENOENT;
	}
	if (ret < 0 && ret != -ENOENT)
		goto out;
	pthread_mutex_lock(&fs->lock);
	int changed = ret == 0 && (!m->aliases_text || strcmp(m->aliases_text, text) != 0);
	pthread_mutex_unlock(&fs->lock);
	if (ret == 0 && changed && reg_aliases_parse(text, len, m->name, &aliases, &naliases) < 0)
		naliases = 0;

	pthread_mutex_lock(&fs->lock);
	free(m->present);
	m->present = present;
	m->npresent = npresent;
	present = NULL;
	if (ret == -ENOENT) {
		free(m->aliases);
		m->aliases = NULL;
		m->naliases = 0;
		free(m->aliases_text);
		m->aliases_text = NULL;
	} else if (changed) {
		free(m->aliases);
		m->aliases = aliases;
		m->naliases = naliases;
		aliases = NULL;
		free(m->aliases_text);
		m->aliases_text = text;
		text = NULL;
	}
	m->checked = fs_mono_now();
	pthread_mutex_unlock(&fs->lock);
	free(aliases);
	ret = 0;
out:
	free(text);
	free(present);
	cache_listing_unref(cl);
	return ret;
}

static void view_release(struct fs *fs, struct model_view *v)
{
	if (v->model)
		model_unref(fs, v->model);
	free(v->versions);
	free(v->aliases);
	memset(v, 0, sizeof(*v));
}

/* The current state of model name, refreshed when older than the TTL. */
static int model_view(struct fs *fs, const char *name, struct model_view *out)
{
	struct fs_model *m;
	int ret = 0;

	memset(out, 0, sizeof(*out));
	pthread_mutex_lock(&fs->lock);
	m = model_find(fs, name);
	int stale = m && (m->checked == 0 || fs_mono_now() - m->checked >= (time_t)fs->ttl);
	pthread_mutex_unlock(&fs->lock);
	if (!m)
		return -ENOMEM;
	out->model = m;
	if (stale) {
		ret = model_refresh(fs, m);
		if (ret < 0 && m->checked == 0) {
			view_release(fs, out);
			return ret;
		}
	}
	pthread_mutex_lock(&fs->lock);
	out->versions = calloc(m->npresent + 1, sizeof(*out->versions));
	out->aliases = calloc(m->naliases + 1, sizeof(*out->aliases));
	if (!out->versions || !out->aliases) {
		ret = -ENOMEM;
	} else {
		for (size_t i = 0; i < m->npresent; i++)
			out->versions[out->n++] = model_version(m, m->present[i]);
		if (m->naliases)
			memcpy(out->aliases, m->aliases, m->naliases * sizeof(*m->aliases));
		out->naliases = m->naliases;
		ret = 0;
	}
	pthread_mutex_unlock(&fs->lock);
	if (ret < 0)
		view_release(fs, out);
	return ret;
}

static struct reg_version *view_version(const struct model_view *v, int version)
{
	for (size_t i = 0; i < v->n; i++)
		if (v->versions[i]->version == version)
			return v->versions[i];
	return NULL;
}

/* ---- nodes ---- */

static void node_dir(struct fs *fs, struct fs_node *n)
{
	memset(n, 0, sizeof(*n));
	n->kind = FS_DIR;
	n->mtime = fs->started;
}

static void node_link(struct fs *fs, struct fs_node *n, int version)
{
	memset(n, 0, sizeof(*n));
	n->kind = FS_LINK;
	n->mtime = fs->started;
	snprintf(n->target, sizeof(n->target), "%d", version);
	n->size = strlen(n->target);
}

static void node_blob(struct fs_node *n, const char *prefix, const struct blob_entry *e)
{
	memset(n, 0, sizeof(*n));
	if (e->is_dir == BLOB_ENTRY_LINK) {
		n->kind = FS_LINK;
		n->mtime = e->mtime;
		snprintf(n->target, sizeof(n->target), "%.79s", e->etag);
		n->size = strlen(n->target);
		return;
	}
	n->kind = e->is_dir ? FS_DIR : FS_FILE;
	n->size = e->size;
	n->mtime = e->mtime;
	snprintf(n->key, sizeof(n->key), "%s%s%s", prefix, e->name, e->is_dir ? "/" : "");
	memcpy(n->etag, e->etag, sizeof(n->etag));
}

static void node_regfile(struct fs_node *n, const struct reg_version *v,
			 const struct reg_file *f)
{
	memset(n, 0, sizeof(*n));
	n->kind = FS_FILE;
	n->immutable = 1;
	n->size = f->size;
	n->mtime = v->created;
	snprintf(n->key, sizeof(n->key), "%s%s", v->source, f->path);
	memcpy(n->etag, f->etag, sizeof(n->etag));
	memcpy(n->sha256, f->sha256, sizeof(n->sha256));
}

void fs_node_stat(const struct fs *fs, const struct fs_node *n, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_uid = fs->uid;
	st->st_gid = fs->gid;
	st->st_mtim = n->mtime;
	st->st_ctim = n->mtime;
	st->st_atim = n->mtime;
	st->st_blksize = 1 << 20;
	/* runs/ of a writable mount takes writes */
	int w = fs->wr && strncmp(n->key, "runs/", 5) == 0 ? 0200 : 0;
	switch (n->kind) {
	case FS_DIR:
		st->st_mode = S_IFDIR | 0555 | (mode_t)w;
		st->st_nlink = 2;
		break;
	case FS_FILE:
		st->st_mode = S_IFREG | 0444 | (mode_t)w;
		st->st_nlink = 1;
		st->st_size = (off_t)n->size;
		st->st_blocks = (blkcnt_t)((n->size + 511) / 512);
		break;
	case FS_LINK:
		st->st_mode = S_IFLNK | 0777;
		st->st_nlink = 1;
		st->st_size = (off_t)n->size;
		break;
	}
}

/* Splits path into segments in buf; returns how many (at most max), -ENOENT for a
 * path with an unusable segment. */
static int split(const char *path, char *buf, size_t size, char **segs, int max)
{
	int n = 0;

	if ((size_t)snprintf(buf, size, "%s", path) >= size)
		return -ENAMETOOLONG;
	for (char *save = NULL, *s = strtok_r(buf, "/", &save); s; s = strtok_r(NULL, "/", &save)) {
		if (n == max)
			return -ENAMETOOLONG;
		segs[n++] = s;
	}
	return n;
}

#define MAX_DEPTH 512

/* runs/...: walks the listings from runs/ down; what this mount writes (the overlay)
 * comes first. */
static int resolve_runs(struct fs *fs, char **segs, int n, struct fs_node *out)
{
	struct cache_listing *cl = NULL;
	char prefix[PATH_MAX] = "runs/";
	int ret = 0;

	node_dir(fs, out);
	snprintf(out->key, sizeof(out->key), "%s", prefix);
	for (int i = 0; i < n; i++) {
		const struct blob_entry *e;
		char key[PATH_MAX];
		if ((size_t)snprintf(key, sizeof(key), "%s%s", prefix, segs[i]) >= sizeof(key) - 1)
			return -ENAMETOOLONG;
		if (fs->wr && fs_overlay_node(fs, key, out)) {
			if (out->kind != FS_DIR && i + 1 < n)
				return -ENOTDIR;
			memcpy(prefix, out->key, strlen(out->key) + 1);
			continue;
		}
		ret = cache_list(fs->cache, prefix, &cl);
		if (ret < 0)
			return ret;
		e = cache_listing_find(cl, segs[i]);
		if (!e) {
			ret = -ENOENT;
		} else if (e->is_dir != 1 && i + 1 < n) {
			ret = -ENOTDIR; /* a file, or a link (the kernel follows those) */
		} else if (e->is_dir == BLOB_ENTRY_LINK) {
			node_blob(out, prefix, e);
		} else {
			node_blob(out, prefix, e);
			out->mtime = e->is_dir ? fs->started : e->mtime;
			if (strlen(out->key) >= sizeof(prefix) - 1)
				ret = -ENAMETOOLONG;
			else
				memcpy(prefix, out->key, strlen(out->key) + 1);
		}
		cache_listing_unref(cl);
		cl = NULL;
		if (ret < 0)
			return ret;
	}
	return 0;
}

/* Whether name may be a model's folder: the store's own registry takes the names of
 * register; another's (MLflow's) may hold spaces and letters of any script. */
static int model_name_ok(const struct fs *fs, const char *name)
{
	if (fs->any_model_names)
		return blob_name_ok(name, strlen(name));
	return reg_name_ok(name);
}

/* Whether a model folder exists in the registry. */
static int model_exists(struct fs *fs, const char *name)
{
	struct cache_listing *cl = NULL;
	const struct blob_entry *e;
	int ret;

	if (!model_name_ok(fs, name))
		return -ENOENT;
	ret = cache_list(fs->cache, "registry/", &cl);
	if (ret < 0)
		return ret;
	e = cache_listing_find(cl, name);
	ret = e && e->is_dir ? 0 : -ENOENT;
	cache_listing_unref(cl);
	return ret;
}

/* First file of v whose path is >= key. */
static size_t lower_bound(const struct reg_version *v, const char *key)
{
	size_t lo = 0, hi = v->nfiles;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (strcmp(v->files[mid].path, key) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static int has_prefix(const char *s, const char *prefix, size_t len)
{
	return strncmp(s, prefix, len) == 0;
}

/* Inside a version: segs name a file or a folder of its file set. */
static int resolve_version(struct fs *fs, const struct reg_version *v, char **segs, int n,
			   struct fs_node *out)
{
	char rel[PATH_MAX];
	size_t len = 0;

	node_dir(fs, out);
	out->mtime = v->created;
	if (n == 0)
		return 0;
	for (int i = 0; i < n; i++) {
		int w = snprintf(rel + len, sizeof(rel) - len, "%s%s", i ? "/" : "", segs[i]);
		if (w < 0 || (size_t)w >= sizeof(rel) - len - 1)
			return -ENAMETOOLONG;
		len += (size_t)w;
	}
	const struct reg_file *f = reg_version_file(v, rel);
	if (f) {
		node_regfile(out, v, f);
		return 0;
	}
	rel[len++] = '/';
	rel[len] = '\0';
	size_t i = lower_bound(v, rel);
	if (i < v->nfiles && has_prefix(v->files[i].path, rel, len))
		return 0;
	/* a path through a file gives ENOTDIR, as on any filesystem */
	for (char *s = strchr(rel, '/'); s && s < rel + len - 1; s = strchr(s + 1, '/')) {
		*s = '\0';
		int through = reg_version_file(v, rel) != NULL;
		*s = '/';
		if (through)
			return -ENOTDIR;
	}
	return -ENOENT;
}

static int resolve_models(struct fs *fs, char **segs, int n, struct fs_node *out)
{
	struct model_view mv;
	int ret;

	node_dir(fs, out);
	if (n == 0)
		return 0;
	ret = model_exists(fs, segs[0]);
	if (ret == -ENOENT)
		model_drop(fs, segs[0]);
	if (ret < 0)
		return ret;
	ret = model_view(fs, segs[0], &mv);
	if (ret < 0)
		return ret;
	if (n == 1)
		goto out;
	ret = -ENOENT;
	int ver = reg_version_name(segs[1]);
	const struct reg_version *v = ver > 0 ? view_version(&mv, ver) : NULL;
	if (v) {
		ret = resolve_version(fs, v, segs + 2, n - 2, out);
		goto out;
	}
	int target = -1;
	if (strcmp(segs[1], "latest") == 0 && mv.n > 0)
		target = mv.versions[mv.n - 1]->version;
	for (size_t i = 0; target < 0 && i < mv.naliases; i++)
		if (strcmp(mv.aliases[i].name, segs[1]) == 0 &&
		    view_version(&mv, mv.aliases[i].version))
			target = mv.aliases[i].version;
	if (target > 0) {
		node_link(fs, out, target);
		ret = n == 2 ? 0 : -ENOTDIR; /* the kernel follows links itself */
	}
out:
	view_release(fs, &mv);
	return ret;
}

int fs_resolve(struct fs *fs, const char *path, struct fs_node *out)
{
	char buf[PATH_MAX], *segs[MAX_DEPTH];
	int n = split(path, buf, sizeof(buf), segs, MAX_DEPTH);

	if (n < 0)
		return n;
	if (n == 0) {
		node_dir(fs, out);
		return 0;
	}
	if (strcmp(segs[0], "runs") == 0)
		return resolve_runs(fs, segs + 1, n - 1, out);
	if (strcmp(segs[0], "models") == 0)
		return resolve_models(fs, segs + 1, n - 1, out);
	return -ENOENT;
}

/* ---- listing ---- */

static int ochild_cmp(const void *a, const void *b)
{
	return strcmp(((const struct fs_ochild *)a)->name, ((const struct fs_ochild *)b)->name);
}

static int list_runs(struct fs *fs, const struct fs_node *dir, fs_fill_fn fill, void *ctx)
{
	struct cache_listing *cl = NULL;
	struct fs_ochild *oc = NULL;
	struct fs_node n;
	size_t on = 0;
	int ret, stop = 0;

	ret = fs_overlay_list(fs, dir->key, &oc, &on);
	if (ret < 0)
		return ret;
	if (on > 1)
		qsort(oc, on, sizeof(*oc), ochild_cmp);
	ret = cache_list(fs->cache, dir->key, &cl);
	if (ret == -ENOENT && (strcmp(dir->key, "runs/") == 0 || on > 0))
		ret = 0; /* a store without runs yet, or a folder with files being written */
	if (ret == -ENOENT && fs->wr) {
		/* a folder made here has no listing of its own */
		char key[PATH_MAX];
		snprintf(key, sizeof(key), "%.*s", (int)strlen(dir->key) - 1, dir->key);
		if (fs_overlay_node(fs, key, &n))
			ret = 0;
	}
	if (ret < 0) {
		free(oc);
		return ret;
	}
	for (size_t i = 0; cl && i < cl->list.count && !stop; i++) {
		const struct blob_entry *e = &cl->list.entries[i];
		struct fs_ochild probe;
		snprintf(probe.name, sizeof(probe.name), "%s", e->name);
		if (on && bsearch(&probe, oc, on, sizeof(*oc), ochild_cmp))
			continue; /* the overlay's is newer */
		node_blob(&n, dir->key, e);
		if (n.kind == FS_DIR)
			n.mtime = fs->started;
		stop = fill(ctx, e->name, &n);
	}
	for (size_t i = 0; i < on && !stop; i++)
		stop = fill(ctx, oc[i].name, &oc[i].node);
	cache_listing_unref(cl);
	free(oc);
	return 0;
}

static int list_models(struct fs *fs, fs_fill_fn fill, void *ctx)
{
	struct cache_listing *cl = NULL;
	struct fs_node n;
	int ret;

	ret = cache_list(fs->cache, "registry/", &cl);
	if (ret == -ENOENT)
		return 0;
	if (ret < 0)
		return ret;
	node_dir(fs, &n);
	for (size_t i = 0; i < cl->list.count; i++) {
		const struct blob_entry *e = &cl->list.entries[i];
		if (!e->is_dir)
			continue;
		if (!model_name_ok(fs, e->name)) {
			char what[NAME_MAX + 16];
			snprintf(what, sizeof(what), "model:%s", e->name);
			if (warn_once(fs, what))
				LOG_WARN("registry folder '%.80s' is not a model name "
					 "([A-Za-z0-9][A-Za-z0-9._-]{0,127}); skipped", e->name);
			continue;
		}
		if (fill(ctx, e->name, &n))
			break;
	}
	cache_listing_unref(cl);
	return 0;
}

static int list_model(struct fs *fs, const char *name, fs_fill_fn fill, void *ctx)
{
	struct model_view mv;
	struct fs_node n;
	char num[32];
	int ret;

	ret = model_view(fs, name, &mv);
	if (ret < 0)
		return ret;
	for (size_t i = 0; i < mv.n; i++) {
		node_dir(fs, &n);
		n.mtime = mv.versions[i]->created;
		snprintf(num, sizeof(num), "%d", mv.versions[i]->version);
		if (fill(ctx, num, &n))
			goto out;
	}
	if (mv.n > 0) {
		node_link(fs, &n, mv.versions[mv.n - 1]->version);
		if (fill(ctx, "latest", &n))
			goto out;
	}
	for (size_t i = 0; i < mv.naliases; i++) {
		if (!view_version(&mv, mv.aliases[i].version))
			continue;
		node_link(fs, &n, mv.aliases[i].version);
		if (fill(ctx, mv.aliases[i].name, &n))
			goto out;
	}
out:
	view_release(fs, &mv);
	return 0;
}

static int list_version(struct fs *fs, const char *name, int version, const char *rel,
			fs_fill_fn fill, void *ctx)
{
	struct model_view mv;
	const struct reg_version *v;
	char prefix[PATH_MAX], child[NAME_MAX + 1], last[NAME_MAX + 1] = "";
	struct fs_node n;
	int ret;

	ret = model_view(fs, name, &mv);
	if (ret < 0)
		return ret;
	v = view_version(&mv, version);
	if (!v) {
		ret = -ENOENT;
		goto out;
	}
	snprintf(prefix, sizeof(prefix), "%s%s", rel, *rel ? "/" : "");
	size_t plen = strlen(prefix);
	for (size_t i = lower_bound(v, prefix); i < v->nfiles; i++) {
		const struct reg_file *f = &v->files[i];
		if (!has_prefix(f->path, prefix, plen))
			break;
		const char *rest = f->path + plen, *slash = strchr(rest, '/');
		size_t clen = slash ? (size_t)(slash - rest) : strlen(rest);
		snprintf(child, sizeof(child), "%.*s", (int)clen, rest);
		if (strcmp(child, last) == 0)
			continue; /* files of one subfolder are consecutive */
		memcpy(last, child, sizeof(last));
		if (slash) {
			node_dir(fs, &n);
			n.mtime = v->created;
		} else {
			node_regfile(&n, v, f);
		}
		if (fill(ctx, child, &n))
			break;
	}
	ret = 0;
out:
	view_release(fs, &mv);
	return ret;
}

int fs_list(struct fs *fs, const char *path, fs_fill_fn fill, void *ctx)
{
	char buf[PATH_MAX], *segs[MAX_DEPTH];
	struct fs_node dir, n;
	int ret, nseg;

	ret = fs_resolve(fs, path, &dir);
	if (ret < 0)
		return ret;
	if (dir.kind != FS_DIR)
		return -ENOTDIR;
	nseg = split(path, buf, sizeof(buf), segs, MAX_DEPTH);
	if (nseg < 0)
		return nseg;
	if (nseg == 0) {
		/* runs/ as its own lookup shows it (writable on a writable mount) */
		node_dir(fs, &n);
		snprintf(n.key, sizeof(n.key), "runs/");
		if (fill(ctx, "runs", &n) == 0) {
			node_dir(fs, &n);
			fill(ctx, "models", &n);
		}
		return 0;
	}
	if (strcmp(segs[0], "runs") == 0)
		return list_runs(fs, &dir, fill, ctx);
	if (nseg == 1)
		return list_models(fs, fill, ctx);
	if (nseg == 2)
		return list_model(fs, segs[1], fill, ctx);
	/* inside a version: segs[2] is the version, the rest a folder of its files */
	char rel[PATH_MAX] = "";
	size_t len = 0;
	for (int i = 3; i < nseg; i++)
		len += (size_t)snprintf(rel + len, sizeof(rel) - len, "%s%s", i > 3 ? "/" : "",
					segs[i]);
	return list_version(fs, segs[1], reg_version_name(segs[2]), rel, fill, ctx);
}

