/*
 * prefetch.c: artifactfs prefetch PATH... : warms a mount's cache with every byte of
 * the files and folders named, so that they read with the store down.
 *
 * It reads the files through the mount, 8 at a time (each one sequentially, so the
 * mount's own prefetch runs ahead of it at the speed of a cold read): the bytes land
 * in the cache folder, and a registered file read whole is checked against its
 * SHA-256 by the mount, whose read fails with EIO on a mismatch. A folder is walked
 * without following the links inside it (latest and the aliases name versions that
 * are walked anyway); a link named on the command line is followed (prefetch
 * MOUNT/models/pt-dnn/production). Progress: on a terminal one line redrawn (bytes,
 * rate, ETA), otherwise a line per file done and a summary. Exit status 0 when every
 * byte was read, 1 with one line per file (or path) that failed, 2 for bad usage.
 */
#include "fs.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PF_JOBS 8
#define PF_BUF (1u << 20)
#define PF_DEPTH 256
#define PF_MOUNTS 16

/* A mount the paths are on, and the bytes of them on it. */
struct pf_mount {
	char root[PATH_MAX];
	uint64_t total;
	uint64_t evicted;		/* the cache's evictions before the reads */
	int too_big;			/* its files cannot all fit its cache: not read */
};

struct pf_file {
	char *path;
	char *real;			/* its path with links resolved: one read per file */
	uint64_t size;
	size_t mount;			/* in the mounts it is on */
};

struct pf {
	struct pf_file *files;
	size_t n, cap;
	size_t next;			/* the next file to take; under lock */
	uint64_t total, done;		/* bytes; done under lock */
	size_t files_done, failed;	/* under lock */
	int tty;
	struct timespec t0;
	pthread_mutex_t lock;
};

static double since(const struct timespec *t0)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - t0->tv_sec) + (double)(now.tv_nsec - t0->tv_nsec) / 1e9;
}

static void human(uint64_t b, char *out, size_t size)
{
	static const char *const unit[] = { "B", "KiB", "MiB", "GiB", "TiB" };
	double v = (double)b;
	int u = 0;

	while (v >= 1024 && u < 4) {
		v /= 1024;
		u++;
	}
	snprintf(out, size, u ? "%.1f %s" : "%.0f %s", v, unit[u]);
}

static int add(struct pf *p, const char *path, uint64_t size)
{
	if (p->n == p->cap) {
		size_t cap = p->cap ? 2 * p->cap : 64;
		struct pf_file *nf = realloc(p->files, cap * sizeof(*nf));
		if (!nf)
			return -ENOMEM;
		p->files = nf;
		p->cap = cap;
	}
	char real[PATH_MAX];
	struct pf_file *f = &p->files[p->n];
	f->path = strdup(path);
	f->real = strdup(realpath(path, real) ? real : path);
	if (!f->path || !f->real) {
		free(f->path);
		free(f->real);
		return -ENOMEM;
	}
	f->size = size;
	p->n++;
	p->total += size;
	return 0;
}

/* Every regular file below dir (links not followed); one line per folder that could
 * not be read. */
static int walk(struct pf *p, const char *dir, int depth)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int bad = 0;

	if (!d) {
		fprintf(stderr, "prefetch: %s: %s\n", dir, strerror(errno));
		return 1;
	}
	while ((e = readdir(d))) {
		char path[PATH_MAX];
		struct stat st;
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		size_t dl = strlen(dir);
		while (dl > 1 && dir[dl - 1] == '/')
			dl--;
		if ((size_t)snprintf(path, sizeof(path), "%.*s/%s", (int)dl, dir, e->d_name) >=
		    sizeof(path))
			continue;
		if (lstat(path, &st) < 0) {
			fprintf(stderr, "prefetch: %s: %s\n", path, strerror(errno));
			bad = 1;
		} else if (S_ISDIR(st.st_mode) && depth < PF_DEPTH) {
			bad |= walk(p, path, depth + 1);
		} else if (S_ISREG(st.st_mode) && add(p, path, (uint64_t)st.st_size) < 0) {
			bad = 1;
		}
	}
	closedir(d);
	return bad;
}

static int by_real(const void *a, const void *b)
{
	return strcmp(((const struct pf_file *)a)->real, ((const struct pf_file *)b)->real);
}

/* Drops the files named twice (by overlapping paths, or through links). */
static void dedupe(struct pf *p)
{
	size_t k = 0;

	if (p->n)
		qsort(p->files, p->n, sizeof(*p->files), by_real);
	p->total = 0;
	for (size_t i = 0; i < p->n; i++) {
		if (k && strcmp(p->files[k - 1].real, p->files[i].real) == 0) {
			free(p->files[i].path);
			free(p->files[i].real);
			continue;
		}
		p->files[k++] = p->files[i];
		p->total += p->files[i].size;
	}
	p->n = k;
}

/* The root of the artifactfs mount path is on: 0, or -1 when it is on none. */
static int mount_root(const char *path, char *root, size_t size)
{
	char real[PATH_MAX], line[2 * PATH_MAX + 256], point[PATH_MAX], type[64];
	size_t best = 0;
	int ours = 0;

	if (!realpath(path, real))
		return -1;
	FILE *f = fopen("/proc/self/mountinfo", "re");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		if (blob_mountinfo_line(line, point, sizeof(point), type, sizeof(type), NULL, 0) < 0)
			continue;
		size_t n = strlen(point);
		int under = strcmp(point, "/") == 0 ||
			    (strncmp(real, point, n) == 0 && (real[n] == '/' || real[n] == '\0'));
		if (under && n >= best) {
			best = n;
			ours = strcmp(type, "fuse.artifactfs") == 0;
			snprintf(root, size, "%s", point);
		}
	}
	fclose(f);
	return ours ? 0 : -1;
}

/* The cache's bound, bytes on disk and evictions so far, from the mount's control
 * file: 0 or -1. */
static int cache_figures(const char *root, uint64_t *bound, uint64_t *disk, uint64_t *evicted)
{
	char path[PATH_MAX + 32], buf[16384];
	snprintf(path, sizeof(path), "%s/.artifactfs-stats", root);
	FILE *f = fopen(path, "re");
	if (!f)
		return -1;
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	cJSON *o = cJSON_Parse(buf);
	const cJSON *c = cJSON_GetObjectItemCaseSensitive(o, "cache");
	const cJSON *b = cJSON_GetObjectItemCaseSensitive(c, "bound_bytes");
	const cJSON *d = cJSON_GetObjectItemCaseSensitive(c, "disk_bytes");
	const cJSON *e = cJSON_GetObjectItemCaseSensitive(c, "evictions");
	int ret = cJSON_IsNumber(b) && cJSON_IsNumber(d) && cJSON_IsNumber(e) ? 0 : -1;
	if (ret == 0) {
		*bound = (uint64_t)b->valuedouble;
		*disk = (uint64_t)d->valuedouble;
		*evicted = (uint64_t)e->valuedouble;
	}
	cJSON_Delete(o);
	return ret;
}

static void progress(struct pf *p, int last)
{
	char done[32], total[32], rate[32];
	double t = since(&p->t0);

	pthread_mutex_lock(&p->lock);
	uint64_t d = p->done;
	size_t fd = p->files_done, failed = p->failed;
	pthread_mutex_unlock(&p->lock);
	human(d, done, sizeof(done));
	human(p->total, total, sizeof(total));
	human(t > 0 ? (uint64_t)((double)d / t) : 0, rate, sizeof(rate));
	double eta = d && t > 0 && p->total > d ? (double)(p->total - d) * t / (double)d : 0;
	if (p->tty)
		fprintf(stderr, "\r\033[Kprefetch: %s / %s (%3.0f%%), %zu/%zu files, %s/s, ETA %.0f s",
			done, total, p->total ? 100.0 * (double)d / (double)p->total : 100.0, fd,
			p->n, rate, eta);
	if (p->tty && last)
		fputc('\n', stderr);
	if (!p->tty && last)
		fprintf(stderr, "prefetch: %s in %zu files read in %.1f s (%s/s)%s\n", done, fd, t,
			rate, failed ? "; some failed" : "");
	fflush(stderr);
}

/* Reads one file whole; 0 or -errno. */
static int read_file(struct pf *p, const struct pf_file *f, char *buf)
{
	int fd = open(f->path, O_RDONLY | O_CLOEXEC);
	uint64_t got = 0;
	int ret = 0;

	if (fd < 0)
		return -errno;
	for (;;) {
		ssize_t n = read(fd, buf, PF_BUF);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			ret = -errno;
			break;
		}
		if (n == 0)
			break;
		got += (uint64_t)n;
		pthread_mutex_lock(&p->lock);
		p->done += (uint64_t)n;
		pthread_mutex_unlock(&p->lock);
	}
	close(fd);
	if (ret == 0 && got != f->size)
		ret = -EIO; /* changed under us: not the file that was listed */
	return ret;
}

static void *worker(void *arg)
{
	struct pf *p = arg;
	char *buf = malloc(PF_BUF);

	for (;;) {
		pthread_mutex_lock(&p->lock);
		size_t i = p->next < p->n ? p->next++ : p->n;
		pthread_mutex_unlock(&p->lock);
		if (i == p->n)
			break;
		int ret = buf ? read_file(p, &p->files[i], buf) : -ENOMEM;
		pthread_mutex_lock(&p->lock);
		p->files_done++;
		if (ret < 0)
			p->failed++;
		pthread_mutex_unlock(&p->lock);
		if (ret < 0) {
			if (p->tty)
				fputs("\r\033[K", stderr);
			fprintf(stderr, "prefetch: %s: %s\n", p->files[i].path, strerror(-ret));
		} else if (!p->tty) {
			char sz[32];
			human(p->files[i].size, sz, sizeof(sz));
			fprintf(stderr, "prefetch: %s (%s) done\n", p->files[i].path, sz);
		}
	}
	free(buf);
	return NULL;
}

int fs_prefetch_main(int argc, char **argv)
{
	struct pf p = { 0 };
	struct pf_mount mounts[PF_MOUNTS];
	size_t nmounts = 0;
	unsigned jobs = PF_JOBS;
	int bad = 0, npaths = 0;

	pthread_mutex_init(&p.lock, NULL);
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--jobs") == 0 && i + 1 < argc) {
			char *end;
			unsigned long j = strtoul(argv[++i], &end, 10);
			if (*end || j == 0 || j > 256) {
				fprintf(stderr, "artifactfs: bad --jobs '%s' (1 to 256)\n", argv[i]);
				return 2;
			}
			jobs = (unsigned)j;
			continue;
		}
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			printf("usage: artifactfs prefetch PATH... [--jobs N]\n"
			       "Reads every byte of the files and folders named (on an artifactfs\n"
			       "mount) into its cache, N files at a time (default 8), so that they\n"
			       "read with the store down. Exit status 0 when every byte was read\n"
			       "and stayed in the cache, 1 with one line per failure, 2 for bad\n"
			       "usage.\n");
			return 0;
		}
		if (argv[i][0] == '-' && argv[i][1]) {
			fprintf(stderr, "artifactfs: unknown option '%s' (see artifactfs --help)\n",
				argv[i]);
			return 2;
		}
		struct stat st;
		char root[PATH_MAX];
		npaths++;
		if (stat(argv[i], &st) < 0) {
			fprintf(stderr, "prefetch: %s: %s\n", argv[i], strerror(errno));
			bad = 1;
			continue;
		}
		if (mount_root(argv[i], root, sizeof(root)) < 0) {
			fprintf(stderr, "prefetch: %s: not on an artifactfs mount\n", argv[i]);
			bad = 1;
			continue;
		}
		size_t m = 0;
		while (m < nmounts && strcmp(mounts[m].root, root) != 0)
			m++;
		if (m == nmounts && nmounts == PF_MOUNTS) {
			fprintf(stderr, "prefetch: %s: more than %d mounts at once\n", argv[i],
				PF_MOUNTS);
			bad = 1;
			continue;
		}
		if (m == nmounts) {
			snprintf(mounts[m].root, sizeof(mounts[m].root), "%s", root);
			mounts[nmounts++].total = 0;
		}
		size_t first = p.n;
		if (S_ISDIR(st.st_mode))
			bad |= walk(&p, argv[i], 0);
		else if (S_ISREG(st.st_mode))
			bad |= add(&p, argv[i], (uint64_t)st.st_size) < 0;
		for (size_t k = first; k < p.n; k++)
			p.files[k].mount = m;
	}
	dedupe(&p);
	for (size_t k = 0; k < p.n; k++)
		mounts[p.files[k].mount].total += p.files[k].size;
	/* what cannot fit in a mount's cache cannot all be there afterwards */
	for (size_t m = 0; m < nmounts; m++) {
		uint64_t bound, disk;
		char need[32], has[32];
		mounts[m].evicted = UINT64_MAX;
		mounts[m].too_big = 0;
		if (cache_figures(mounts[m].root, &bound, &disk, &mounts[m].evicted) == 0 &&
		    mounts[m].total > bound) {
			human(mounts[m].total, need, sizeof(need));
			human(bound, has, sizeof(has));
			fprintf(stderr, "prefetch: %s: %s do not fit in its cache (bound %s); "
				"its files are not read\n", mounts[m].root, need, has);
			mounts[m].too_big = 1;
			bad = 1;
		}
	}
	/* reading them would only push out what the cache holds now */
	size_t kept = 0;
	for (size_t i = 0; i < p.n; i++) {
		if (mounts[p.files[i].mount].too_big) {
			p.total -= p.files[i].size;
			free(p.files[i].path);
			free(p.files[i].real);
			continue;
		}
		p.files[kept++] = p.files[i];
	}
	p.n = kept;
	if (npaths == 0) {
		fprintf(stderr, "artifactfs: prefetch takes PATH... (files or folders of a mount)\n");
		return 2;
	}
	p.tty = isatty(2);
	clock_gettime(CLOCK_MONOTONIC, &p.t0);
	if (!p.tty) {
		char total[32];
		human(p.total, total, sizeof(total));
		fprintf(stderr, "prefetch: %zu files, %s\n", p.n, total);
	}
	pthread_t th[256];
	unsigned started = 0;
	for (unsigned i = 0; i < jobs && i < p.n; i++)
		if (pthread_create(&th[started], NULL, worker, &p) == 0)
			started++;
	if (p.n && !started)
		worker(&p);
	/* progress while the workers read */
	for (;;) {
		pthread_mutex_lock(&p.lock);
		int all = p.files_done == p.n;
		pthread_mutex_unlock(&p.lock);
		if (all)
			break;
		if (p.tty)
			progress(&p, 0);
		struct timespec d = { 0, p.tty ? 200000000L : 100000000L };
		nanosleep(&d, NULL);
	}
	for (unsigned i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	progress(&p, 1);
	/* the bytes read must still be there: a cache that had to evict as it filled
	 * and now holds fewer bytes than were read has lost some of them */
	for (size_t m = 0; m < nmounts; m++) {
		uint64_t bound, disk, evicted;
		char need[32], has[32];
		if (!mounts[m].too_big &&
		    cache_figures(mounts[m].root, &bound, &disk, &evicted) == 0 &&
		    evicted > mounts[m].evicted && disk < mounts[m].total) {
			human(mounts[m].total, need, sizeof(need));
			human(disk, has, sizeof(has));
			fprintf(stderr, "prefetch: %s: %s were read but its cache holds %s: not "
				"every byte stayed\n", mounts[m].root, need, has);
			bad = 1;
		}
	}
	for (size_t i = 0; i < p.n; i++) {
		free(p.files[i].path);
		free(p.files[i].real);
	}
	free(p.files);
	pthread_mutex_destroy(&p.lock);
	return bad || p.failed ? 1 : 0;
}
