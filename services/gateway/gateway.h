/*
 * gateway — the one public HTTP(S) listener of a Ward cell (internal header).
 *
 * gateway_main.c	config table, daemon hooks, main()
 * gateway_tls.c	OpenSSL server context, per-connection TLS bufferevents, connection cap
 * gateway_http.c	evhttp servers, routing, security headers, problem responses, access log,
 *		the request guard (also in front of the redirector and the status page)
 * gateway_healthz.c	GET /healthz: ping auth and ticket through their queues
 * gateway_accesslog.c	the access log lines, buffered
 * gateway_status*.c	the status page (gateway_status.h), run by ward-status
 *		(services/status/, its own process), not by the gateway; the gateway
 *		only publishes its answer counters for it
 * gateway_util.c	pure helpers (no libevent, no OpenSSL): parsing and validation
 *
 * Everything runs on the daemon's one event loop; there are no threads.
 */
#ifndef WARD_GATEWAY_H
#define WARD_GATEWAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <event2/event.h>
#include <event2/http.h>
#include <openssl/ssl.h>

#include "config.h"
#include "gateway_status.h"

struct daemon;

#define GATEWAY_REQUEST_ID_MAX 64
#define GATEWAY_HOST_MAX 253
#define GATEWAY_SLUG_MAX 40
#define GATEWAY_REGION_MAX 8
#define GATEWAY_PARAMS_MAX 32	 /* query or form parameters per request */
#define GATEWAY_PARAM_MAX 4096	 /* bytes of one decoded key or value */
#define GATEWAY_PATH_PARAMS 4	 /* {name} segments per route */
#define GATEWAY_CRED_MAX 1024	 /* bytes of a bearer token, cookie or Basic credential */

enum { GATEWAY_HOST_OTHER = 0, GATEWAY_HOST_TENANT = 1, GATEWAY_HOST_REGION = 2 };

/* One {name} path segment of a matched route. */
struct gateway_param {
	char name[32];
	char value[256];
};

/* The gateway's own config keys (added to the common ones). */
struct gateway_config {
	char *https_listen;	      /* "127.0.0.1:8443" */
	char *https_cert_file;	      /* PEM certificate chain, leaf first */
	struct conf_secret https_key; /* PEM private key bytes */
	char *http_listen;	      /* optional plain listener: 308 to https only */
	char *domain;		      /* "localhost": tenant hosts are <slug>.<region>.<domain> */
	int max_header_bytes;
	int max_body_bytes;
	int timeout_seconds;
	int max_connections;
	int healthz_timeout_ms;
	int max_url_bytes;	      /* request target; longer: 414 */
	int max_headers;	      /* header lines; more: 431 */
	int max_connections_per_source;
	int ticket_rotate_seconds;    /* session ticket key rotation period */
	int header_timeout_seconds;   /* deadline for the TLS handshake and a request head */
	int body_timeout_seconds;     /* deadline for a request body, from its head's end */
	int port_us, port_eu, port_uk; /* public HTTPS port of each region (421/307 targets) */
	struct conf_list region_ports; /* "<region> <port>": any region (deploy/regions.yaml) */
	int upstream_timeout_ms;      /* a routed request's deadline on its queue */
	int tenant_cache_ms;	      /* tenant.resolve answers, positive and negative */
	int auth_cache_max_ms;	      /* cap on auth.authenticate's cache_ms */
	int rl_window_s;	      /* rate-limit window */
	int rl_ip;		      /* requests per window per source address (all tenants) */
	int rl_tenant_ip;	      /* … per source address and tenant */
	int rl_credential;	      /* … per credential */
	int rl_login;		      /* … per source address and tenant on login routes */
	/* The status page's keys (ward-status, services/status/); in the tenant gateway
	 * only status.error_window_s (its answer counters), the others are refused. */
	struct gateway_status_config status;
	char *status_refused;		     /* (never set: the refused keys' field) */
	struct conf_list status_cells_refused;
};

struct healthz;

/* The running gateway (one per process). */
struct gateway {
	struct daemon *d;
	const struct gateway_config *cfg;
	struct event_base *base;
	SSL_CTX *ssl_ctx;
	struct evhttp *https;
	struct evhttp_bound_socket *https_sock;
	struct evhttp *http; /* plain redirector, or NULL */
	struct evhttp_bound_socket *http_sock;
	uint16_t https_port;
	unsigned long connections; /* live TLS connections (counted by the SSL objects) */
	unsigned long refused;	   /* connections refused over max_connections */
	bool stopping;		   /* .stop ran: listeners closed, answer 503 */
	struct healthz *pending;   /* in-flight /healthz requests */
	struct gwreq *requests;	   /* in-flight API requests */
	struct gateway_cache *tenant_cache, *auth_cache;
	struct gateway_rl *rl;
	struct gateway_sources *sources; /* live connections per source address */
};

/* What every response needs to know about its request. */
struct gateway_reqinfo {
	char id[GATEWAY_REQUEST_ID_MAX + 1];
	struct timespec start;
};

/* gateway_util.c */
int gateway_listen_parse(const char *spec, char *host, size_t host_len, uint16_t *port_r,
			 const char **error_r);
bool gateway_request_id_ok(const char *id);
/* Config validators (conf_entry.validate) of the gateway's and ward-status's tables. */
int gateway_conf_valid_listen(const void *value, const char **reason_r);
int gateway_conf_valid_domain(const void *value, const char **reason_r);
bool gateway_hostname_ok(const char *name);
bool gateway_host_in_domain(const char *host, const char *domain, char *out, size_t out_len);
int gateway_redirect_location(char *out, size_t out_len, const char *host, uint16_t https_port,
			      const char *uri);
char *gateway_problem_json(int status, const char *title, const char *detail);
double gateway_elapsed_ms(const struct timespec *start);
int gateway_host_classify(const char *host, const char *domain, char slug[GATEWAY_SLUG_MAX + 1],
			  char region[GATEWAY_REGION_MAX + 1], uint16_t *port_r);
int gateway_urldecode(const char *in, size_t len, char *out, size_t out_len, bool plus_space);
int gateway_params_each(const char *s, size_t len,
			int (*cb)(void *arg, const char *key, const char *value, const char **why_r),
			void *arg, const char **why_r);
bool gateway_path_match(const char *pattern, const char *path, struct gateway_param *params,
			size_t *n_r);
bool gateway_cookie_get(const char *header, const char *name, char *out, size_t out_len);
bool gateway_auth_scheme(const char *header, const char *scheme, char *out, size_t out_len);
int gateway_basic_decode(const char *b64, char *id, size_t id_len, char *secret,
			 size_t secret_len);
bool gateway_origin_same(const char *origin, const char *host);
int gateway_base_url(char *out, size_t out_len, const char *slug, const char *region,
		     const char *domain, uint16_t port);
void gateway_key_hash(char out[65], const char *const *parts, size_t n);

/* gateway_cache.c */
#define GATEWAY_CACHE_VALUE_MAX 8192
struct gateway_cache;
struct gateway_cache *gateway_cache_new(size_t n);
void gateway_cache_free(struct gateway_cache *c);
void gateway_cache_put(struct gateway_cache *c, const char *key, const void *data, size_t len,
		       int ttl_ms);
const void *gateway_cache_get(struct gateway_cache *c, const char *key, size_t *len_r);

/* gateway_ratelimit.c */
struct gateway_rl;
struct gateway_rl_bucket {
	const char *name; /* "ip", "cred", "login" */
	char id[65];	  /* gateway_key_hash of what is counted */
	int limit;	  /* requests per window */
	int window_s;
};
struct gateway_rl_result {
	bool limited;
	int limit, remaining;
	int reset_s; /* seconds to the end of the current window */
	int retry_s; /* when limited: seconds to wait */
};
typedef void (*gateway_rl_fn)(void *arg, int status, const struct gateway_rl_result *r);
struct gateway_rl *gateway_rl_new(struct event_base *base, const char *host, int port,
				  const char *user, const char *password);
void gateway_rl_free(struct gateway_rl *rl);
bool gateway_rl_up(const struct gateway_rl *rl);
int gateway_rl_check(struct gateway_rl *rl, const struct gateway_rl_bucket *b, size_t n,
		     gateway_rl_fn cb, void *arg);
void gateway_rl_verdict(const struct gateway_rl_bucket *b, long long prev, long long cur,
			long long now_ms, struct gateway_rl_result *r);

/* gateway_tls.c */
SSL_CTX *gateway_tls_ctx_new(const struct gateway_config *cfg, const char **error_r);
void gateway_tls_ctx_free(SSL_CTX *ctx);
struct bufferevent *gateway_tls_bevcb(struct event_base *base, void *arg);
struct gateway_sources *gateway_tls_sources_new(void);
void gateway_tls_sources_free(struct gateway_sources *t);

/* gateway_http.c */
int gateway_http_start(struct gateway *gw, const char **error_r);
void gateway_http_stop(struct gateway *gw);
void gateway_http_free(struct gateway *gw);
/* HTTPS answers since start and how many were 5xx (/healthz not counted). */
void gateway_http_counts(unsigned long long *answers_r, unsigned long long *errors_r);
void gateway_http_reply(struct evhttp_request *req, const struct gateway_reqinfo *info, int status,
			const char *content_type, const char *body, size_t len);
void gateway_http_problem(struct evhttp_request *req, const struct gateway_reqinfo *info,
			  int status, const char *title, const char *detail);
const char *gateway_http_method(enum evhttp_cmd_type cmd);
/* The request guard (see gateway_http.c): in front of the API listener, the plain
 * redirector and the status page. gateway_guard_tls from a bevcb, after
 * gateway_guard_init (gateway_http_start calls it); the listener's callback asks
 * gateway_guard_refused first. */
struct bufferevent;
int gateway_guard_init(const char **error_r);
void gateway_guard_tls(struct bufferevent *bev, size_t max_head, uint64_t max_body);
bool gateway_guard_refused(struct evhttp_request *req, int *status_r, const char **title_r,
			   const char **detail_r);

/* gateway_api.c */
void gateway_api_start(struct gateway *gw, struct evhttp_request *req,
		       const struct gateway_reqinfo *info);
void gateway_api_orphan_all(struct gateway *gw, bool answer);
int gateway_api_init(struct gateway *gw, const char **error_r);
void gateway_api_deinit(struct gateway *gw);
uint16_t gateway_region_port(const struct gateway_config *cfg, const char *region);

/* gateway_accesslog.c: the access log, buffered (flushed within 100 ms, at stop and exit) */
struct daemon_config;
int gateway_accesslog_open(struct event_base *base, const struct daemon_config *dc,
			   const char **error_r);
bool gateway_accesslog_line(const char *request_id, const char *method, const char *path,
			    int status, size_t bytes, long long duration_ms, const char *client);
void gateway_accesslog_flush(void);
void gateway_accesslog_close(void);

/* gateway_healthz.c */
void gateway_healthz_start(struct gateway *gw, struct evhttp_request *req,
			   const struct gateway_reqinfo *info);
void gateway_healthz_orphan_all(struct gateway *gw, bool answer);

#endif
