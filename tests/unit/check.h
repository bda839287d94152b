/*
 * check.h: the unit-test harness. A test is a function; CHECK records a failure
 * with its line and goes on; RUN runs one test in a fresh temp folder; the program
 * ends with "N passed, N failed" and exits non-zero on any failure.
 */
#ifndef TESTS_CHECK_H
#define TESTS_CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int check_failed_now;
static int check_passed, check_failed;
static char check_dir[256];

#define CHECK(cond)                                                                  \
	do {                                                                         \
		if (!(cond)) {                                                       \
			fprintf(stderr, "  FAILED %s:%d: %s\n", __FILE__, __LINE__, #cond); \
			check_failed_now = 1;                                        \
		}                                                                    \
	} while (0)

#define CHECK_EQ(a, b)                                                               \
	do {                                                                         \
		long long check_a = (long long)(a), check_b = (long long)(b);        \
		if (check_a != check_b) {                                            \
			fprintf(stderr, "  FAILED %s:%d: %s == %s (%lld != %lld)\n", \
				__FILE__, __LINE__, #a, #b, check_a, check_b);        \
			check_failed_now = 1;                                        \
		}                                                                    \
	} while (0)

#define RUN(fn)                                                                      \
	do {                                                                         \
		snprintf(check_dir, sizeof(check_dir), "/tmp/artifactfs-unit.XXXXXX"); \
		if (!mkdtemp(check_dir)) {                                           \
			perror("mkdtemp");                                           \
			exit(2);                                                     \
		}                                                                    \
		check_failed_now = 0;                                                \
		fn();                                                                \
		char check_cmd[300];                                                 \
		snprintf(check_cmd, sizeof(check_cmd), "rm -rf '%s'", check_dir);    \
		if (system(check_cmd) != 0)                                          \
			fprintf(stderr, "  cannot remove %s\n", check_dir);          \
		printf("%s %s\n", check_failed_now ? "FAIL" : "ok  ", #fn);           \
		if (check_failed_now)                                                \
			check_failed++;                                              \
		else                                                                 \
			check_passed++;                                              \
	} while (0)

#define CHECK_DONE()                                                                 \
	do {                                                                         \
		printf("%d passed, %d failed\n", check_passed, check_failed);        \
		return check_failed ? 1 : 0;                                         \
	} while (0)

#endif
