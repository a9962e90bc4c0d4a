/*
 * wardctl_audit — the audit log from the operator's side.
 *
 *   wardctl audit verify --region R [--tenant SLUG]
 *   wardctl audit list --region R [--tenant SLUG] [--actor A] [--type T] [--action X]
 *                      [--since T] [--until T] [--limit N] [--cursor C]
 *
 * Both ask ward-audit over q:audit as the operator (the "ops" route); only
 * ward-audit holds the checkpoint key, so only it can verify. Without --tenant
 * they act on the cell's own chain (operator events with no tenant).
 *
 * wardctl_audit_record is how wardctl's own actions (tenant create, ...) are
 * recorded: a blocking XADD to q:audit on the ops route, confirmed by Redis
 * before the command reports success (the caller undoes the action otherwise).
 */
#include <getopt.h>
#include <limits.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit.pb-c.h"
#include "auditlog.h"
#include "crypto.h"
#include "envelope.h"
#include "wardctl.h"

#define AUDIT_REPLY_MAX (ENVELOPE_MAX_PAYLOAD)

const char wardctl_audit_usage[] =
	"usage: wardctl audit verify --region R [--tenant SLUG]\n"
	"       wardctl audit list --region R [--tenant SLUG] [--actor A] [--type T]\n"
	"                          [--action X] [--since TIME] [--until TIME] [--limit N]\n"
	"                          [--cursor C]\n"
	"       wardctl audit retention --region R --tenant SLUG --days N\n"
	"       wardctl audit purge --region R [--tenant SLUG] [--as-of TIME]\n"
	"\n"
	"verify: ward-audit recomputes the tenant's hash chain (or the cell's own chain\n"
	"without --tenant) and checks its signed checkpoints; prints {\"ok\", \"events\",\n"
	"\"checkpoints\", \"first_bad_id\", \"first_bad_seq\", \"reason\"} and exits 1 when it\n"
	"does not verify. list: newest first, {\"events\": [...], \"next_cursor\"}.\n"
	"retention: keep the tenant's events N days (default 730). purge: remove events past\n"
	"their tenant's retention at TIME (default now; never the newest event), recorded\n"
	"in audit.purges and as an audit event; the chain still verifies. Both run as\n"
	"the ward_audit_purge role.\n";

int wardctl_audit_record(const struct wardctl_conf *conf, int region, const char *tenant_id,
			 const char *type, const char *action, const char *target,
			 const char *detail_json, const char **error_r)
{
	const struct wardctl_cell *cell = &conf->cell[region];
	Ward__AuditEvent ev = WARD__AUDIT_EVENT__INIT;
	Ward__Principal principal = WARD__PRINCIPAL__INIT;
	envelope_keys_t *keys = NULL;
	redisContext *rc = NULL;
	char actor[80], id[33];
	uint8_t *buf = NULL;
	size_t len;
	int ret = -1;

	snprintf(actor, sizeof actor, "operator:%s", wardctl_operator());
	if (crypto_random_id(id) < 0) {
		*error_r = "no random bytes";
		return -1;
	}
	ev.id = id;
	ev.tenant_id = (char *)(tenant_id != NULL ? tenant_id : "");
	ev.type = (char *)type;
	ev.action = (char *)action;
	ev.actor = actor;
	ev.target = (char *)(target != NULL ? target : "");
	ev.detail_json = (char *)(detail_json != NULL ? detail_json : "");
	if (auditlog_prepare(&ev, error_r) < 0)
		return -1;
	keys = envelope_keys_parse(cell->route_keys.data, cell->route_keys.len, error_r);
	if (keys == NULL)
		return -1;
	rc = auditlog_redis_open(cell->redis_host, cell->redis_port, cell->redis_user,
				 (const char *)cell->redis_password.data, 3000, error_r);
	if (rc == NULL)
		goto out;
	len = ward__audit_event__get_packed_size(&ev);
	buf = malloc(len ? len : 1);
	if (buf == NULL) {
		*error_r = "out of memory";
		goto out;
	}
	ward__audit_event__pack(&ev, buf);
	principal.kind = "operator";
	principal.id = (char *)wardctl_operator();
	ret = auditlog_xadd(rc, keys, cell->redis_user, wardctl_regions[region], "audit.record",
			    ev.tenant_id, &principal, buf, len, error_r);
out:
	free(buf);
	redisFree(rc);
	envelope_keys_free(keys);
	return ret;
}

/* ----------------------------------------------------------- request/reply */

/* Send req as method to q:audit of region for tenant_id and wait for the reply,
 * unpacked as reply into *reply_r; -1 after printing. */
static int audit_call(const struct wardctl_conf *conf, int region, const char *tenant_id,
		      const char *method, const ProtobufCMessage *req,
		      const ProtobufCMessageDescriptor *reply, ProtobufCMessage **reply_r)
{
	const struct wardctl_call call = { .dest = "q:audit",
					   .method = method,
					   .tenant = tenant_id,
					   .request = req,
					   .reply = reply,
					   .reply_max = AUDIT_REPLY_MAX,
					   .timeout_ms = 60000,
					   .service = "ward-audit",
					   .error_status = true };

	return wardctl_request(conf, region, &call, reply_r);
}

/* audit verify: ward-audit checks the chain; exit status 1 when it does not verify. */
static int audit_verify_cmd(const struct wardctl_conf *conf, int region, const char *tenant)
{
	Ward__AuditVerifyRequest req = WARD__AUDIT_VERIFY_REQUEST__INIT;
	Ward__AuditVerifyReply *rep;
	ProtobufCMessage *m;
	json_t *o;
	int ret;

	if (audit_call(conf, region, tenant, "audit.verify", &req.base,
		       &ward__audit_verify_reply__descriptor, &m) < 0)
		return 1;
	rep = (Ward__AuditVerifyReply *)m;
	o = json_pack("{s:b, s:I, s:I, s:s, s:I, s:s, s:I}", "ok", rep->ok, "events",
		      (json_int_t)rep->events, "checkpoints", (json_int_t)rep->checkpoints,
		      "first_bad_id", rep->first_bad_id, "first_bad_seq",
		      (json_int_t)rep->first_bad_seq, "reason", rep->reason, "purged_upto",
		      (json_int_t)rep->purged_upto);
	ret = o != NULL && wardctl_print(o) == 0 ? (rep->ok ? 0 : 1) : 1;
	json_decref(o);
	ward__audit_verify_reply__free_unpacked(rep, NULL);
	return ret;
}

/* audit list: one page of events, newest first. */
static int audit_list_cmd(const struct wardctl_conf *conf, int region, const char *tenant,
			  const Ward__AuditListRequest *req)
{
	Ward__AuditListReply *rep;
	ProtobufCMessage *m;
	json_t *o, *arr;
	int ret = 1;

	if (audit_call(conf, region, tenant, "audit.list", &req->base,
		       &ward__audit_list_reply__descriptor, &m) < 0)
		return 1;
	rep = (Ward__AuditListReply *)m;
	arr = json_array();
	for (size_t i = 0; arr != NULL && i < rep->n_events; i++) {
		const Ward__AuditEventView *v = rep->events[i];

		json_array_append_new(arr, json_pack("{s:s, s:I, s:s, s:s, s:s, s:s, s:s, s:s, s:s}",
						     "id", v->id, "seq", (json_int_t)v->seq, "at",
						     v->at, "type", v->type, "action", v->action,
						     "actor", v->actor, "target", v->target, "ip",
						     v->ip, "detail", v->detail));
	}
	o = json_pack("{s:o, s:s}", "events", arr ? arr : json_array(), "next_cursor",
		      rep->next_cursor);
	if (o != NULL && wardctl_print(o) == 0)
		ret = 0;
	json_decref(o);
	ward__audit_list_reply__free_unpacked(rep, NULL);
	return ret;
}

int wardctl_audit(const struct wardctl_conf *conf, int argc, char **argv)
{
	static const struct option opts[] = { { "region", required_argument, NULL, 'r' },
					      { "tenant", required_argument, NULL, 't' },
					      { "actor", required_argument, NULL, 'a' },
					      { "type", required_argument, NULL, 'T' },
					      { "action", required_argument, NULL, 'A' },
					      { "since", required_argument, NULL, 's' },
					      { "until", required_argument, NULL, 'u' },
					      { "limit", required_argument, NULL, 'l' },
					      { "cursor", required_argument, NULL, 'c' },
					      { "days", required_argument, NULL, 'd' },
					      { "as-of", required_argument, NULL, 'o' },
					      { NULL, 0, NULL, 0 } };
	Ward__AuditListRequest req = WARD__AUDIT_LIST_REQUEST__INIT;
	const char *region = NULL, *slug = NULL, *sub;
	char tenant[40] = "";
	const char *as_of = NULL;
	long days = 0;
	int c, ri;

	if (argc < 2) {
		fputs(wardctl_audit_usage, stderr);
		return 2;
	}
	sub = argv[1];
	argc--, argv++;
	optind = 0;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'r': region = optarg; break;
		case 't': slug = optarg; break;
		case 'a': req.actor = optarg; break;
		case 'T': req.type = optarg; break;
		case 'A': req.action = optarg; break;
		case 's': req.since = optarg; break;
		case 'u': req.until = optarg; break;
		case 'c': req.cursor = optarg; break;
		case 'o': as_of = optarg; break;
		case 'd':
			if (wardctl_number(optarg, LONG_MIN, LONG_MAX, &days) < 0) {
				wardctl_error("--days: a number of days");
				return 2;
			}
			break;
		case 'l': {
			long limit;

			if (wardctl_number(optarg, 1, 100, &limit) < 0) {
				wardctl_error("--limit: 1 to 100");
				return 2;
			}
			req.limit = (int32_t)limit;
			break;
		}
		default: fputs(wardctl_audit_usage, stderr); return 2;
		}
	}
	if (optind < argc || region == NULL) {
		wardctl_error("audit %s needs --region", sub);
		return 2;
	}
	if ((ri = wardctl_region_index(region)) < 0) {
		wardctl_error("invalid region '%s': expected us, eu or uk", region);
		return 1;
	}
	if (slug != NULL && wardctl_tenant_find(conf, ri, slug, tenant, NULL) < 0)
		return 1;
	if (strcmp(sub, "verify") == 0)
		return audit_verify_cmd(conf, ri, tenant);
	if (strcmp(sub, "list") == 0)
		return audit_list_cmd(conf, ri, tenant, &req);
	if (strcmp(sub, "retention") == 0)
		return wardctl_audit_retention(conf, ri, tenant, days);
	if (strcmp(sub, "purge") == 0)
		return wardctl_audit_purge(conf, ri, tenant, as_of);
	wardctl_error("unknown audit command '%s'", sub);
	fputs(wardctl_audit_usage, stderr);
	return 2;
}
