/*
 * fuzz_mlflow.c: libFuzzer target for the MLflow backend's parsers: every answer of
 * the tracking server's API, and artifact URIs.
 *
 * Input: URI '\n' JSON. Without a '\n' the whole input is both. The URI goes to
 * ml_loc_parse(); the JSON to every ml_parse_* function.
 *
 * Invariants, for any input:
 *   - a parser that fails hands out no page token, and one that succeeds hands out
 *     a token that is NULL or not empty;
 *   - every file name passes blob_name_ok(); every version is a positive number;
 *     experiment and run ids are NUL-terminated and not empty;
 *   - a location's prefix is "" or ends in '/', has no "//" and no "." or ".."
 *     segment; a direct location has a root ending in '/', and neither holds '?',
 *     '#' or a control character.
 * A broken invariant aborts, so libFuzzer keeps the input.
 */
#include "blob/mlflow.h"
#include "blob/blob.h"
#include "blob/log.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void fail(const char *what, const char *detail)
{
	fprintf(stderr, "fuzz_mlflow: invariant broken: %s: '%.200s'\n", what,
		detail ? detail : "");
	abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	log_setup(LOG_LVL_ERROR, 0);
	return 0;
}

static void check_token(int ret, char *next)
{
	if (ret < 0 && next)
		fail("a failure with a page token", next);
	if (next && !next[0])
		fail("an empty page token", NULL);
	free(next);
}

static void check_id(const char *id, size_t size)
{
	if (!memchr(id, '\0', size) || !id[0])
		fail("an empty or unterminated id", NULL);
}

static void check_clean(const char *s)
{
	for (const char *p = s; *p; p++)
		if (*p == '?' || *p == '#' || (unsigned char)*p < 0x20 || *p == 0x7f)
			fail("a location with a query or a control character", s);
}

static void check_loc(const char *uri)
{
	struct ml_loc l;
	int ret = ml_loc_parse(uri, &l);

	if (ret == -EINVAL || ret == -ENOMEM)
		return;
	if (ret != 0)
		fail("unexpected error code", strerror(-ret));
	if (l.kind == ML_LOC_OTHER) {
		ml_loc_release(&l);
		return;
	}
	const char *p = l.prefix;
	if (!p)
		fail("no prefix", uri);
	size_t n = strlen(p);
	if (n && p[n - 1] != '/')
		fail("a prefix not ending in '/'", p);
	if (strstr(p, "//") || p[0] == '/')
		fail("an empty segment in a prefix", p);
	for (const char *s = p; *s;) {
		size_t seg = strcspn(s, "/");
		if ((seg == 1 && s[0] == '.') || (seg == 2 && s[0] == '.' && s[1] == '.'))
			fail("a dot segment in a prefix", p);
		s += seg + (s[seg] == '/');
	}
	check_clean(p);
	if (l.kind == ML_LOC_DIRECT) {
		if (!l.root || !l.root[0] || l.root[strlen(l.root) - 1] != '/')
			fail("a direct location without a root ending in '/'", uri);
		check_clean(l.root);
	}
	if (l.kind == ML_LOC_RUN)
		check_id(l.run_id, sizeof(l.run_id));
	ml_loc_release(&l);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *nl = memchr(data, '\n', size);
	size_t ulen = nl ? (size_t)(nl - data) : size;
	const char *json = nl ? (const char *)nl + 1 : (const char *)data;
	size_t jlen = size - (size_t)(json - (const char *)data);
	char *uri = malloc(ulen + 1), *next = NULL;
	int ret;

	if (!uri)
		return 0;
	memcpy(uri, data, ulen);
	uri[ulen] = '\0';
	check_loc(uri);
	free(uri);

	struct ml_exp *e = NULL;
	size_t n = 0;
	ret = ml_parse_experiments(json, jlen, &e, &n, &next);
	check_token(ret, next);
	for (size_t i = 0; i < n; i++) {
		check_id(e[i].id, sizeof(e[i].id));
		(void)ml_exp_name_ok(e[i].name);
	}
	ml_exps_free(e, n);

	struct ml_run *r = NULL, one;
	n = 0;
	ret = ml_parse_runs(json, jlen, &r, &n, &next);
	check_token(ret, next);
	for (size_t i = 0; i < n; i++) {
		check_id(r[i].id, sizeof(r[i].id));
		if (!r[i].name || !r[i].artifact_uri)
			fail("a run without its strings", r[i].id);
	}
	ml_runs_free(r, n);
	if (ml_parse_run(json, jlen, &one) == 0)
		ml_run_release(&one);

	struct ml_file *f = NULL;
	n = 0;
	ret = ml_parse_files(json, jlen, &f, &n, &next);
	check_token(ret, next);
	for (size_t i = 0; i < n; i++)
		if (!blob_name_ok(f[i].name, strlen(f[i].name)))
			fail("a file name that cannot be in a tree", f[i].name);
	ml_files_free(f, n);

	char **names = NULL;
	n = 0;
	ret = ml_parse_models(json, jlen, &names, &n, &next);
	check_token(ret, next);
	for (size_t i = 0; i < n; i++)
		if (!names[i][0])
			fail("an empty model name", NULL);
	ml_names_free(names, n);

	struct ml_version *v = NULL;
	n = 0;
	ret = ml_parse_versions(json, jlen, &v, &n, &next);
	check_token(ret, next);
	for (size_t i = 0; i < n; i++)
		if (v[i].version <= 0 || !v[i].source)
			fail("a version that is not a positive number", NULL);
	ml_versions_free(v, n);

	struct ml_alias *a = NULL;
	n = 0;
	if (ml_parse_aliases(json, jlen, &a, &n) == 0)
		for (size_t i = 0; i < n; i++)
			if (a[i].version <= 0 || !memchr(a[i].name, '\0', sizeof(a[i].name)))
				fail("a bad alias", NULL);
	free(a);

	char *du = NULL, code[64];
	if (ml_parse_download_uri(json, jlen, &du) == 0 && (!du || !du[0]))
		fail("an empty download URI", NULL);
	free(du);
	int ver = 0;
	if (ml_parse_created_version(json, jlen, &ver) == 0 && ver <= 0)
		fail("a created version that is not positive", NULL);
	memset(code, 'x', sizeof(code));
	ml_parse_error(json, jlen, code, sizeof(code));
	if (!memchr(code, '\0', sizeof(code)))
		fail("error code not NUL-terminated", NULL);
	return 0;
}
