/*
 * log.c: level filter and sink for log.h. Each line is formatted whole before it is
 * written, so lines of concurrent threads never interleave.
 */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

static enum log_level log_max = LOG_LVL_INFO; /* set once before threads start */
static int log_syslog;

void log_setup(enum log_level max, int to_syslog)
{
	log_max = max;
	log_syslog = to_syslog;
	if (to_syslog)
		openlog("artifactfs", LOG_PID, LOG_DAEMON);
}

int log_enabled(enum log_level lvl)
{
	return lvl <= log_max;
}

void log_write(enum log_level lvl, const char *func, const char *fmt, ...)
{
	static const char *const names[] = { "ERROR", "WARN", "INFO", "DEBUG" };
	static const int prio[] = { LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG };
	char msg[2048];
	va_list ap;

	if (lvl > log_max)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	/* Control characters from store content never reach the log raw. */
	for (char *p = msg; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '?';
	if (log_syslog) {
		syslog(prio[lvl], "%s: %s: %s", names[lvl], func, msg);
		return;
	}
	char line[2300];
	int n = snprintf(line, sizeof(line), "artifactfs: %s: %s: %s\n", names[lvl], func, msg);
	if (n > (int)sizeof(line) - 1)
		n = sizeof(line) - 1;
	/* One write(2) per line keeps concurrent lines whole. */
	if (write(STDERR_FILENO, line, (size_t)n) < 0)
		return;
}
