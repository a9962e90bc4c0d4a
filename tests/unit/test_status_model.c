/*
 * test_status_model — the status page's pure model: component states from health
 * data, uptime that computes exactly across a recorded outage and a day boundary
 * (times are parameters: the test picks the clock), the uptime file, incident
 * validation against hostile input, and escaping in HTML, Atom and JSON.
 *
 * services/gateway/ is not in libward.a, so the module is compiled in here.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../services/gateway/gateway_status_model.c"

#define DAY STATUS_DAY_MS
#define T0 (20000LL * DAY) /* a midnight UTC */

static struct status_cell healthy(void)
{
	struct status_cell c = {0};

	snprintf(c.region, sizeof c.region, "eu");
	c.reachable = true;
	for (int i = 0; i < STATUS_SERVICES; i++)
		c.svc[i].instances = 1;
	return c;
}

/* The gateways' 5xx over the window: degraded from error_rate_pct, partial from
 * error_major_pct, never below error_min errors, and only api and web. */
static void test_error_rate(void **state)
{
	struct status_thresholds t = {100, 3600000, 5, 50, 10};
	struct status_cell c = healthy();
	enum status_state s[STATUS_COMPONENTS];

	c.window_answers = 1000, c.window_5xx = 49; /* 4.9 % */
	status_evaluate(&c, &t, T0, s);
	assert_int_equal(s[CO_API], STATUS_OPERATIONAL);
	c.window_5xx = 50; /* 5 % */
	status_evaluate(&c, &t, T0, s);
	assert_int_equal(s[CO_API], STATUS_DEGRADED);
	assert_int_equal(s[CO_WEB], STATUS_DEGRADED);
	assert_int_equal(s[CO_TICKETS], STATUS_OPERATIONAL);
	assert_int_equal(s[CO_EMAIL], STATUS_OPERATIONAL);
	c.window_5xx = 500; /* 50 % */
	status_evaluate(&c, &t, T0, s);
	assert_int_equal(s[CO_API], STATUS_PARTIAL);
	c.window_answers = 9, c.window_5xx = 9; /* all failed, but under error_min */
	status_evaluate(&c, &t, T0, s);
	assert_int_equal(s[CO_API], STATUS_OPERATIONAL);
	c.window_answers = 10, c.window_5xx = 10;
	status_evaluate(&c, &t, T0, s);
	assert_int_equal(s[CO_API], STATUS_PARTIAL);
	c.svc[0].instances = 0; /* a gateway outage stays the worse state */
	status_evaluate(&c, &t, T0, s);
	assert_int_equal(s[CO_API], STATUS_MAJOR);
	t.error_rate_pct = 0; /* off */
	c = healthy();
	c.window_answers = 10, c.window_5xx = 10;
	status_evaluate(&c, &t, T0, s);
	assert_int_equal(s[CO_API], STATUS_OPERATIONAL);
}

/* The operator's reasons (wardctl status components): one per cause of a state that
 * is not operational, none when operational, each naming its figures. */
static void test_explain(void **state)
{
	struct status_thresholds t = {100, 3600000, 5, 50, 10};
	struct status_cell c = healthy();
	char why[8][STATUS_REASON_MAX];

	for (int k = 0; k < STATUS_COMPONENTS; k++)
		assert_int_equal(status_explain(&c, &t, T0, k, why, 8), 0);
	c.window_answers = 72, c.window_5xx = 12, c.window_s = 20;
	assert_int_equal(status_explain(&c, &t, T0, CO_API, why, 8), 1);
	assert_string_equal(why[0], "error rate: 12 5xx of 72 answers (16%) over 20 s "
				    "(degraded from 5%, partial outage from 50%)");
	assert_int_equal(status_explain(&c, &t, T0, CO_WEB, why, 8), 1);
	assert_int_equal(status_explain(&c, &t, T0, CO_TICKETS, why, 8), 0);
	c.window_5xx = 9; /* under error_min: no reason, as no state */
	assert_int_equal(status_explain(&c, &t, T0, CO_API, why, 8), 0);
	c = healthy();
	c.svc[2].instances = 0; /* ticket */
	assert_int_equal(status_explain(&c, &t, T0, CO_TICKETS, why, 8), 1);
	assert_string_equal(why[0], "heartbeat missing: no fresh heartbeat of ticket");
	assert_int_equal(status_explain(&c, &t, T0, CO_API, why, 8), 1);
	assert_string_equal(why[0], "depends on ticket: no fresh heartbeat of ticket");
	assert_int_equal(status_explain(&c, &t, T0, CO_WEB, why, 8), 0); /* web needs auth only */
	c = healthy();
	c.svc[6].instances = 0; /* mail-out: outbound mail waits, inbound still works */
	{
		enum status_state st[STATUS_COMPONENTS];

		status_evaluate(&c, &t, T0, st);
		assert_int_equal(st[CO_EMAIL], STATUS_PARTIAL);
		assert_int_equal(st[CO_TICKETS], STATUS_OPERATIONAL);
	}
	assert_int_equal(status_explain(&c, &t, T0, CO_EMAIL, why, 8), 1);
	assert_string_equal(why[0], "heartbeat missing: no fresh heartbeat of mail-out");
	c.svc[6].instances = 1;
	c.svc[6].dead_letter_recent = true; /* the relay refused a mail (5xx) */
	assert_int_equal(status_explain(&c, &t, T0, CO_EMAIL, why, 8), 1);
	assert_string_equal(why[0], "dead letters: dl:mail-out grew lately");
	c = healthy();
	c.svc[1].depth = 101, c.svc[1].pending = 101; /* the depth is XLEN; pending is of it */
	assert_int_equal(status_explain(&c, &t, T0, CO_AUTH, why, 8), 1);
	assert_string_equal(why[0], "queue depth: q:auth has 101 waiting (0 not read yet, 101 not "
				    "acked), over 100");
	c.svc[1].depth = 105, c.svc[1].pending = 10; /* a backlog nobody read yet counts too */
	assert_int_equal(status_explain(&c, &t, T0, CO_AUTH, why, 8), 1);
	assert_string_equal(why[0], "queue depth: q:auth has 105 waiting (95 not read yet, 10 not "
				    "acked), over 100");
	c.svc[1].depth = 101, c.svc[1].pending = -1; /* pending unknown: all counted unread */
	assert_int_equal(status_explain(&c, &t, T0, CO_AUTH, why, 8), 1);
	assert_string_equal(why[0], "queue depth: q:auth has 101 waiting (101 not read yet, 0 not "
				    "acked), over 100");
	/* Entries deleted while pending (an operator's XDEL) stay in XPENDING until
	 * reclaimed: not counted, never more "not acked" than the stream holds. */
	c.svc[1].depth = 3, c.svc[1].pending = 500;
	assert_int_equal(status_explain(&c, &t, T0, CO_AUTH, why, 8), 0);
	c.svc[1].depth = 120;
	assert_int_equal(status_explain(&c, &t, T0, CO_AUTH, why, 8), 1);
	assert_string_equal(why[0], "queue depth: q:auth has 120 waiting (0 not read yet, 120 not "
				    "acked), over 100");
	c.svc[1].depth = -1, c.svc[1].pending = 101; /* depth unknown: no reason */
	assert_int_equal(status_explain(&c, &t, T0, CO_AUTH, why, 8), 0);
	c.svc[1].depth = 101;
	c.svc[1].db_down = true;
	assert_int_equal(status_explain(&c, &t, T0, CO_AUTH, why, 8), 2);
	assert_int_equal(status_explain(&c, &t, T0, CO_AUTH, why, 1), 1); /* bounded */
	c = healthy();
	c.backup_verified_ms = T0 - 7200000;
	assert_int_equal(status_explain(&c, &t, T0, CO_BACKUPS, why, 8), 1);
	assert_string_equal(why[0], "last verified backup: 7200 s ago (over 3600 s)");
	c.reachable = false;
	assert_int_equal(status_explain(&c, &t, T0, CO_BACKUPS, why, 8), 1);
	assert_string_equal(why[0], "cell unreachable: its Redis does not answer");
}

/* XLEN's integer, XPENDING's summary (its count first), anything else unknown (-1). */
static void test_reply_count(void **state)
{
	redisReply n = {.type = REDIS_REPLY_INTEGER, .integer = 1100}, id = {.type = REDIS_REPLY_STRING},
		   *sum[4] = {&n, &id, &id, &id}, r = {.type = REDIS_REPLY_ARRAY};

	assert_true(status_reply_count(&n) == 1100);
	r.elements = 4, r.element = sum;
	assert_true(status_reply_count(&r) == 1100);
	r.element = sum + 1; /* an array not starting with a count */
	assert_true(status_reply_count(&r) == -1);
	r.elements = 0;
	assert_true(status_reply_count(&r) == -1);
	assert_true(status_reply_count(NULL) == -1);
	id.type = REDIS_REPLY_ERROR, id.str = "NOGROUP";
	assert_true(status_reply_count(&id) == -1);
}

/* A gateway's answer counters: the window is optional (an older gateway), bounded
 * and consistent (5xx within answers, window within the totals). */
static void test_http_parse(void **state)
{
	long long at, n, e, ws, wn, we;
	json_t *o;

#define HTTP_OK(s)                                                                                 \
	((o = json_loads(s, 0, NULL)) != NULL &&                                                   \
	 status_http_parse(o, &at, &n, &e, &ws, &wn, &we) == 0 && (json_decref(o), 1))
	assert_true(HTTP_OK("{\"at_ms\":5,\"answers\":72,\"errors_5xx\":12,\"window_s\":20,"
			    "\"window_answers\":30,\"window_5xx\":12}"));
	assert_true(at == 5 && n == 72 && e == 12 && ws == 20 && wn == 30 && we == 12);
	assert_true(HTTP_OK("{\"at_ms\":5,\"answers\":72,\"errors_5xx\":12}"));
	assert_true(ws == 0 && wn == 0 && we == 0);
	o = json_loads("{\"at_ms\":5,\"answers\":7,\"errors_5xx\":12}", 0, NULL);
	assert_int_equal(status_http_parse(o, &at, &n, &e, &ws, &wn, &we), -1);
	json_decref(o);
	o = json_loads("{\"at_ms\":5,\"answers\":72,\"errors_5xx\":12,\"window_s\":20,"
		       "\"window_answers\":73,\"window_5xx\":1}",
		       0, NULL);
	assert_int_equal(status_http_parse(o, &at, &n, &e, &ws, &wn, &we), -1);
	json_decref(o);
	o = json_loads("{\"at_ms\":5,\"answers\":72,\"errors_5xx\":12,\"window_s\":20}", 0, NULL);
	assert_int_equal(status_http_parse(o, &at, &n, &e, &ws, &wn, &we), -1);
	json_decref(o);
	assert_int_equal(status_http_parse(NULL, &at, &n, &e, &ws, &wn, &we), -1);
#undef HTTP_OK
}

static void test_states(void **state)
{
	struct status_thresholds t = {100, 3600000, 0, 0, 0};
	struct status_cell c = healthy();
	enum status_state s[STATUS_COMPONENTS];

	status_evaluate(&c, &t, T0, s);
	for (int k = 0; k < STATUS_COMPONENTS; k++)
		assert_int_equal(s[k], STATUS_OPERATIONAL);
	c.svc[2].instances = 0; /* ticket gone */
	status_evaluate(&c, &t, T0, s);
	assert_int_equal(s[CO_TICKETS], STATUS_MAJOR);
	assert_int_equal(s[CO_API], STATUS_PARTIAL);
	assert_int_equal(s[CO_EMAIL], STATUS_PARTIAL);
	assert_int_equal(s[CO_AUTH], STATUS_OPERATIONAL);
	c = healthy();
	c.svc[1].db_down = true;
	c.svc[3].depth = 101;
	c.svc[4].outbox_degraded = false;
	c.audit_backlog_degraded = true;
	c.backup_verified_ms = T0 - 3600001;
	status_evaluate(&c, &t, T0, s);
	assert_int_equal(s[CO_AUTH], STATUS_PARTIAL);
	assert_int_equal(s[CO_EMAIL], STATUS_DEGRADED);
	assert_int_equal(s[CO_AUDIT], STATUS_DEGRADED);
	assert_int_equal(s[CO_BACKUPS], STATUS_DEGRADED);
	c = healthy();
	c.reachable = false;
	status_evaluate(&c, &t, T0, s);
	for (int k = 0; k < STATUS_COMPONENTS; k++)
		assert_int_equal(s[k], STATUS_MAJOR);
}

static void test_heartbeat(void **state)
{
	const char *hb = "{\"service\":\"ticket\",\"instance\":\"ticket-1\",\"region\":\"eu\","
			 "\"pid\":1,\"at_ms\":1000000,\"rss_kb\":1,\"handled\":0,"
			 "\"dead_lettered\":0,\"db\":false}";
	bool fresh, db_down;

	assert_int_equal(status_heartbeat_parse(hb, strlen(hb), 1010000, 15000, &fresh, &db_down),
			 2);
	assert_true(fresh);
	assert_true(db_down);
	assert_int_equal(status_heartbeat_parse(hb, strlen(hb), 1015001, 15000, &fresh, &db_down),
			 2);
	assert_false(fresh); /* stale: a killed daemon's last beat */
	assert_int_equal(status_heartbeat_parse(hb, strlen(hb), 900000, 15000, &fresh, &db_down),
			 2);
	assert_false(fresh); /* from the future */
	assert_int_equal(status_heartbeat_parse("{\"service\":\"evil\",\"instance\":\"x\","
						"\"at_ms\":1}",
						40, 1, 15000, &fresh, &db_down),
			 -1);
	assert_int_equal(status_heartbeat_parse("not json", 8, 1, 15000, &fresh, &db_down), -1);
	assert_int_equal(status_heartbeat_parse("{\"pending\":3}", 13, 1, 15000, &fresh, &db_down),
			 -1);
}

/* A whole day observed with a 36-minute major outage and 10 minutes degraded: 97.5 %. */
static void test_uptime_exact(void **state)
{
	struct status_uptime *u = status_uptime_new();
	long long obs, down, t = T0;

	assert_non_null(u);
	assert_true(status_uptime_percent(u, "eu", CO_TICKETS, T0 / DAY) < 0); /* no data */
	/* Record in 1 s polls as the poller does. */
	for (; t < T0 + DAY; t += 1000) {
		enum status_state s = STATUS_OPERATIONAL;

		if (t >= T0 + 3600000 && t < T0 + 3600000 + 36 * 60000)
			s = STATUS_MAJOR;
		else if (t >= T0 + 7200000 && t < T0 + 7200000 + 10 * 60000)
			s = STATUS_DEGRADED;
		status_uptime_record(u, "eu", CO_TICKETS, s, t, t + 1000);
	}
	status_uptime_day(u, "eu", CO_TICKETS, T0 / DAY, &obs, &down);
	assert_int_equal(obs, DAY);
	assert_int_equal(down, 36 * 60000);
	assert_true(status_uptime_percent(u, "eu", CO_TICKETS, T0 / DAY) == 97.5);
	/* An interval across midnight splits exactly; under maintenance counts as up. */
	status_uptime_record(u, "eu", CO_TICKETS, STATUS_PARTIAL, T0 + 2 * DAY - 30000,
			     T0 + 2 * DAY + 90000);
	status_uptime_day(u, "eu", CO_TICKETS, T0 / DAY + 1, &obs, &down);
	assert_int_equal(obs, 30000);
	assert_int_equal(down, 30000);
	status_uptime_day(u, "eu", CO_TICKETS, T0 / DAY + 2, &obs, &down);
	assert_int_equal(obs, 90000);
	assert_int_equal(down, 90000);
	status_uptime_record(u, "eu", CO_TICKETS, STATUS_MAINTENANCE, T0 + 2 * DAY + 90000,
			     T0 + 2 * DAY + 120000);
	status_uptime_day(u, "eu", CO_TICKETS, T0 / DAY + 2, &obs, &down);
	assert_int_equal(obs, 120000);
	assert_int_equal(down, 90000);
	/* Over the window: (86400000 + 150000 - 2160000 - 120000) / (86400000 + 150000). */
	assert_true(status_uptime_percent(u, "eu", CO_TICKETS, T0 / DAY + 2) ==
		    100.0 * (double)(DAY + 150000 - 2160000 - 120000) / (double)(DAY + 150000));
	/* 90 days later the first day has left the window: days +1 and +2 remain,
	 * (30000 + 120000 - 30000 - 90000) / 150000; a reused slot starts empty. */
	assert_true(status_uptime_percent(u, "eu", CO_TICKETS, T0 / DAY + 90) == 20.0);
	status_uptime_record(u, "eu", CO_TICKETS, STATUS_OPERATIONAL, T0 + 90 * DAY,
			     T0 + 90 * DAY + 1000);
	status_uptime_day(u, "eu", CO_TICKETS, T0 / DAY + 90, &obs, &down);
	assert_int_equal(obs, 1000);
	assert_int_equal(down, 0);
	/* Bad input is ignored. */
	status_uptime_record(u, "eu", 99, STATUS_MAJOR, T0, T0 + 1000);
	status_uptime_record(u, "eu", CO_API, STATUS_MAJOR, T0 + 1000, T0);
	assert_true(status_uptime_percent(u, "eu", CO_API, T0 / DAY) < 0);
	status_uptime_free(u);
}

static void test_uptime_file(void **state)
{
	char dir[] = "/tmp/test_status_XXXXXX", path[64];
	struct status_uptime *u = status_uptime_new(), *v = status_uptime_new();
	const char *err = NULL;
	long long obs, down;
	FILE *f;

	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof path, "%s/uptime", dir);
	assert_int_equal(status_uptime_load(v, path, T0 / DAY, &err), 0); /* absent: empty */
	status_uptime_record(u, "uk", CO_AUDIT, STATUS_MAJOR, T0, T0 + 5000);
	status_uptime_record(u, "uk", CO_AUDIT, STATUS_OPERATIONAL, T0 + 5000, T0 + 20000);
	status_uptime_record(u, "uk", CO_AUDIT, STATUS_OPERATIONAL, T0 - 100 * DAY,
			     T0 - 100 * DAY + 5);
	assert_int_equal(status_uptime_save(u, path, &err), 0);
	assert_int_equal(status_uptime_load(v, path, T0 / DAY, &err), 0);
	status_uptime_day(v, "uk", CO_AUDIT, T0 / DAY, &obs, &down);
	assert_int_equal(obs, 20000);
	assert_int_equal(down, 5000);
	status_uptime_day(v, "uk", CO_AUDIT, T0 / DAY - 100, &obs, &down);
	assert_int_equal(obs, 0); /* older than 90 days: dropped */
	/* A corrupt file is refused. */
	assert_non_null(f = fopen(path, "w"));
	fputs("ward-status-uptime 1\nuk audit 20000 5 9\n", f); /* down > observed */
	fclose(f);
	assert_int_equal(status_uptime_load(v, path, T0 / DAY, &err), -1);
	assert_non_null(f = fopen(path, "w"));
	fputs("something else\n", f);
	fclose(f);
	assert_int_equal(status_uptime_load(v, path, T0 / DAY, &err), -1);
	unlink(path);
	rmdir(dir);
	status_uptime_free(u);
	status_uptime_free(v);
}

/* The owner's published records (text) read back, and merged into another set: per
 * component and day, the record with more observed time wins. */
static void test_uptime_share(void **state)
{
	struct status_uptime *u = status_uptime_new(), *v = status_uptime_new();
	const char *err = NULL;
	long long obs, down;
	char *text;

	status_uptime_record(u, "eu", CO_TICKETS, STATUS_MAJOR, T0, T0 + 7000);
	status_uptime_record(u, "eu", CO_TICKETS, STATUS_OPERATIONAL, T0 + 7000, T0 + 60000);
	status_uptime_record(u, "us", CO_API, STATUS_OPERATIONAL, T0 - DAY, T0 - DAY + 1000);
	assert_non_null(text = status_uptime_format(u));
	assert_int_equal(strncmp(text, "ward-status-uptime 1\n", 21), 0);
	/* v: a standby's own older view of today, and a day u does not have */
	status_uptime_record(v, "eu", CO_TICKETS, STATUS_OPERATIONAL, T0, T0 + 3000);
	status_uptime_record(v, "uk", CO_AUDIT, STATUS_OPERATIONAL, T0 - 2 * DAY, T0 - 2 * DAY + 9);
	{
		struct status_uptime *w = status_uptime_new();

		assert_int_equal(status_uptime_parse(w, text, strlen(text), T0 / DAY, &err), 0);
		status_uptime_merge(v, w);
		status_uptime_free(w);
	}
	status_uptime_day(v, "eu", CO_TICKETS, T0 / DAY, &obs, &down);
	assert_true(obs == 60000 && down == 7000); /* the more complete record */
	status_uptime_day(v, "us", CO_API, T0 / DAY - 1, &obs, &down);
	assert_true(obs == 1000 && down == 0);
	status_uptime_day(v, "uk", CO_AUDIT, T0 / DAY - 2, &obs, &down);
	assert_int_equal(obs, 9); /* kept */
	/* merging the older view back changes nothing */
	status_uptime_merge(u, v);
	status_uptime_day(u, "eu", CO_TICKETS, T0 / DAY, &obs, &down);
	assert_true(obs == 60000 && down == 7000);
	assert_int_equal(status_uptime_parse(v, "garbage\n", 8, T0 / DAY, &err), -1);
	assert_int_equal(status_uptime_parse(v, "", 0, T0 / DAY, &err), -1);
	free(text);
	status_uptime_free(u);
	status_uptime_free(v);
}

#define INC(name, body, status)                                                                  \
	"{\"id\":\"abc123\",\"name\":" name ",\"status\":\"" status "\",\"impact\":\"major\","      \
	"\"created_ms\":1000,\"updated_ms\":2000,\"components\":[\"eu-api\"],\"updates\":[{\"id\":" \
	"\"u1\",\"status\":\"investigating\",\"body\":" body ",\"at_ms\":1000}]}"

static void test_incident_parse(void **state)
{
	const char *good = INC("\"<script>alert(1)</script>\"", "\"a & b\"", "investigating");
	struct status_incident *inc = status_incident_parse(good, strlen(good));
	const char *bad[] = {
	    INC("\"x\"", "\"y\"", "exploded"),
	    INC("\"\"", "\"y\"", "investigating"),
	    INC("42", "\"y\"", "investigating"),
	    INC("\"x\\u0000y\"", "\"y\"", "investigating"),
	    "{\"id\":\"../etc\",\"name\":\"x\",\"status\":\"resolved\",\"impact\":\"none\","
	    "\"components\":[],\"updates\":[{\"id\":\"a\",\"status\":\"resolved\",\"body\":\"b\"}]}",
	    "{\"id\":\"ok\",\"name\":\"x\",\"status\":\"resolved\",\"impact\":\"none\","
	    "\"components\":[],\"updates\":[]}",
	    "[]",
	    "{",
	};

	assert_non_null(inc);
	assert_string_equal(inc->name, "<script>alert(1)</script>");
	assert_true(status_incident_unresolved(inc));
	assert_false(status_incident_maintenance(inc));
	status_incident_free(inc);
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		assert_null(status_incident_parse(bad[i], strlen(bad[i])));
}

static void test_render_escapes(void **state)
{
	const char *js = INC("\"<script>alert(1)</script>\"", "\"<img src=x onerror=y> & 'q'\"",
			     "identified");
	struct status_incident *inc = status_incident_parse(js, strlen(js));
	struct status_cell cells[1] = {healthy()};
	enum status_state st[1][STATUS_COMPONENTS] = {{0}};
	struct status_uptime *u = status_uptime_new();
	struct status_view v = {"Ward <b>", "https://status.example/", T0, 1, cells,
				(const enum status_state(*)[STATUS_COMPONENTS])st, u, &inc, 1};
	char *html, *atom, *json, *e;

	assert_non_null(inc);
	status_uptime_record(u, "eu", CO_API, STATUS_MAJOR, T0 - 1000, T0);
	html = status_render_html(&v);
	atom = status_render_atom(&v);
	json = status_render_json(&v, "summary");
	assert_non_null(html);
	assert_non_null(atom);
	assert_non_null(json);
	assert_null(strstr(html, "<script"));
	assert_null(strstr(html, "<img"));
	assert_null(strstr(html, "<b>"));
	assert_non_null(strstr(html, "&lt;script&gt;alert(1)&lt;/script&gt;"));
	assert_non_null(strstr(html, "&lt;img src=x onerror=y&gt; &amp; &#39;q&#39;"));
	assert_null(strstr(atom, "<script"));
	assert_non_null(strstr(atom, "<title>&lt;script&gt;"));
	assert_non_null(strstr(json, "\"indicator\":\"major\""));
	assert_non_null(strstr(json, "\"incident_updates\":[{"));
	assert_non_null(strstr(json, "\"scheduled_maintenances\":[]"));
	free(html);
	free(atom);
	free(json);
	assert_non_null(e = status_escape("\"'<>&\x01"));
	assert_string_equal(e, "&quot;&#39;&lt;&gt;&amp;?");
	free(e);
	status_incident_free(inc);
	status_uptime_free(u);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_states),	   cmocka_unit_test(test_heartbeat),
	    cmocka_unit_test(test_error_rate),	   cmocka_unit_test(test_explain),
	    cmocka_unit_test(test_http_parse),	   cmocka_unit_test(test_reply_count),
	    cmocka_unit_test(test_uptime_exact),   cmocka_unit_test(test_uptime_file),
	    cmocka_unit_test(test_uptime_share),   cmocka_unit_test(test_incident_parse),
	    cmocka_unit_test(test_render_escapes),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
