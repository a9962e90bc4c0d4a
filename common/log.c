/*
 * log — structured logs: one JSON object per line.
 *
 * Each line is built as a jansson object (ts, level, service, instance, request_id,
 * msg, then the caller's fields in order), dumped compactly and written with a single
 * write(2) on an O_APPEND descriptor, so lines from several processes sharing a file
 * never interleave. Strings are capped and made valid UTF-8 before they reach jansson;
 * control characters are escaped by jansson, so a message cannot forge a second line.
 * Secret fields are never written: their value becomes "[refused]" and is counted.
 *
 * State is per process and not locked: Ward daemons log from one thread. log_reopen is
 * meant to be called from the event loop after SIGHUP, not from the signal handler.
 */
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#define LOG_NAME_MAX 64
#define LOG_REQUEST_ID_MAX 128
/* Longest msg or string field kept; longer ones are cut at a UTF-8 boundary. */
#define LOG_VALUE_MAX 8192
#define LOG_REFUSED "[refused]"

static const char *const level_names[] = { "debug", "info", "warn", "error", "fatal" };

static struct {
	char service[LOG_NAME_MAX];
	char instance[LOG_NAME_MAX];
	char request_id[LOG_REQUEST_ID_MAX];
	char *path;	/* NULL: stderr */
	int fd;		/* -1: stderr */
	log_level_t min_level;
	unsigned long refused;
} log_state = { .service = "ward", .instance = "", .fd = -1, .min_level = LOG_DEBUG };

/* Copy src into a fixed buffer, truncating at a UTF-8 character boundary. */
static void log_copy_name(char *dst, size_t size, const char *src)
{
	size_t n = src != NULL ? strnlen(src, size - 1) : 0;

	if (src != NULL && src[n] != '\0')
		while (n > 0 && ((unsigned char)src[n] & 0xc0) == 0x80)
			n--;
	if (n > 0)
		memcpy(dst, src, n);
	dst[n] = '\0';
}

/* Length of the valid UTF-8 sequence at s (at most len bytes), or 0 if invalid. */
static size_t utf8_seq_len(const unsigned char *s, size_t len)
{
	size_t need, i;
	unsigned int cp;

	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf) {
		need = 2;
		cp = s[0] & 0x1f;
	} else if (s[0] >= 0xe0 && s[0] <= 0xef) {
		need = 3;
		cp = s[0] & 0x0f;
	} else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
		need = 4;
		cp = s[0] & 0x07;
	} else {
		return 0;
	}
	if (len < need)
		return 0;
	for (i = 1; i < need; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	/* Overlong forms, surrogates, beyond U+10FFFF. */
	if ((need == 3 && cp < 0x800) || (need == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
	    (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return need;
}

/* A jansson string of s: capped at LOG_VALUE_MAX bytes, invalid UTF-8 bytes as '?'. */
static json_t *log_json_string(const char *s)
{
	size_t len, i = 0, o = 0, n;
	char *clean;
	json_t *j;

	if (s == NULL)
		return json_null();
	len = strnlen(s, LOG_VALUE_MAX);
	if ((clean = malloc(len + 1)) == NULL)
		return NULL;
	while (i < len) {
		n = utf8_seq_len((const unsigned char *)s + i, len - i);
		if (n == 0) {
			clean[o++] = '?';
			i++;
			continue;
		}
		memcpy(clean + o, s + i, n);
		o += n;
		i += n;
	}
	clean[o] = '\0';
	j = json_stringn(clean, o);
	free(clean);
	return j;
}

/* Set key in obj, never replacing a key already there (a field named "level" or "msg"
 * is written as "_level"/"_msg" instead of overwriting the header). Steals value. */
static int log_obj_set(json_t *obj, const char *key, json_t *value)
{
	char alt[LOG_NAME_MAX + 2];
	int n;

	if (value == NULL)
		return -1;
	if (json_object_get(obj, key) == NULL)
		return json_object_set_new(obj, key, value);
	n = snprintf(alt, sizeof(alt), "_%s", key);
	if (n < 0 || (size_t)n >= sizeof(alt) || json_object_get(obj, alt) != NULL) {
		json_decref(value);
		return -1;
	}
	return json_object_set_new(obj, alt, value);
}

/* ISO-8601 UTC time with milliseconds, e.g. 2026-11-29T23:48:44.123Z. */
static void log_timestamp(char out[32])
{
	struct timespec ts;
	struct tm tm;
	size_t n;

	if (clock_gettime(CLOCK_REALTIME, &ts) != 0 || gmtime_r(&ts.tv_sec, &tm) == NULL) {
		snprintf(out, 32, "1970-01-01T00:00:00.000Z");
		return;
	}
	n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out + n, 32 - n, ".%03ldZ", ts.tv_nsec / 1000000L);
}

int log_write_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t w = write(fd, buf, len);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		buf += w;
		len -= (size_t)w;
	}
	return 0;
}

/* Write the whole line with one write(2) where possible; a failing log loses it. */
static void log_write(const char *buf, size_t len)
{
	(void)log_write_all(log_state.fd >= 0 ? log_state.fd : STDERR_FILENO, buf, len);
}

/* Log one line at level with msg and typed fields. */
void log_fields(log_level_t level, const char *msg, const struct log_field *fields, size_t n)
{
	static const char oom[] = "{\"level\":\"error\",\"msg\":\"log: out of memory\"}\n";
	char ts[32];
	json_t *obj = NULL;
	char *line = NULL;
	size_t i, len;
	int saved_errno = errno, ok = 1;

	if ((int)level < LOG_DEBUG || level > LOG_FATAL)
		level = LOG_ERROR;
	/* Refusals are counted whether or not the line is written: it is the caller's bug. */
	for (i = 0; i < n && fields != NULL; i++)
		if (fields[i].type == LOG_F_SECRET)
			log_state.refused++;
	if (level < log_state.min_level)
		goto out;

	log_timestamp(ts);
	if ((obj = json_object()) == NULL)
		goto fail;
	ok &= log_obj_set(obj, "ts", json_string(ts)) == 0;
	ok &= log_obj_set(obj, "level", json_string(level_names[level])) == 0;
	ok &= log_obj_set(obj, "service", log_json_string(log_state.service)) == 0;
	if (log_state.instance[0] != '\0')
		ok &= log_obj_set(obj, "instance", log_json_string(log_state.instance)) == 0;
	if (log_state.request_id[0] != '\0')
		ok &= log_obj_set(obj, "request_id", log_json_string(log_state.request_id)) == 0;
	ok &= log_obj_set(obj, "msg", log_json_string(msg != NULL ? msg : "")) == 0;
	if (!ok)
		goto fail;
	for (i = 0; i < n && fields != NULL; i++) {
		const struct log_field *f = &fields[i];
		json_t *v;

		if (f->key == NULL || f->key[0] == '\0' || strlen(f->key) > LOG_NAME_MAX - 1)
			continue;
		switch (f->type) {
		case LOG_F_STR:
			v = log_json_string(f->s);
			break;
		case LOG_F_INT:
			v = json_integer((json_int_t)f->i);
			break;
		case LOG_F_SECRET:
		default:
			v = json_string(LOG_REFUSED);
			break;
		}
		/* A key that cannot be placed is dropped, the line still goes out. */
		(void)log_obj_set(obj, f->key, v);
	}
	if ((line = json_dumps(obj, JSON_COMPACT)) == NULL)
		goto fail;
	len = strlen(line);
	/* json_dumps gives no room for the newline: grow by one. */
	{
		char *nl = realloc(line, len + 2);

		if (nl == NULL)
			goto fail;
		line = nl;
	}
	line[len++] = '\n';
	line[len] = '\0';
	log_write(line, len);
	goto out;
fail:
	log_write(oom, sizeof(oom) - 1);
out:
	free(line);
	json_decref(obj);
	errno = saved_errno;
}

/* Log a line whose msg is printf-formatted (truncated to LOG_VALUE_MAX). */
void log_msg(log_level_t level, const char *fmt, ...)
{
	char buf[LOG_VALUE_MAX];
	va_list ap;
	int saved_errno = errno;

	if (level < log_state.min_level)
		return;
	va_start(ap, fmt);
	if (vsnprintf(buf, sizeof(buf), fmt, ap) < 0)
		snprintf(buf, sizeof(buf), "(unformattable message)");
	va_end(ap);
	errno = saved_errno;
	log_fields(level, buf, NULL, 0);
}

/* Log at fatal level and exit(1): the environment is broken. */
_Noreturn void log_fatal(const char *fmt, ...)
{
	char buf[LOG_VALUE_MAX];
	va_list ap;

	va_start(ap, fmt);
	if (vsnprintf(buf, sizeof(buf), fmt, ap) < 0)
		snprintf(buf, sizeof(buf), "(unformattable message)");
	va_end(ap);
	log_fields(LOG_FATAL, buf, NULL, 0);
	exit(1);
}

/* Open path for appending (0640, close-on-exec); -1 on failure. */
static int log_open_fd(const char *path)
{
	int fd;

	do
		fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0640);
	while (fd < 0 && errno == EINTR);
	return fd;
}

/* Start logging as service/instance to path (or stderr if NULL) at min_level and above. */
int log_open(const char *service, const char *instance, const char *path, log_level_t min_level,
	     const char **error_r)
{
	char *path_copy = NULL;
	int fd = -1;

	if (service == NULL || service[0] == '\0' || (int)min_level < LOG_DEBUG ||
	    min_level > LOG_FATAL) {
		if (error_r != NULL)
			*error_r = "log: bad service name or level";
		return -1;
	}
	if (path != NULL) {
		if ((path_copy = strdup(path)) == NULL) {
			if (error_r != NULL)
				*error_r = "log: out of memory";
			return -1;
		}
		if ((fd = log_open_fd(path)) < 0) {
			if (error_r != NULL)
				*error_r = errno == EACCES ? "log: permission denied on log file"
							   : "log: cannot open log file";
			free(path_copy);
			return -1;
		}
	}
	log_close();
	log_copy_name(log_state.service, sizeof(log_state.service), service);
	log_copy_name(log_state.instance, sizeof(log_state.instance), instance);
	log_state.path = path_copy;
	log_state.fd = fd;
	log_state.min_level = min_level;
	return 0;
}

/* Reopen the same path (after rotation); the old descriptor is kept if that fails. */
int log_reopen(void)
{
	int fd;

	if (log_state.path == NULL)
		return 0;
	if ((fd = log_open_fd(log_state.path)) < 0)
		return -1;
	if (log_state.fd >= 0)
		(void)close(log_state.fd);
	log_state.fd = fd;
	return 0;
}

/* Close the log file and go back to stderr with service "ward". */
void log_close(void)
{
	if (log_state.fd >= 0)
		(void)close(log_state.fd);
	log_state.fd = -1;
	free(log_state.path);
	log_state.path = NULL;
	log_copy_name(log_state.service, sizeof(log_state.service), "ward");
	log_state.instance[0] = '\0';
	log_state.min_level = LOG_DEBUG;
}

/* Map a level name (debug, info, warn, error, fatal) to its level. */
int log_level_parse(const char *name, log_level_t *level_r)
{
	size_t i;

	if (name == NULL || level_r == NULL)
		return -1;
	for (i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
		if (strcmp(name, level_names[i]) == 0) {
			*level_r = (log_level_t)i;
			return 0;
		}
	}
	return -1;
}

/* Set (copy) or clear the request id added to following lines. */
void log_set_request_id(const char *request_id)
{
	log_copy_name(log_state.request_id, sizeof(log_state.request_id), request_id);
}

/* How many secret fields were refused since start. */
unsigned long log_refused_count(void)
{
	return log_state.refused;
}
