/*
 * gateway — the one public HTTP(S) listener of a Ward cell (internal header).
 *
 * gateway_main.c	config table, daemon hooks, main()
 * gateway_tls.c	OpenSSL server context, per-connection TLS bufferevents, connection cap
 * gateway_http.c	evhttp servers, routing, security headers, problem responses, access log
 * gateway_healthz.c	GET /healthz: ping auth and ticket through their queues
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

struct daemon;

#define GATEWAY_REQUEST_ID_MAX 64
#define GATEWAY_HOST_MAX 253

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
bool gateway_hostname_ok(const char *name);
bool gateway_host_in_domain(const char *host, const char *domain, char *out, size_t out_len);
int gateway_redirect_location(char *out, size_t out_len, const char *host, uint16_t https_port,
			      const char *uri);
char *gateway_problem_json(int status, const char *title, const char *detail);
double gateway_elapsed_ms(const struct timespec *start);

/* gateway_tls.c */
SSL_CTX *gateway_tls_ctx_new(const struct gateway_config *cfg, const char **error_r);
void gateway_tls_ctx_free(SSL_CTX *ctx);
struct bufferevent *gateway_tls_bevcb(struct event_base *base, void *arg);

/* gateway_http.c */
int gateway_http_start(struct gateway *gw, const char **error_r);
void gateway_http_stop(struct gateway *gw);
void gateway_http_free(struct gateway *gw);
void gateway_http_reply(struct evhttp_request *req, const struct gateway_reqinfo *info, int status,
			const char *content_type, const char *body, size_t len);
void gateway_http_problem(struct evhttp_request *req, const struct gateway_reqinfo *info,
			  int status, const char *title, const char *detail);

/* gateway_healthz.c */
void gateway_healthz_start(struct gateway *gw, struct evhttp_request *req,
			   const struct gateway_reqinfo *info);
void gateway_healthz_orphan_all(struct gateway *gw, bool answer);

#endif
