/*
 * fuzz_names.c: libFuzzer target for the mapping from store keys to file names.
 *
 * The input is split at '\n' into names (any bytes: '/', ".", "..", control
 * characters, more than NAME_MAX bytes). Entry i is a folder when i is odd, else a
 * blob. The names go into a struct blob_list, blob_list_clean() runs, and the result
 * must be exactly what a reference model says: the distinct names that a plain
 * reading of blob_name_ok()'s contract accepts, sorted by strcmp(), each a folder
 * when any entry of that name was one. Every name is also given to blob_name_ok(),
 * reg_name_ok(), reg_alias_ok(), reg_version_of() and reg_version_name(), whose
 * answers must match reference versions written here from registry.h and README.md.
 */
#include "blob/blob.h"
#include "blob/log.h"
#include "fs/registry.h"

#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void fail(const char *what, const char *detail)
{
	fprintf(stderr, "fuzz_names: invariant broken: %s: '%.300s'\n", what,
		detail ? detail : "");
	abort();
}

/* ---- reference model ---- */

/* Not empty, not "." or "..", at most NAME_MAX bytes, no '/', no control byte. */
static int ref_name_ok(const char *s, size_t len)
{
	if (len == 0 || len > NAME_MAX)
		return 0;
	if (len == 1 && s[0] == '.')
		return 0;
	if (len == 2 && s[0] == '.' && s[1] == '.')
		return 0;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '/' || c < 0x20 || c == 0x7f)
			return 0;
	}
	return 1;
}

static int ref_alnum(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

/* [A-Za-z0-9][A-Za-z0-9._-]{0,127} */
static int ref_model_name(const char *s)
{
	size_t len = strlen(s);

	if (len < 1 || len > 128 || !ref_alnum(s[0]))
		return 0;
	for (size_t i = 1; i < len; i++)
		if (!ref_alnum(s[i]) && s[i] != '.' && s[i] != '_' && s[i] != '-')
			return 0;
	return 1;
}

static int ref_alias(const char *s)
{
	int digits = 1;

	if (!ref_model_name(s) || strcmp(s, "latest") == 0)
		return 0;
	for (const char *p = s; *p; p++)
		if (*p < '0' || *p > '9')
			digits = 0;
	return !digits;
}

/* The number spelled by the n bytes at s: 1 to 1000000000, decimal digits only, no
 * leading zero; -1 otherwise. */
static int ref_number(const char *s, size_t n)
{
	long long v = 0;

	if (n == 0 || n > 10 || s[0] == '0')
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	return v >= 1 && v <= 1000000000 ? (int)v : -1;
}

static int ref_version_of(const char *s)
{
	size_t len = strlen(s);

	if (len < 5 || strcmp(s + len - 5, ".json") != 0)
		return -1;
	return ref_number(s, len - 5);
}

static int ref_version_name(const char *s)
{
	return ref_number(s, strlen(s));
}

struct ref_entry {
	const char *name;
	int is_dir;
};

static int ref_cmp(const void *a, const void *b)
{
	return strcmp(((const struct ref_entry *)a)->name, ((const struct ref_entry *)b)->name);
}

/* ---- the target ---- */

/* raw is the whole piece of input (it may hold NUL bytes) and is NUL-terminated;
 * the registry functions take it as a C string. */
static void check_names(const char *raw, size_t rawlen)
{
	const char *name = raw;
	char msg[64];

	if (!!blob_name_ok(raw, rawlen) != ref_name_ok(raw, rawlen))
		fail("blob_name_ok disagrees with its contract", name);
	if (!!reg_name_ok(name) != ref_model_name(name))
		fail("reg_name_ok disagrees with the model name rule", name);
	if (!!reg_alias_ok(name) != ref_alias(name))
		fail("reg_alias_ok disagrees with the alias rule", name);
	if (reg_version_of(name) != ref_version_of(name)) {
		snprintf(msg, sizeof(msg), "reg_version_of gives %d, expected %d",
			 reg_version_of(name), ref_version_of(name));
		fail(msg, name);
	}
	if (reg_version_name(name) != ref_version_name(name)) {
		snprintf(msg, sizeof(msg), "reg_version_name gives %d, expected %d",
			 reg_version_name(name), ref_version_name(name));
		fail(msg, name);
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
	const char *p = (const char *)data, *end = p + size;
	struct ref_entry *ref = NULL;
	char **names = NULL;
	size_t n = 0, nref = 0, cap = 0, o;
	struct blob_list l;

	blob_list_init(&l);
	while (p <= end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
		if (n == cap) {
			cap = cap ? cap * 2 : 16;
			char **nn = realloc(names, cap * sizeof(*nn));
			struct ref_entry *nr = realloc(ref, cap * sizeof(*nr));
			if (nn)
				names = nn;
			if (nr)
				ref = nr;
			if (!nn || !nr)
				goto out;
		}
		names[n] = malloc(len + 1);
		if (!names[n])
			goto out;
		memcpy(names[n], p, len);
		names[n][len] = '\0';
		check_names(names[n], len);

		struct blob_entry e = { .name = names[n], .is_dir = (int)(n & 1) };
		if (!e.is_dir) {
			e.size = len;
			snprintf(e.etag, sizeof(e.etag), "\"%zx\"", n);
		}
		if (blob_list_add(&l, &e) < 0)
			goto out;
		if (ref_name_ok(names[n], strlen(names[n]))) {
			ref[nref].name = names[n];
			ref[nref].is_dir = e.is_dir;
			nref++;
		}
		n++;
		if (!nl)
			break;
		p = nl + 1;
	}

	blob_list_clean(&l, "fuzz/");

	if (nref > 1)
		qsort(ref, nref, sizeof(*ref), ref_cmp);
	o = 0;
	for (size_t i = 0; i < nref; i++) {
		if (o > 0 && strcmp(ref[o - 1].name, ref[i].name) == 0) {
			ref[o - 1].is_dir |= ref[i].is_dir;
			continue;
		}
		ref[o++] = ref[i];
	}
	nref = o;

	for (size_t i = 0; i < l.count; i++) {
		const char *name = l.entries[i].name;
		if (!blob_name_ok(name, strlen(name)))
			fail("cleaned listing keeps a name blob_name_ok refuses", name);
		if (strchr(name, '/'))
			fail("cleaned listing keeps a name with '/'", name);
		if (i > 0 && strcmp(l.entries[i - 1].name, name) >= 0)
			fail("cleaned listing not sorted or not unique", name);
	}
	if (l.count != nref)
		fail("cleaned listing does not keep exactly the usable names", NULL);
	for (size_t i = 0; i < nref; i++) {
		if (strcmp(l.entries[i].name, ref[i].name) != 0)
			fail("cleaned listing has another name than the model", ref[i].name);
		if (l.entries[i].is_dir != ref[i].is_dir)
			fail("a folder does not win over a blob of the same name", ref[i].name);
		if (!l.entries[i].is_dir && l.entries[i].etag[0] != '"')
			fail("a blob lost its properties", ref[i].name);
	}
out:
	blob_list_release(&l);
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	free(ref);
	return 0;
}
