/*
 * mail_spool — the durable spool between "250 after DATA" and ward-ticket.
 *
 * Layout under spool.dir (mode 0700, owned by the daemon's user):
 *   tmp/<id>     being written
 *   queue/<id>   durable, waiting for ward-ticket: "WARDSPOOL1\n<tenant id>\n"
 *                followed by the packed MailIngestRequest
 *   dead/<id>    dead letters, with dead/<id>.err (the last error, attempts)
 *   state/<id>   the attempt counters of queue/<id> ("<refusals> <timeouts>\n"),
 *                written at each failure: a restart resumes the count
 *
 * put: write tmp/<id>, fsync it, rename to queue/<id>, fsync queue/. Only then
 * does the SMTP side answer 250: a crash after 250 finds the file on restart.
 * These syscalls never run on the event loop (one session's fsyncs would hold
 * every other session): spool.sync_threads writer threads take every put queued
 * meanwhile as one batch, write and fsync its files, rename them, and fsync
 * queue/ once for the whole batch (group commit); the finished batch goes back to
 * the event loop through a pipe, which only then adds the jobs and lets the
 * sessions answer. The threads touch nothing but the files and their own lists
 * (no log, no libevent, no Redis). On close they finish what they were given.
 * Delivery, two requests (principal service/mail-ingest, the recipient tenant):
 *   1. auth.mail_customer on q:auth: the sender's account, created as a customer
 *      when the tenant has none (idempotent in ward-auth: same address, same
 *      account). A 4xx answer (an address ward-auth cannot take) goes on without
 *      an account; ward-ticket then keeps the address alone.
 *   2. ticket.ingest_mail on q:ticket; the file is removed only after ward-ticket
 *      answered that its effect committed. A crash in
 *      between re-sends both; ward-ticket takes each Message-ID once per tenant,
 *      so nothing is created twice.
 * A message refused (4xx) by ward-ticket spool.max_attempts times, or unanswered
 * (timeout, queue down, 5xx) spool.max_transport_failures times, moves to dead/
 * with its error, and a record of it (id, tenant, error, counts: never the mail)
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
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "crypto.h"
#include "daemon.h"
#include "log.h"
#include "mail.h"

#define MAIL_SPOOL_SCAN_MS 2000
#define MAIL_SPOOL_FILE_MAX (ENVELOPE_MAX_PAYLOAD + 4096)

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
		uint8_t *buf;
		size_t len;
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
};

struct mail_job {
	struct mail_job *next;
	struct mail_ingest *mi;
	char id[64];
	char tenant[37]; /* known once the file was read */
	int fails, transport_fails;
	int64_t due_ms;
	bool customer_done; /* auth.mail_customer answered for this run */
	bool inflight;
	bool gone; /* removed from the list while a reply was pending */
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

/* Read queue/<id> (or another sub) whole; malloc'd. 0 or -1. */
static int mail_spool_read(struct mail_ingest *mi, const char *sub, const char *id,
			   uint8_t **data_r, size_t *len_r)
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
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > MAIL_SPOOL_FILE_MAX ||
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

/* Save j's attempt counters in state/<id> (written whole, then renamed). */
static void mail_job_state_save(struct mail_ingest *mi, const struct mail_job *j)
{
	char tmp[128], dst[128], line[64];
	int fd, n;

	snprintf(tmp, sizeof tmp, "state/%s.tmp", j->id);
	snprintf(dst, sizeof dst, "state/%s", j->id);
	n = snprintf(line, sizeof line, "%d %d\n", j->fails, j->transport_fails);
	fd = openat(mi->spool_dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW,
		    0600);
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

/* Forget j's counters (delivered or dead). */
static void mail_job_state_drop(struct mail_ingest *mi, const struct mail_job *j)
{
	char path[128];

	snprintf(path, sizeof path, "state/%s", j->id);
	if (unlinkat(mi->spool_dirfd, path, 0) < 0 && errno != ENOENT)
		log_event(LOG_WARN, "cannot remove a mail's attempt counters", LF_STR("id", j->id),
			  LF_STR("error", strerror(errno)));
}

/* Add a job for queue/<id> unless known. */
static void mail_job_add(struct mail_ingest *mi, const char *id)
{
	struct mail_job *j;

	for (j = mi->jobs; j != NULL; j = j->next)
		if (strcmp(j->id, id) == 0)
			return;
	j = calloc(1, sizeof *j);
	if (j == NULL)
		return; /* picked up by the next scan */
	j->mi = mi;
	snprintf(j->id, sizeof j->id, "%s", id);
	mail_job_state_load(mi, j);
	j->next = mi->jobs;
	mi->jobs = j;
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

/* Move queue/<id> to dead/<id> with its error. */
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
	if (renameat(mi->spool_dirfd, src, mi->spool_dirfd, dst) < 0 ||
	    mail_spool_sync_dir(mi, "dead") < 0 || mail_spool_sync_dir(mi, "queue") < 0) {
		log_event(LOG_ERROR, "cannot move a mail to the dead letters", LF_STR("id", j->id),
			  LF_STR("error", strerror(errno)));
		return;
	}
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
		if (unlinkat(mi->spool_dirfd, path, 0) < 0 && errno != ENOENT)
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
	uint8_t *data;
	char tenant[37];
	const char *err = NULL;

	if (mail_spool_read(mi, "queue", j->id, &data, &len) < 0) {
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
	if (!j->customer_done) {
		/* first the sender's account (a mail ward-ticket cannot read goes on to
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
	j->inflight = true;
	mi->inflight++;
	if (queue_request(daemon_queue(mi->d), &qm, mail_spool_on_reply, j, &err) < 0) {
		j->inflight = false;
		mi->inflight--;
		mail_job_failed(mi, j, false, "queue unavailable");
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

/* Write, fsync and close tmp/<id> of file k of put; 0 or -1. (writer thread) */
static int mail_put_write_file(int dirfd, struct mail_put *put, int k)
{
	char tmp[128];
	int fd;

	snprintf(tmp, sizeof tmp, "tmp/%s", put->f[k].id);
	fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		put->error = "cannot create a spool file";
		return -1;
	}
	if (mail_write_all(fd, put->f[k].buf, put->f[k].len) < 0 || fsync(fd) < 0) {
		close(fd);
		unlinkat(dirfd, tmp, 0);
		put->error = "cannot write the spool file";
		return -1;
	}
	if (close(fd) < 0) {
		unlinkat(dirfd, tmp, 0);
		put->error = "cannot write the spool file";
		return -1;
	}
	return 0;
}

/* One batch: every file written and fsynced, renamed into queue/, then one fsync
 * of queue/ for all of them. A put is good only if all its files are. (writer) */
static void mail_syncer_batch(int dirfd, struct mail_put *batch)
{
	char tmp[128], dst[128];
	bool renamed = false;
	struct mail_put *p;

	for (p = batch; p != NULL; p = p->next) {
		p->rc = 0;
		p->committed = 0;
		for (int k = 0; k < p->n && p->rc == 0; k++)
			if (mail_put_write_file(dirfd, p, k) < 0) {
				p->rc = -1;
				/* the files before it stay in tmp/: never queued, removed */
				for (int i = 0; i < k; i++) {
					snprintf(tmp, sizeof tmp, "tmp/%s", p->f[i].id);
					unlinkat(dirfd, tmp, 0);
				}
			}
	}
	for (p = batch; p != NULL; p = p->next) {
		for (int k = 0; k < p->n && p->rc == 0; k++) {
			snprintf(tmp, sizeof tmp, "tmp/%s", p->f[k].id);
			snprintf(dst, sizeof dst, "queue/%s", p->f[k].id);
			if (renameat(dirfd, tmp, dirfd, dst) < 0) {
				p->rc = -1;
				p->error = "cannot commit the spool file";
				for (int i = k; i < p->n; i++) {
					snprintf(tmp, sizeof tmp, "tmp/%s", p->f[i].id);
					unlinkat(dirfd, tmp, 0);
				}
				break;
			}
			p->committed++;
			renamed = true;
		}
	}
	if (!renamed)
		return;
	{
		int fd = openat(dirfd, "queue", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		int r = fd < 0 ? -1 : fsync(fd);

		if (fd >= 0)
			close(fd);
		if (r < 0)
			for (p = batch; p != NULL; p = p->next)
				if (p->committed > 0 && p->rc == 0) {
					/* renamed but not known durable: no 250 (the files
					 * stay and are delivered; a retry is a duplicate) */
					p->rc = -1;
					p->error = "cannot commit the spool file";
				}
	}
}

/* A writer thread: take every queued put, write the batch, hand it back. */
static void *mail_syncer_main(void *arg)
{
	struct mail_syncer *sy = arg;
	int dirfd = sy->mi->spool_dirfd;

	pthread_mutex_lock(&sy->mu);
	for (;;) {
		struct mail_put *batch, *last;
		bool wake;

		while (sy->queued == NULL && !sy->quit)
			pthread_cond_wait(&sy->cv, &sy->mu);
		if (sy->queued == NULL)
			break; /* quit, and nothing left to write */
		batch = sy->queued;
		sy->queued = NULL;
		sy->queued_tail = &sy->queued;
		sy->writing++;
		pthread_mutex_unlock(&sy->mu);

		mail_syncer_batch(dirfd, batch);

		for (last = batch; last->next != NULL; last = last->next)
			;
		pthread_mutex_lock(&sy->mu);
		sy->writing--;
		pthread_cond_broadcast(&sy->idle);
		wake = sy->done == NULL;
		*sy->done_tail = batch;
		sy->done_tail = &last->next;
		if (wake) {
			char b = 1;
			ssize_t n;

			/* the pipe is non-blocking: full means the loop is woken already */
			do
				n = write(sy->pipe[1], &b, 1);
			while (n < 0 && errno == EINTR);
		}
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
		for (int k = 0; k < p->committed; k++)
			mail_job_add(mi, p->f[k].id);
		p->cb(p->arg, p->rc, p->n > 0 ? p->f[p->n - 1].id : "", p->error);
		mail_put_free(p);
	}
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
	pthread_cond_destroy(&sy->cv);
	pthread_cond_destroy(&sy->idle);
	pthread_mutex_destroy(&sy->mu);
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
	uint8_t rnd[6], *buf;

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
	if ((buf = malloc(len)) == NULL) {
		*error_r = "out of memory";
		return -1;
	}
	snprintf(put->f[put->n].id, sizeof put->f[0].id, "%016llx-%02x%02x%02x%02x%02x%02x",
		 (unsigned long long)envelope_now_ms() * 1000ULL, rnd[0], rnd[1], rnd[2], rnd[3],
		 rnd[4], rnd[5]);
	memcpy(buf, MAIL_SPOOL_MAGIC, sizeof MAIL_SPOOL_MAGIC - 1);
	memcpy(buf + sizeof MAIL_SPOOL_MAGIC - 1, tenant, 36);
	buf[hlen - 1] = '\n';
	ward__mail_ingest_request__pack(req, buf + hlen);
	put->f[put->n].buf = buf;
	put->f[put->n].len = len;
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

int mail_spool_open(struct mail_ingest *mi, const char **error_r)
{
	static const char *const subs[] = {"tmp", "queue", "dead", "state"};
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
	if (mi->spool_dirfd >= 0)
		close(mi->spool_dirfd);
	mi->spool_dirfd = -1;
}
