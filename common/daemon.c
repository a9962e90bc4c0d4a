/*
 * daemon — the skeleton every Ward daemon runs in (see daemon.h).
 */
#include "daemon.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/crypto.h>

#include "auditlog.h"
#include "crypto.h"
#include "log.h"

#define DAEMON_DRAIN_TIMEOUT_S 10
#define DAEMON_WORKERS_MAX 64

struct daemon {
	const struct daemon_service *svc;
	struct daemon_config cfg;
	struct conf_section sections[2];
	size_t n_sections;
	struct event_base *base;
	queue_t *queue;
	db_t *db;
	uint8_t kek[CRYPTO_KEY_LEN]; /* the current (highest) version of the ring */
	uint32_t kek_version;
	struct crypto_keyring kek_ring; /* every KEK version of the file (rotation) */
	int64_t kek_loaded_ms;
	bool have_kek;
	char stream[64];    /* q:<service> */
	char hb_key[192];   /* hb:<service>:<instance> */
	struct event *ev_term, *ev_int, *ev_hup, *ev_heartbeat, *ev_drain_timeout;
	bool stopping;
	int64_t started_ms;
	int worker; /* index among the workers (0 when there is one process) */
};

/* ================================ config ================================ */

/* A region name: [a-z]{2,8} (regions are configuration: deploy/regions.yaml). */
static int daemon_valid_region(const void *value, const char **reason_r)
{
	const char *r = *(char *const *)value;
	size_t n = strlen(r);

	if (n >= 2 && n <= 8 && strspn(r, "abcdefghijklmnopqrstuvwxyz") == n)
		return 0;
	*reason_r = "must be 2 to 8 letters a-z";
	return -1;
}

/* Names that end up in Redis keys: short, [a-z0-9-]. */
static int daemon_valid_name(const void *value, const char **reason_r)
{
	const char *s = *(char *const *)value;
	size_t n = strlen(s);

	if (n == 0 || n > 64 || strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789-") != n) {
		*reason_r = "must be 1-64 characters of [a-z0-9-]";
		return -1;
	}
	return 0;
}

static int daemon_valid_level(const void *value, const char **reason_r)
{
	log_level_t level;

	if (log_level_parse(*(char *const *)value, &level) == 0)
		return 0;
	*reason_r = "must be one of debug, info, warn, error";
	return -1;
}

#define DC(field) offsetof(struct daemon_config, field)
const struct conf_entry daemon_conf_entries[] = {
	{ "service", CONF_STR, DC(service), true, NULL, 0, 0, daemon_valid_name },
	{ "region", CONF_STR, DC(region), true, NULL, 0, 0, daemon_valid_region },
	{ "instance", CONF_STR, DC(instance), false, NULL, 0, 0, daemon_valid_name },
	{ "log_level", CONF_STR, DC(log_level), false, "info", 0, 0, daemon_valid_level },
	{ "log_file", CONF_STR, DC(log_file), false, NULL, 0, 0, NULL },
	{ "redis.host", CONF_STR, DC(redis_host), false, "127.0.0.1", 0, 0, NULL },
	{ "redis.port", CONF_INT, DC(redis_port), true, NULL, 1, 65535, NULL },
	{ "redis.user", CONF_STR, DC(redis_user), true, NULL, 0, 0, daemon_valid_name },
	{ "redis.password_file", CONF_SECRET_FILE, DC(redis_password), true, NULL, 0, 0, NULL },
	/* Required unless the service holds no route key (daemon_check_config). */
	{ "queue.route_keys_file", CONF_SECRET_FILE, DC(route_keys), false, NULL, 0, 0, NULL },
	{ "queue.max_deliveries", CONF_INT, DC(max_deliveries), false, "5", 1, 100, NULL },
	{ "queue.claim_idle_ms", CONF_INT, DC(claim_idle_ms), false, "30000", 100, 3600000, NULL },
	{ "queue.stream_maxlen", CONF_INT, DC(stream_maxlen), false, "100000", 1000, 100000000, NULL },
	{ "queue.read_count", CONF_INT, DC(read_count), false, "64", 1, 1000, NULL },
	{ "queue.block_ms", CONF_INT, DC(block_ms), false, "2000", 10, 60000, NULL },
	{ "postgres.conninfo", CONF_STR, DC(pg_conninfo), false, NULL, 0, 0, NULL },
	{ "postgres.password_file", CONF_SECRET_FILE, DC(pg_password), false, NULL, 0, 0, NULL },
	{ "kek_file", CONF_SECRET_FILE, DC(kek), false, NULL, 0, 0, NULL },
	{ "heartbeat_seconds", CONF_INT, DC(heartbeat_seconds), false, "5", 1, 300, NULL },
	{ "workers", CONF_INT, DC(workers), false, "1", 1, DAEMON_WORKERS_MAX, NULL },
};
const size_t daemon_conf_n = sizeof daemon_conf_entries / sizeof daemon_conf_entries[0];

/* Cross-key checks the table cannot express; messages name the file like conf_load. */
static int daemon_check_config(struct daemon *d, const char *path, char *err, size_t errlen)
{
	const struct daemon_config *c = &d->cfg;
	const struct daemon_service *svc = d->svc;

	if (strcmp(c->service, svc->name) != 0) {
		snprintf(err, errlen, "%s: service: is \"%s\" but this is ward-%s", path, c->service,
			 svc->name);
		return -1;
	}
	if (svc->forbid_db && (c->pg_conninfo != NULL || c->pg_password.data != NULL)) {
		snprintf(err, errlen,
			 "%s: postgres: ward-%s must hold no database credential; remove the section",
			 path, svc->name);
		return -1;
	}
	if (svc->needs_db && (c->pg_conninfo == NULL || c->pg_password.data == NULL)) {
		snprintf(err, errlen, "%s: postgres.conninfo: required (with postgres.password_file)",
			 path);
		return -1;
	}
	if (!svc->no_routes && c->route_keys.data == NULL) {
		snprintf(err, errlen, "%s: queue.route_keys_file: missing required key", path);
		return -1;
	}
	if (svc->no_routes && c->route_keys.data != NULL) {
		snprintf(err, errlen,
			 "%s: queue.route_keys_file: ward-%s must hold no route key; remove it",
			 path, svc->name);
		return -1;
	}
	if (c->workers > 1 && !svc->multi_worker) {
		snprintf(err, errlen, "%s: workers: ward-%s runs as one process; remove the key or "
			 "set it to 1", path, svc->name);
		return -1;
	}
	if (svc->needs_kek && c->kek.data == NULL) {
		snprintf(err, errlen, "%s: kek_file: required for ward-%s", path, svc->name);
		return -1;
	}
	if (!svc->needs_kek && c->kek.data != NULL) {
		snprintf(err, errlen, "%s: kek_file: ward-%s must not hold the region key", path,
			 svc->name);
		return -1;
	}
	return 0;
}

/* The KEK file is a key ring (crypto.h): 32 raw bytes or 64 hex digits (version 1),
 * or "ward-kek <version> <hex>" lines while a rotation is under way. It is read again
 * by path with crypto_keyring_load: the config loader strips a trailing newline,
 * which a raw key's last byte may be. */
static int daemon_load_kek(struct daemon *d, const char **error_r)
{
	struct crypto_keyring ring;
	const uint8_t *cur;
	uint32_t v = 0;

	if (crypto_keyring_load(d->cfg.kek.path, &ring, error_r) < 0)
		return -1;
	cur = crypto_keyring_current(&ring, &v);
	if (cur == NULL) {
		crypto_keyring_wipe(&ring);
		*error_r = "the key ring holds no key";
		return -1;
	}
	memcpy(d->kek, cur, CRYPTO_KEY_LEN);
	d->kek_version = v;
	d->kek_ring = ring;
	crypto_keyring_wipe(&ring);
	d->kek_loaded_ms = envelope_now_ms();
	d->have_kek = true;
	return 0;
}

/* Re-read the KEK ring: when a wrapped key names a version not held (a rotation
 * added it; at most every 100 ms), and every 30 s (a retired version leaves memory).
 * A ring that no longer loads keeps the old one, with a warning. */
static void daemon_kek_refresh(struct daemon *d, bool missing)
{
	int64_t now = envelope_now_ms(), age = now - d->kek_loaded_ms;
	const char *err = NULL;

	if (age >= 0 && age < (missing ? 100 : 30000))
		return;
	if (daemon_load_kek(d, &err) < 0) {
		log_warn("kek_file %s: %s (keeping the key ring in memory)", d->cfg.kek.path,
			 err != NULL ? err : "cannot load");
		d->kek_loaded_ms = now;
	}
}

const uint8_t *daemon_kek_version(struct daemon *d, uint32_t version)
{
	const uint8_t *k;

	if (!d->have_kek)
		return NULL;
	daemon_kek_refresh(d, false);
	if ((k = crypto_keyring_find(&d->kek_ring, version)) == NULL) {
		daemon_kek_refresh(d, true);
		k = crypto_keyring_find(&d->kek_ring, version);
	}
	return k;
}

uint32_t daemon_kek_current(struct daemon *d)
{
	if (!d->have_kek)
		return 0;
	daemon_kek_refresh(d, false);
	return d->kek_version;
}

int daemon_unwrap_key(struct daemon *d, const char *context, const uint8_t *wrapped,
		      size_t wrapped_len, uint8_t dek[CRYPTO_KEY_LEN], const char **error_r)
{
	static char msg[128];
	const uint8_t *kek;
	uint32_t v;

	if (!d->have_kek) {
		*error_r = "no region key";
		return -1;
	}
	if (crypto_sealed_key_version(wrapped, wrapped_len, &v) < 0) {
		*error_r = "not a wrapped key";
		return -1;
	}
	if ((kek = daemon_kek_version(d, v)) == NULL) {
		snprintf(msg, sizeof msg,
			 "the data key is wrapped under region key version %u, which is not in "
			 "the key ring (retired?)",
			 v);
		*error_r = msg;
		return -1;
	}
	if (crypto_unwrap_key(kek, context, wrapped, wrapped_len, dek, NULL) < 0) {
		*error_r = "cannot unwrap the data key (wrong region key or tampered)";
		return -1;
	}
	return 0;
}

/* ============================== dispatch ================================ */

/* Is word one of the space-separated words of list? */
static bool daemon_word_in(const char *list, const char *word)
{
	size_t n, wn = word != NULL ? strlen(word) : 0;

	if (wn == 0)
		return false;
	while (*list != '\0') {
		n = strcspn(list, " ");
		if (n == wn && strncmp(list, word, n) == 0)
			return true;
		list += n;
		list += strspn(list, " ");
	}
	return false;
}

/* Who may vouch for a principal: only the gateway authenticates users and API
 * credentials (the operator's tooling may act for them too); a service speaks only
 * for itself; only the operator's tool speaks for an operator. The route key
 * already proves the sender, so a service holding a route cannot claim to be a
 * user or another service. */
static bool daemon_principal_trusted(const Ward__Principal *p, const char *sender)
{
	const char *kind = p->kind != NULL ? p->kind : "";

	if (strcmp(kind, "user") == 0 || strcmp(kind, "api") == 0)
		return strcmp(sender, "gateway") == 0 || strcmp(sender, "ops") == 0;
	if (strcmp(kind, "service") == 0)
		return p->id != NULL && strcmp(p->id, sender) == 0;
	if (strcmp(kind, "operator") == 0)
		return strcmp(sender, "ops") == 0;
	return strcmp(kind, "anonymous") == 0;
}

/* May this principal call method m for the envelope's tenant? API credentials
 * need the method's scope; everyone else a listed role or kind. */
static bool daemon_allowed(const struct daemon_method *m, const Ward__Envelope *env)
{
	const Ward__Principal *p = env->principal;
	size_t i;

	if (m->roles == NULL)
		return true;
	if (p == NULL || !daemon_principal_trusted(p, env->sender))
		return false;
	/* A tenant's credential acts in its own tenant only. */
	if (p->tenant != NULL && *p->tenant != '\0' && strcmp(p->tenant, env->tenant) != 0)
		return false;
	if (p->kind != NULL && strcmp(p->kind, "api") == 0) {
		if (m->scope == NULL)
			return false;
		for (i = 0; i < p->n_scopes; i++)
			if (strcmp(p->scopes[i], m->scope) == 0)
				return true;
		return false;
	}
	return daemon_word_in(m->roles, p->role) || daemon_word_in(m->roles, p->kind);
}

/* Built-in "ping": proves the route, the keys and the consumer work end to end. */
static queue_result_t daemon_ping(struct daemon *d, const Ward__Envelope *env,
				  const uint8_t *payload, size_t len, struct queue_reply *reply,
				  const char **error_r)
{
	Ward__PingRequest *req;
	Ward__PingReply out = WARD__PING_REPLY__INIT;
	size_t n;

	req = ward__ping_request__unpack(NULL, len, payload);
	if (req == NULL) {
		*error_r = "ping: malformed PingRequest";
		return QUEUE_REJECT;
	}
	out.service = (char *)d->svc->name;
	out.instance = d->cfg.instance;
	out.region = d->cfg.region;
	out.text = req->text;
	n = ward__ping_reply__get_packed_size(&out);
	reply->data = malloc(n ? n : 1);
	if (reply->data == NULL) {
		ward__ping_request__free_unpacked(req, NULL);
		*error_r = "out of memory";
		return QUEUE_RETRY;
	}
	reply->len = ward__ping_reply__pack(&out, reply->data);
	ward__ping_request__free_unpacked(req, NULL);
	return QUEUE_DONE;
}

static const struct daemon_method daemon_builtin_ping = { "ping", daemon_ping, NULL, 4096, NULL };

/* The queue handler: find the method, check role and size, run it. */
static queue_result_t daemon_dispatch(void *ctx, const Ward__Envelope *env, const uint8_t *payload,
				      size_t len, struct queue_reply *reply, const char **error_r)
{
	struct daemon *d = ctx;
	const struct daemon_method *m = NULL;
	queue_result_t r;
	size_t i;

	if (strcmp(env->method, "ping") == 0)
		m = &daemon_builtin_ping;
	for (i = 0; m == NULL && i < d->svc->n_methods; i++)
		if (strcmp(d->svc->methods[i].name, env->method) == 0)
			m = &d->svc->methods[i];
	log_set_request_id(env->request_id && *env->request_id ? env->request_id : env->id);
	if (m == NULL) {
		reply->status = 404;
		reply->error = "unknown method";
		*error_r = "unknown method";
		log_event(LOG_WARN, "unknown method", LF_STR("method", env->method),
			  LF_STR("sender", env->sender));
		r = QUEUE_DONE; /* answered; nothing to retry */
	} else if (!daemon_allowed(m, env)) {
		reply->status = 403;
		reply->error = "forbidden";
		log_event(LOG_WARN, "method refused to principal", LF_STR("method", env->method),
			  LF_STR("sender", env->sender));
		r = QUEUE_DONE;
	} else if (m->max_payload != 0 && len > m->max_payload) {
		reply->status = 413;
		reply->error = "payload too large";
		r = QUEUE_DONE;
	} else {
		r = m->handler(d, env, payload, len, reply, error_r);
	}
	log_set_request_id(NULL);
	return r;
}

/* ============================== workers ================================= */

struct daemon_worker {
	pid_t pid; /* 0: not running */
	time_t started;
};

/* Fork worker i. In the child: returns 0 with the signals unblocked and death tied
 * to the supervisor's. In the parent: the child's pid, or -1. */
static pid_t daemon_fork_worker(const sigset_t *old_mask, pid_t supervisor)
{
	pid_t pid = fork();

	if (pid != 0)
		return pid;
	/* A kill -9 of the supervisor is a crash of every worker. */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != supervisor)
		_exit(1);
	sigprocmask(SIG_SETMASK, old_mask, NULL);
	return 0;
}

/*
 * Run cfg.workers worker processes. Returns -1 in a worker (*worker_r = its index,
 * 0..workers-1), or the supervisor's exit status once every worker has stopped
 * after SIGTERM/SIGINT: 0 if each of them exited 0. A worker that dies otherwise
 * is started again (at most once a second).
 */
static int daemon_supervise(struct daemon *d, int *worker_r)
{
	struct daemon_worker w[DAEMON_WORKERS_MAX] = { 0 };
	int n = d->cfg.workers, live = 0, status = 0;
	sigset_t set, old;
	bool stopping = false;
	pid_t self = getpid();

	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGCHLD);
	if (sigprocmask(SIG_BLOCK, &set, &old) != 0) {
		log_error("workers: cannot block signals: %s", strerror(errno));
		return 1;
	}
	for (int i = 0; i < n; i++) {
		pid_t pid = daemon_fork_worker(&old, self);

		if (pid == 0) {
			*worker_r = i;
			return -1;
		}
		if (pid < 0) {
			log_error("workers: cannot fork: %s", strerror(errno));
			stopping = true;
			status = 1;
			break;
		}
		w[i].pid = pid;
		w[i].started = time(NULL);
		live++;
	}
	log_event(LOG_INFO, "workers started", LF_INT("workers", live), LF_INT("pid", self));
	if (stopping)
		for (int i = 0; i < n; i++)
			if (w[i].pid > 0)
				kill(w[i].pid, SIGTERM);
	while (live > 0) {
		siginfo_t si;
		int sig = sigwaitinfo(&set, &si), st;
		pid_t pid;

		if (sig < 0)
			continue; /* EINTR */
		if (sig == SIGHUP) {
			if (log_reopen() < 0)
				log_warn("cannot reopen log: %s", strerror(errno));
		}
		if (sig == SIGTERM || sig == SIGINT)
			stopping = true;
		if (sig != SIGCHLD) {
			for (int i = 0; i < n; i++)
				if (w[i].pid > 0)
					kill(w[i].pid, sig == SIGINT ? SIGTERM : sig);
			continue;
		}
		while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
			int i;

			for (i = 0; i < n && w[i].pid != pid; i++)
				;
			if (i == n)
				continue;
			w[i].pid = 0;
			live--;
			if (stopping) {
				if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
					status = 1;
				continue;
			}
			log_event(LOG_ERROR, "worker died; starting it again", LF_INT("worker", i),
				  LF_INT("pid", pid),
				  LF_INT("exit", WIFEXITED(st) ? WEXITSTATUS(st) : -1),
				  LF_INT("signal", WIFSIGNALED(st) ? WTERMSIG(st) : 0));
			if (time(NULL) - w[i].started < 1)
				sleep(1); /* a worker failing at start-up: not a busy loop */
			pid = daemon_fork_worker(&old, self);
			if (pid == 0) {
				*worker_r = i;
				return -1;
			}
			if (pid < 0) {
				log_error("workers: cannot fork: %s", strerror(errno));
				continue;
			}
			w[i].pid = pid;
			w[i].started = time(NULL);
			live++;
		}
	}
	sigprocmask(SIG_SETMASK, &old, NULL);
	log_event(LOG_INFO, "workers stopped", LF_INT("status", status));
	return status;
}

/* ============================== lifecycle =============================== */

/* Resident set size in KiB, from /proc/self/statm (0 if unreadable). */
static long daemon_rss_kb(void)
{
	long pages = 0, rss = 0;
	FILE *f = fopen("/proc/self/statm", "r");

	if (f == NULL)
		return 0;
	if (fscanf(f, "%ld %ld", &pages, &rss) != 2)
		rss = 0;
	fclose(f);
	return rss * (sysconf(_SC_PAGESIZE) / 1024);
}

/* Publish a heartbeat: a key that expires after three missed beats. */
static void daemon_heartbeat(evutil_socket_t fd, short what, void *arg)
{
	struct daemon *d = arg;
	struct queue_stats st;
	char value[512], ttl[16];
	const char *argv[5];
	size_t lens[5];

	queue_get_stats(d->queue, &st);
	snprintf(value, sizeof value,
		 "{\"service\":\"%s\",\"instance\":\"%s\",\"region\":\"%s\",\"pid\":%ld,"
		 "\"at_ms\":%lld,\"started_ms\":%lld,\"rss_kb\":%ld,\"handled\":%lu,"
		 "\"dead_lettered\":%lu,\"db\":%s}",
		 d->svc->name, d->cfg.instance, d->cfg.region, (long)getpid(),
		 (long long)envelope_now_ms(), (long long)d->started_ms, daemon_rss_kb(),
		 st.handled, st.dead_lettered,
		 d->db == NULL ? "null" :
		 PQstatus(db_conn(d->db)) == CONNECTION_OK ? "true" : "false");
	snprintf(ttl, sizeof ttl, "%d", d->cfg.heartbeat_seconds * 3);
	argv[0] = "SET", argv[1] = d->hb_key, argv[2] = value, argv[3] = "EX", argv[4] = ttl;
	for (int i = 0; i < 5; i++)
		lens[i] = strlen(argv[i]);
	(void)queue_command(d->queue, 5, argv, lens);
}

static void daemon_drained(void *arg)
{
	struct daemon *d = arg;

	event_base_loopexit(d->base, NULL);
}

static void daemon_drain_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct daemon *d = arg;

	log_warn("drain timed out after %d s; exiting", DAEMON_DRAIN_TIMEOUT_S);
	event_base_loopexit(d->base, NULL);
}

void daemon_shutdown(struct daemon *d)
{
	struct timeval tv = { DAEMON_DRAIN_TIMEOUT_S, 0 };
	const char *argv[2] = { "DEL", d->hb_key };
	size_t lens[2] = { 3, strlen(d->hb_key) };

	if (d->stopping)
		return;
	d->stopping = true;
	log_info("shutting down: finishing in-flight work");
	if (d->svc->stop != NULL)
		d->svc->stop(d);
	if (d->ev_heartbeat != NULL)
		event_del(d->ev_heartbeat);
	(void)queue_command(d->queue, 2, argv, lens);
	d->ev_drain_timeout = evtimer_new(d->base, daemon_drain_timeout, d);
	if (d->ev_drain_timeout != NULL)
		evtimer_add(d->ev_drain_timeout, &tv);
	queue_drain(d->queue, daemon_drained, d);
}

static void daemon_signal(evutil_socket_t sig, short what, void *arg)
{
	struct daemon *d = arg;

	if (sig == SIGHUP) {
		if (log_reopen() < 0)
			log_warn("cannot reopen log: %s", strerror(errno));
		else
			log_info("log reopened");
		return;
	}
	daemon_shutdown(d);
}

static void daemon_usage(FILE *out, const char *name)
{
	fprintf(out,
		"usage: ward-%s --config FILE [--check-config]\n"
		"  --config FILE     YAML configuration (see deploy/ and README.md)\n"
		"  --check-config    load and validate the configuration, then exit\n"
		"Signals: SIGTERM/SIGINT finish in-flight work and exit 0; SIGHUP reopens the log.\n",
		name);
}

/* Free everything the daemon holds; NULL-safe on every field. */
static void daemon_free(struct daemon *d)
{
	if (d->ev_term)
		event_free(d->ev_term);
	if (d->ev_int)
		event_free(d->ev_int);
	if (d->ev_hup)
		event_free(d->ev_hup);
	if (d->ev_heartbeat)
		event_free(d->ev_heartbeat);
	if (d->ev_drain_timeout)
		event_free(d->ev_drain_timeout);
	queue_free(d->queue);
	db_free(d->db);
	if (d->base)
		event_base_free(d->base);
	conf_free(d->sections, d->n_sections);
	OPENSSL_cleanse(d->kek, sizeof d->kek);
	crypto_keyring_wipe(&d->kek_ring);
}

int daemon_main(int argc, char **argv, const struct daemon_service *svc)
{
	static const struct option opts[] = { { "config", required_argument, NULL, 'c' },
					      { "check-config", no_argument, NULL, 'k' },
					      { "help", no_argument, NULL, 'h' },
					      { NULL, 0, NULL, 0 } };
	struct daemon d = { 0 };
	struct queue_opts qo = { 0 };
	envelope_keys_t *keys = NULL;
	const char *config = NULL, *error = NULL;
	char *conf_error = NULL, errbuf[512], instance[80];
	struct timeval hb;
	log_level_t level;
	bool check_only = false;
	int c, status = 1;

	while ((c = getopt_long(argc, argv, "c:kh", opts, NULL)) != -1) {
		switch (c) {
		case 'c': config = optarg; break;
		case 'k': check_only = true; break;
		case 'h': daemon_usage(stdout, svc->name); return 0;
		default: daemon_usage(stderr, svc->name); return 2;
		}
	}
	if (config == NULL || optind != argc) {
		daemon_usage(stderr, svc->name);
		return 2;
	}
	/* A compromised daemon must not be root: refuse before reading anything. */
	if (geteuid() == 0 || getuid() == 0) {
		fprintf(stderr, "ward-%s: refusing to run as root; run it as an unprivileged user\n",
			svc->name);
		return 1;
	}
	signal(SIGPIPE, SIG_IGN);
	d.svc = svc;
	d.started_ms = envelope_now_ms();
	d.sections[d.n_sections++] =
		(struct conf_section){ daemon_conf_entries, daemon_conf_n, &d.cfg };
	if (svc->conf != NULL)
		d.sections[d.n_sections++] =
			(struct conf_section){ svc->conf, svc->n_conf, svc->conf_target };
	if (conf_load(config, d.sections, d.n_sections, &conf_error) < 0) {
		fprintf(stderr, "ward-%s: %s\n", svc->name, conf_error);
		free(conf_error);
		return 1;
	}
	if (daemon_check_config(&d, config, errbuf, sizeof errbuf) < 0) {
		fprintf(stderr, "ward-%s: %s\n", svc->name, errbuf);
		goto out;
	}
	if (d.cfg.instance == NULL) {
		snprintf(instance, sizeof instance, "%s-%ld", svc->name, (long)getpid());
		d.cfg.instance = strdup(instance);
		if (d.cfg.instance == NULL)
			goto out;
	}
	if (svc->needs_kek && daemon_load_kek(&d, &error) < 0) {
		fprintf(stderr, "ward-%s: %s: %s\n", svc->name, config, error);
		goto out;
	}
	if (svc->no_routes) {
		keys = envelope_keys_none();
		error = "out of memory";
	} else {
		keys = envelope_keys_parse(d.cfg.route_keys.data, d.cfg.route_keys.len, &error);
	}
	if (keys == NULL) {
		fprintf(stderr, "ward-%s: %s: queue.route_keys_file: %s\n", svc->name, config, error);
		goto out;
	}
	if (check_only) {
		printf("ward-%s: %s: ok\n", svc->name, config);
		status = 0;
		goto out;
	}
	(void)log_level_parse(d.cfg.log_level, &level);
	if (d.cfg.workers > 1) {
		int st;

		if (log_open(svc->name, d.cfg.instance, d.cfg.log_file, level, &error) < 0) {
			fprintf(stderr, "ward-%s: log_file: %s\n", svc->name, error);
			goto out;
		}
		st = daemon_supervise(&d, &d.worker);
		if (st >= 0) {
			status = st; /* the supervisor, after its workers */
			goto out;
		}
		log_close(); /* a worker: logs under its own instance name */
		if (d.worker > 0) {
			char *name;

			snprintf(instance, sizeof instance, "%s-w%d", d.cfg.instance, d.worker);
			if ((name = strdup(instance)) == NULL)
				goto out;
			free(d.cfg.instance);
			d.cfg.instance = name;
		}
	}
	if (log_open(svc->name, d.cfg.instance, d.cfg.log_file, level, &error) < 0) {
		fprintf(stderr, "ward-%s: log_file: %s\n", svc->name, error);
		goto out;
	}
	/*
	 * libevent's epoll changelist: the event changes of one loop turn reach the
	 * kernel as one epoll_ctl per descriptor at most, instead of one per change (a
	 * keep-alive TLS connection toggles reading and writing on every request, and
	 * each Redis round trip adds and removes its events). Its one caveat,
	 * descriptors cloned with dup() inside one base, does not apply: no daemon dups
	 * a descriptor it watches (backup dups only in a child before exec).
	 */
	{
		struct event_config *ec = event_config_new();

		if (ec != NULL) {
			if (event_config_set_flag(ec, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST) == 0)
				d.base = event_base_new_with_config(ec);
			event_config_free(ec);
		}
	}
	if (d.base == NULL) {
		log_error("cannot create event base");
		goto out;
	}
	snprintf(d.stream, sizeof d.stream, "q:%s", svc->name);
	snprintf(d.hb_key, sizeof d.hb_key, "hb:%s:%s", svc->name, d.cfg.instance);
	qo.host = d.cfg.redis_host;
	qo.port = d.cfg.redis_port;
	qo.user = d.cfg.redis_user;
	qo.password = (const char *)d.cfg.redis_password.data;
	qo.service = svc->name;
	qo.instance = d.cfg.instance;
	qo.region = d.cfg.region;
	qo.max_deliveries = d.cfg.max_deliveries;
	qo.claim_idle_ms = d.cfg.claim_idle_ms;
	qo.maxlen = d.cfg.stream_maxlen;
	qo.read_count = d.cfg.read_count;
	qo.block_ms = d.cfg.block_ms;
	d.queue = queue_new(d.base, &qo, keys, &error);
	keys = NULL; /* owned by the queue now, even on failure */
	if (d.queue == NULL) {
		log_error("cannot start queue transport: %s", error);
		goto out;
	}
	if (d.cfg.pg_conninfo != NULL) {
		d.db = db_connect_opts(d.cfg.pg_conninfo, (const char *)d.cfg.pg_password.data,
				       svc->generic_plans ? "-c plan_cache_mode=force_generic_plan"
							  : NULL,
				       &error);
		if (d.db == NULL) {
			log_error("%s", error);
			goto out;
		}
	}
	d.ev_term = evsignal_new(d.base, SIGTERM, daemon_signal, &d);
	d.ev_int = evsignal_new(d.base, SIGINT, daemon_signal, &d);
	d.ev_hup = evsignal_new(d.base, SIGHUP, daemon_signal, &d);
	d.ev_heartbeat = event_new(d.base, -1, EV_PERSIST, daemon_heartbeat, &d);
	if (!d.ev_term || !d.ev_int || !d.ev_hup || !d.ev_heartbeat || evsignal_add(d.ev_term, NULL) ||
	    evsignal_add(d.ev_int, NULL) || evsignal_add(d.ev_hup, NULL)) {
		log_error("cannot install signal handlers");
		goto out;
	}
	if (svc->init != NULL && svc->init(&d, &error) < 0) {
		log_error("start-up failed: %s", error);
		goto out;
	}
	/* One relay per daemon: the outbox is read in order by worker 0 only. */
	if (svc->outbox_schema != NULL && d.db != NULL && d.worker == 0 &&
	    auditlog_relay_start(&d, svc->outbox_schema, &error) < 0) {
		log_error("cannot start the audit outbox relay: %s", error);
		goto deinit;
	}
	if (svc->consumes && queue_consume(d.queue, d.stream, daemon_dispatch, &d, &error) < 0) {
		log_error("cannot consume %s: %s", d.stream, error);
		goto deinit;
	}
	hb.tv_sec = d.cfg.heartbeat_seconds;
	hb.tv_usec = 0;
	event_add(d.ev_heartbeat, &hb);
	daemon_heartbeat(-1, 0, &d);
	log_event(LOG_INFO, "started", LF_STR("region", d.cfg.region),
		  LF_STR("stream", svc->consumes ? d.stream : ""), LF_INT("pid", getpid()));
	if (event_base_dispatch(d.base) < 0)
		log_error("event loop failed");
	else
		status = 0;
	log_info("stopped");
deinit:
	auditlog_relay_stop(&d);
	if (svc->deinit != NULL)
		svc->deinit(&d);
out:
	envelope_keys_free(keys);
	daemon_free(&d);
	log_close();
	return status;
}

struct event_base *daemon_base(struct daemon *d) { return d->base; }
queue_t *daemon_queue(struct daemon *d) { return d->queue; }
db_t *daemon_db(struct daemon *d) { return d->db; }
const struct daemon_config *daemon_config(struct daemon *d) { return &d->cfg; }
const uint8_t *daemon_kek(struct daemon *d) { return d->have_kek ? d->kek : NULL; }
const struct daemon_service *daemon_service(struct daemon *d) { return d->svc; }
