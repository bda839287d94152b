/*
 * log.h: the one logging facility of artifactfs, shared by every layer.
 *
 * Lines go to stderr (foreground) or syslog (daemon), each with its level and the
 * function that logged it. ERROR and WARN are for real problems only: the mount
 * tests fail when they see one they did not provoke. No level exits.
 * Thread-safe; configuration is set once, before threads start.
 */
#ifndef BLOB_LOG_H
#define BLOB_LOG_H

enum log_level { LOG_LVL_ERROR, LOG_LVL_WARN, LOG_LVL_INFO, LOG_LVL_DEBUG };

/* Sets the most verbose level written and where lines go. Not thread-safe: call it
 * before any thread starts. */
void log_setup(enum log_level max, int to_syslog);

void log_write(enum log_level lvl, const char *func, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

int log_enabled(enum log_level lvl);

#define LOG_ERROR(...) log_write(LOG_LVL_ERROR, __func__, __VA_ARGS__)
#define LOG_WARN(...) log_write(LOG_LVL_WARN, __func__, __VA_ARGS__)
#define LOG_INFO(...) log_write(LOG_LVL_INFO, __func__, __VA_ARGS__)
#define LOG_DEBUG(...)                                                \
	do {                                                          \
		if (log_enabled(LOG_LVL_DEBUG))                       \
			log_write(LOG_LVL_DEBUG, __func__, __VA_ARGS__); \
	} while (0)

#endif
