/*
 * meta_disk.c: the on-disk copies of listings and records (DIR/meta/XX/<id>).
 *
 * A record is a header line with its length and CRC-32C, then its bytes, so a
 * damaged copy is found (and fetched again) instead of trusted. A listing is a
 * record whose bytes are one line per entry. Files are written aside and renamed
 * into place (cache_write_file), so a copy is whole or absent.
 */
#include "cache_private.h"
#include "../blob/log.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Largest copy read back: eight times the largest record (listings are bigger). */
#define META_DISK_MAX (128u << 20)

void cache_meta_path(struct cache *c, const char *name, char *path, size_t size)
{
	char hex[CACHE_HEX_LEN + 1];
	const void *parts[] = { c->store->id, name };
	const size_t lens[] = { strlen(c->store->id), strlen(name) };

	cache_sha256_hex(parts, lens, 2, hex);
	snprintf(path, size, "%s/meta/%.2s/%s", c->dir, hex, hex);
}

static int read_file(const char *path, char **data, size_t *len, time_t *saved)
{
	struct stat st;
	char *buf = NULL;
	int fd, ret = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0 || st.st_size > META_DISK_MAX) {
		ret = -EIO;
		goto out;
	}
	buf = malloc((size_t)st.st_size + 1);
	if (!buf) {
		ret = -ENOMEM;
		goto out;
	}
	size_t done = 0;
	while (done < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + done, (size_t)st.st_size - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			ret = -EIO;
			goto out;
		}
		done += (size_t)n;
	}
	buf[done] = '\0';
	if (saved)
		*saved = st.st_mtime;
	*data = buf;
	*len = done;
	buf = NULL;
out:
	free(buf);
	close(fd);
	return ret;
}

/* ---- records ---- */
#define RECORD_MAGIC "artifactfs-record 1"

int cache_record_save(struct cache *c, const char *path, const char *data, size_t len,
		       int durable)
{
	char head[96];
	int n = snprintf(head, sizeof(head), RECORD_MAGIC " %zu %08x\n", len,
			 cache_crc32c(0, data, len));
	char *all = malloc((size_t)n + len);
	int ret;

	if (!all)
		return -ENOMEM;
	memcpy(all, head, (size_t)n);
	memcpy(all + n, data, len);
	ret = cache_write_file(c, path, all, (size_t)n + len, durable);
	free(all);
	return ret;
}

int cache_record_load(const char *path, char **data, size_t *len, time_t *saved)
{
	char *text = NULL, *nl;
	size_t tlen = 0, want = 0;
	unsigned crc;
	int ret = read_file(path, &text, &tlen, saved);

	if (ret < 0)
		return ret;
	nl = memchr(text, '\n', tlen);
	if (!nl || sscanf(text, RECORD_MAGIC " %zu %x", &want, &crc) != 2 ||
	    want != tlen - (size_t)(nl + 1 - text) || cache_crc32c(0, nl + 1, want) != crc) {
		LOG_INFO("cached copy %s is damaged; dropping it", path);
		unlink(path);
		free(text);
		return -ENOENT;
	}
	memmove(text, nl + 1, want);
	text[want] = '\0';
	*data = text;
	*len = want;
	return 0;
}

/* ---- listings on disk ----
 * One line of header, then one line per entry: name, folder flag, size, mtime seconds
 * and nanoseconds, etag, separated by tabs. Names never hold a control character
 * (blob_list_clean drops those), and a listing with such an etag is not kept, so the
 * format needs no escaping. Streaming it keeps memory flat for folders of millions.
 */
#define LISTING_MAGIC "artifactfs-listing 1"

static int line_ok(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20)
			return 0;
	return 1;
}

int cache_listing_save(struct cache *c, const char *name, const struct blob_list *l,
			int missing)
{
	size_t cap = 64 + l->count * 64, len = 0;
	char *text = malloc(cap), path[PATH_MAX];
	int ret;

	if (!text)
		return -ENOMEM;
	len = (size_t)snprintf(text, cap, LISTING_MAGIC "\t%d\n", missing);
	for (size_t i = 0; i < l->count; i++) {
		const struct blob_entry *e = &l->entries[i];
		size_t need = strlen(e->name) + strlen(e->etag) + 80;
		if (!line_ok(e->name) || !line_ok(e->etag)) {
			free(text);
			return -EINVAL;
		}
		if (len + need > cap) {
			cap = (len + need) * 2;
			char *n = realloc(text, cap);
			if (!n) {
				free(text);
				return -ENOMEM;
			}
			text = n;
		}
		len += (size_t)snprintf(text + len, cap - len, "%s\t%d\t%llu\t%lld\t%ld\t%s\n",
					e->name, e->is_dir, (unsigned long long)e->size,
					(long long)e->mtime.tv_sec, e->mtime.tv_nsec, e->etag);
	}
	cache_meta_path(c, name, path, sizeof(path));
	ret = cache_record_save(c, path, text, len, 0);
	free(text);
	return ret;
}

int cache_listing_load(struct cache *c, const char *name, struct blob_list *l, int *missing,
		       time_t *saved)
{
	char path[PATH_MAX], *text = NULL, *p, *end;
	size_t len;
	int ret;

	cache_meta_path(c, name, path, sizeof(path));
	ret = cache_record_load(path, &text, &len, saved);
	if (ret < 0)
		return ret;
	ret = -EBADMSG;
	end = text + len;
	p = memchr(text, '\n', len);
	if (!p || strncmp(text, LISTING_MAGIC "\t", strlen(LISTING_MAGIC) + 1) != 0)
		goto out;
	*missing = text[strlen(LISTING_MAGIC) + 1] == '1';
	for (p++; p < end;) {
		char *nl = memchr(p, '\n', (size_t)(end - p)), *f[6];
		int n = 0;
		if (!nl)
			goto out;
		*nl = '\0';
		for (char *q = p; n < 6; n++) {
			f[n] = q;
			q = strchr(q, '\t');
			if (!q)
				break;
			*q++ = '\0';
		}
		if (n != 5)
			goto out; /* not six fields */
		struct blob_entry e = { 0 };
		char *x;
		e.name = f[0];
		e.is_dir = f[1][0] == '1' ? 1 : f[1][0] == '2' ? BLOB_ENTRY_LINK : 0;
		errno = 0;
		e.size = strtoull(f[2], &x, 10);
		if (*x)
			goto out;
		e.mtime.tv_sec = (time_t)strtoll(f[3], &x, 10);
		if (*x)
			goto out;
		e.mtime.tv_nsec = strtol(f[4], &x, 10);
		if (*x || errno || strlen(f[5]) >= BLOB_ETAG_MAX)
			goto out;
		memcpy(e.etag, f[5], strlen(f[5]) + 1);
		if (blob_list_add(l, &e) < 0) {
			ret = -ENOMEM;
			goto out;
		}
		p = nl + 1;
	}
	ret = 0;
out:
	free(text);
	return ret;
}

