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

struct pf_file {
	char *path;
	uint64_t size;
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
	if (!(p->files[p->n].path = strdup(path)))
		return -ENOMEM;
	p->files[p->n++].size = size;
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
		if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, e->d_name) >= sizeof(path))
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
		if (argv[i][0] == '-' && argv[i][1]) {
			fprintf(stderr, "artifactfs: unknown option '%s' (see artifactfs --help)\n",
				argv[i]);
			return 2;
		}
		struct stat st;
		npaths++;
		if (stat(argv[i], &st) < 0) {
			fprintf(stderr, "prefetch: %s: %s\n", argv[i], strerror(errno));
			bad = 1;
		} else if (S_ISDIR(st.st_mode)) {
			bad |= walk(&p, argv[i], 0);
		} else if (S_ISREG(st.st_mode)) {
			bad |= add(&p, argv[i], (uint64_t)st.st_size) < 0;
		}
	}
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
	for (size_t i = 0; i < p.n; i++)
		free(p.files[i].path);
	free(p.files);
	pthread_mutex_destroy(&p.lock);
	return bad || p.failed ? 1 : 0;
}
