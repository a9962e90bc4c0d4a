/*
 * ward-status — the deployment's public status page (SPEC §7, status.<domain>), its
 * own process: the status listener and its poller (services/gateway/gateway_status.c,
 * shared with the gateway: its TLS setup and request guard) and nothing else.
 *
 * It holds no tenant-reaching credential: no route key (the skeleton refuses
 * queue.route_keys_file), no database, no region key, no tenant listener (https.*
 * and http.* refused), and its only Redis credentials are each cell's read-only
 * "status" ACL user: status.cells for the poller, and the daemon's own connection
 * (its heartbeat hb:status:<instance>, the uptime lease) as the home cell's status
 * user, which gateway_status_start checks.
 */
#include <stddef.h>
#include <string.h>

#include "daemon.h"
#include "gateway.h"
#include "log.h"

static struct gateway_config status_conf;
static struct gateway status_gw;

/* A tenant gateway's key in ward-status's file: refused, whatever its value. */
static int status_refuse_tenant(const void *value, const char **reason_r)
{
	(void)value;
	*reason_r = "ward-status serves only the status page: no tenant listener, no tenant "
		    "certificate or key; remove it (it belongs in the gateway's config)";
	return -1;
}

#define SC(f) offsetof(struct gateway_config, f)
static const struct conf_entry status_conf_entries[] = {
    {"domain", CONF_STR, SC(domain), false, "localhost", 0, 0, gateway_conf_valid_domain},
    {"limits.max_connections", CONF_INT, SC(max_connections), false, "1024", 1, 1000000, NULL},
    {"limits.max_connections_per_source", CONF_INT, SC(max_connections_per_source), false, "128",
     1, 1000000, NULL},
    {"status.listen", CONF_STR, SC(status.listen), true, NULL, 0, 0, gateway_conf_valid_listen},
    {"status.cert_file", CONF_STR, SC(status.cert_file), true, NULL, 0, 0, NULL},
    {"status.key_file", CONF_SECRET_FILE, SC(status.key), true, NULL, 0, 0, NULL},
    {"status.state_dir", CONF_STR, SC(status.state_dir), true, NULL, 0, 0, NULL},
    {"status.cells", CONF_STR_LIST, SC(status.cells), true, NULL, 0, 0, NULL},
    {"status.user", CONF_STR, SC(status.user), false, "status", 0, 0, NULL},
    {"status.page_name", CONF_STR, SC(status.page_name), false, "Ward", 0, 0, NULL},
    {"status.poll_ms", CONF_INT, SC(status.poll_ms), false, "2000", 200, 60000, NULL},
    {"status.heartbeat_timeout_ms", CONF_INT, SC(status.heartbeat_timeout_ms), false, "15000",
     1000, 600000, NULL},
    {"status.pending_high", CONF_INT, SC(status.pending_high), false, "1000", 1, 100000000,
     NULL},
    {"status.dead_letter_window_s", CONF_INT, SC(status.dead_letter_window_s), false, "300", 1,
     86400, NULL},
    {"status.backup_max_age_s", CONF_INT, SC(status.backup_max_age_s), false, "93600", 60,
     2592000, NULL},
    {"status.error_window_s", CONF_INT, SC(status.error_window_s), false, "60", 5, 3600, NULL},
    {"status.error_rate_pct", CONF_INT, SC(status.error_rate_pct), false, "5", 1, 100, NULL},
    {"status.error_major_pct", CONF_INT, SC(status.error_major_pct), false, "50", 1, 100, NULL},
    {"status.error_min", CONF_INT, SC(status.error_min), false, "10", 1, 1000000, NULL},
    /* The tenant gateway's listeners and key: never here. */
    {"https.listen", CONF_STR, SC(https_listen), false, NULL, 0, 0, status_refuse_tenant},
    {"https.cert_file", CONF_STR, SC(https_cert_file), false, NULL, 0, 0, status_refuse_tenant},
    {"https.key_file", CONF_STR, SC(status_refused), false, NULL, 0, 0, status_refuse_tenant},
    {"http.listen", CONF_STR, SC(http_listen), false, NULL, 0, 0, status_refuse_tenant},
};
#undef SC

/* init hook: the status listener and its poller. */
static int status_init(struct daemon *d, const char **error_r)
{
	memset(&status_gw, 0, sizeof status_gw);
	status_gw.d = d;
	status_gw.cfg = &status_conf;
	status_gw.base = daemon_base(d);
	return gateway_status_start(&status_gw, error_r);
}

/* stop hook (SIGTERM): no new connections; requests on open ones get 503; the
 * uptime owner saves, publishes and releases its lease. */
static void status_stop(struct daemon *d)
{
	status_gw.stopping = true;
	gateway_status_stop(&status_gw);
	log_info("status listener closed");
}

/* deinit hook: the listener, its connections, the poller's connections, the records. */
static void status_deinit(struct daemon *d)
{
	gateway_status_free(&status_gw);
}

static const struct daemon_service status_service = {
    .name = "status",
    .conf = status_conf_entries,
    .n_conf = sizeof status_conf_entries / sizeof status_conf_entries[0],
    .conf_target = &status_conf,
    .consumes = false,
    .forbid_db = true,
    .no_routes = true,
    .init = status_init,
    .deinit = status_deinit,
    .stop = status_stop,
};

int main(int argc, char **argv)
{
	return daemon_main(argc, argv, &status_service);
}
