/*
 * gateway_accesslog — the access log, buffered: one line per HTTPS answer costs a
 * few hundred bytes of memcpy instead of a jansson object and a write(2).
 *
 * Lines have exactly the shape log.c gives them (ts, level, service, instance,
 * request_id, msg "http", method, path, status, bytes, duration_ms, client) and go
 * to the same file (log_file, or stderr), appended through a descriptor of our
 * own opened O_APPEND: a flush is one write(2) of whole lines, so they never
 * interleave with log.c's. The buffer is bounded (GW_ALOG_BUF bytes): it is
 * written when it would overflow, GW_ALOG_FLUSH_MS after its first line, at the
 * stop hook (SIGTERM), at deinit and at exit (atexit: log_fatal's exit too), so no
 * line of a clean shutdown is lost. A rotated file (SIGHUP reopens log.c's) is
 * noticed at the next flush: the path naming another file, it is reopened.
 *
 * Values are escaped here for JSON: the request id is checked by
 * gateway_request_id_ok, the client is an address, the method a fixed name, and
 * the path's bytes anything the request guard lets through; control bytes are
 * escaped, bytes outside ASCII become '?' (the guard passes none in a target).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "daemon.h"
#include "gateway.h"
#include "log.h"

#define GW_ALOG_BUF (64 * 1024)
#define GW_ALOG_LINE 2048
#define GW_ALOG_FLUSH_MS 100
#define GW_ALOG_NAME_MAX 64

static struct {
	bool on;		/* info lines are logged: the buffer is in use */
	char *path;		/* NULL: stderr */
	int fd;			/* -1: not open (stderr if path is NULL) */
	struct event *timer;	/* the pending flush, armed with the first buffered line */
	bool armed;
	char service[GW_ALOG_NAME_MAX], instance[GW_ALOG_NAME_MAX];
	time_t ts_sec;		/* the second ts_prefix was made for */
	char ts_prefix[24];	/* "2026-11-30T09:19:25" */
	size_t len;
	char buf[GW_ALOG_BUF];
} alog = { .fd = -1, .ts_sec = -1 };

/* The descriptor to write to: reopened if the path now names another file (rotated). */
static int gateway_alog_fd(void)
{
	struct stat a, b;
	int fd;

	if (alog.path == NULL)
		return STDERR_FILENO;
	if (alog.fd >= 0 && stat(alog.path, &a) == 0 && fstat(alog.fd, &b) == 0 &&
	    a.st_dev == b.st_dev && a.st_ino == b.st_ino)
		return alog.fd;
	do
		fd = open(alog.path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0640);
	while (fd < 0 && errno == EINTR);
	if (fd < 0)
		return alog.fd; /* keep writing where we were (as log_reopen does) */
	if (alog.fd >= 0)
		close(alog.fd);
	alog.fd = fd;
	return fd;
}

/* Write out every buffered line. */
void gateway_accesslog_flush(void)
{
	int fd;

	if (alog.len == 0)
		return;
	if ((fd = gateway_alog_fd()) >= 0)
		(void)log_write_all(fd, alog.buf, alog.len); /* a failing log loses the lines */
	alog.len = 0;
}

/* The flush timer. */
static void gateway_alog_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what, (void)arg;
	alog.armed = false;
	gateway_accesslog_flush();
}

/* atexit: whatever is still buffered (log_fatal's exit(1) included). */
static void gateway_alog_atexit(void)
{
	gateway_accesslog_flush();
}

/* Start buffering access lines for the daemon's log; 0 or -1 and *error_r. */
int gateway_accesslog_open(struct event_base *base, const struct daemon_config *dc,
			   const char **error_r)
{
	static bool registered;
	log_level_t level = LOG_INFO;

	gateway_accesslog_close();
	if (dc->log_level != NULL && log_level_parse(dc->log_level, &level) < 0)
		level = LOG_INFO;
	if (level > LOG_INFO)
		return 0; /* access lines are info: none are written */
	snprintf(alog.service, sizeof alog.service, "%s", dc->service != NULL ? dc->service : "gateway");
	snprintf(alog.instance, sizeof alog.instance, "%s", dc->instance != NULL ? dc->instance : "");
	if (dc->log_file != NULL && (alog.path = strdup(dc->log_file)) == NULL) {
		*error_r = "access log: out of memory";
		return -1;
	}
	if ((alog.timer = evtimer_new(base, gateway_alog_timer_cb, NULL)) == NULL) {
		free(alog.path);
		alog.path = NULL;
		*error_r = "access log: cannot create its timer";
		return -1;
	}
	if (!registered && atexit(gateway_alog_atexit) == 0)
		registered = true;
	if (gateway_alog_fd() < 0) {
		/* The file log.c writes cannot be opened a second time: leave it to log.c. */
		gateway_accesslog_close();
		return 0;
	}
	alog.on = true;
	return 0;
}

/* Flush and stop buffering (lines after this go through log.c). Idempotent. */
void gateway_accesslog_close(void)
{
	gateway_accesslog_flush();
	if (alog.timer != NULL)
		event_free(alog.timer);
	alog.timer = NULL;
	alog.armed = false;
	if (alog.fd >= 0)
		close(alog.fd);
	alog.fd = -1;
	free(alog.path);
	alog.path = NULL;
	alog.on = false;
}

/* Append s as the body of a JSON string (no quotes) to out at *o, within cap. */
static void gateway_alog_str(char *out, size_t *o, size_t cap, const char *s)
{
	static const char hexd[] = "0123456789abcdef";

	for (; *s != '\0' && *o + 7 < cap; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\') {
			out[(*o)++] = '\\';
			out[(*o)++] = (char)c;
		} else if (c < 0x20 || c == 0x7f) {
			memcpy(out + *o, "\\u00", 4);
			out[*o + 4] = hexd[c >> 4];
			out[*o + 5] = hexd[c & 15];
			*o += 6;
		} else {
			out[(*o)++] = c < 0x80 ? (char)c : '?';
		}
	}
}

/* The "ts" value of now, as log.c writes it (the date part made once a second). */
static void gateway_alog_ts(char out[32])
{
	struct timespec ts;
	struct tm tm;

	if (clock_gettime(CLOCK_REALTIME, &ts) != 0) {
		snprintf(out, 32, "1970-01-01T00:00:00.000Z");
		return;
	}
	if (ts.tv_sec != alog.ts_sec) {
		if (gmtime_r(&ts.tv_sec, &tm) == NULL ||
		    strftime(alog.ts_prefix, sizeof alog.ts_prefix, "%Y-%m-%dT%H:%M:%S", &tm) == 0) {
			snprintf(out, 32, "1970-01-01T00:00:00.000Z");
			return;
		}
		alog.ts_sec = ts.tv_sec;
	}
	snprintf(out, 32, "%.19s.%03dZ", alog.ts_prefix, (int)(ts.tv_nsec / 1000000L) % 1000);
}

/*
 * One access line. Returns false if the buffer is not in use (log level above info
 * or not opened): the caller then logs through log.c.
 */
bool gateway_accesslog_line(const char *request_id, const char *method, const char *path,
			    int status, size_t bytes, long long duration_ms, const char *client)
{
	char line[GW_ALOG_LINE], ts[32], num[96];
	size_t o = 0;

	if (!alog.on)
		return false;
	gateway_alog_ts(ts);
#define GW_ALOG_LIT(s)                                                                             \
	do {                                                                                       \
		size_t l_ = strlen(s);                                                             \
		if (o + l_ < sizeof line) {                                                        \
			memcpy(line + o, (s), l_);                                                 \
			o += l_;                                                                   \
		}                                                                                  \
	} while (0)
	GW_ALOG_LIT("{\"ts\":\"");
	GW_ALOG_LIT(ts);
	GW_ALOG_LIT("\",\"level\":\"info\",\"service\":\"");
	gateway_alog_str(line, &o, sizeof line, alog.service);
	if (alog.instance[0] != '\0') {
		GW_ALOG_LIT("\",\"instance\":\"");
		gateway_alog_str(line, &o, sizeof line, alog.instance);
	}
	if (request_id != NULL && request_id[0] != '\0') {
		GW_ALOG_LIT("\",\"request_id\":\"");
		gateway_alog_str(line, &o, sizeof line, request_id);
	}
	GW_ALOG_LIT("\",\"msg\":\"http\",\"method\":\"");
	gateway_alog_str(line, &o, sizeof line, method);
	GW_ALOG_LIT("\",\"path\":\"");
	gateway_alog_str(line, &o, sizeof line, path);
	snprintf(num, sizeof num, "\",\"status\":%d,\"bytes\":%zu,\"duration_ms\":%lld,\"client\":\"",
		 status, bytes, duration_ms);
	GW_ALOG_LIT(num);
	gateway_alog_str(line, &o, sizeof line, client);
	GW_ALOG_LIT("\"}\n");
#undef GW_ALOG_LIT
	if (o == 0 || line[o - 1] != '\n')
		return false; /* cannot happen within GW_ALOG_LINE; log.c then writes it */
	if (alog.len + o > sizeof alog.buf)
		gateway_accesslog_flush();
	memcpy(alog.buf + alog.len, line, o);
	alog.len += o;
	if (alog.len > sizeof alog.buf / 2) {
		gateway_accesslog_flush();
	} else if (!alog.armed && alog.timer != NULL) {
		struct timeval tv = { 0, GW_ALOG_FLUSH_MS * 1000 };

		if (evtimer_add(alog.timer, &tv) == 0)
			alog.armed = true;
		else
			gateway_accesslog_flush();
	}
	return true;
}
