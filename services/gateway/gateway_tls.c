/*
 * gateway_tls — the HTTPS side of the gateway: one OpenSSL 3 server context and a
 * TLS bufferevent per accepted connection, handed to evhttp through its bevcb.
 *
 * Policy: TLS 1.2 and 1.3 only; TLS 1.2 limited to ECDHE key exchange with AEAD
 * ciphers; no compression, no renegotiation, the server's cipher order; session
 * tickets on (OpenSSL keeps and rotates the ticket keys per context); ALPN, when
 * offered, can only agree on http/1.1 (evhttp speaks nothing else).
 *
 * Connection cap: evhttp has none, and gives no hook when a connection ends. Each
 * SSL object carries the gateway in ex_data; the ex_data free callback runs when
 * the SSL is freed with its bufferevent, so the live count is exact whatever way a
 * connection ends. A connection accepted over max_connections gets a bufferevent
 * all the same (evhttp would otherwise fall back to plain HTTP on this port) but is
 * marked, and the ClientHello callback aborts its handshake with an alert.
 */
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <string.h>

#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>

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

/* ClientHello: abort the handshake of a connection accepted over the cap. */
static int gateway_tls_client_hello(SSL *ssl, int *alert, void *arg)
{
	if (SSL_get_ex_data(ssl, gateway_tls_idx_refuse) != NULL) {
		*alert = SSL_AD_INTERNAL_ERROR;
		return SSL_CLIENT_HELLO_ERROR;
	}
	return SSL_CLIENT_HELLO_SUCCESS;
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
	if (gateway_tls_idx_gw < 0 || gateway_tls_idx_refuse < 0) {
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
