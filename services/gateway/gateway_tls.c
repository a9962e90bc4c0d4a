/*
 * gateway_tls — the HTTPS side of the gateway: one OpenSSL 3 server context and a
 * TLS bufferevent per accepted connection, handed to evhttp through its bevcb.
 *
 * Policy: TLS 1.2 and 1.3 only; TLS 1.2 limited to ECDHE key exchange with AEAD
 * ciphers; no compression, no renegotiation, the server's cipher order; ALPN, when
 * offered, can only agree on http/1.1 (evhttp speaks nothing else).
 *
 * Session tickets (TLS 1.2 and 1.3) with rotating keys: OpenSSL 3 makes one ticket
 * key per context and never changes it, so a stolen key would decrypt every ticket
 * (and with it the session's master secret) for the life of the process. Each
 * context gets its own keyring instead (SSL_CTX ex_data) and the ticket callback:
 * the current key (random name, AES-256-CBC key, HMAC-SHA256 key) issues tickets;
 * the previous one still opens them, and such a ticket is renewed (callback returns
 * 2); any other key name means a full handshake. Every https.ticket_rotate_seconds
 * a timer makes a new current key and wipes the old previous one (OPENSSL_cleanse),
 * so a ticket resumes for at most two periods and no key outlives two periods (the
 * session timeout, so the tickets' lifetime hint, is two periods too). There is no
 * server-side session cache: TLS 1.2 resumption by session ID alone would bypass
 * all this, with master secrets kept in memory for the cache's lifetime. The
 * timer is armed at the context's first connection (the first point the event base
 * is known here): before it, no ticket was issued.
 *
 * Connection cap: evhttp has none, and gives no hook when a connection ends. Each
 * SSL object carries the gateway in ex_data; the ex_data free callback runs when
 * the SSL is freed with its bufferevent, so the live count is exact whatever way a
 * connection ends. A connection accepted over max_connections gets a bufferevent
 * all the same (evhttp would otherwise fall back to plain HTTP on this port) but is
 * marked, and the ClientHello callback aborts its handshake with an alert.
 *
 * Per source: the ClientHello callback (the first point where the socket is
 * known) counts the connection against its peer address in a small hash table
 * and aborts the handshake past limits.max_connections_per_source; the count is
 * given back by another ex_data free callback. It also sets TCP_NODELAY: evhttp
 * writes a response as several TLS records, and Nagle's algorithm would hold the
 * last one back for the client's delayed ACK (40 ms per keep-alive request).
 */
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>

#include "gateway.h"
#include "log.h"

#define GATEWAY_TLS12_CIPHERS                                                                      \
	"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"                               \
	"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"                               \
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256"
#define GATEWAY_TLS13_SUITES                                                                       \
	"TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256"
#define GATEWAY_TLS_GROUPS "X25519:P-256:P-384"

static int gateway_tls_idx_gw = -1;	/* SSL ex_data: struct gateway *, counted */
static int gateway_tls_idx_refuse = -1; /* SSL ex_data: non-NULL if over the cap */
static int gateway_tls_idx_src = -1;	/* SSL ex_data: struct gateway_source *, counted */
static int gateway_tls_idx_tickets = -1; /* SSL_CTX ex_data: struct gateway_tickets * */

#define GATEWAY_TICKET_ROTATE_DEFAULT 3600

/* One session ticket key: its name (sent in the ticket), cipher key and MAC key. */
struct gateway_ticket_key {
	unsigned char name[16];
	unsigned char aes[32];
	unsigned char hmac[32];
	bool set;
};

/* A context's ticket keys: current issues, previous still opens (see the header). */
struct gateway_tickets {
	struct gateway_ticket_key cur, prev;
	struct event *timer; /* rotation, armed at the first connection */
	int period;	     /* seconds between rotations */
	unsigned long rotations;
};

#define GATEWAY_SOURCES_BUCKETS 1024

/* Live connections of one peer address. */
struct gateway_source {
	struct gateway_source *next;
	struct gateway_sources *table;
	unsigned long n;
	char addr[INET6_ADDRSTRLEN];
};

struct gateway_sources {
	struct gateway_source *b[GATEWAY_SOURCES_BUCKETS];
};

/* Bucket of an address string. */
static size_t gateway_tls_src_hash(const char *addr)
{
	size_t h = 5381;

	while (*addr != '\0')
		h = h * 33 + (unsigned char)*addr++;
	return h % GATEWAY_SOURCES_BUCKETS;
}

/* Count one more connection from addr; the node (never NULL: allocation failure is fatal). */
static struct gateway_source *gateway_tls_src_get(struct gateway_sources *t, const char *addr)
{
	size_t h = gateway_tls_src_hash(addr);
	struct gateway_source *s;

	for (s = t->b[h]; s != NULL; s = s->next)
		if (strcmp(s->addr, addr) == 0)
			break;
	if (s == NULL) {
		if ((s = calloc(1, sizeof *s)) == NULL)
			log_fatal("gateway: out of memory");
		snprintf(s->addr, sizeof s->addr, "%s", addr);
		s->table = t;
		s->next = t->b[h];
		t->b[h] = s;
	}
	s->n++;
	return s;
}

/* ex_data free callback: the connection of a counted source is gone. */
static void gateway_tls_src_gone(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
				 void *argp)
{
	struct gateway_source *s = ptr, **pp;

	if (s == NULL || --s->n > 0)
		return;
	for (pp = &s->table->b[gateway_tls_src_hash(s->addr)]; *pp != NULL; pp = &(*pp)->next)
		if (*pp == s) {
			*pp = s->next;
			break;
		}
	free(s);
}

/* The peer address of fd as text, or "" if unknown. */
static void gateway_tls_peer(int fd, char *out, size_t len)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof ss;
	const void *a = NULL;

	out[0] = '\0';
	if (fd < 0 || getpeername(fd, (struct sockaddr *)&ss, &sl) != 0)
		return;
	if (ss.ss_family == AF_INET)
		a = &((struct sockaddr_in *)&ss)->sin_addr;
	else if (ss.ss_family == AF_INET6)
		a = &((struct sockaddr_in6 *)&ss)->sin6_addr;
	if (a == NULL || inet_ntop(ss.ss_family, a, out, (socklen_t)len) == NULL)
		out[0] = '\0';
}

/* The first queued OpenSSL error as text, in a static buffer (single-threaded). */
static const char *gateway_tls_error(const char *what)
{
	static char buf[256];
	unsigned long e = ERR_get_error();
	char reason[160] = "unknown error";

	if (e != 0)
		ERR_error_string_n(e, reason, sizeof reason);
	ERR_clear_error();
	snprintf(buf, sizeof buf, "%s: %s", what, reason);
	return buf;
}

/* ex_data free callback: an SSL is being freed; if it was counted, uncount it. */
static void gateway_tls_ssl_gone(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
				 void *argp)
{
	struct gateway *gw = ptr;

	if (gw != NULL && gw->connections > 0)
		gw->connections--;
}

/* Never prompt on a terminal for an encrypted key: refuse it. */
static int gateway_tls_no_password(char *buf, int size, int rwflag, void *u)
{
	return -1;
}

/* ClientHello: abort the handshake of a connection over the cap or its source's cap. */
static int gateway_tls_client_hello(SSL *ssl, int *alert, void *arg)
{
	struct gateway *gw = SSL_get_ex_data(ssl, gateway_tls_idx_gw);
	struct gateway_source *src = SSL_get_ex_data(ssl, gateway_tls_idx_src);

	if (SSL_get_ex_data(ssl, gateway_tls_idx_refuse) != NULL) {
		*alert = SSL_AD_INTERNAL_ERROR;
		return SSL_CLIENT_HELLO_ERROR;
	}
	if (src == NULL && gw != NULL && gw->sources != NULL) {
		/* First ClientHello of the connection (a TLS 1.3 retry comes back here). */
		char addr[INET6_ADDRSTRLEN];
		int fd = SSL_get_fd(ssl), one = 1;

		if (fd >= 0)
			(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		gateway_tls_peer(fd, addr, sizeof addr);
		src = gateway_tls_src_get(gw->sources, addr);
		if (SSL_set_ex_data(ssl, gateway_tls_idx_src, src) != 1) {
			gateway_tls_src_gone(NULL, src, NULL, 0, 0, NULL);
			*alert = SSL_AD_INTERNAL_ERROR;
			return SSL_CLIENT_HELLO_ERROR;
		}
		if (src->n > (unsigned long)gw->cfg->max_connections_per_source) {
			if (gw->refused++ % 1000 == 0)
				log_event(LOG_WARN, "connection refused: per-source limit reached",
					  LF_INT("max_connections_per_source",
						 gw->cfg->max_connections_per_source),
					  LF_INT("refused_total", gw->refused));
			*alert = SSL_AD_INTERNAL_ERROR;
			return SSL_CLIENT_HELLO_ERROR;
		}
	}
	return SSL_CLIENT_HELLO_SUCCESS;
}

/* The per-source table (empty). Allocation failure is fatal. */
struct gateway_sources *gateway_tls_sources_new(void)
{
	struct gateway_sources *t = calloc(1, sizeof *t);

	if (t == NULL)
		log_fatal("gateway: out of memory");
	return t;
}

/* Free the table; call after every connection is gone (the servers freed). NULL-safe. */
void gateway_tls_sources_free(struct gateway_sources *t)
{
	if (t == NULL)
		return;
	for (size_t i = 0; i < GATEWAY_SOURCES_BUCKETS; i++)
		while (t->b[i] != NULL) {
			struct gateway_source *s = t->b[i];

			t->b[i] = s->next;
			free(s);
		}
	free(t);
}

/* A fresh random ticket key into k; 0, or -1 (k wiped and unset). */
static int gateway_tls_ticket_key_new(struct gateway_ticket_key *k)
{
	if (RAND_bytes(k->name, sizeof k->name) != 1 ||
	    RAND_priv_bytes(k->aes, sizeof k->aes) != 1 ||
	    RAND_priv_bytes(k->hmac, sizeof k->hmac) != 1) {
		OPENSSL_cleanse(k, sizeof *k);
		ERR_clear_error();
		return -1;
	}
	k->set = true;
	return 0;
}

/* Timer: the current key becomes the previous one, the previous one is wiped, a new
 * current one is made. If no new key can be made, no ticket is issued until the next
 * rotation (the callback declines), and resumption with the previous key carries on. */
static void gateway_tls_tickets_rotate(evutil_socket_t fd, short what, void *arg)
{
	struct gateway_tickets *t = arg;

	OPENSSL_cleanse(&t->prev, sizeof t->prev);
	t->prev = t->cur;
	OPENSSL_cleanse(&t->cur, sizeof t->cur);
	t->rotations++;
	if (gateway_tls_ticket_key_new(&t->cur) < 0) {
		log_event(LOG_ERROR, "tls: cannot make a session ticket key: no tickets issued",
			  LF_INT("rotations", t->rotations));
		return;
	}
	log_event(LOG_INFO, "tls: session ticket keys rotated", LF_INT("rotations", t->rotations),
		  LF_INT("period_s", t->period));
}

/* SSL_CTX ex_data free callback: the context is freed; wipe its keys, stop its timer. */
static void gateway_tls_tickets_gone(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx,
				     long argl, void *argp)
{
	struct gateway_tickets *t = ptr;

	if (t == NULL)
		return;
	if (t->timer != NULL)
		event_free(t->timer);
	OPENSSL_cleanse(t, sizeof *t);
	free(t);
}

/*
 * OpenSSL's ticket callback (TLS 1.2 and 1.3). enc = 1: name the current key, a random
 * IV, and set up the cipher and MAC to seal a new ticket: 1, or 0 (no ticket: no key)
 * or -1. enc = 0: find the key by name: the current one (1), the previous one (2:
 * accept and issue a fresh ticket under the current key), none (0: full handshake).
 */
static int gateway_tls_ticket_cb(SSL *ssl, unsigned char key_name[16],
				 unsigned char iv[EVP_MAX_IV_LENGTH], EVP_CIPHER_CTX *cctx,
				 EVP_MAC_CTX *hctx, int enc)
{
	struct gateway_tickets *t =
	    SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), gateway_tls_idx_tickets);
	const struct gateway_ticket_key *k = NULL;
	const EVP_CIPHER *cipher = EVP_aes_256_cbc();
	OSSL_PARAM params[3];
	int ret = 1;

	if (t == NULL)
		return 0;
	if (enc == 1) {
		if (!t->cur.set)
			return 0;
		k = &t->cur;
		memcpy(key_name, k->name, sizeof k->name);
		if (RAND_bytes(iv, EVP_CIPHER_get_iv_length(cipher)) != 1 ||
		    EVP_EncryptInit_ex(cctx, cipher, NULL, k->aes, iv) != 1)
			return -1;
	} else {
		if (t->cur.set && CRYPTO_memcmp(key_name, t->cur.name, sizeof t->cur.name) == 0) {
			k = &t->cur;
		} else if (t->prev.set &&
			   CRYPTO_memcmp(key_name, t->prev.name, sizeof t->prev.name) == 0) {
			k = &t->prev;
			ret = 2;
		} else {
			return 0;
		}
		if (EVP_DecryptInit_ex(cctx, cipher, NULL, k->aes, iv) != 1)
			return -1;
	}
	params[0] = OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, (void *)k->hmac,
						      sizeof k->hmac);
	params[1] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0);
	params[2] = OSSL_PARAM_construct_end();
	if (EVP_MAC_CTX_set_params(hctx, params) != 1)
		return -1;
	return ret;
}

/* Give ctx its ticket keyring and callback. 0, or -1 and *error_r. */
static int gateway_tls_tickets_new(SSL_CTX *ctx, int period, const char **error_r)
{
	struct gateway_tickets *t = calloc(1, sizeof *t);

	if (t == NULL)
		log_fatal("gateway: out of memory");
	t->period = period > 0 ? period : GATEWAY_TICKET_ROTATE_DEFAULT;
	if (gateway_tls_ticket_key_new(&t->cur) < 0) {
		*error_r = "session ticket key: no random bytes";
		free(t);
		return -1;
	}
	if (SSL_CTX_set_ex_data(ctx, gateway_tls_idx_tickets, t) != 1) {
		gateway_tls_tickets_gone(NULL, t, NULL, 0, 0, NULL);
		*error_r = gateway_tls_error("SSL_CTX_set_ex_data");
		return -1;
	}
	if (SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, gateway_tls_ticket_cb) != 1) {
		*error_r = gateway_tls_error("session ticket callback");
		return -1;
	}
	return 0;
}

/* Arm ctx's rotation timer on base if not yet (from the first connection). */
static void gateway_tls_tickets_arm(SSL_CTX *ctx, struct event_base *base)
{
	struct gateway_tickets *t = SSL_CTX_get_ex_data(ctx, gateway_tls_idx_tickets);
	struct timeval tv;

	if (t == NULL || t->timer != NULL)
		return;
	tv.tv_sec = t->period;
	tv.tv_usec = 0;
	if ((t->timer = event_new(base, -1, EV_PERSIST, gateway_tls_tickets_rotate, t)) == NULL ||
	    event_add(t->timer, &tv) != 0)
		log_fatal("cannot arm the session ticket key rotation");
}

/* ALPN: agree on http/1.1 if the client offers it, else carry on without ALPN. */
static int gateway_tls_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
			    const unsigned char *in, unsigned int inlen, void *arg)
{
	static const unsigned char ours[] = "\x08http/1.1";
	unsigned char *sel = NULL;
	unsigned char sel_len = 0;

	if (SSL_select_next_proto(&sel, &sel_len, ours, sizeof ours - 1, in, inlen) !=
	    OPENSSL_NPN_NEGOTIATED)
		return SSL_TLSEXT_ERR_NOACK;
	*out = sel;
	*outlen = sel_len;
	return SSL_TLSEXT_ERR_OK;
}

/* Load the private key from PEM bytes in memory into ctx. */
static int gateway_tls_load_key(SSL_CTX *ctx, const struct conf_secret *key, const char **error_r)
{
	BIO *bio = NULL;
	EVP_PKEY *pkey = NULL;
	int ret = -1;

	if (key->data == NULL || key->len == 0 || key->len > 64 * 1024) {
		*error_r = "https.key_file: empty or too large";
		goto out;
	}
	if ((bio = BIO_new_mem_buf(key->data, (int)key->len)) == NULL) {
		*error_r = gateway_tls_error("https.key_file");
		goto out;
	}
	pkey = PEM_read_bio_PrivateKey(bio, NULL, gateway_tls_no_password, NULL);
	if (pkey == NULL) {
		*error_r = gateway_tls_error("https.key_file: no usable (unencrypted) PEM key");
		goto out;
	}
	if (SSL_CTX_use_PrivateKey(ctx, pkey) != 1) {
		*error_r = gateway_tls_error("https.key_file");
		goto out;
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		*error_r = gateway_tls_error("https.key_file does not match https.cert_file");
		goto out;
	}
	ret = 0;
out:
	BIO_free(bio);
	EVP_PKEY_free(pkey);
	return ret;
}

/*
 * Build the server context from cfg: protocol and cipher policy, certificate
 * chain from https.cert_file, key from the bytes of https.key_file (wiped here
 * once loaded: the key lives only inside OpenSSL from now on). Returns the
 * context (caller frees with gateway_tls_ctx_free) or NULL and *error_r.
 */
SSL_CTX *gateway_tls_ctx_new(const struct gateway_config *cfg, const char **error_r)
{
	static const unsigned char sid_ctx[] = "ward-gateway";
	SSL_CTX *ctx = NULL;
	struct conf_secret *key = (struct conf_secret *)&cfg->https_key;

	if (gateway_tls_idx_gw < 0)
		gateway_tls_idx_gw =
		    SSL_get_ex_new_index(0, NULL, NULL, NULL, gateway_tls_ssl_gone);
	if (gateway_tls_idx_refuse < 0)
		gateway_tls_idx_refuse = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
	if (gateway_tls_idx_src < 0)
		gateway_tls_idx_src =
		    SSL_get_ex_new_index(0, NULL, NULL, NULL, gateway_tls_src_gone);
	if (gateway_tls_idx_tickets < 0)
		gateway_tls_idx_tickets =
		    SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, gateway_tls_tickets_gone);
	if (gateway_tls_idx_gw < 0 || gateway_tls_idx_refuse < 0 || gateway_tls_idx_src < 0 ||
	    gateway_tls_idx_tickets < 0) {
		*error_r = gateway_tls_error("SSL_get_ex_new_index");
		goto fail;
	}
	if ((ctx = SSL_CTX_new(TLS_server_method())) == NULL) {
		*error_r = gateway_tls_error("SSL_CTX_new");
		goto fail;
	}
	if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
	    SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) != 1) {
		*error_r = gateway_tls_error("TLS versions");
		goto fail;
	}
	if (SSL_CTX_set_cipher_list(ctx, GATEWAY_TLS12_CIPHERS) != 1 ||
	    SSL_CTX_set_ciphersuites(ctx, GATEWAY_TLS13_SUITES) != 1) {
		*error_r = gateway_tls_error("cipher list");
		goto fail;
	}
	if (SSL_CTX_set1_groups_list(ctx, GATEWAY_TLS_GROUPS) != 1) {
		*error_r = gateway_tls_error("key exchange groups");
		goto fail;
	}
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
				     SSL_OP_CIPHER_SERVER_PREFERENCE);
	SSL_CTX_clear_options(ctx, SSL_OP_NO_TICKET);
	if (gateway_tls_tickets_new(ctx, cfg->ticket_rotate_seconds, error_r) < 0)
		goto fail;
	/* Tickets only: no server-side session cache, whose sessions (resumable by ID in
	 * TLS 1.2) would outlive the ticket keys; a session lives two rotation periods. */
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_timeout(ctx, 2 * (long)(cfg->ticket_rotate_seconds > 0
						 ? cfg->ticket_rotate_seconds
						 : GATEWAY_TICKET_ROTATE_DEFAULT));
	/* Idle connections give their read/write buffers back: keeps idle RSS small. */
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	if (SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof sid_ctx - 1) != 1) {
		*error_r = gateway_tls_error("session id context");
		goto fail;
	}
	SSL_CTX_set_client_hello_cb(ctx, gateway_tls_client_hello, NULL);
	SSL_CTX_set_alpn_select_cb(ctx, gateway_tls_alpn, NULL);
	if (cfg->https_cert_file == NULL ||
	    SSL_CTX_use_certificate_chain_file(ctx, cfg->https_cert_file) != 1) {
		*error_r = gateway_tls_error("https.cert_file: cannot load PEM certificate chain");
		goto fail;
	}
	if (gateway_tls_load_key(ctx, key, error_r) < 0)
		goto fail;
	if (key->data != NULL)
		OPENSSL_cleanse(key->data, key->len);
	return ctx;
fail:
	if (key->data != NULL)
		OPENSSL_cleanse(key->data, key->len);
	SSL_CTX_free(ctx);
	return NULL;
}

/* Free the server context. NULL-safe. */
void gateway_tls_ctx_free(SSL_CTX *ctx)
{
	SSL_CTX_free(ctx);
}

/*
 * evhttp's bevcb: a TLS bufferevent in accepting state for a new connection
 * (evhttp sets its fd). Must never return NULL: evhttp would then serve plain
 * HTTP on the HTTPS port. Out of memory here is fatal, as any allocation is.
 */
struct bufferevent *gateway_tls_bevcb(struct event_base *base, void *arg)
{
	struct gateway *gw = arg;
	struct bufferevent *bev;
	SSL *ssl;

	gateway_tls_tickets_arm(gw->ssl_ctx, base);
	if ((ssl = SSL_new(gw->ssl_ctx)) == NULL)
		log_fatal("%s", gateway_tls_error("SSL_new"));
	if (SSL_set_ex_data(ssl, gateway_tls_idx_gw, gw) != 1)
		log_fatal("%s", gateway_tls_error("SSL_set_ex_data"));
	gw->connections++;
	if (gw->stopping || gw->connections > (unsigned long)gw->cfg->max_connections) {
		if (SSL_set_ex_data(ssl, gateway_tls_idx_refuse, gw) != 1)
			log_fatal("%s", gateway_tls_error("SSL_set_ex_data"));
		if (gw->refused++ % 1000 == 0)
			log_event(LOG_WARN, "connection refused: limit reached",
				  LF_INT("max_connections", gw->cfg->max_connections),
				  LF_INT("refused_total", gw->refused));
	}
	/* On failure the bufferevent frees nothing: the SSL is still ours. */
	bev = bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING,
					     BEV_OPT_CLOSE_ON_FREE);
	if (bev == NULL)
		log_fatal("cannot create TLS bufferevent");
	return bev;
}
