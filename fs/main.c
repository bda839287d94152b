/*
 * main.c: the command line.
 *
 *   artifactfs mount STORE MOUNTPOINT [options]
 *   artifactfs register STORE NAME SOURCE [--alias A]... [--description T] [--tag K=V]...
 *   artifactfs alias STORE NAME ALIAS VERSION | --delete
 *   artifactfs --help | --version
 *
 * Every mistake of the user (bad STORE, missing store, bad name, unknown option) is
 * answered with one line on stderr and exit status 2.
 */
#define FUSE_USE_VERSION 312
#include <fuse.h>
#include <systemd/sd-daemon.h>

#include "fs.h"
#include "../blob/proxy.h"
#include "fs_private.h"
#include "registry.h"
#include "../blob/log.h"
#include "version.h"

#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define ARTIFACTFS_VERSION "0.1.0"
#define EXIT_USAGE 2

static const char usage[] =
	"usage: artifactfs mount STORE MOUNTPOINT [options]\n"
	"       artifactfs register STORE NAME SOURCE [--alias A]... [--description T] "
	"[--tag K=V]...\n"
	"       artifactfs alias STORE NAME ALIAS VERSION\n"
	"       artifactfs alias STORE NAME ALIAS --delete\n"
	"       artifactfs prefetch PATH... [--jobs N]   cache every byte of files or folders\n"
	"                                                of a mount (then they read offline)\n"
	"       artifactfs stats MOUNTPOINT [--json]     cache, store and upload figures\n"
	"       artifactfs --help | --version\n"
	"       mount MOUNTPOINT                 from an fstab line (type artifactfs, env_file=)\n"
	"       fusermount3 -u MOUNTPOINT (or umount)    unmount\n"
	"\n"
	"Mounts the training runs and registered models of a blob store as one read-through\n"
	"cached tree: MOUNT/runs/<experiment>/<run>/..., MOUNT/models/<name>/<version>/...,\n"
	"MOUNT/models/<name>/latest and one symlink per alias.\n"
	"\n"
	"STORE: file:///abs/path (a local folder),\n"
	"       wasbs://CONTAINER@ACCOUNT.blob.core.windows.net/PREFIX,\n"
	"       https://ACCOUNT.blob.core.windows.net/CONTAINER/PREFIX,\n"
	"       http://127.0.0.1:10000/devstoreaccount1/CONTAINER/PREFIX (Azurite),\n"
	"       s3://BUCKET/PREFIX (S3; AWS_ENDPOINT_URL for other S3 stores),\n"
	"       mlflow+https://HOST[:PORT][/PATH] (an MLflow tracking server)\n"
	"Azure credentials from the environment, first found wins:\n"
	"  AZURE_STORAGE_CONNECTION_STRING, AZURE_STORAGE_ACCOUNT + AZURE_STORAGE_KEY,\n"
	"  AZURE_STORAGE_SAS_TOKEN; none: anonymous access\n"
	"S3 credentials as the AWS tools take them: AWS_ACCESS_KEY_ID +\n"
	"  AWS_SECRET_ACCESS_KEY, the shared files (AWS_PROFILE), instance metadata;\n"
	"  none: unsigned requests\n"
	"MLflow credentials as its client takes them: MLFLOW_TRACKING_USERNAME +\n"
	"  MLFLOW_TRACKING_PASSWORD, else MLFLOW_TRACKING_TOKEN\n"
	"\n"
	"mount options (also as -o name=value, e.g. -o cache_size=20G):\n"
	"  --cache-dir DIR     chunk cache folder (default /var/cache/artifactfs for root,\n"
	"                      else $XDG_CACHE_HOME/artifactfs)\n"
	"  --cache-size SIZE   bound on the cache, e.g. 20G (default 20G)\n"
	"  --ttl SECONDS       refresh of listings, registry and aliases (default 60)\n"
	"  --timeout SECONDS   deadline of one store operation, retries included (default 60)\n"
	"  --insecure          do not verify TLS certificates (also for register and alias)\n"
	"  --metrics ADDR:PORT Prometheus metrics on http://ADDR:PORT/metrics (:PORT: all)\n"
	"  --chunk-size SIZE   bytes per cached chunk and ranged read (default 8M)\n"
	"  --ca-file FILE      trusted CAs (PEM) for the store (also for register and alias;\n"
	"                      else the store's variable, CURL_CA_BUNDLE, SSL_CERT_FILE)\n"
	"  --proxy LIST        read versions' bytes through caching proxies, CernVM-FS's\n"
	"                      form: \"http://p1:3128|http://p2:3128;DIRECT\" (Azure)\n"
	"  --writable          runs/ takes new and replaced files (staged in the cache\n"
	"                      folder, uploaded on close and fsync); models/ stays read-only\n"
	"  --xattrs            show user.artifactfs.{key,etag,sha256,store} on files (each\n"
	"                      extended attribute query then asks the daemon: ls -l slows)\n"
	"  -f                  stay in the foreground (log to stderr)\n"
	"  -d                  debug log (implies -f)\n"
	"  -o OPT[,OPT...]     FUSE mount options (allow_other, ...)\n";

static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int fail(const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fprintf(stderr, "artifactfs: %s\n", msg);
	return EXIT_USAGE;
}

/* Parses a size such as 20G, 512M, 1048576 (binary units). -1 when malformed. */
static int parse_size(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;

	if (!s || *s < '0' || *s > '9')
		return -1;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno)
		return -1;
	int shift = 0;
	switch (*end) {
	case 'k': case 'K': shift = 10; end++; break;
	case 'm': case 'M': shift = 20; end++; break;
	case 'g': case 'G': shift = 30; end++; break;
	case 't': case 'T': shift = 40; end++; break;
	default: break;
	}
	if (shift && *end == 'i')
		end++;
	if (*end == 'B' || *end == 'b')
		end++;
	if (*end || (shift && v > (UINT64_MAX >> shift)))
		return -1;
	*out = (uint64_t)v << shift;
	return 0;
}

static int parse_uint(const char *s, unsigned max, unsigned *out)
{
	char *end;
	unsigned long v;

	if (!s || *s < '0' || *s > '9')
		return -1;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || *end || v > max)
		return -1;
	*out = (unsigned)v;
	return 0;
}

/* "-ofsname=SOURCE,subtype=artifactfs,default_permissions[,ro]": SOURCE is url as
 * blob_url_shown shows it (no query, fragment or user info), with ',' and '\\'
 * escaped for FUSE's parser. */
static void fs_source_option(const char *url, int writable, char *out, size_t size)
{
	char shown[PATH_MAX];
	size_t k = (size_t)snprintf(out, size, "-ofsname=");

	blob_url_shown(url, shown, sizeof(shown));
	for (const char *c = shown; *c && k + 3 < size; c++) {
		if (*c == ',' || *c == '\\')
			out[k++] = '\\';
		out[k++] = *c;
	}
	out[k] = '\0';
	/* default_permissions: the kernel checks the modes shown, so with allow_other
	 * other users read, and only the mount's owner writes runs/ */
	snprintf(out + k, size - k, ",subtype=artifactfs,default_permissions%s",
		 writable ? "" : ",ro");
}

/* fuse_new, with what libfuse says on stderr about bad options kept for the one line
 * of the refusal (why; its "fuse: " and line ends dropped) instead of printed apart. */
static struct fuse *new_fuse(struct fuse_args *fargs, const struct fuse_operations *ops,
			     struct fs *fs, char *why, size_t size)
{
	FILE *tmp = tmpfile();
	int saved = tmp ? dup(2) : -1;
	struct fuse *f;

	fflush(stderr);
	if (saved >= 0 && dup2(fileno(tmp), 2) < 0) {
		close(saved);
		saved = -1;
	}
	f = fuse_new(fargs, ops, sizeof(*ops), fs);
	fflush(stderr);
	if (saved >= 0) {
		dup2(saved, 2);
		close(saved);
	}
	if (tmp) {
		char said[512];
		size_t n;
		rewind(tmp);
		n = fread(said, 1, sizeof(said) - 1, tmp);
		said[n] = '\0';
		fclose(tmp);
		if (f) {
			fputs(said, stderr); /* not about a refusal: as it was */
		} else {
			const char *p = strncmp(said, "fuse: ", 6) == 0 ? said + 6 : said;
			snprintf(why, size, "%.*s", (int)strcspn(p, "\n"), p);
		}
	}
	return f;
}

/* A model name the registry of the store at url takes: MLflow's own names (spaces,
 * any script) wherever they can be a file name; else the store's own registry's. */
static int cli_name_ok(const char *url, const char *name)
{
	if (strncmp(url, "mlflow+", 7) == 0)
		return blob_name_ok(name, strlen(name));
	return reg_name_ok(name);
}

/* How long the first contact with the store may take, retries included, before the
 * command line says it cannot be reached. */
#define CHECK_S 10

static int open_store(const char *url, const struct blob_options *opt,
		      struct blob_store **s)
{
	char err[512];
	int ret = blob_open(url, opt, s, err, sizeof(err));

	unsigned deadline = opt->timeout_s > CHECK_S ? CHECK_S : 0;
	if (ret == 0 && (ret = blob_check(*s, deadline, err, sizeof(err))) < 0) {
		blob_destroy(*s);
		*s = NULL;
	}
	if (ret < 0)
		fail("%s", err);
	return ret;
}

/*
 * The mount's check of the store: an unreachable store is fatal unless the cache
 * folder holds what an earlier mount saw of it, which is then served (offline). The
 * check waits at most CHECK_S (or --timeout, when shorter): a node comes up on its
 * cache rather than wait for the whole --timeout, and the store is used again once
 * it answers; a store that is not there is said to be so in seconds.
 */
static int check_for_mount(struct cache *c, unsigned timeout_s)
{
	char err[512];
	unsigned deadline = timeout_s > CHECK_S ? CHECK_S : 0;
	int ret = blob_check(cache_store(c), deadline, err, sizeof(err));

	if (ret == -EIO && cache_knows_store(c)) {
		LOG_WARN("%s; serving what the cache holds until the store answers", err);
		return 0;
	}
	if (ret < 0)
		fail("%s", err);
	return ret;
}

/* ---- mount ---- */

struct mount_opts {
	char *cache_dir;
	char *cache_size;
	char *ttl;
	char *chunk_size;
	char *timeout;
	char *proxy;
	char *ca_file;
	char *metrics;
	int insecure;
	int xattrs;
	int writable;
	char *stores[3];
	int nstores;
	int foreground;
	int debug;
	int bad;
};

enum { KEY_FG, KEY_DEBUG, KEY_HELP };

#define MOPT(names, field)                                                   \
	{ "--" names "=%s", offsetof(struct mount_opts, field), 0 },          \
	{ "--" names " %s", offsetof(struct mount_opts, field), 0 }

static const struct fuse_opt mount_spec[] = {
	MOPT("cache-dir", cache_dir),
	MOPT("cache-size", cache_size),
	MOPT("ttl", ttl),
	MOPT("chunk-size", chunk_size),
	MOPT("timeout", timeout),
	MOPT("proxy", proxy),
	{ "proxy=%s", offsetof(struct mount_opts, proxy), 0 },
	MOPT("ca-file", ca_file),
	MOPT("metrics", metrics),
	{ "metrics=%s", offsetof(struct mount_opts, metrics), 0 },
	{ "ca_file=%s", offsetof(struct mount_opts, ca_file), 0 },
	{ "--insecure", offsetof(struct mount_opts, insecure), 1 },
	{ "insecure", offsetof(struct mount_opts, insecure), 1 },
	{ "--xattrs", offsetof(struct mount_opts, xattrs), 1 },
	{ "xattrs", offsetof(struct mount_opts, xattrs), 1 },
	{ "--writable", offsetof(struct mount_opts, writable), 1 },
	{ "writable", offsetof(struct mount_opts, writable), 1 },
	{ "timeout=%s", offsetof(struct mount_opts, timeout), 0 },
	{ "cache_dir=%s", offsetof(struct mount_opts, cache_dir), 0 },
	{ "cache-dir=%s", offsetof(struct mount_opts, cache_dir), 0 },
	{ "cache_size=%s", offsetof(struct mount_opts, cache_size), 0 },
	{ "cache-size=%s", offsetof(struct mount_opts, cache_size), 0 },
	{ "ttl=%s", offsetof(struct mount_opts, ttl), 0 },
	{ "chunk_size=%s", offsetof(struct mount_opts, chunk_size), 0 },
	FUSE_OPT_KEY("-f", KEY_FG),
	FUSE_OPT_KEY("--foreground", KEY_FG),
	FUSE_OPT_KEY("-d", KEY_DEBUG),
	FUSE_OPT_KEY("debug", KEY_DEBUG),
	FUSE_OPT_KEY("-h", KEY_HELP),
	FUSE_OPT_KEY("--help", KEY_HELP),
	FUSE_OPT_END
};

static int mount_opt_proc(void *data, const char *arg, int key, struct fuse_args *out)
{
	struct mount_opts *o = data;

	(void)out;
	switch (key) {
	case KEY_FG:
		o->foreground = 1;
		return 0;
	case KEY_DEBUG:
		o->debug = 1;
		o->foreground = 1;
		return 0;
	case KEY_HELP:
		fputs(usage, stdout);
		exit(0);
	case FUSE_OPT_KEY_NONOPT:
		if (o->nstores < 3)
			o->stores[o->nstores] = strdup(arg);
		o->nstores++;
		return 0;
	case FUSE_OPT_KEY_OPT:
		if (arg[0] == '-') {
			fail("unknown option '%s' (see artifactfs --help)", arg);
			o->bad = 1;
			return -1;
		}
		return 1; /* a -o option for FUSE itself */
	default:
		return 1;
	}
}

static char *default_cache_dir(void)
{
	const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
	char *dir = NULL;

	if (geteuid() == 0)
		return strdup("/var/cache/artifactfs");
	if (xdg && xdg[0] == '/') {
		if (asprintf(&dir, "%s/artifactfs", xdg) < 0)
			dir = NULL;
	} else if (home && home[0] == '/') {
		if (asprintf(&dir, "%s/.cache/artifactfs", home) < 0)
			dir = NULL;
	}
	return dir;
}

/* A FUSE mount starts with the kernel's default readahead (128 KiB), and INIT can
 * only lower it: READ requests stay at 128 KiB. Root may raise it on the mount's
 * bdi, named by the device of the mount, before the loop answers INIT. */
static void raise_readahead(const char *mnt)
{
	char line[2 * PATH_MAX], dev[32] = "", d[32], p[PATH_MAX];
	FILE *f = fopen("/proc/self/mountinfo", "r");

	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		if (blob_mountinfo_line(line, p, sizeof(p), NULL, 0, d, sizeof(d)) < 0)
			continue;
		if (strcmp(p, mnt) == 0)
			memcpy(dev, d, sizeof(d)); /* the last one is the mount on top */
	}
	fclose(f);
	snprintf(p, sizeof(p), "/sys/class/bdi/%s/read_ahead_kb", dev);
	if (dev[0] && (f = fopen(p, "w"))) {
		fprintf(f, "%u\n", FS_READ_MAX >> 10);
		if (fclose(f) == 0)
			LOG_DEBUG("readahead of %s: %u KiB", mnt, FS_READ_MAX >> 10);
	}
}

int fs_mount_main(int argc, char **argv)
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct fuse_args fargs = FUSE_ARGS_INIT(0, NULL);
	struct mount_opts o = { 0 };
	struct cache_config cc = { 0 };
	struct blob_store *store = NULL;
	struct cache *cache = NULL;
	struct fs *fs = NULL;
	struct fuse *fuse = NULL;
	struct fuse_loop_config *lc = NULL;
	char err[512], *cache_dir = NULL;
	struct stat st;
	int ret = EXIT_USAGE, mounted = 0;
	struct sockaddr_storage maddr;
	void *metrics = NULL;

	if (fuse_opt_parse(&args, &o, mount_spec, mount_opt_proc) < 0) {
		if (!o.bad)
			fail("bad mount options (see artifactfs --help)");
		goto out;
	}
	if (o.nstores != 2) {
		fail("mount needs STORE and MOUNTPOINT (see artifactfs --help)");
		goto out;
	}
	if (o.metrics) {
		if (fs_metrics_parse(o.metrics, &maddr, err, sizeof(err)) < 0) {
			fail("%s", err);
			goto out;
		}
		/* the server starts once the daemon runs: whether it can listen is told now */
		int sk = socket(maddr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
		if (sk >= 0)
			setsockopt(sk, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (sk < 0 || bind(sk, (struct sockaddr *)&maddr,
				   maddr.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
							       : sizeof(struct sockaddr_in)) < 0) {
			fail("cannot listen on --metrics %s: %s", o.metrics, strerror(errno));
			if (sk >= 0)
				close(sk);
			goto out;
		}
		close(sk);
	}
	cc.max_bytes = CACHE_DEFAULT_SIZE;
	cc.ttl = 60;
	cc.workers = 8;
	/* chunks: 512 MiB ahead of a sequential reader, in four ranged reads at once
	 * (CACHE_RUN_MAX); what is fetched beyond the memory pool is read back from disk */
	cc.readahead = 64;
	if (o.cache_size && (parse_size(o.cache_size, &cc.max_bytes) < 0 || cc.max_bytes == 0)) {
		fail("bad --cache-size '%s' (expected a size such as 20G)", o.cache_size);
		goto out;
	}
	if (o.ttl && parse_uint(o.ttl, 86400 * 365, &cc.ttl) < 0) {
		fail("bad --ttl '%s' (expected seconds)", o.ttl);
		goto out;
	}
	struct blob_options bo = { .timeout_s = 60, .insecure = o.insecure, .proxy = o.proxy,
				   .ca_file = o.ca_file };
	if (o.timeout && (parse_uint(o.timeout, 86400, &bo.timeout_s) < 0 || !bo.timeout_s)) {
		fail("bad --timeout '%s' (expected seconds)", o.timeout);
		goto out;
	}
	if (o.chunk_size) {
		uint64_t cs;
		if (parse_size(o.chunk_size, &cs) < 0 || cs < 4096 || cs > (64u << 20)) {
			fail("bad --chunk-size '%s' (4K to 64M)", o.chunk_size);
			goto out;
		}
		cc.chunk_size = (uint32_t)cs;
	}
	if (o.ca_file && access(o.ca_file, R_OK) < 0) {
		fail("--ca-file %s: %s", o.ca_file, strerror(errno));
		goto out;
	}
	log_setup(o.debug ? LOG_LVL_DEBUG : LOG_LVL_INFO, 0);
	if (stat(o.stores[1], &st) < 0 || !S_ISDIR(st.st_mode)) {
		fail("mountpoint %s: %s", o.stores[1],
		     errno && !S_ISDIR(st.st_mode) ? strerror(errno) : "not a directory");
		goto out;
	}
	if (blob_open(o.stores[0], &bo, &store, err, sizeof(err)) < 0) {
		fail("%s", err);
		goto out;
	}
	if (o.proxy && strcmp(store->ops->name, "azure") != 0 && !blob_is_mlflow(store)) {
		/* not used here, but a bad list is a mistake to say now, not at the next
		 * store it is meant for */
		struct blob_proxies *px = NULL;
		if (blob_proxies_parse(o.proxy, NULL, &px, err, sizeof(err)) < 0) {
			fail("%s", err);
			goto out;
		}
		blob_proxies_free(px);
		LOG_WARN("--proxy is for Azure stores (and MLflow artifacts kept in Azure); this "
			 "%s store is read directly", store->ops->name);
	}
	cache_dir = o.cache_dir ? strdup(o.cache_dir) : default_cache_dir();
	if (cache_dir && cache_dir[0] != '/') {
		/* the daemon works from "/": keep the folder the user meant */
		char cwd[PATH_MAX], *abs = NULL;
		if (!getcwd(cwd, sizeof(cwd)) || asprintf(&abs, "%s/%s", cwd, cache_dir) < 0)
			abs = NULL;
		free(cache_dir);
		cache_dir = abs;
	}
	if (!cache_dir) {
		fail("no cache folder: give --cache-dir");
		goto out;
	}
	cc.dir = cache_dir;
	char where[PATH_MAX];
	cc.holder = realpath(o.stores[1], where) ? where : o.stores[1];
	if (cache_create(&cc, store, &cache, err, sizeof(err)) < 0) {
		fail("%s", err);
		goto out;
	}
	store = NULL; /* the cache owns it */
	if (check_for_mount(cache, bo.timeout_s) < 0)
		goto out;
	if (fs_create(cache, cc.ttl, &fs) < 0) {
		fail("out of memory");
		goto out;
	}
	cache = NULL; /* the fs owns it */
	fs->xattrs = o.xattrs;
	fs->any_model_names = blob_is_mlflow(cache_store(fs->cache));
	struct fuse_operations ops = fs_ops;
	if (o.writable) {
		if (!blob_writable(cache_store(fs->cache))) {
			fail("--writable: the store %s takes no writes", cache_store(fs->cache)->id);
			goto out;
		}
		if (fs_writes_init(fs) < 0) {
			fail("out of memory");
			goto out;
		}
		fs_w_ops(&ops);
	}

	/* FUSE sees its own options only: ours were taken out by fuse_opt_parse. The
	 * mount's source is STORE as given (so mount -a knows an fstab line mounted),
	 * without what may be a secret: a query (SAS), a fragment, a user:password@ */
	char fsopt[PATH_MAX + 64];
	fs_source_option(o.stores[0], o.writable, fsopt, sizeof(fsopt));
	if (fuse_opt_add_arg(&fargs, "artifactfs") < 0 || fuse_opt_add_arg(&fargs, fsopt) < 0 ||
	    (o.debug && fuse_opt_add_arg(&fargs, "-d") < 0)) {
		fail("out of memory");
		goto out;
	}
	for (int i = 1; i < args.argc; i++)
		if (fuse_opt_add_arg(&fargs, args.argv[i]) < 0) {
			fail("out of memory");
			goto out;
		}
	char why[256] = "";
	fuse = new_fuse(&fargs, &ops, fs, why, sizeof(why));
	if (!fuse) {
		fail("bad FUSE options%s%s", why[0] ? ": " : "", why);
		goto out;
	}
	if (fuse_mount(fuse, o.stores[1]) != 0) {
		fail("cannot mount on %s", o.stores[1]);
		goto out;
	}
	mounted = 1;
	raise_readahead(cc.holder);
	if (fs_reply_hooks(fuse) != 0) {
		fail("cannot set up the FUSE device I/O");
		goto out;
	}
	if (fuse_daemonize(o.foreground) != 0) {
		fail("cannot start in the background");
		goto out;
	}
	if (!o.foreground)
		log_setup(LOG_LVL_INFO, 1);
	if (fuse_set_signal_handlers(fuse_get_session(fuse)) != 0) {
		LOG_ERROR("cannot set signal handlers");
		ret = 1;
		goto out;
	}
	LOG_INFO("serving %s on %s (cache %s, ttl %us)", cache_store(fs->cache)->id,
		 o.stores[1], cache_dir, cc.ttl);
	if (o.metrics) {
		metrics = fs_metrics_start(fs, &maddr);
		if (metrics)
			LOG_INFO("metrics on http://%s/metrics", o.metrics);
		else
			LOG_ERROR("cannot serve metrics on %s: %s", o.metrics, strerror(errno));
	}
	/* under systemd (Type=notify, -f): the mount is there and answers */
	sd_notifyf(0, "READY=1\nSTATUS=serving %s on %s", cache_store(fs->cache)->id,
		   o.stores[1]);
	lc = fuse_loop_cfg_create();
	if (!lc) {
		ret = 1;
		goto out;
	}
	/* readers wait in their request thread while a chunk is fetched: enough threads
	 * that many readers never starve the lookups */
	fuse_loop_cfg_set_max_threads(lc, 64);
	fuse_loop_cfg_set_idle_threads(lc, 16);
	ret = fuse_loop_mt(fuse, lc) == 0 ? 0 : 1;
	sd_notify(0, "STOPPING=1");
	fuse_remove_signal_handlers(fuse_get_session(fuse));
out:
	if (lc)
		fuse_loop_cfg_destroy(lc);
	fs_metrics_stop(metrics);
	if (mounted)
		fuse_unmount(fuse);
	if (fuse)
		fuse_destroy(fuse);
	fs_destroy(fs);
	cache_destroy(cache);
	blob_destroy(store);
	fuse_opt_free_args(&fargs);
	fuse_opt_free_args(&args);
	free(cache_dir);
	free(o.cache_dir);
	free(o.cache_size);
	free(o.ttl);
	free(o.chunk_size);
	free(o.timeout);
	free(o.proxy);
	free(o.ca_file);
	free(o.metrics);
	for (int i = 0; i < o.nstores && i < 3; i++)
		free(o.stores[i]);
	return ret;
}

/* ---- register and alias ---- */

static int cmd_register(int argc, char **argv)
{
	const char *pos[3], **tags = NULL, **aliases = NULL, *desc = NULL;
	struct blob_options bo = { .timeout_s = 60 };
	struct blob_store *s = NULL;
	size_t ntags = 0, naliases = 0;
	int npos = 0, ret = EXIT_USAGE, version;
	char err[512];

	tags = calloc((size_t)argc, sizeof(*tags));
	aliases = calloc((size_t)argc, sizeof(*aliases));
	if (!tags || !aliases)
		goto out;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *val = NULL;
		const char *opts[] = { "--alias", "--description", "--tag", "--timeout",
				       "--ca-file" };
		int which = -1;
		if (strcmp(a, "--insecure") == 0) {
			bo.insecure = 1;
			continue;
		}
		for (int k = 0; k < 5; k++) {
			size_t l = strlen(opts[k]);
			if (strcmp(a, opts[k]) == 0) {
				if (i + 1 >= argc) {
					ret = fail("%s needs a value", opts[k]);
					goto out;
				}
				which = k;
				val = argv[++i];
			} else if (strncmp(a, opts[k], l) == 0 && a[l] == '=') {
				which = k;
				val = a + l + 1;
			}
		}
		if (which == 0) {
			if (!reg_alias_ok(val)) {
				ret = fail("bad alias '%s' (a name, not all digits, not 'latest')", val);
				goto out;
			}
			aliases[naliases++] = val;
		} else if (which == 1) {
			desc = val;
		} else if (which == 2) {
			tags[ntags++] = val;
		} else if (which == 4) {
			bo.ca_file = val;
		} else if (which == 3) {
			if (parse_uint(val, 86400, &bo.timeout_s) < 0 || !bo.timeout_s) {
				ret = fail("bad --timeout '%s' (expected seconds)", val);
				goto out;
			}
		} else if (a[0] == '-' && a[1]) {
			ret = fail("unknown option '%s' (see artifactfs --help)", a);
			goto out;
		} else if (npos < 3) {
			pos[npos++] = a;
		} else {
			ret = fail("register takes STORE NAME SOURCE (see artifactfs --help)");
			goto out;
		}
	}
	if (npos != 3) {
		ret = fail("register takes STORE NAME SOURCE (see artifactfs --help)");
		goto out;
	}
	if (!cli_name_ok(pos[0], pos[1])) {
		ret = fail("bad model name '%s' (expected [A-Za-z0-9][A-Za-z0-9._-]{0,127})",
			   pos[1]);
		goto out;
	}
	if (open_store(pos[0], &bo, &s) < 0)
		goto out;
	struct reg_request req = { pos[1], pos[2], desc, tags, ntags };
	if (reg_register(s, &req, &version, err, sizeof(err)) < 0) {
		ret = fail("%s", err);
		goto out;
	}
	printf("%d\n", version);
	fflush(stdout);
	for (size_t i = 0; i < naliases; i++) {
		if (reg_alias_set(s, pos[1], aliases[i], version, err, sizeof(err)) < 0) {
			ret = fail("version %d registered, but alias %s failed: %s", version,
				   aliases[i], err);
			goto out;
		}
	}
	ret = 0;
out:
	blob_destroy(s);
	free(tags);
	free(aliases);
	return ret;
}

static int cmd_alias(int argc, char **argv)
{
	const char *pos[4];
	struct blob_options bo = { .timeout_s = 60 };
	struct blob_store *s = NULL;
	int npos = 0, del = 0, version = 0, ret = EXIT_USAGE;
	char err[512];

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--delete") == 0)
			del = 1;
		else if (strcmp(argv[i], "--insecure") == 0)
			bo.insecure = 1;
		else if (strcmp(argv[i], "--timeout") == 0 && i + 1 < argc) {
			if (parse_uint(argv[++i], 86400, &bo.timeout_s) < 0 || !bo.timeout_s)
				return fail("bad --timeout '%s' (expected seconds)", argv[i]);
		}
		else if (strcmp(argv[i], "--ca-file") == 0 && i + 1 < argc)
			bo.ca_file = argv[++i];
		else if (argv[i][0] == '-' && argv[i][1])
			return fail("unknown option '%s' (see artifactfs --help)", argv[i]);
		else if (npos < 4)
			pos[npos++] = argv[i];
		else
			return fail("alias takes STORE NAME ALIAS VERSION (see artifactfs --help)");
	}
	if (npos != (del ? 3 : 4))
		return fail("alias takes STORE NAME ALIAS VERSION, or STORE NAME ALIAS --delete");
	if (!cli_name_ok(pos[0], pos[1]))
		return fail("bad model name '%s' (expected [A-Za-z0-9][A-Za-z0-9._-]{0,127})",
			    pos[1]);
	if (!reg_alias_ok(pos[2]))
		return fail("bad alias '%s' (a name, not all digits, not 'latest')", pos[2]);
	if (!del && (version = reg_version_name(pos[3])) < 0)
		return fail("bad version '%s' (expected a version number such as 3)", pos[3]);
	if (open_store(pos[0], &bo, &s) < 0)
		return EXIT_USAGE;
	if (reg_alias_set(s, pos[1], pos[2], version, err, sizeof(err)) < 0)
		ret = fail("%s", err);
	else
		ret = 0;
	blob_destroy(s);
	return ret;
}

int fs_main(int argc, char **argv)
{
	log_setup(LOG_LVL_INFO, 0);
	if (argc < 2) {
		fputs(usage, stderr);
		return EXIT_USAGE;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
	    strcmp(argv[1], "help") == 0) {
		fputs(usage, stdout);
		return 0;
	}
	if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "-V") == 0) {
		if (ARTIFACTFS_BUILD[0])
			printf("artifactfs %s (%s)\n", ARTIFACTFS_VERSION, ARTIFACTFS_BUILD);
		else
			printf("artifactfs %s\n", ARTIFACTFS_VERSION);
		return 0;
	}
	if (strcmp(argv[1], "mount") == 0)
		return fs_mount_main(argc - 1, argv + 1);
	if (strcmp(argv[1], "register") == 0)
		return cmd_register(argc - 1, argv + 1);
	if (strcmp(argv[1], "alias") == 0)
		return cmd_alias(argc - 1, argv + 1);
	if (strcmp(argv[1], "prefetch") == 0)
		return fs_prefetch_main(argc - 1, argv + 1);
	if (strcmp(argv[1], "stats") == 0)
		return fs_stats_main(argc - 1, argv + 1);
	if (strstr(argv[1], "://")) /* mount.fuse3 (fstab) calls: artifactfs STORE MNT -o ... */
		return fs_mount_main(argc, argv);
	return fail("unknown command '%s' (see artifactfs --help)", argv[1]);
}

int main(int argc, char **argv)
{
	return fs_main(argc, argv);
}
