/*
 * ward-audit — the append-only, hash-chained audit and activity log.
 *
 * Runs under the common skeleton (common/daemon.c): config, log, refusal of root,
 * its own Redis credentials and PostgreSQL role (INSERT and SELECT on
 * audit.events, nothing more), the region KEK (tenant DEKs seal the details),
 * heartbeat, clean SIGTERM. It alone holds the checkpoint signing key
 * (audit.signing_key_file, default audit-signing-key beside the KEK).
 *
 * Methods on q:audit:
 *   audit.record, audit.record_batch   any sender holding a route to q:audit
 *   audit.list, audit.export,          tenant admins, operators, API scope audit:read
 *   audit.verify, audit.activity
 */
#include <stddef.h>

#include <event2/event.h>

#include "audit.h"
#include "auditlog.h"
#include "log.h"

#define AUDIT_TICK_S 5

struct audit_conf audit_conf;
static struct event *audit_timer;

#define AC(field) offsetof(struct audit_conf, field)
static const struct conf_entry audit_conf_entries[] = {
	{ "audit.signing_key_file", CONF_STR, AC(signing_key_file), false, NULL, 0, 0, NULL },
	{ "audit.checkpoint_every", CONF_INT, AC(checkpoint_every), false, "1000", 1, 10000000,
	  NULL },
	{ "audit.checkpoint_minutes", CONF_INT, AC(checkpoint_minutes), false, "10", 1, 1440,
	  NULL },
	{ "audit.lag_high_water_ms", CONF_INT, AC(lag_high_water_ms), false, "60000", 100,
	  86400000, NULL },
};

static const struct daemon_method audit_methods[] = {
	{ "audit.record", audit_record, NULL, 128 * 1024, NULL },
	{ "audit.record_batch", audit_record_batch, NULL, ENVELOPE_MAX_PAYLOAD, NULL },
	{ "audit.list", audit_list, "admin operator", 4096, "audit:read" },
	{ "audit.export", audit_export, "admin operator", 4096, "audit:read" },
	{ "audit.verify", audit_verify, "admin operator", 1024, "audit:read" },
	{ "audit.activity", audit_activity, "admin operator", 4096, "audit:read" },
	/* GDPR parts, for ward-auth only (audit_gdpr.c checks the service id) */
	{ "gdpr.export", audit_gdpr_export, "service", 1024, NULL },
	{ "gdpr.erase", audit_gdpr_erase, "service", 1024, NULL },
};

/* Every AUDIT_TICK_S: time-based checkpoints and the backlog status key. */
static void audit_tick(evutil_socket_t fd, short what, void *arg)
{
	audit_store_tick(arg);
}

static int audit_init(struct daemon *d, const char **error_r)
{
	struct timeval tv = { AUDIT_TICK_S, 0 };

	if (audit_store_init(d, error_r) < 0)
		return -1;
	audit_timer = event_new(daemon_base(d), -1, EV_PERSIST, audit_tick, d);
	if (audit_timer == NULL || event_add(audit_timer, &tv) < 0) {
		*error_r = "cannot start the audit timer";
		return -1;
	}
	log_event(LOG_INFO, "audit chain signing key loaded",
		  LF_STR("key_id", audit_signing_key_id()),
		  LF_INT("checkpoint_every", audit_conf.checkpoint_every),
		  LF_INT("checkpoint_minutes", audit_conf.checkpoint_minutes));
	return 0;
}

static void audit_deinit(struct daemon *d)
{
	if (audit_timer != NULL)
		event_free(audit_timer);
	audit_timer = NULL;
	audit_store_deinit();
}

static void audit_stop(struct daemon *d)
{
	if (audit_timer != NULL)
		event_del(audit_timer);
}

static const struct daemon_service audit_service = {
	.name = "audit",
	.conf = audit_conf_entries,
	.n_conf = sizeof audit_conf_entries / sizeof audit_conf_entries[0],
	.conf_target = &audit_conf,
	.methods = audit_methods,
	.n_methods = sizeof audit_methods / sizeof audit_methods[0],
	.consumes = true,
	.needs_db = true,
	.forbid_db = false,
	.needs_kek = true,
	.init = audit_init,
	.deinit = audit_deinit,
	.stop = audit_stop,
};

int main(int argc, char **argv)
{
	return daemon_main(argc, argv, &audit_service);
}
