/*
 * fuzz_registry.c: libFuzzer target for the registry record parsers: a version
 * record (read as model "m", version 1) and an aliases.json table, both store
 * content that may be hostile.
 *
 * Invariants when reg_version_parse() succeeds:
 *   - version is 1;
 *   - source ends in '/' and each of its segments passes blob_name_ok();
 *   - each file path is relative and each of its segments passes blob_name_ok();
 *   - files are sorted by strcmp() and unique;
 *   - no file path is a folder of another ("a" and "a/b" never both);
 *   - each etag is a non-empty NUL-terminated string, each sha256 "" or 64 hex digits;
 *   - reg_version_file() finds each file.
 * When reg_aliases_parse() succeeds: each alias passes reg_alias_ok() and its version
 * is in [1, REG_VERSION_MAX]. Everything is freed (LeakSanitizer checks).
 */
#include "blob/blob.h"
#include "blob/log.h"
#include "fs/registry.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void fail(const char *what, const char *detail)
{
	fprintf(stderr, "fuzz_registry: invariant broken: %s: '%.200s'\n", what,
		detail ? detail : "");
	abort();
}

/* Relative, no empty segment, every segment a plain name; with dir, one trailing
 * '/' is required and not a segment. */
static int segments_ok(const char *path, int dir)
{
	size_t len = strlen(path);
	const char *p = path, *end;

	if (dir) {
		if (len == 0 || path[len - 1] != '/')
			return 0;
		len--;
	}
	end = path + len;
	for (;;) {
		const char *slash = memchr(p, '/', (size_t)(end - p));
		size_t n = slash ? (size_t)(slash - p) : (size_t)(end - p);
		if (!blob_name_ok(p, n))
			return 0;
		if (!slash)
			return 1;
		p = slash + 1;
	}
}

static int hex64_lower(const char *s)
{
	if (strlen(s) != 64)
		return 0;
	for (; *s; s++)
		if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f')))
			return 0;
	return 1;
}

/* Whether path is in the sorted files, by a search written apart from the code
 * under test. */
static int has_path(const struct reg_version *v, const char *path, size_t n)
{
	size_t lo = 0, hi = v->nfiles;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		const char *q = v->files[mid].path;
		int c = strncmp(q, path, n);
		if (c == 0)
			c = q[n] ? 1 : 0;
		if (c == 0)
			return 1;
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return 0;
}

static void check_version(const struct reg_version *v)
{
	if (v->version != 1)
		fail("version is not the one asked for", NULL);
	if (!v->source || !segments_ok(v->source, 1))
		fail("bad source", v->source);
	if (v->nfiles && !v->files)
		fail("files missing", NULL);
	for (size_t i = 0; i < v->nfiles; i++) {
		const struct reg_file *f = &v->files[i];
		if (!f->path || !segments_ok(f->path, 0))
			fail("bad file path", f->path);
		if (i > 0 && strcmp(v->files[i - 1].path, f->path) >= 0)
			fail("files not sorted or not unique", f->path);
		if (!memchr(f->etag, '\0', sizeof(f->etag)) || !f->etag[0])
			fail("bad etag", f->path);
		if (!memchr(f->sha256, '\0', sizeof(f->sha256)) ||
		    (f->sha256[0] && !hex64_lower(f->sha256)))
			fail("bad sha256", f->path);
		for (const char *s = strchr(f->path, '/'); s; s = strchr(s + 1, '/'))
			if (has_path(v, f->path, (size_t)(s - f->path)))
				fail("a file is also a folder of another file", f->path);
		if (reg_version_file(v, f->path) != f)
			fail("reg_version_file does not find a file", f->path);
	}
}

static void check_aliases(const struct reg_alias *a, size_t n)
{
	if (!a)
		fail("success without a table", NULL);
	for (size_t i = 0; i < n; i++) {
		if (!memchr(a[i].name, '\0', sizeof(a[i].name)))
			fail("alias name not NUL-terminated", NULL);
		if (!reg_alias_ok(a[i].name))
			fail("alias name refused by reg_alias_ok", a[i].name);
		if (a[i].version < 1 || a[i].version > REG_VERSION_MAX)
			fail("alias version out of range", a[i].name);
	}
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	log_setup(LOG_LVL_ERROR, 0);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *text = (const char *)data;
	struct reg_version *v = (struct reg_version *)&v;
	struct reg_alias *a = (struct reg_alias *)&a;
	size_t n = (size_t)-1;
	int ret;

	ret = reg_version_parse(text, size, "m", 1, &v);
	if (ret == 0 && !v)
		fail("success without a record", NULL);
	if (ret < 0 && v)
		fail("failure with a record", NULL);
	if (ret != 0 && ret != -EBADMSG && ret != -ENOMEM)
		fail("unexpected error code", strerror(-ret));
	if (ret == 0)
		check_version(v);
	reg_version_free(v);

	ret = reg_version_parse_quiet(text, size, "m", 1, &v);
	if ((ret == 0) != (v != NULL))
		fail("quiet parse: result and record disagree", NULL);
	reg_version_free(v);

	ret = reg_aliases_parse(text, size, "m", &a, &n);
	if (ret < 0 && (a || n))
		fail("failure with a table", NULL);
	if (ret != 0 && ret != -EBADMSG && ret != -ENOMEM)
		fail("unexpected error code", strerror(-ret));
	if (ret == 0)
		check_aliases(a, n);
	free(a);
	return 0;
}
