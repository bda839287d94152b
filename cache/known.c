/*
 * known.c: the chunk files checked, known across mounts.
 *
 * A chunk file checked against its trailer is known by its identity (inode, size,
 * the fixed mtime, ctime): any write changes ctime, and nothing a user can call sets
 * ctime back. A clean end of the cache lists the identities of the files it checked
 * (DIR/checked, with a CRC-32C of its own), so the next mount serves them without
 * reading each one whole first: a file whose identity is still the listed one is the
 * file that was checked. The list is read once at start and removed; a cache that
 * ends without writing it (killed) leaves every file to be checked again. What a
 * listed file does not catch is damage that bypasses the file API (the disk's own):
 * its identity stays, and it is not read whole again until it changes.
 */
#include "cache_private.h"
#include "../blob/log.h"

#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define KNOWN_MAGIC "AFSCHECKED1\n"

static void known_path(const struct cache *c, char *path, size_t size)
{
	snprintf(path, size, "%s/checked", c->dir);
}

void cache_chunks_known_save(struct cache *c)
{
	char path[PATH_MAX], line[CACHE_HEX_LEN + 160];
	size_t len = strlen(KNOWN_MAGIC), cap = 4096;
	char *buf = malloc(cap);

	if (!buf)
		return;
	memcpy(buf, KNOWN_MAGIC, len);
	pthread_mutex_lock(&c->lock);
	for (size_t i = 0; buf && i < c->nbuckets; i++) {
		for (struct cache_chunk *ch = c->chunks[i]; ch; ch = ch->hnext) {
			if (ch->state != CHUNK_PRESENT || !ch->verified || !cache_chunk_marked(ch))
				continue;
			int n = snprintf(line, sizeof(line), "%s.%" PRIu64 " %" PRIu64 " %" PRIu64
					 " %lld %ld\n", ch->hex, ch->index, (uint64_t)ch->ino,
					 (uint64_t)ch->fsize, (long long)ch->fctime.tv_sec,
					 ch->fctime.tv_nsec);
			if (len + (size_t)n + 32 > cap) {
				char *nb = realloc(buf, cap * 2);
				if (!nb) {
					free(buf);
					buf = NULL;
					break;
				}
				buf = nb;
				cap *= 2;
			}
			memcpy(buf + len, line, (size_t)n);
			len += (size_t)n;
		}
	}
	pthread_mutex_unlock(&c->lock);
	if (!buf)
		return;
	len += (size_t)snprintf(buf + len, cap - len, "end %08x\n", cache_crc32c(0, buf, len));
	known_path(c, path, sizeof(path));
	/* the files it names reach the disk before it does: after a power loss no list
	 * names a file whose bytes did not */
	int dfd = open(c->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0 || syncfs(dfd) < 0 || cache_write_file(c, path, buf, len, 1) < 0)
		LOG_DEBUG("cannot keep the list of checked chunk files");
	if (dfd >= 0)
		close(dfd);
	free(buf);
}

void cache_chunks_known_load(struct cache *c)
{
	char path[PATH_MAX], *data = NULL;
	size_t len = 0;
	FILE *f;

	known_path(c, path, sizeof(path));
	f = fopen(path, "re");
	if (!f)
		return;
	struct stat st;
	if (fstat(fileno(f), &st) == 0 && st.st_size > 0 && st.st_size < (1 << 30) &&
	    (data = malloc((size_t)st.st_size + 1)) != NULL)
		len = fread(data, 1, (size_t)st.st_size, f);
	fclose(f);
	unlink(path); /* read once: a later crash must not leave it behind */
	if (!data)
		return;
	data[len] = '\0';
	/* the last line holds the CRC of everything before it */
	char *end = len > 1 ? memrchr(data, '\n', len - 1) : NULL;
	unsigned crc;
	size_t body = end ? (size_t)(end - data) + 1 : 0;
	if (!end || strncmp(data, KNOWN_MAGIC, strlen(KNOWN_MAGIC)) != 0 ||
	    sscanf(end + 1, "end %8x", &crc) != 1 || crc != cache_crc32c(0, data, body)) {
		LOG_INFO("the list of checked chunk files is damaged; every file is checked "
			 "again");
		free(data);
		return;
	}
	data[body] = '\0';
	pthread_mutex_lock(&c->lock);
	for (char *p = data + strlen(KNOWN_MAGIC), *nl; *p; p = nl + 1) {
		char hex[CACHE_HEX_LEN + 1];
		unsigned long long index, ino, size;
		long long cs;
		long cns;
		nl = strchr(p, '\n');
		if (!nl)
			break;
		*nl = '\0';
		if (strlen(p) < CACHE_HEX_LEN + 2 || p[CACHE_HEX_LEN] != '.')
			continue;
		memcpy(hex, p, CACHE_HEX_LEN);
		hex[CACHE_HEX_LEN] = '\0';
		if (sscanf(p + CACHE_HEX_LEN + 1, "%llu %llu %llu %lld %ld", &index, &ino, &size,
			   &cs, &cns) != 5)
			continue;
		struct cache_chunk *ch = cache_chunk_find(c, hex, index);
		if (ch && ch->state == CHUNK_PRESENT && (uint64_t)ch->ino == ino &&
		    (uint64_t)ch->fsize == size && ch->fctime.tv_sec == cs &&
		    ch->fctime.tv_nsec == cns && cache_chunk_marked(ch))
			ch->verified = 1;
	}
	pthread_mutex_unlock(&c->lock);
	free(data);
}
