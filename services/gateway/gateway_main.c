/*
 * ward-gateway — the only public HTTP(S) listener of a Ward cell.
 *
 * Runs in the common daemon skeleton (common/daemon.h) with no database
 * credential and no queue of its own to consume: it only sends requests (to
 * q:auth, q:ticket, …) and reads its reply stream. This file holds the config
 * table and the daemon hooks: init starts the listeners, stop closes them (no new
 * connections; requests in flight finish or fail), deinit frees everything.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon.h"
#include "gateway.h"
#include "log.h"

static struct gateway_config gateway_conf;
static struct gateway gateway;

/* region_ports: "<region> <port>" items, region [a-z]{2,8}, port 1..65535. */
static int gateway_valid_region_ports(const void *value, const char **reason_r)
{
	const struct conf_list *l = value;

	for (size_t i = 0; i < l->n; i++) {
		char region[GATEWAY_REGION_MAX + 1];
		unsigned port;
		int used = 0;

		if (sscanf(l->items[i], "%8[a-z] %5u%n", region, &port, &used) != 2 ||
		    l->items[i][used] != '\0' || strlen(region) < 2 || port < 1 || port > 65535) {
			*reason_r = "items must be \"<region a-z> <port>\"";
			return -1;
		}
	}
	return 0;
}

/* A key of the status page's (status.*, but error_window_s) in the tenant gateway's
 * file: refused, whatever its value. */
static int gateway_refuse_status(const void *value, const char **reason_r)
{
	(void)value;
	*reason_r = "the status page runs as ward-status, its own process with its own config "
		    "and the read-only status credentials (deploy/templates/status.yaml.in); remove "
		    "status.* here but status.error_window_s";
	return -1;
}

#define GC(f) offsetof(struct gateway_config, f)
static const struct conf_entry gateway_conf_entries[] = {
    {"https.listen", CONF_STR, GC(https_listen), true, NULL, 0, 0, gateway_conf_valid_listen},
    {"https.cert_file", CONF_STR, GC(https_cert_file), true, NULL, 0, 0, NULL},
    {"https.key_file", CONF_SECRET_FILE, GC(https_key), true, NULL, 0, 0, NULL},
    {"http.listen", CONF_STR, GC(http_listen), false, NULL, 0, 0, gateway_conf_valid_listen},
    {"domain", CONF_STR, GC(domain), false, "localhost", 0, 0, gateway_conf_valid_domain},
    {"limits.max_header_bytes", CONF_INT, GC(max_header_bytes), false, "16384", 1024, 1048576,
     NULL},
    {"limits.max_body_bytes", CONF_INT, GC(max_body_bytes), false, "1048576", 0, 67108864, NULL},
    {"limits.timeout_seconds", CONF_INT, GC(timeout_seconds), false, "15", 1, 3600, NULL},
    {"limits.max_connections", CONF_INT, GC(max_connections), false, "1024", 1, 1000000, NULL},
    {"healthz.timeout_ms", CONF_INT, GC(healthz_timeout_ms), false, "2000", 10, 60000, NULL},
    {"limits.max_url_bytes", CONF_INT, GC(max_url_bytes), false, "4096", 256, 65536, NULL},
    {"limits.max_headers", CONF_INT, GC(max_headers), false, "64", 8, 1000, NULL},
    {"limits.max_connections_per_source", CONF_INT, GC(max_connections_per_source), false, "128",
     1, 1000000, NULL},
    {"https.ticket_rotate_seconds", CONF_INT, GC(ticket_rotate_seconds), false, "3600", 1,
     86400, NULL},
    {"limits.header_timeout_seconds", CONF_INT, GC(header_timeout_seconds), false, "10", 1,
     3600, NULL},
    {"limits.body_timeout_seconds", CONF_INT, GC(body_timeout_seconds), false, "60", 1, 3600,
     NULL},
    {"regions.us.https_port", CONF_INT, GC(port_us), false, "443", 1, 65535, NULL},
    {"regions.eu.https_port", CONF_INT, GC(port_eu), false, "443", 1, 65535, NULL},
    {"regions.uk.https_port", CONF_INT, GC(port_uk), false, "443", 1, 65535, NULL},
    {"region_ports", CONF_STR_LIST, GC(region_ports), false, NULL, 0, 0, gateway_valid_region_ports},
    {"upstream.timeout_ms", CONF_INT, GC(upstream_timeout_ms), false, "10000", 100, 120000, NULL},
    {"cache.tenant_ms", CONF_INT, GC(tenant_cache_ms), false, "30000", 0, 300000, NULL},
    {"cache.auth_max_ms", CONF_INT, GC(auth_cache_max_ms), false, "5000", 0, 5000, NULL},
    {"ratelimit.window_seconds", CONF_INT, GC(rl_window_s), false, "60", 1, 3600, NULL},
    {"ratelimit.per_source", CONF_INT, GC(rl_ip), false, "3000", 1, 100000000, NULL},
    {"ratelimit.per_source_tenant", CONF_INT, GC(rl_tenant_ip), false, "600", 1, 100000000,
     NULL},
    {"ratelimit.per_credential", CONF_INT, GC(rl_credential), false, "600", 1, 100000000, NULL},
    {"ratelimit.login_per_source", CONF_INT, GC(rl_login), false, "10", 1, 100000, NULL},
    /* The gateway's answer counters over this window (hb:gateway:<instance>:http,
     * gateway_status.c), read by the status page and wardctl status components. */
    {"status.error_window_s", CONF_INT, GC(status.error_window_s), false, "60", 5, 3600, NULL},
    /* The status page itself is ward-status, its own process (services/status/):
     * its keys are refused here, so the page never runs beside tenant credentials. */
    {"status.listen", CONF_STR, GC(status_refused), false, NULL, 0, 0, gateway_refuse_status},
    {"status.cert_file", CONF_STR, GC(status_refused), false, NULL, 0, 0, gateway_refuse_status},
    {"status.key_file", CONF_STR, GC(status_refused), false, NULL, 0, 0, gateway_refuse_status},
    {"status.state_dir", CONF_STR, GC(status_refused), false, NULL, 0, 0, gateway_refuse_status},
    {"status.cells", CONF_STR_LIST, GC(status_cells_refused), false, NULL, 0, 0,
     gateway_refuse_status},
    {"status.user", CONF_STR, GC(status_refused), false, NULL, 0, 0, gateway_refuse_status},
};
#undef GC

/* init hook: TLS context, then the listeners. */
static int gateway_init(struct daemon *d, const char **error_r)
{
	memset(&gateway, 0, sizeof gateway);
	gateway.d = d;
	gateway.cfg = &gateway_conf;
	gateway.base = daemon_base(d);
	if ((gateway.ssl_ctx = gateway_tls_ctx_new(&gateway_conf, error_r)) == NULL)
		return -1;
	gateway.sources = gateway_tls_sources_new();
	if (gateway_accesslog_open(gateway.base, daemon_config(d), error_r) < 0 ||
	    gateway_api_init(&gateway, error_r) < 0 || gateway_http_start(&gateway, error_r) < 0 ||
	    gateway_status_pub_start(&gateway, error_r) < 0) {
		gateway_http_free(&gateway);
		gateway_api_deinit(&gateway);
		gateway_tls_ctx_free(gateway.ssl_ctx);
		gateway.ssl_ctx = NULL;
		gateway_tls_sources_free(gateway.sources);
		gateway.sources = NULL;
		gateway_accesslog_close();
		return -1;
	}
	return 0;
}

/* stop hook (SIGTERM): no new connections; requests in flight and any new ones on open
 * connections get 503 with Connection: close. */
static void gateway_stop(struct daemon *d)
{
	gateway_http_stop(&gateway);
	gateway_healthz_orphan_all(&gateway, true);
	gateway_api_orphan_all(&gateway, true);
	gateway_accesslog_flush(); /* the 503s just answered, before the drain */
	log_event(LOG_INFO, "listeners closed", LF_INT("connections", gateway.connections));
}

/* deinit hook: free the servers (and their connections), then the TLS context. */
static void gateway_deinit(struct daemon *d)
{
	gateway_healthz_orphan_all(&gateway, false);
	gateway_api_orphan_all(&gateway, false);
	gateway_status_free(&gateway);
	gateway_http_free(&gateway);
	gateway_api_deinit(&gateway); /* after the servers: frees orphans' rate-limit checks */
	gateway_tls_ctx_free(gateway.ssl_ctx);
	gateway.ssl_ctx = NULL;
	gateway_tls_sources_free(gateway.sources); /* every SSL (and its count) is gone */
	gateway.sources = NULL;
	gateway_accesslog_close(); /* last: answers given while freeing are logged too */
}

static const struct daemon_service gateway_service = {
    .name = "gateway",
    .conf = gateway_conf_entries,
    .n_conf = sizeof gateway_conf_entries / sizeof gateway_conf_entries[0],
    .conf_target = &gateway_conf,
    .consumes = false,
    .forbid_db = true,
    .init = gateway_init,
    .deinit = gateway_deinit,
    .stop = gateway_stop,
};

int main(int argc, char **argv)
{
	return daemon_main(argc, argv, &gateway_service);
}
