/*
 * log — structured logs: one JSON object per line.
 *
 * {"ts":"2026-11-29T23:48:44.123Z","level":"info","service":"auth",
 *  "instance":"auth-1","request_id":"…","msg":"…", fields…}
 *
 * Fields are typed; a field marked secret (LF_SECRET) is never written: its value
 * is replaced by "[refused]" and the refusal is counted, so a mistake in a caller
 * cannot leak a password, token or key into a log.
 */
#ifndef WARD_LOG_H
#define WARD_LOG_H

#include <stddef.h>

typedef enum { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR, LOG_FATAL } log_level_t;

enum log_field_type { LOG_F_STR, LOG_F_INT, LOG_F_SECRET };
struct log_field {
	const char *key;
	enum log_field_type type;
	const char *s;
	long long i;
};
#define LF_STR(k, v) ((struct log_field){ (k), LOG_F_STR, (v), 0 })
#define LF_INT(k, v) ((struct log_field){ (k), LOG_F_INT, NULL, (long long)(v) })
#define LF_SECRET(k, v) ((struct log_field){ (k), LOG_F_SECRET, (v), 0 })

/* Start logging for service/instance to path (append, 0640), or stderr if path is NULL.
 * Until called, logs go to stderr with service "ward". */
int log_open(const char *service, const char *instance, const char *path, log_level_t min_level,
	     const char **error_r);
/* Reopen the log file (SIGHUP, after rotation). 0 or -1. */
int log_reopen(void);
/* Write all of buf to fd (one write(2) where possible; partial writes and EINTR
 * retried): 0 or -1. */
int log_write_all(int fd, const char *buf, size_t len);
void log_close(void);
/* "debug", "info", "warn", "error", "fatal" → level (lower case only); -1 if unknown. */
int log_level_parse(const char *name, log_level_t *level_r);
/* The request id attached to following lines (NULL clears). Copied. */
void log_set_request_id(const char *request_id);
/* How many secret fields were refused since start (for tests). */
unsigned long log_refused_count(void);

/* A line with typed fields. */
void log_fields(log_level_t level, const char *msg, const struct log_field *fields, size_t n);
#define log_event(level, msg, ...)                                                 \
	do {                                                                       \
		const struct log_field log_f_[] = { __VA_ARGS__ };                 \
		log_fields((level), (msg), log_f_, sizeof log_f_ / sizeof log_f_[0]); \
	} while (0)
/* A line whose msg is printf-formatted. */
void log_msg(log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)
/* The environment is broken: log at fatal level and exit(1). */
_Noreturn void log_fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
