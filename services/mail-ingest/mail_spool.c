/*
 * mail_spool — the durable spool between "250 after DATA" and ward-ticket.
 *
 * Layout under spool.dir (mode 0700, owned by the daemon's user):
 *   log/<seq>    the spool log: segments of records, appended and fdatasynced
 *                (16 hex digits; a new segment at each start and past 8 MiB)
 *   log/<seq>.done  the ids of its records delivered or dead ("<id>\n" each)
 *   tmp/<id>     a dead letter being written
 *   queue/<id>   a file waiting for ward-ticket (a dead letter replayed by
 *                wardctl, or a spool of an older version): "WARDSPOOL1\n<tenant
 *                id>\n" followed by the packed MailIngestRequest
 *   dead/<id>    dead letters, with dead/<id>.err (the last error, attempts)
 *   state/<id>   the attempt counters of queue/<id> ("<refusals> <timeouts>\n"),
 *                written at each failure: a restart resumes the count
 *
 * put: a record per recipient tenant appended to the current log segment —
 * "WSL1", payload length and CRC-32 (of id and payload; little endian), the id
 * (64 bytes, NUL padded), the payload (a queue/ file's bytes) — then one
 * fdatasync of the segment. Only then does the SMTP side answer 250: a crash
 * after 250 finds the record on restart. These syscalls never run on the event
 * loop (one session's fsync would hold every other session): spool.sync_threads
 * writer threads take every put queued meanwhile as one batch and append it with
 * one writev and one fdatasync (group commit; the segment's name was made
 * durable, directory fsync, when it was created); the finished batch goes back
 * to the event loop through a pipe, which only then adds the jobs and lets the
 * sessions answer. A write or fsync that fails fails the whole batch (no 250)
 * and abandons the segment: the next batch starts a new one, so a damaged tail
 * is never followed by acknowledged records. The threads touch nothing but the
 * files and their own lists (no log, no libevent, no Redis). On close they
 * finish what they were given.
 * Recovery (start): every segment is read up to its first incomplete or damaged
 * record (a tail never acknowledged); its records not listed in its .done file
 * are delivered again. A delivered record's id is appended to .done without
 * fsync: a crash that forgets it delivers the record again, and ward-ticket
 * answers "duplicate" (Message-ID once per tenant). A segment the writers left
 * whose records are all delivered is removed (by a writer thread: unlink, fsync
 * of log/, then its .done).
 * Delivery (principal service/mail-ingest, the recipient tenant):
 *   1. ticket.ingest_mail on q:ticket; the record is marked done (a queue/ file
 *      removed) only after ward-ticket answered that its effect committed. A
 *      crash in between re-sends it; ward-ticket takes each Message-ID once per
 *      tenant, so nothing is created twice.
 *   2. Only when ward-ticket answers 409 (the tenant has no account for the
 *      sender; nothing done): auth.mail_customer on q:auth, the sender's account
 *      created as a customer (idempotent in ward-auth: same address, same
 *      account), then 1 again with sender_checked set (appended to the payload).
 *      A 4xx answer of ward-auth (an address it cannot take) goes on without an
 *      account; ward-ticket then keeps the address alone.
 * A message refused (4xx) by ward-ticket spool.max_attempts times, or unanswered
 * (timeout, queue down, 5xx) spool.max_transport_failures times, moves to dead/
 * (a log record is written there as a file, fsynced, and only then marked done,
 * with an fdatasync of .done) with its error, and a record of it (id, tenant, error, counts: never the mail)
 * is appended to the dead-letter stream dl:mail-ingest, which the status page
 * watches (the email component shows degraded). `wardctl mail dead-letters
 * --replay ID` moves it back to queue/ with fresh counters; queue/ is rescanned
 * every few seconds. Retries back off exponentially (1 s doubling to 60 s).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "crypto.h"
#include "daemon.h"
#include "log.h"
#include "mail.h"

#define MAIL_SPOOL_SCAN_MS 2000
#define MAIL_SPOOL_FILE_MAX (ENVELOPE_MAX_PAYLOAD + 4096)
#define MAIL_LOG_MAGIC "WSL1"
#define MAIL_LOG_ID 64
#define MAIL_LOG_HDR (4 + 4 + 4 + MAIL_LOG_ID) /* magic, length, CRC-32, id */
#define MAIL_LOG_SEGMENT_MAX (8 << 20)		/* bytes: then a new segment */
#define MAIL_LOG_DROPS_MAX 64			/* segments waiting to be removed */
#define MAIL_LOG_IOV 64				/* records per writev */

/* One put: the spool files of one accepted message (one per recipient tenant). */
struct mail_put {
	struct mail_put *next;
	int n, committed;     /* files; how many reached queue/ (set by a writer) */
	int rc;		      /* 0, or -1 with error (set by a writer) */
	const char *error;    /* static */
	mail_put_cb *cb;
	void *arg;
	struct {
		char id[64];
		uint8_t *buf; /* the log record: MAIL_LOG_HDR, then the payload */
		size_t len;
		uint64_t seg; /* where it was written (set by a writer) */
		uint64_t off; /* its payload's offset in the segment */
	} f[MAIL_PUT_MAX_FILES];
};

/* The writer threads and their two lists (under mu). */
struct mail_syncer {
	struct mail_ingest *mi;
	pthread_mutex_t mu;
	pthread_cond_t cv;   /* writers: something to write, or quit */
	pthread_cond_t idle; /* mail_spool_settle: a writer finished a batch */
	int writing;	     /* batches being written */
	struct mail_put *queued, **queued_tail; /* submitted, not taken yet */
	struct mail_put *done, **done_tail; /* written (or failed), for the loop */
	bool quit;
	int pipe[2];	    /* writers → loop: "done has something" */
	struct event *ev;   /* the loop's end of the pipe */
	pthread_t *threads;
	int n_threads;
	uint64_t drops[MAIL_LOG_DROPS_MAX]; /* delivered segments to remove (under mu) */
	int n_drops;
	/* the log (under log_mu, taken before mu): one batch appended at a time */
	pthread_mutex_t log_mu;
	int log_fd;	     /* the segment being appended to; -1: start one */
	uint64_t log_seq;    /* its number */
	uint64_t log_size;   /* its size */
	uint64_t next_seq;   /* the next segment's number */
};

/* A log segment with records not yet delivered (loop side). */
struct mail_seg {
	struct mail_seg *next;
	uint64_t seq;
	int fd;	     /* read only: the payloads */
	int done_fd; /* .done, append only; -1 until the first mark */
	long live;   /* records neither delivered nor dead */
};

struct mail_job {
	struct mail_job *next;
	struct mail_ingest *mi;
	char id[64];
	char tenant[37]; /* known once the file was read */
	int fails, transport_fails;
	int64_t due_ms;
	uint64_t seg;	    /* a log record of segment seg (0: the file queue/<id>) */
	uint64_t off;	    /* its payload: offset and length */
	uint32_t len;
	bool need_customer; /* ward-ticket knows no account for the sender (409) */
	bool customer_done; /* auth.mail_customer answered for this run */
	bool inflight;
	bool gone;	/* removed from the list while a reply was pending */
	bool has_state; /* state/<id> may exist (a failure saved it, or an older run) */
};

int mail_spool_parse(const uint8_t *data, size_t len, char tenant[37], const uint8_t **payload_r,
		     size_t *payload_len_r)
{
	size_t m = sizeof MAIL_SPOOL_MAGIC - 1;

	if (len < m + 37 || memcmp(data, MAIL_SPOOL_MAGIC, m) != 0 || data[m + 36] != '\n')
		return -1;
	memcpy(tenant, data + m, 36);
	tenant[36] = '\0';
	for (int i = 0; i < 36; i++)
		if (!((tenant[i] >= '0' && tenant[i] <= '9') || (tenant[i] >= 'a' && tenant[i] <= 'f') ||
		      tenant[i] == '-'))
			return -1;
	*payload_r = data + m + 37;
	*payload_len_r = len - m - 37;
	return 0;
}

/* fsync the directory sub of the spool. */
static int mail_spool_sync_dir(struct mail_ingest *mi, const char *sub)
{
	int fd = openat(mi->spool_dirfd, sub, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int r;

	if (fd < 0)
		return -1;
	r = fsync(fd);
	close(fd);
	return r;
}

/* Read sub/<id> whole, at most max bytes; malloc'd. 0 or -1. */
static int mail_spool_read_max(struct mail_ingest *mi, const char *sub, const char *id,
			       size_t max, uint8_t **data_r, size_t *len_r)
{
	char path[128];
	struct stat st;
	uint8_t *buf;
	size_t got = 0;
	int fd;

	snprintf(path, sizeof path, "%s/%s", sub, id);
	fd = openat(mi->spool_dirfd, path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return -1;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || (size_t)st.st_size > max ||
	    (buf = malloc((size_t)st.st_size + 1)) == NULL) {
		close(fd);
		return -1;
	}
	while (got < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);

		if (n <= 0) {
			if (n < 0 && errno == EINTR)
				continue;
			free(buf);
			close(fd);
			return -1;
		}
		got += (size_t)n;
	}
	close(fd);
	*data_r = buf;
	*len_r = got;
	return 0;
}

/* Read queue/<id> (or another sub) whole; malloc'd. 0 or -1. */
static int mail_spool_read(struct mail_ingest *mi, const char *sub, const char *id,
			   uint8_t **data_r, size_t *len_r)
{
	return mail_spool_read_max(mi, sub, id, MAIL_SPOOL_FILE_MAX, data_r, len_r);
}

/* Write all of buf to fd. */
static int mail_write_all(int fd, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	while (len > 0) {
		ssize_t n = write(fd, p, len);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Is id a name we wrote? (digits, '-', hex) */
static bool mail_spool_id_ok(const char *id)
{
	size_t n = strlen(id);

	if (n == 0 || n >= 64)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f') || id[i] == '-'))
			return false;
	return true;
}

/* ============================== the log ================================= */

static uint32_t mail_crc_table[256];
static pthread_once_t mail_crc_once = PTHREAD_ONCE_INIT;

/* Fill the table of mail_crc32 (once per process). */
static void mail_crc32_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;

		for (int k = 0; k < 8; k++)
			c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
		mail_crc_table[i] = c;
	}
}

/* CRC-32 (IEEE, reflected) of len bytes: a record's check against a torn or
 * stale tail after a crash (not against an attacker: the spool is ours). */
static uint32_t mail_crc32(const uint8_t *p, size_t len)
{
	uint32_t crc = 0xffffffffu;

	pthread_once(&mail_crc_once, mail_crc32_init);
	while (len-- > 0)
		crc = mail_crc_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return ~crc;
}

/* Store v little endian at p. */
static void mail_put_u32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

/* The little-endian u32 at p. */
static uint32_t mail_get_u32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* The segment seq of the loop's table, or NULL. */
static struct mail_seg *mail_seg_find(struct mail_ingest *mi, uint64_t seq)
{
	for (struct mail_seg *g = mi->segs; g != NULL; g = g->next)
		if (g->seq == seq)
			return g;
	return NULL;
}

/* The segment seq, added to the loop's table (its file opened for reading) if
 * new; NULL when it cannot be opened. */
static struct mail_seg *mail_seg_get(struct mail_ingest *mi, uint64_t seq)
{
	struct mail_seg *g = mail_seg_find(mi, seq);
	char path[64];

	if (g != NULL)
		return g;
	g = calloc(1, sizeof *g);
	if (g == NULL)
		return NULL;
	snprintf(path, sizeof path, "log/%016llx", (unsigned long long)seq);
	g->fd = openat(mi->spool_dirfd, path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (g->fd < 0) {
		free(g);
		return NULL;
	}
	g->seq = seq;
	g->done_fd = -1;
	g->next = mi->segs;
	mi->segs = g;
	return g;
}

/* Hand segment seq to the writers for removal (the list full: the next start
 * removes it). */
static void mail_seg_drop_later(struct mail_ingest *mi, uint64_t seq)
{
	struct mail_syncer *sy = mi->syncer;

	if (sy == NULL)
		return;
	pthread_mutex_lock(&sy->mu);
	if (sy->n_drops < MAIL_LOG_DROPS_MAX) {
		sy->drops[sy->n_drops++] = seq;
		pthread_cond_signal(&sy->cv);
	}
	pthread_mutex_unlock(&sy->mu);
}

/* Forget g (loop side) and, since no record of it is left and the writers have
 * moved past it, have it removed. */
static void mail_seg_release(struct mail_ingest *mi, struct mail_seg *g)
{
	struct mail_seg **pp;

	for (pp = &mi->segs; *pp != NULL; pp = &(*pp)->next)
		if (*pp == g) {
			*pp = g->next;
			break;
		}
	close(g->fd);
	if (g->done_fd >= 0)
		close(g->done_fd);
	mail_seg_drop_later(mi, g->seq);
	free(g);
}

/* Release every segment without live records that the writers moved past. */
static void mail_seg_sweep(struct mail_ingest *mi)
{
	struct mail_seg *g, *next;

	for (g = mi->segs; g != NULL; g = next) {
		next = g->next;
		if (g->live <= 0 && g->seq < mi->log_newest)
			mail_seg_release(mi, g);
	}
}

/* Record that j's log record is delivered or dead: its id appended to the
 * segment's .done (durably when sync: a dead letter must not come back). 0 or
 * -1. */
static int mail_seg_done(struct mail_ingest *mi, const struct mail_job *j, bool sync)
{
	struct mail_seg *g = mail_seg_find(mi, j->seg);
	char path[64], line[MAIL_LOG_ID + 2];
	int n, rc = 0;

	if (g == NULL)
		return -1;
	if (g->done_fd < 0) {
		snprintf(path, sizeof path, "log/%016llx.done", (unsigned long long)g->seq);
		g->done_fd = openat(mi->spool_dirfd, path,
				    O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
	}
	n = snprintf(line, sizeof line, "%s\n", j->id);
	if (g->done_fd < 0 || mail_write_all(g->done_fd, line, (size_t)n) < 0 ||
	    (sync && fdatasync(g->done_fd) < 0))
		rc = -1;
	g->live--;
	if (g->live <= 0 && g->seq < mi->log_newest)
		mail_seg_release(mi, g);
	return rc;
}

/* The payload of j (a log record or queue/<id>), malloc'd. 0 or -1. */
static int mail_job_read(struct mail_ingest *mi, const struct mail_job *j, uint8_t **data_r,
			 size_t *len_r)
{
	struct mail_seg *g;
	uint8_t *buf;
	size_t got = 0;

	if (j->seg == 0)
		return mail_spool_read(mi, "queue", j->id, data_r, len_r);
	g = mail_seg_find(mi, j->seg);
	if (g == NULL || j->len > MAIL_SPOOL_FILE_MAX || (buf = malloc(j->len + 1)) == NULL)
		return -1;
	while (got < j->len) {
		ssize_t n = pread(g->fd, buf + got, j->len - got, (off_t)(j->off + got));

		if (n <= 0) {
			if (n < 0 && errno == EINTR)
				continue;
			free(buf);
			return -1;
		}
		got += (size_t)n;
	}
	*data_r = buf;
	*len_r = got;
	return 0;
}

/* Save j's attempt counters in state/<id> (written whole, then renamed). */
static void mail_job_state_save(struct mail_ingest *mi, struct mail_job *j)
{
	char tmp[128], dst[128], line[64];
	int fd, n;

	snprintf(tmp, sizeof tmp, "state/%s.tmp", j->id);
	snprintf(dst, sizeof dst, "state/%s", j->id);
	n = snprintf(line, sizeof line, "%d %d\n", j->fails, j->transport_fails);
	fd = openat(mi->spool_dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW,
		    0600);
	j->has_state = true;
	if (fd < 0 || mail_write_all(fd, line, (size_t)n) < 0 || fsync(fd) < 0 ||
	    renameat(mi->spool_dirfd, tmp, mi->spool_dirfd, dst) < 0)
		log_event(LOG_WARN, "cannot save a mail's attempt counters", LF_STR("id", j->id),
			  LF_STR("error", strerror(errno)));
	if (fd >= 0)
		close(fd);
}

/* Read state/<id> into j's counters (absent: zero). */
static void mail_job_state_load(struct mail_ingest *mi, struct mail_job *j)
{
	char path[128], line[64];
	int fd, a, b;
	ssize_t n;

	snprintf(path, sizeof path, "state/%s", j->id);
	fd = openat(mi->spool_dirfd, path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return;
	n = read(fd, line, sizeof line - 1);
	close(fd);
	if (n <= 0)
		return;
	line[n] = '\0';
	if (sscanf(line, "%d %d", &a, &b) == 2 && a >= 0 && b >= 0 && a < 1000000 &&
	    b < 1000000) {
		j->fails = a;
		j->transport_fails = b;
	}
}

/* Forget j's counters (delivered or dead); none were ever saved for a record
 * written by this run that never failed: no system call. */
static void mail_job_state_drop(struct mail_ingest *mi, const struct mail_job *j)
{
	char path[128];

	if (!j->has_state)
		return;
	snprintf(path, sizeof path, "state/%s", j->id);
	if (unlinkat(mi->spool_dirfd, path, 0) < 0 && errno != ENOENT)
		log_event(LOG_WARN, "cannot remove a mail's attempt counters", LF_STR("id", j->id),
			  LF_STR("error", strerror(errno)));
}

/* Add a job for the log record id of segment seg (payload at off, len bytes),
 * or for queue/<id> (seg 0), unless known. A log record counts as live in its
 * segment. fresh: a record this run just wrote (its id is new: no attempt
 * counters to read). 0, or -1 when out of memory (a queue/ file is picked up by
 * the next scan; a log record by the next start). */
static int mail_job_add_at(struct mail_ingest *mi, const char *id, uint64_t seg, uint64_t off,
			   uint32_t len, bool fresh)
{
	struct mail_job *j;
	struct mail_seg *g = NULL;

	if (seg == 0)
		for (j = mi->jobs; j != NULL; j = j->next)
			if (strcmp(j->id, id) == 0)
				return 0;
	if (seg != 0 && (g = mail_seg_get(mi, seg)) == NULL)
		return -1;
	j = calloc(1, sizeof *j);
	if (j == NULL)
		return -1;
	j->mi = mi;
	snprintf(j->id, sizeof j->id, "%s", id);
	j->seg = seg;
	j->off = off;
	j->len = len;
	if (g != NULL)
		g->live++;
	if (!fresh) {
		j->has_state = true;
		mail_job_state_load(mi, j);
	}
	j->next = mi->jobs;
	mi->jobs = j;
	return 0;
}

/* Add a job for queue/<id> unless known. */
static void mail_job_add(struct mail_ingest *mi, const char *id)
{
	(void)mail_job_add_at(mi, id, 0, 0, 0, false);
}

/* Unlink j from the list (freed now, or by its reply callback if in flight). */
static void mail_job_drop(struct mail_ingest *mi, struct mail_job *j)
{
	struct mail_job **pp;

	for (pp = &mi->jobs; *pp != NULL; pp = &(*pp)->next)
		if (*pp == j) {
			*pp = j->next;
			break;
		}
	if (j->inflight)
		j->gone = true;
	else
		free(j);
}

/* Write j's log record as the file dead/<id>, durably (tmp/, fsync, rename,
 * fsync of dead/). 0 or -1. */
static int mail_spool_dead_record(struct mail_ingest *mi, const struct mail_job *j)
{
	char tmp[128], dst[128];
	uint8_t *data = NULL;
	size_t len = 0;
	int fd, rc = -1;

	if (mail_job_read(mi, j, &data, &len) < 0)
		return -1;
	snprintf(tmp, sizeof tmp, "tmp/%s", j->id);
	snprintf(dst, sizeof dst, "dead/%s", j->id);
	fd = openat(mi->spool_dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW,
		    0600);
	if (fd < 0)
		goto out;
	if (mail_write_all(fd, data, len) < 0 || fsync(fd) < 0) {
		close(fd);
		unlinkat(mi->spool_dirfd, tmp, 0);
		goto out;
	}
	if (close(fd) < 0 || renameat(mi->spool_dirfd, tmp, mi->spool_dirfd, dst) < 0 ||
	    mail_spool_sync_dir(mi, "dead") < 0) {
		unlinkat(mi->spool_dirfd, tmp, 0);
		goto out;
	}
	rc = 0;
out:
	crypto_wipe(data, len);
	free(data);
	return rc;
}

/* Move queue/<id> (or j's log record) to dead/<id> with its error. */
static void mail_spool_dead(struct mail_ingest *mi, struct mail_job *j, const char *error)
{
	char src[128], dst[128], err[128], line[512];
	int fd;

	snprintf(err, sizeof err, "dead/%s.err", j->id);
	char safe[300];
	size_t k;

	/* our own error texts; quote-free anyway, so the line stays one JSON object */
	for (k = 0; error[k] != '\0' && k + 1 < sizeof safe; k++)
		safe[k] = error[k] == '"' || error[k] == '\\' || (unsigned char)error[k] < 0x20
			      ? '\''
			      : error[k];
	safe[k] = '\0';
	snprintf(line, sizeof line,
		 "{\"error\":\"%s\",\"refusals\":%d,\"timeouts\":%d,\"at\":%lld}\n", safe,
		 j->fails, j->transport_fails, (long long)time(NULL));
	fd = openat(mi->spool_dirfd, err, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd >= 0) {
		if (mail_write_all(fd, line, strlen(line)) < 0 || fsync(fd) < 0)
			log_event(LOG_WARN, "dead letter error file not written", LF_STR("id", j->id));
		close(fd);
	}
	snprintf(src, sizeof src, "queue/%s", j->id);
	snprintf(dst, sizeof dst, "dead/%s", j->id);
	if (j->seg != 0 ? mail_spool_dead_record(mi, j) < 0
			: renameat(mi->spool_dirfd, src, mi->spool_dirfd, dst) < 0 ||
				  mail_spool_sync_dir(mi, "dead") < 0 ||
				  mail_spool_sync_dir(mi, "queue") < 0) {
		log_event(LOG_ERROR, "cannot move a mail to the dead letters", LF_STR("id", j->id),
			  LF_STR("error", strerror(errno)));
		return;
	}
	/* the record stays in the log until marked: else a restart delivers it
	 * again (a duplicate for ward-ticket, or a second dead letter) */
	if (j->seg != 0 && mail_seg_done(mi, j, true) < 0)
		log_event(LOG_WARN, "a dead letter is not marked done in the spool log",
			  LF_STR("id", j->id), LF_STR("error", strerror(errno)));
	mi->stats.dead_letters++;
	mail_job_state_drop(mi, j);
	/* The dead-letter stream: what the status page and operators see (no content). */
	{
		char refusals[16], timeouts[16];
		const char *argv[] = {"XADD",	  "dl:mail-ingest", "MAXLEN",   "~",
				      "10000",	  "*",		    "id",	j->id,
				      "tenant",	  j->tenant,	    "error",	error,
				      "refusals", refusals,	    "timeouts", timeouts};
		size_t lens[16];

		snprintf(refusals, sizeof refusals, "%d", j->fails);
		snprintf(timeouts, sizeof timeouts, "%d", j->transport_fails);
		for (size_t i = 0; i < 16; i++)
			lens[i] = strlen(argv[i]);
		if (queue_command(daemon_queue(mi->d), 16, argv, lens) < 0)
			log_event(LOG_WARN, "dead letter not recorded in dl:mail-ingest",
				  LF_STR("id", j->id));
	}
	log_event(LOG_ERROR, "mail moved to the dead letters", LF_STR("id", j->id),
		  LF_STR("error", error), LF_INT("dead_letters", mi->stats.dead_letters));
	mail_job_drop(mi, j);
}

/* Back off: 1 s doubling to 60 s. */
static void mail_job_later(struct mail_job *j)
{
	int n = j->fails + j->transport_fails;
	int64_t delay = 1000LL << (n > 6 ? 6 : n);

	j->due_ms = envelope_now_ms() + (delay > 60000 ? 60000 : delay);
	j->mi->stats.retries++;
}

static void mail_spool_kick(struct mail_ingest *mi);
static void mail_job_send(struct mail_ingest *mi, struct mail_job *j);

/* A failed attempt: a refusal (ward-ticket said no) or a transport failure (no
 * answer, queue down, 5xx). Counted durably; dead letter past the limit. */
static void mail_job_failed(struct mail_ingest *mi, struct mail_job *j, bool refusal,
			    const char *why)
{
	if (refusal)
		j->fails++;
	else
		j->transport_fails++;
	if (refusal ? j->fails >= mi->cfg->max_attempts
		    : j->transport_fails >= mi->cfg->max_transport_failures) {
		mail_spool_dead(mi, j, why);
		return;
	}
	mail_job_state_save(mi, j);
	mail_job_later(j);
}

/* ward-auth's answer to auth.mail_customer: then the mail goes to ward-ticket. */
static void mail_spool_on_customer(void *arg, int status, const Ward__Envelope *reply,
				   const uint8_t *payload, size_t len)
{
	struct mail_job *j = arg;
	struct mail_ingest *mi = j->mi;

	(void)reply;
	j->inflight = false;
	mi->inflight--;
	if (j->gone) {
		free(j);
		return;
	}
	if (status >= 0 && status < 500) {
		Ward__MailCustomerReply *r =
		    status == 0 ? ward__mail_customer_reply__unpack(NULL, len, payload) : NULL;

		j->customer_done = true;
		if (r != NULL && r->created)
			log_event(LOG_INFO, "a customer was created for a mail's sender",
				  LF_STR("id", j->id), LF_STR("tenant", j->tenant),
				  LF_STR("user", r->user_id));
		else if (status != 0)
			log_event(LOG_WARN, "no account for a mail's sender", LF_STR("id", j->id),
				  LF_INT("status", status));
		if (r != NULL)
			ward__mail_customer_reply__free_unpacked(r, NULL);
		if (!mi->stopping)
			mail_job_send(mi, j);
		return;
	}
	log_event(LOG_WARN, "auth.mail_customer not answered, will retry", LF_STR("id", j->id),
		  LF_INT("status", status), LF_INT("attempt", j->transport_fails + 1));
	mail_job_failed(mi, j, false,
			status == QUEUE_ETIMEDOUT ? "auth.mail_customer: no answer (timeout)"
			: status > 0		  ? "auth.mail_customer failed"
						  : "queue unavailable");
	if (!mi->stopping)
		mail_spool_kick(mi);
}

/* ward-ticket's answer for a spooled mail. */
static void mail_spool_on_reply(void *arg, int status, const Ward__Envelope *reply,
				const uint8_t *payload, size_t len)
{
	struct mail_job *j = arg;
	struct mail_ingest *mi = j->mi;
	char path[128];

	j->inflight = false;
	mi->inflight--;
	if (j->gone) {
		free(j);
		return;
	}
	if (status == 0) {
		Ward__MailIngestReply *r = ward__mail_ingest_reply__unpack(NULL, len, payload);

		/* No fsync of queue/ after the unlink: a crash that forgets it brings the
		 * file back, and ward-ticket answers "duplicate" (Message-ID once per
		 * tenant). One fsync less per mail on the event loop. */
		snprintf(path, sizeof path, "queue/%s", j->id);
		if (j->seg != 0 ? mail_seg_done(mi, j, false) < 0
				: unlinkat(mi->spool_dirfd, path, 0) < 0 && errno != ENOENT)
			log_event(LOG_ERROR, "cannot remove a delivered spool file", LF_STR("id", j->id),
				  LF_STR("error", strerror(errno)));
		mail_job_state_drop(mi, j);
		mi->stats.delivered++;
		if (r != NULL && r->duplicate)
			mi->stats.duplicates++;
		log_event(LOG_INFO, "mail delivered to ticket", LF_STR("id", j->id),
			  LF_STR("ticket_ref", r != NULL ? r->ref : "?"),
			  LF_INT("created", r != NULL && r->created),
			  LF_INT("duplicate", r != NULL && r->duplicate));
		if (r != NULL)
			ward__mail_ingest_reply__free_unpacked(r, NULL);
		mail_job_drop(mi, j);
	} else if (status == 409 && !j->customer_done) {
		/* ward-ticket knows no account for the sender: ask ward-auth for one,
		 * then send the mail again (nothing was done; not a failure) */
		j->need_customer = true;
		if (!mi->stopping)
			mail_job_send(mi, j);
		return;
	} else if (status > 0) {
		char why[64];

		snprintf(why, sizeof why, "ticket.ingest_mail answered %d", status);
		log_event(LOG_WARN, "mail refused by ward-ticket", LF_STR("id", j->id),
			  LF_INT("status", status), LF_INT("attempt", j->fails + 1));
		/* 5xx: ward-ticket could not do it now (database...): not the mail's fault */
		mail_job_failed(mi, j, status < 500, why);
	} else {
		log_event(LOG_WARN, "mail delivery not answered, will retry", LF_STR("id", j->id),
			  LF_INT("status", status), LF_INT("attempt", j->transport_fails + 1));
		mail_job_failed(mi, j, false,
				status == QUEUE_ETIMEDOUT ? "no answer (timeout)" : "queue unavailable");
	}
	if (!mi->stopping)
		mail_spool_kick(mi);
}

/* Send queue/<id> to ward-ticket. */
static void mail_job_send(struct mail_ingest *mi, struct mail_job *j)
{
	Ward__Principal pr = WARD__PRINCIPAL__INIT;
	struct queue_msg qm = {0};
	const uint8_t *payload;
	size_t plen, len;
	uint8_t *data, *flagged = NULL;
	char tenant[37];
	const char *err = NULL;

	if (j->seg != 0 && mail_job_read(mi, j, &data, &len) < 0) {
		/* the log cannot be read (I/O error): never forgotten, tried later */
		log_event(LOG_ERROR, "cannot read a mail from the spool log", LF_STR("id", j->id),
			  LF_STR("error", strerror(errno)));
		mail_job_failed(mi, j, false, "cannot read the spool log");
		return;
	}
	if (j->seg == 0 && mail_job_read(mi, j, &data, &len) < 0) {
		/* gone (replayed twice, removed by hand): forget it */
		mail_job_state_drop(mi, j);
		mail_job_drop(mi, j);
		return;
	}
	if (mail_spool_parse(data, len, tenant, &payload, &plen) < 0) {
		free(data);
		j->fails = mi->cfg->max_attempts;
		mail_spool_dead(mi, j, "unreadable spool file");
		return;
	}
	snprintf(j->tenant, sizeof j->tenant, "%s", tenant);
	pr.kind = "service";
	pr.id = "mail-ingest";
	pr.tenant = tenant;
	qm.tenant = tenant;
	qm.principal = &pr;
	qm.request_id = j->id;
	if (j->need_customer && !j->customer_done) {
		/* the sender's account first (a mail ward-ticket cannot read goes on to
		 * be refused there, and counted) */
		Ward__MailIngestRequest *req = ward__mail_ingest_request__unpack(NULL, plen, payload);
		Ward__MailCustomerRequest cr = WARD__MAIL_CUSTOMER_REQUEST__INIT;
		uint8_t *buf = NULL;

		if (req != NULL) {
			cr.email = req->from_email;
			cr.name = req->from_name;
			buf = malloc(ward__mail_customer_request__get_packed_size(&cr) + 1);
		}
		if (buf == NULL) {
			j->customer_done = true;
		} else {
			qm.dest = "q:auth";
			qm.method = "auth.mail_customer";
			qm.timeout_ms = mi->cfg->resolve_timeout_ms;
			qm.payload = buf;
			qm.len = ward__mail_customer_request__pack(&cr, buf);
			j->inflight = true;
			mi->inflight++;
			if (queue_request(daemon_queue(mi->d), &qm, mail_spool_on_customer, j,
					  &err) < 0) {
				j->inflight = false;
				mi->inflight--;
				mail_job_failed(mi, j, false, "queue unavailable");
			}
			free(buf);
			ward__mail_ingest_request__free_unpacked(req, NULL);
			crypto_wipe(data, len);
			free(data);
			return;
		}
		if (req != NULL)
			ward__mail_ingest_request__free_unpacked(req, NULL);
	}
	qm.dest = "q:ticket";
	qm.method = "ticket.ingest_mail";
	qm.timeout_ms = mi->cfg->deliver_timeout_ms;
	qm.payload = payload;
	qm.len = plen;
	if (j->customer_done) {
		/* sender_checked = true appended (field 11, varint: tag 0x58, 1): in
		 * protobuf the last occurrence of a field wins */
		flagged = malloc(plen + 2);
		if (flagged == NULL) {
			mail_job_failed(mi, j, false, "out of memory");
			goto out;
		}
		memcpy(flagged, payload, plen);
		flagged[plen] = (uint8_t)(11 << 3);
		flagged[plen + 1] = 1;
		qm.payload = flagged;
		qm.len = plen + 2;
	}
	j->inflight = true;
	mi->inflight++;
	if (queue_request(daemon_queue(mi->d), &qm, mail_spool_on_reply, j, &err) < 0) {
		j->inflight = false;
		mi->inflight--;
		mail_job_failed(mi, j, false, "queue unavailable");
	}
out:
	if (flagged != NULL) {
		crypto_wipe(flagged, plen + 2);
		free(flagged);
	}
	crypto_wipe(data, len);
	free(data);
}

/* Send every due job, up to spool.max_inflight at once. */
static void mail_spool_kick(struct mail_ingest *mi)
{
	int64_t now = envelope_now_ms();
	struct mail_job *j, *next;

	for (j = mi->jobs; j != NULL && mi->inflight < mi->cfg->max_inflight; j = next) {
		next = j->next;
		if (!j->inflight && j->due_ms <= now)
			mail_job_send(mi, j);
	}
}

/* Add every file of queue/ we do not know yet. */
static void mail_spool_scan(struct mail_ingest *mi)
{
	int fd = openat(mi->spool_dirfd, "queue", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *dir;
	struct dirent *de;

	if (fd < 0 || (dir = fdopendir(fd)) == NULL) {
		if (fd >= 0)
			close(fd);
		log_event(LOG_ERROR, "cannot read the spool", LF_STR("error", strerror(errno)));
		return;
	}
	while ((de = readdir(dir)) != NULL)
		if (de->d_name[0] != '.' && mail_spool_id_ok(de->d_name))
			mail_job_add(mi, de->d_name);
	closedir(dir);
}

static void mail_spool_tick(evutil_socket_t fd, short what, void *arg)
{
	struct mail_ingest *mi = arg;

	(void)fd;
	(void)what;
	if (mi->stopping)
		return;
	mail_spool_scan(mi);
	mail_spool_kick(mi);
}

/* =========================== writer threads ============================= */

/* fsync the directory sub of the spool at dirfd; 0 or -1. (any thread) */
static int mail_sync_dirat(int dirfd, const char *sub)
{
	int fd = openat(dirfd, sub, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int r;

	if (fd < 0)
		return -1;
	r = fsync(fd);
	close(fd);
	return r;
}

/* Write the n buffers of iov whole (writev, resumed after a short write); 0 or
 * -1. Changes iov. (writer) */
static int mail_writev_all(int fd, struct iovec *iov, int n)
{
	while (n > 0) {
		ssize_t w = writev(fd, iov, n);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		while (n > 0 && (size_t)w >= iov->iov_len) {
			w -= (ssize_t)iov->iov_len;
			iov++;
			n--;
		}
		if (n > 0) {
			iov->iov_base = (uint8_t *)iov->iov_base + w;
			iov->iov_len -= (size_t)w;
		}
	}
	return 0;
}

/* Start the next segment: create log/<seq> and make its name durable (fsync of
 * log/) before any record in it is acknowledged. 0 or -1. (writer, log_mu) */
static int mail_log_rotate(struct mail_syncer *sy, int dirfd)
{
	char path[64];
	uint64_t seq = sy->next_seq++;
	int fd;

	if (sy->log_fd >= 0)
		close(sy->log_fd);
	sy->log_fd = -1;
	snprintf(path, sizeof path, "log/%016llx", (unsigned long long)seq);
	fd = openat(dirfd, path, O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC | O_NOFOLLOW,
		    0600);
	if (fd < 0)
		return -1;
	if (mail_sync_dirat(dirfd, "log") < 0) {
		close(fd);
		return -1;
	}
	sy->log_fd = fd;
	sy->log_seq = seq;
	sy->log_size = 0;
	return 0;
}

/* One batch: every record of every put appended to the current segment (a new
 * one past MAIL_LOG_SEGMENT_MAX), then one fdatasync for all of them. All or
 * nothing: on any error every put fails and the segment is abandoned, so that
 * no acknowledged record ever follows a damaged one. (writer, log_mu) */
static void mail_syncer_batch(struct mail_syncer *sy, int dirfd, struct mail_put *batch)
{
	struct iovec iov[MAIL_LOG_IOV];
	const char *error = NULL;
	struct mail_put *p;
	uint64_t off;
	int n = 0;

	if ((sy->log_fd < 0 || sy->log_size >= MAIL_LOG_SEGMENT_MAX) &&
	    mail_log_rotate(sy, dirfd) < 0) {
		error = "cannot start a spool log segment";
		goto out;
	}
	off = sy->log_size;
	for (p = batch; p != NULL && error == NULL; p = p->next)
		for (int k = 0; k < p->n; k++) {
			p->f[k].seg = sy->log_seq;
			p->f[k].off = off + MAIL_LOG_HDR;
			off += p->f[k].len;
			iov[n].iov_base = p->f[k].buf;
			iov[n].iov_len = p->f[k].len;
			if (++n == MAIL_LOG_IOV) {
				if (mail_writev_all(sy->log_fd, iov, n) < 0) {
					error = "cannot write the spool log";
					break;
				}
				n = 0;
			}
		}
	if (error == NULL && n > 0 && mail_writev_all(sy->log_fd, iov, n) < 0)
		error = "cannot write the spool log";
	if (error == NULL && fdatasync(sy->log_fd) < 0)
		error = "cannot sync the spool log";
	if (error == NULL)
		sy->log_size = off;
out:
	if (error != NULL && sy->log_fd >= 0) {
		close(sy->log_fd);
		sy->log_fd = -1;
	}
	for (p = batch; p != NULL; p = p->next) {
		p->rc = error == NULL ? 0 : -1;
		p->committed = error == NULL ? p->n : 0;
		if (error != NULL)
			p->error = error;
	}
}

/* Remove a delivered segment: the segment, then (its removal durable) its
 * .done, so that a crash never leaves the records without their marks. (writer) */
static void mail_log_drop(int dirfd, uint64_t seq)
{
	char path[64];

	snprintf(path, sizeof path, "log/%016llx", (unsigned long long)seq);
	if (unlinkat(dirfd, path, 0) < 0 && errno != ENOENT)
		return;
	if (mail_sync_dirat(dirfd, "log") < 0)
		return;
	snprintf(path, sizeof path, "log/%016llx.done", (unsigned long long)seq);
	unlinkat(dirfd, path, 0);
}

/* A writer thread: take every queued put, write the batch, hand it back (in
 * the order the log has them: the loop learns a segment is finished from the
 * first put of a newer one); remove the segments the loop is done with. The
 * batch is taken only once the log is ours (log_mu): while one writer waits for
 * its fdatasync the puts of every session pile up, and the next writer takes
 * them all for one fdatasync (taken before, each writer would hold a batch of
 * one or two puts waiting for the log: about one fdatasync per mail). */
static void *mail_syncer_main(void *arg)
{
	struct mail_syncer *sy = arg;
	int dirfd = sy->mi->spool_dirfd;

	pthread_mutex_lock(&sy->mu);
	for (;;) {
		struct mail_put *batch, *last;
		uint64_t drops[MAIL_LOG_DROPS_MAX];
		int n_drops;
		bool wake;

		while (sy->queued == NULL && sy->n_drops == 0 && !sy->quit)
			pthread_cond_wait(&sy->cv, &sy->mu);
		if (sy->queued == NULL && sy->n_drops == 0)
			break; /* quit, and nothing left to write */
		n_drops = sy->n_drops;
		memcpy(drops, sy->drops, sizeof drops[0] * (size_t)n_drops);
		sy->n_drops = 0;
		sy->writing++;
		pthread_mutex_unlock(&sy->mu);

		for (int i = 0; i < n_drops; i++)
			mail_log_drop(dirfd, drops[i]);
		pthread_mutex_lock(&sy->log_mu);
		pthread_mutex_lock(&sy->mu);
		batch = sy->queued; /* NULL: another writer took them meanwhile */
		sy->queued = NULL;
		sy->queued_tail = &sy->queued;
		pthread_mutex_unlock(&sy->mu);
		if (batch == NULL) {
			pthread_mutex_unlock(&sy->log_mu);
		} else {
			mail_syncer_batch(sy, dirfd, batch);
			for (last = batch; last->next != NULL; last = last->next)
				;
			pthread_mutex_lock(&sy->mu);
			wake = sy->done == NULL;
			*sy->done_tail = batch;
			sy->done_tail = &last->next;
			pthread_mutex_unlock(&sy->mu);
			pthread_mutex_unlock(&sy->log_mu);
			if (wake) {
				char b = 1;
				ssize_t n;

				/* the pipe is non-blocking: full means the loop is woken already */
				do
					n = write(sy->pipe[1], &b, 1);
				while (n < 0 && errno == EINTR);
			}
		}
		pthread_mutex_lock(&sy->mu);
		sy->writing--;
		pthread_cond_broadcast(&sy->idle);
	}
	pthread_mutex_unlock(&sy->mu);
	return NULL;
}

/* Take the finished puts (loop side). */
static struct mail_put *mail_syncer_take_done(struct mail_syncer *sy)
{
	struct mail_put *l;

	pthread_mutex_lock(&sy->mu);
	l = sy->done;
	sy->done = NULL;
	sy->done_tail = &sy->done;
	pthread_mutex_unlock(&sy->mu);
	return l;
}

/* Finish every put the writers handed back (loop side). */
static void mail_syncer_finish(struct mail_ingest *mi)
{
	struct mail_put *p, *next;

	for (p = mail_syncer_take_done(mi->syncer); p != NULL; p = next) {
		next = p->next;
		for (int k = 0; k < p->committed; k++) {
			if (p->f[k].seg > mi->log_newest)
				mi->log_newest = p->f[k].seg;
			if (mail_job_add_at(mi, p->f[k].id, p->f[k].seg, p->f[k].off,
					    (uint32_t)(p->f[k].len - MAIL_LOG_HDR), true) < 0)
				log_event(LOG_ERROR, "a spooled mail waits for the next start",
					  LF_STR("id", p->f[k].id), LF_STR("error", "out of memory"));
		}
		p->cb(p->arg, p->rc, p->n > 0 ? p->f[p->n - 1].id : "", p->error);
		mail_put_free(p);
	}
	/* the segments the writers moved past, all delivered meanwhile */
	mail_seg_sweep(mi);
	if (!mi->stopping)
		mail_spool_kick(mi);
}

/* The pipe is readable: the writers handed puts back. */
static void mail_syncer_on_done(evutil_socket_t fd, short what, void *arg)
{
	char b[64];

	(void)what;
	while (read(fd, b, sizeof b) > 0)
		;
	mail_syncer_finish(arg);
}

void mail_spool_settle(struct mail_ingest *mi)
{
	struct mail_syncer *sy = mi->syncer;

	if (sy == NULL || sy->n_threads == 0)
		return;
	pthread_mutex_lock(&sy->mu);
	while (sy->queued != NULL || sy->writing > 0)
		pthread_cond_wait(&sy->idle, &sy->mu);
	pthread_mutex_unlock(&sy->mu);
	mail_syncer_finish(mi);
}

/* Start the writer threads. 0 or -1. */
static int mail_syncer_start(struct mail_ingest *mi, const char **error_r)
{
	struct mail_syncer *sy = calloc(1, sizeof *sy);

	if (sy == NULL) {
		*error_r = "out of memory";
		return -1;
	}
	sy->mi = mi;
	sy->pipe[0] = sy->pipe[1] = -1;
	sy->queued_tail = &sy->queued;
	sy->done_tail = &sy->done;
	sy->log_fd = -1;
	pthread_mutex_init(&sy->log_mu, NULL);
	pthread_mutex_init(&sy->mu, NULL);
	pthread_cond_init(&sy->cv, NULL);
	pthread_cond_init(&sy->idle, NULL);
	mi->syncer = sy;
	if (pipe2(sy->pipe, O_NONBLOCK | O_CLOEXEC) < 0 ||
	    (sy->ev = event_new(daemon_base(mi->d), sy->pipe[0], EV_READ | EV_PERSIST,
				mail_syncer_on_done, mi)) == NULL ||
	    event_add(sy->ev, NULL) < 0) {
		*error_r = "spool: cannot set up the writers' pipe";
		return -1;
	}
	sy->threads = calloc((size_t)mi->cfg->sync_threads, sizeof *sy->threads);
	if (sy->threads == NULL) {
		*error_r = "out of memory";
		return -1;
	}
	{
		/* the writers take no signal: the event loop's thread handles them */
		sigset_t all, old;
		int rc = 0;

		sigfillset(&all);
		pthread_sigmask(SIG_SETMASK, &all, &old);
		for (int i = 0; i < mi->cfg->sync_threads && rc == 0; i++) {
			rc = pthread_create(&sy->threads[i], NULL, mail_syncer_main, sy);
			if (rc == 0)
				sy->n_threads++;
		}
		pthread_sigmask(SIG_SETMASK, &old, NULL);
		if (rc != 0) {
			*error_r = "spool: cannot start the writer threads";
			return -1;
		}
	}
	return 0;
}

/* Let the writers finish what they were given, join them, and tell every put's
 * owner (rc -2: closing); then free it all. */
static void mail_syncer_stop(struct mail_ingest *mi)
{
	struct mail_syncer *sy = mi->syncer;
	struct mail_put *p, *next;

	if (sy == NULL)
		return;
	pthread_mutex_lock(&sy->mu);
	sy->quit = true;
	pthread_cond_broadcast(&sy->cv);
	pthread_mutex_unlock(&sy->mu);
	for (int i = 0; i < sy->n_threads; i++)
		pthread_join(sy->threads[i], NULL);
	/* all written now (queued is empty unless no thread ever ran) */
	for (p = mail_syncer_take_done(sy); p != NULL; p = next) {
		next = p->next;
		p->cb(p->arg, -2, "", "closing");
		mail_put_free(p);
	}
	for (p = sy->queued; p != NULL; p = next) {
		next = p->next;
		p->cb(p->arg, -2, "", "closing");
		mail_put_free(p);
	}
	if (sy->ev != NULL)
		event_free(sy->ev);
	for (int i = 0; i < 2; i++)
		if (sy->pipe[i] >= 0)
			close(sy->pipe[i]);
	if (sy->log_fd >= 0)
		close(sy->log_fd);
	pthread_cond_destroy(&sy->cv);
	pthread_cond_destroy(&sy->idle);
	pthread_mutex_destroy(&sy->mu);
	pthread_mutex_destroy(&sy->log_mu);
	free(sy->threads);
	free(sy);
	mi->syncer = NULL;
}

struct mail_put *mail_put_new(void)
{
	return calloc(1, sizeof(struct mail_put));
}

void mail_put_free(struct mail_put *put)
{
	if (put == NULL)
		return;
	for (int k = 0; k < put->n; k++) {
		crypto_wipe(put->f[k].buf, put->f[k].len);
		free(put->f[k].buf);
	}
	free(put);
}

int mail_put_add(struct mail_ingest *mi, struct mail_put *put, const char *tenant,
		 const Ward__MailIngestRequest *req, const char **error_r)
{
	size_t plen = ward__mail_ingest_request__get_packed_size(req);
	size_t hlen = sizeof MAIL_SPOOL_MAGIC - 1 + 37, len = hlen + plen;
	uint8_t rnd[6], *buf, *rec;

	(void)mi;
	if (put->n >= MAIL_PUT_MAX_FILES) {
		*error_r = "too many spool files for one message";
		return -1;
	}
	if (strlen(tenant) != 36) {
		*error_r = "bad tenant";
		return -1;
	}
	if (len > MAIL_SPOOL_FILE_MAX) {
		*error_r = "too large";
		return -1;
	}
	if (crypto_random(rnd, sizeof rnd) < 0) {
		*error_r = "no random bytes";
		return -1;
	}
	/* the log record: header, then the payload (a queue/ file's bytes) */
	if ((rec = calloc(1, MAIL_LOG_HDR + len)) == NULL) {
		*error_r = "out of memory";
		return -1;
	}
	buf = rec + MAIL_LOG_HDR;
	snprintf(put->f[put->n].id, sizeof put->f[0].id, "%016llx-%02x%02x%02x%02x%02x%02x",
		 (unsigned long long)envelope_now_ms() * 1000ULL, rnd[0], rnd[1], rnd[2], rnd[3],
		 rnd[4], rnd[5]);
	memcpy(buf, MAIL_SPOOL_MAGIC, sizeof MAIL_SPOOL_MAGIC - 1);
	memcpy(buf + sizeof MAIL_SPOOL_MAGIC - 1, tenant, 36);
	buf[hlen - 1] = '\n';
	ward__mail_ingest_request__pack(req, buf + hlen);
	memcpy(rec, MAIL_LOG_MAGIC, 4);
	mail_put_u32(rec + 4, (uint32_t)len);
	memcpy(rec + 12, put->f[put->n].id, strlen(put->f[put->n].id));
	mail_put_u32(rec + 8, mail_crc32(rec + 12, MAIL_LOG_ID + len));
	put->f[put->n].buf = rec;
	put->f[put->n].len = MAIL_LOG_HDR + len;
	put->n++;
	return 0;
}

int mail_put_submit(struct mail_ingest *mi, struct mail_put *put, mail_put_cb *cb, void *arg)
{
	struct mail_syncer *sy = mi->syncer;

	if (sy == NULL || sy->quit || put->n == 0) {
		mail_put_free(put);
		return -1;
	}
	put->cb = cb;
	put->arg = arg;
	put->next = NULL;
	pthread_mutex_lock(&sy->mu);
	*sy->queued_tail = put;
	sy->queued_tail = &put->next;
	pthread_cond_signal(&sy->cv);
	pthread_mutex_unlock(&sy->mu);
	return 0;
}

/* ============================== open/close ============================== */

/* Compare two ids (qsort, bsearch). */
static int mail_id_cmp(const void *a, const void *b)
{
	return strcmp(a, b);
}

/* The ids listed in log/<seq>.done, sorted: *ids_r malloc'd (MAIL_LOG_ID bytes
 * each), *n_r of them. None when there is no .done. 0 or -1. */
static int mail_log_done_ids(struct mail_ingest *mi, uint64_t seq, char (**ids_r)[MAIL_LOG_ID],
			     size_t *n_r)
{
	char name[64], (*ids)[MAIL_LOG_ID] = NULL;
	uint8_t *data = NULL;
	size_t len = 0, n = 0, start = 0;

	*ids_r = NULL;
	*n_r = 0;
	snprintf(name, sizeof name, "%016llx.done", (unsigned long long)seq);
	/* a segment's records are at least MAIL_LOG_HDR + 48 bytes, its lines at
	 * most MAIL_LOG_ID: a bound well above anything a segment can list */
	if (mail_spool_read_max(mi, "log", name, (size_t)64 << 20, &data, &len) < 0)
		return errno == ENOENT ? 0 : -1;
	ids = calloc(len / 2 + 1, sizeof *ids);
	if (ids == NULL) {
		free(data);
		return -1;
	}
	for (size_t i = 0; i < len; i++) {
		if (data[i] != '\n')
			continue;
		if (i - start > 0 && i - start < MAIL_LOG_ID) {
			memcpy(ids[n], data + start, i - start);
			ids[n][i - start] = '\0';
			n++;
		}
		start = i + 1;
	}
	free(data);
	qsort(ids, n, sizeof *ids, mail_id_cmp);
	*ids_r = ids;
	*n_r = n;
	return 0;
}

/* Read segment seq up to its first incomplete or damaged record (a tail never
 * acknowledged) and add a job for each record not marked done. 0 or -1 (the
 * segment or its .done cannot be read: the daemon must not start without it). */
static int mail_log_recover_segment(struct mail_ingest *mi, uint64_t seq)
{
	char (*done)[MAIL_LOG_ID] = NULL, id[MAIL_LOG_ID];
	struct mail_seg *g;
	uint8_t hdr[MAIL_LOG_HDR], *rec = NULL;
	uint64_t off = 0;
	size_t n_done = 0;
	long records = 0, torn = 0;
	int rc = -1;

	if (mail_log_done_ids(mi, seq, &done, &n_done) < 0 || (g = mail_seg_get(mi, seq)) == NULL)
		goto out;
	for (;;) {
		uint32_t len;
		ssize_t r = pread(g->fd, hdr, sizeof hdr, (off_t)off);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			goto out;
		if (r == 0)
			break;
		len = mail_get_u32(hdr + 4);
		if ((size_t)r < sizeof hdr || memcmp(hdr, MAIL_LOG_MAGIC, 4) != 0 ||
		    len > MAIL_SPOOL_FILE_MAX || (rec = malloc(MAIL_LOG_ID + (size_t)len)) == NULL) {
			torn = 1;
			break;
		}
		memcpy(rec, hdr + 12, MAIL_LOG_ID);
		r = pread(g->fd, rec + MAIL_LOG_ID, len, (off_t)(off + MAIL_LOG_HDR));
		if (r < 0 && errno != EINTR)
			goto out;
		if (r != (ssize_t)len || mail_crc32(rec, MAIL_LOG_ID + (size_t)len) !=
						 mail_get_u32(hdr + 8)) {
			torn = 1; /* short read on EINTR too: the next start reads it */
			break;
		}
		memcpy(id, hdr + 12, MAIL_LOG_ID);
		crypto_wipe(rec, MAIL_LOG_ID + (size_t)len);
		free(rec);
		rec = NULL;
		if (id[MAIL_LOG_ID - 1] != '\0' || !mail_spool_id_ok(id)) {
			torn = 1;
			break;
		}
		if ((n_done == 0 || bsearch(id, done, n_done, sizeof *done, mail_id_cmp) == NULL) &&
		    mail_job_add_at(mi, id, seq, off + MAIL_LOG_HDR, len, false) < 0)
			goto out;
		records++;
		off += MAIL_LOG_HDR + (uint64_t)len;
	}
	if (torn || g->live > 0)
		log_event(LOG_INFO, "spool log segment resumed", LF_INT("segment", (long long)seq),
			  LF_INT("records", records), LF_INT("pending", g->live),
			  LF_INT("torn_tail", torn));
	rc = 0;
out:
	if (rec != NULL)
		free(rec);
	free(done);
	return rc;
}

/* Resume the spool log a previous run left: every segment's pending records
 * become jobs, the fully delivered segments are removed; this run writes to a
 * new segment. 0 or -1. */
static int mail_log_recover(struct mail_ingest *mi, const char **error_r)
{
	int fd = openat(mi->spool_dirfd, "log", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	uint64_t *seqs = NULL, max = 0;
	size_t n = 0, cap = 0;
	struct dirent *de;
	DIR *dir;
	int rc = -1;

	if (fd < 0 || (dir = fdopendir(fd)) == NULL) {
		if (fd >= 0)
			close(fd);
		*error_r = "spool.dir: cannot read log/";
		return -1;
	}
	while ((de = readdir(dir)) != NULL) {
		char *end;
		unsigned long long v;

		if (strlen(de->d_name) != 16 || strspn(de->d_name, "0123456789abcdef") != 16)
			continue;
		v = strtoull(de->d_name, &end, 16);
		if (n == cap) {
			uint64_t *m = realloc(seqs, (cap = cap ? cap * 2 : 16) * sizeof *seqs);

			if (m == NULL) {
				*error_r = "out of memory";
				goto out;
			}
			seqs = m;
		}
		seqs[n++] = v;
		if (v > max)
			max = v;
	}
	for (size_t i = 0; i < n; i++)
		if (mail_log_recover_segment(mi, seqs[i]) < 0) {
			*error_r = "spool.dir: a log segment cannot be read";
			goto out;
		}
	pthread_mutex_lock(&mi->syncer->log_mu);
	mi->syncer->next_seq = max + 1;
	pthread_mutex_unlock(&mi->syncer->log_mu);
	mi->log_newest = max + 1;
	mail_seg_sweep(mi);
	rc = 0;
out:
	closedir(dir);
	free(seqs);
	return rc;
}


int mail_spool_open(struct mail_ingest *mi, const char **error_r)
{
	static const char *const subs[] = {"tmp", "queue", "dead", "state", "log"};
	struct timeval tv = {MAIL_SPOOL_SCAN_MS / 1000, (MAIL_SPOOL_SCAN_MS % 1000) * 1000};

	if (mkdir(mi->cfg->spool_dir, 0700) < 0 && errno != EEXIST) {
		*error_r = "spool.dir: cannot create";
		return -1;
	}
	mi->spool_dirfd = open(mi->cfg->spool_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (mi->spool_dirfd < 0) {
		*error_r = "spool.dir: cannot open";
		return -1;
	}
	for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++)
		if (mkdirat(mi->spool_dirfd, subs[i], 0700) < 0 && errno != EEXIST) {
			*error_r = "spool.dir: cannot create its subdirectories";
			return -1;
		}
	mi->spool_timer = event_new(daemon_base(mi->d), -1, EV_PERSIST, mail_spool_tick, mi);
	if (mi->spool_timer == NULL || event_add(mi->spool_timer, &tv) < 0) {
		*error_r = "spool timer";
		return -1;
	}
	if (mail_syncer_start(mi, error_r) < 0)
		return -1;
	/* Whatever a previous run left: resumed now. */
	if (mail_log_recover(mi, error_r) < 0)
		return -1;
	mail_spool_scan(mi);
	return 0;
}

void mail_spool_close(struct mail_ingest *mi)
{
	struct mail_job *j, *next;

	mail_syncer_stop(mi);
	j = mi->jobs;
	if (mi->spool_timer != NULL)
		event_free(mi->spool_timer);
	mi->spool_timer = NULL;
	/* in-flight jobs are failed by queue_free (ESHUTDOWN) later: keep those */
	for (; j != NULL; j = next) {
		next = j->next;
		if (j->inflight)
			j->gone = true;
		else
			free(j);
	}
	mi->jobs = NULL;
	while (mi->segs != NULL) {
		struct mail_seg *g = mi->segs;

		mi->segs = g->next;
		close(g->fd);
		if (g->done_fd >= 0)
			close(g->done_fd);
		free(g);
	}
	if (mi->spool_dirfd >= 0)
		close(mi->spool_dirfd);
	mi->spool_dirfd = -1;
}
