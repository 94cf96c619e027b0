/*
 * base/log.h - leveled logging to stderr, each line carrying the function that logged it.
 *
 * Privacy rule (DESIGN.md): nothing at LOG_INFO or above may name a destination, a username
 * parameter value or a credential. Such details go to log_debug only.
 *
 * Thread-safe: each line is formatted into a local buffer and written with one write(2).
 */
#ifndef SHROUD_BASE_LOG_H
#define SHROUD_BASE_LOG_H

#include "base/compiler.h"

enum log_level {
	LOG_ERROR = 0,
	LOG_WARN = 1,
	LOG_INFO = 2,
	LOG_DEBUG = 3,
};

/* The current threshold; lines above it are not formatted at all. Default LOG_INFO. */
extern enum log_level log_threshold;

/* Parse "error", "warn", "info" or "debug". ST_OK or ST_EINVAL (level unchanged). */
NODISCARD int log_level_parse(const char *name, enum log_level *level);

void log_emit(enum log_level level, const char *func, const char *fmt, ...) PRINTF_LIKE(3, 4);

#define log_at(level, ...)                                       \
	do {                                                     \
		if ((level) <= log_threshold)                    \
			log_emit((level), __func__, __VA_ARGS__); \
	} while (0)

#define log_error(...) log_at(LOG_ERROR, __VA_ARGS__)
#define log_warn(...) log_at(LOG_WARN, __VA_ARGS__)
#define log_info(...) log_at(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_at(LOG_DEBUG, __VA_ARGS__)

#endif
