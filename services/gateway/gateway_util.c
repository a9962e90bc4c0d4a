/*
 * gateway_util — pure helpers of the gateway: listen addresses, request ids,
 * host names and tenant hosts, redirect targets, RFC 9457 problem bodies, path
 * patterns, query strings and forms, cookies, Authorization schemes, Origin
 * checks and the hashes that key caches and rate limits.
 *
 * Nothing here touches the network or the event loop, so every function can be
 * unit-tested directly (tests/unit/test_gateway_util.c) and fed hostile input.
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "gateway.h"

/* Parse "host:port" or "[v6]:port" into host (NUL-terminated) and a port 1..65535. */
int gateway_listen_parse(const char *spec, char *host, size_t host_len, uint16_t *port_r,
			 const char **error_r)
{
	const char *colon, *hstart, *hend;
	char *end;
	unsigned long port;
	size_t n;

	if (spec == NULL || *spec == '\0') {
		*error_r = "empty address";
		return -1;
	}
	if (spec[0] == '[') {
		hstart = spec + 1;
		hend = strchr(hstart, ']');
		if (hend == NULL || hend[1] != ':') {
			*error_r = "expected [address]:port";
			return -1;
		}
		colon = hend + 1;
	} else {
		hstart = spec;
		colon = strrchr(spec, ':');
		if (colon == NULL || memchr(spec, ':', (size_t)(colon - spec)) != NULL) {
			*error_r = "expected host:port (IPv6 as [address]:port)";
			return -1;
		}
		hend = colon;
	}
	n = (size_t)(hend - hstart);
	if (n == 0 || n >= host_len) {
		*error_r = "bad host";
		return -1;
	}
	if (colon[1] < '0' || colon[1] > '9') {
		*error_r = "bad port";
		return -1;
	}
	errno = 0;
	port = strtoul(colon + 1, &end, 10);
	if (errno != 0 || *end != '\0' || port == 0 || port > 65535) {
		*error_r = "bad port";
		return -1;
	}
	memcpy(host, hstart, n);
	host[n] = '\0';
	*port_r = (uint16_t)port;
	return 0;
}

/* A client's X-Request-Id is echoed only if it is 1..64 characters of [A-Za-z0-9-]. */
bool gateway_request_id_ok(const char *id)
{
	size_t i;

	if (id == NULL || id[0] == '\0')
		return false;
	for (i = 0; id[i] != '\0'; i++) {
		char c = id[i];

		if (i >= GATEWAY_REQUEST_ID_MAX)
			return false;
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-'))
			return false;
	}
	return true;
}

/* A DNS name of letters, digits, '-' and '.': labels 1..63, not starting or ending in '-'. */
bool gateway_hostname_ok(const char *name)
{
	size_t i, label = 0;

	if (name == NULL || name[0] == '\0' || strlen(name) > GATEWAY_HOST_MAX)
		return false;
	for (i = 0; name[i] != '\0'; i++) {
		char c = name[i];

		if (c == '.') {
			if (label == 0 || name[i - 1] == '-')
				return false;
			label = 0;
			continue;
		}
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-'))
			return false;
		if (c == '-' && label == 0)
			return false;
		if (++label > 63)
			return false;
	}
	return label > 0 && name[i - 1] != '-';
}

/*
 * Decide whether a Host header names the configured domain or one of its
 * subdomains; if so copy the name (port stripped, lower-cased) into out. The
 * redirector only ever sends clients to such names, never to an arbitrary Host
 * (which would make it an open redirect).
 */
bool gateway_host_in_domain(const char *host, const char *domain, char *out, size_t out_len)
{
	char name[GATEWAY_HOST_MAX + 1];
	const char *colon;
	size_t n, dn, i;

	if (host == NULL || domain == NULL || out_len == 0)
		return false;
	colon = strchr(host, ':');
	n = colon != NULL ? (size_t)(colon - host) : strlen(host);
	if (n == 0 || n > GATEWAY_HOST_MAX)
		return false;
	if (colon != NULL) {
		/* Only a plain decimal port may follow. */
		const char *p = colon + 1;

		if (*p == '\0' || strlen(p) > 5 || strspn(p, "0123456789") != strlen(p))
			return false;
	}
	for (i = 0; i < n; i++)
		name[i] = (char)((host[i] >= 'A' && host[i] <= 'Z') ? host[i] + 32 : host[i]);
	name[n] = '\0';
	if (!gateway_hostname_ok(name))
		return false;
	dn = strlen(domain);
	if (dn == 0 || dn > n)
		return false;
	if (strcasecmp(name + (n - dn), domain) != 0)
		return false;
	if (n != dn && name[n - dn - 1] != '.')
		return false;
	if (n + 1 > out_len)
		return false;
	memcpy(out, name, n + 1);
	return true;
}

/*
 * Build "https://host[:port]uri" into out. uri is the request target as the client
 * sent it; anything but an origin-form target of visible ASCII becomes "/" so a
 * Location header can never carry a line break or another host. -1 if out is too small.
 */
int gateway_redirect_location(char *out, size_t out_len, const char *host, uint16_t https_port,
			      const char *uri)
{
	char port[8] = "";
	size_t i;
	int n;

	if (uri == NULL || uri[0] != '/' || uri[1] == '/')
		uri = "/";
	for (i = 0; uri[i] != '\0'; i++) {
		unsigned char c = (unsigned char)uri[i];

		if (c <= 0x20 || c >= 0x7f || c == '\\') {
			uri = "/";
			break;
		}
	}
	if (https_port != 443)
		snprintf(port, sizeof port, ":%u", (unsigned)https_port);
	n = snprintf(out, out_len, "https://%s%s%s", host, port, uri);
	if (n < 0 || (size_t)n >= out_len)
		return -1;
	return 0;
}

/* An RFC 9457 problem document as a malloc'd JSON string (caller frees), or NULL. */
char *gateway_problem_json(int status, const char *title, const char *detail)
{
	json_t *obj;
	char *s = NULL;

	obj = json_pack("{s:s, s:s, s:i}", "type", "about:blank", "title", title, "status", status);
	if (obj == NULL)
		return NULL;
	if (detail != NULL && json_object_set_new(obj, "detail", json_string(detail)) != 0)
		goto out;
	s = json_dumps(obj, JSON_COMPACT);
out:
	json_decref(obj);
	return s;
}

/* Milliseconds elapsed since start (CLOCK_MONOTONIC). */
double gateway_elapsed_ms(const struct timespec *start)
{
	struct timespec now;

	if (clock_gettime(CLOCK_MONOTONIC, &now) != 0)
		return 0.0;
	return (double)(now.tv_sec - start->tv_sec) * 1000.0 +
	       (double)(now.tv_nsec - start->tv_nsec) / 1e6;
}

/* 1 if c is [a-z0-9-]. */
static bool gateway_slug_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
}

/*
 * Classify a Host header against the domain: "<slug>.<region>.<domain>[:port]"
 * (GATEWAY_HOST_TENANT: slug and region filled, lower case), "<region>.<domain>"
 * (GATEWAY_HOST_REGION: region filled) or anything else (GATEWAY_HOST_OTHER).
 * Slugs are [a-z0-9-]{3,40}; regions [a-z]{2,8}. *port_r is the explicit port or 0.
 */
int gateway_host_classify(const char *host, const char *domain, char slug[GATEWAY_SLUG_MAX + 1],
			  char region[GATEWAY_REGION_MAX + 1], uint16_t *port_r)
{
	char name[GATEWAY_HOST_MAX + 1];
	const char *colon, *dot;
	size_t n, dn, sn, rn, i;

	slug[0] = '\0';
	region[0] = '\0';
	*port_r = 0;
	if (!gateway_host_in_domain(host, domain, name, sizeof name))
		return GATEWAY_HOST_OTHER;
	colon = strchr(host, ':');
	if (colon != NULL)
		*port_r = (uint16_t)strtoul(colon + 1, NULL, 10);
	n = strlen(name);
	dn = strlen(domain);
	if (n <= dn + 1)
		return GATEWAY_HOST_OTHER;
	n -= dn + 1; /* name[0..n) is what precedes ".<domain>" */
	dot = memchr(name, '.', n);
	if (dot == NULL) {
		sn = 0;
		rn = n;
	} else {
		sn = (size_t)(dot - name);
		rn = n - sn - 1;
		if (memchr(dot + 1, '.', rn) != NULL)
			return GATEWAY_HOST_OTHER;
	}
	if (rn < 2 || rn > GATEWAY_REGION_MAX)
		return GATEWAY_HOST_OTHER;
	for (i = 0; i < rn; i++)
		if (name[n - rn + i] < 'a' || name[n - rn + i] > 'z')
			return GATEWAY_HOST_OTHER;
	memcpy(region, name + n - rn, rn);
	region[rn] = '\0';
	if (dot == NULL)
		return GATEWAY_HOST_REGION;
	if (sn < 3 || sn > GATEWAY_SLUG_MAX)
		goto other;
	for (i = 0; i < sn; i++)
		if (!gateway_slug_char(name[i]))
			goto other;
	memcpy(slug, name, sn);
	slug[sn] = '\0';
	return GATEWAY_HOST_TENANT;
other:
	region[0] = '\0';
	return GATEWAY_HOST_OTHER;
}

/* Value of a hex digit, or -1. */
static int gateway_hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/*
 * Percent-decode in[0..len) into out (NUL-terminated); '+' is a space when
 * plus_space (forms, query strings). -1 on a bad escape, a decoded NUL, or when
 * out is too small. The result is not UTF-8 checked here.
 */
int gateway_urldecode(const char *in, size_t len, char *out, size_t out_len, bool plus_space)
{
	size_t i, o = 0;

	for (i = 0; i < len; i++) {
		char c = in[i];

		if (o + 1 >= out_len)
			return -1;
		if (c == '%') {
			int hi, lo;

			if (i + 2 >= len)
				return -1;
			hi = gateway_hexval(in[i + 1]);
			lo = gateway_hexval(in[i + 2]);
			if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
				return -1;
			out[o++] = (char)(hi * 16 + lo);
			i += 2;
		} else if (c == '+' && plus_space) {
			out[o++] = ' ';
		} else if (c == '\0') {
			return -1;
		} else {
			out[o++] = c;
		}
	}
	out[o] = '\0';
	return 0;
}

/*
 * Split "k=v&k2=v2" (a query string or an x-www-form-urlencoded body) and call
 * cb(arg, key, value) with each decoded pair. Refused (-1, *why_r): more than
 * GATEWAY_PARAMS_MAX pairs, a key or value over GATEWAY_PARAM_MAX bytes, bad
 * escapes, an empty key, a key given twice. cb returning -1 stops with its *why_r.
 */
int gateway_params_each(const char *s, size_t len,
			int (*cb)(void *arg, const char *key, const char *value, const char **why_r),
			void *arg, const char **why_r)
{
	char key[GATEWAY_PARAM_MAX + 1], value[GATEWAY_PARAM_MAX + 1];
	char seen[GATEWAY_PARAMS_MAX][64];
	size_t n = 0, pos = 0;

	while (pos < len) {
		const char *pair = s + pos, *amp, *eq;
		size_t plen, klen;

		amp = memchr(pair, '&', len - pos);
		plen = amp != NULL ? (size_t)(amp - pair) : len - pos;
		pos += plen + 1;
		if (plen == 0)
			continue;
		if (n >= GATEWAY_PARAMS_MAX) {
			*why_r = "too many parameters";
			return -1;
		}
		eq = memchr(pair, '=', plen);
		klen = eq != NULL ? (size_t)(eq - pair) : plen;
		if (klen == 0 || gateway_urldecode(pair, klen, key, sizeof key, true) < 0) {
			*why_r = "malformed parameter name";
			return -1;
		}
		if (gateway_urldecode(eq != NULL ? eq + 1 : pair + plen,
				      eq != NULL ? plen - klen - 1 : 0, value, sizeof value,
				      true) < 0) {
			*why_r = "malformed parameter value";
			return -1;
		}
		if (strlen(key) >= sizeof seen[0]) {
			*why_r = "parameter name too long";
			return -1;
		}
		for (size_t i = 0; i < n; i++)
			if (strcmp(seen[i], key) == 0) {
				*why_r = "parameter given twice";
				return -1;
			}
		memcpy(seen[n], key, strlen(key) + 1);
		n++;
		if (cb(arg, key, value, why_r) < 0)
			return -1;
	}
	return 0;
}

/*
 * Match path against a route pattern ("/api/v1/users/{id}"): literal segments
 * compare exactly, a {name} segment matches one non-empty segment, which is
 * percent-decoded into params (at most GATEWAY_PATH_PARAMS). true on a match.
 */
bool gateway_path_match(const char *pattern, const char *path, struct gateway_param *params,
			size_t *n_r)
{
	size_t n = 0;

	*n_r = 0;
	if (pattern == NULL || path == NULL || pattern[0] != '/' || path[0] != '/')
		return false;
	while (*pattern != '\0' && *path != '\0') {
		size_t pl, sl;

		if (*pattern != '/' || *path != '/')
			return false;
		pattern++;
		path++;
		pl = strcspn(pattern, "/");
		sl = strcspn(path, "/");
		if (pl >= 2 && pattern[0] == '{' && pattern[pl - 1] == '}') {
			if (sl == 0 || n >= GATEWAY_PATH_PARAMS || pl - 2 >= sizeof params[n].name)
				return false;
			memcpy(params[n].name, pattern + 1, pl - 2);
			params[n].name[pl - 2] = '\0';
			if (gateway_urldecode(path, sl, params[n].value, sizeof params[n].value,
					      false) < 0 ||
			    strchr(params[n].value, '/') != NULL)
				return false;
			n++;
		} else if (pl != sl || memcmp(pattern, path, pl) != 0) {
			return false;
		}
		pattern += pl;
		path += sl;
	}
	if (*pattern != '\0' || *path != '\0')
		return false;
	*n_r = n;
	return true;
}

/* Copy the value of cookie name from a Cookie header into out; false if absent or too long. */
bool gateway_cookie_get(const char *header, const char *name, char *out, size_t out_len)
{
	size_t nl = strlen(name);
	const char *p = header;

	while (p != NULL && *p != '\0') {
		size_t vl;

		p += strspn(p, " \t;");
		if (strncmp(p, name, nl) == 0 && p[nl] == '=') {
			p += nl + 1;
			vl = strcspn(p, ";");
			while (vl > 0 && (p[vl - 1] == ' ' || p[vl - 1] == '\t'))
				vl--;
			if (vl >= 2 && p[0] == '"' && p[vl - 1] == '"') {
				p++;
				vl -= 2;
			}
			if (vl == 0 || vl >= out_len)
				return false;
			memcpy(out, p, vl);
			out[vl] = '\0';
			return true;
		}
		p = strchr(p, ';');
	}
	return false;
}

/* 1 if c may appear in a token68 (RFC 7235) credential. */
static bool gateway_token68_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       strchr("-._~+/=", c) != NULL;
}

/*
 * Parse "Authorization: <scheme> <token68>" for scheme ("Bearer", "Basic";
 * case-insensitive): copy the credential into out. false if the scheme differs
 * or the credential is empty, too long or has characters token68 does not allow.
 */
bool gateway_auth_scheme(const char *header, const char *scheme, char *out, size_t out_len)
{
	size_t sl = strlen(scheme), n;

	if (header == NULL || strncasecmp(header, scheme, sl) != 0 || header[sl] != ' ')
		return false;
	header += sl;
	header += strspn(header, " ");
	n = strlen(header);
	while (n > 0 && header[n - 1] == ' ')
		n--;
	if (n == 0 || n >= out_len)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!gateway_token68_char(header[i]))
			return false;
	memcpy(out, header, n);
	out[n] = '\0';
	return true;
}

/*
 * HTTP Basic client authentication (RFC 6749 2.3.1): base64 of
 * urlencode(client_id) ":" urlencode(client_secret). Fills both (decoded,
 * NUL-terminated); -1 if malformed or too long. The caller wipes secret.
 */
int gateway_basic_decode(const char *b64, char *id, size_t id_len, char *secret,
			 size_t secret_len)
{
	unsigned char raw[GATEWAY_CRED_MAX];
	size_t n = strlen(b64), pad = 0;
	int dl;
	const char *colon;
	int ret = -1;

	if (n == 0 || n % 4 != 0 || n / 4 * 3 >= sizeof raw)
		return -1;
	if (b64[n - 1] == '=')
		pad++;
	if (n > 1 && b64[n - 2] == '=')
		pad++;
	dl = EVP_DecodeBlock(raw, (const unsigned char *)b64, (int)n);
	if (dl < 0 || (size_t)dl < pad)
		goto out;
	dl -= (int)pad;
	raw[dl] = '\0';
	if (memchr(raw, '\0', (size_t)dl) != NULL)
		goto out;
	colon = memchr(raw, ':', (size_t)dl);
	if (colon == NULL || colon == (const char *)raw)
		goto out;
	if (gateway_urldecode((const char *)raw, (size_t)(colon - (const char *)raw), id, id_len,
			      true) < 0 ||
	    gateway_urldecode(colon + 1, (size_t)dl - (size_t)(colon + 1 - (const char *)raw),
			      secret, secret_len, true) < 0)
		goto out;
	ret = 0;
out:
	OPENSSL_cleanse(raw, sizeof raw);
	return ret;
}

/*
 * Is origin ("https://name[:port]") the tenant's own origin: scheme https, the
 * same host name (case-insensitive) and the same port (443 when absent) as the
 * request's Host header? Anything else, "null" included, is foreign.
 */
bool gateway_origin_same(const char *origin, const char *host)
{
	const char *o, *oc, *hc;
	size_t on, hn;
	unsigned long op = 443, hp = 443;

	if (origin == NULL || host == NULL || strncasecmp(origin, "https://", 8) != 0)
		return false;
	o = origin + 8;
	oc = strchr(o, ':');
	hc = strchr(host, ':');
	on = oc != NULL ? (size_t)(oc - o) : strlen(o);
	hn = hc != NULL ? (size_t)(hc - host) : strlen(host);
	if (on == 0 || on != hn || strncasecmp(o, host, on) != 0)
		return false;
	if (strchr(o, '/') != NULL)
		return false;
	if (oc != NULL) {
		char *end;

		if (oc[1] < '0' || oc[1] > '9')
			return false;
		op = strtoul(oc + 1, &end, 10);
		if (*end != '\0')
			return false;
	}
	if (hc != NULL)
		hp = strtoul(hc + 1, NULL, 10);
	return op == hp;
}

/* "https://<slug>.<region>.<domain>[:port]" (port omitted when 443) into out; -1 if too small. */
int gateway_base_url(char *out, size_t out_len, const char *slug, const char *region,
		     const char *domain, uint16_t port)
{
	char p[8] = "";
	int n;

	if (port != 443 && port != 0)
		snprintf(p, sizeof p, ":%u", (unsigned)port);
	n = snprintf(out, out_len, "https://%s.%s.%s%s", slug, region, domain, p);
	return n < 0 || (size_t)n >= out_len ? -1 : 0;
}

/* Lower-case hex SHA-256 of the parts joined by '\n' (cache and rate-limit keys). */
void gateway_key_hash(char out[65], const char *const *parts, size_t n)
{
	/* Fetched and made once: an implicit fetch (EVP_sha256()) and a new context per
	 * call cost more than the hash of these few bytes. Single-threaded. */
	static EVP_MD *sha256;
	static EVP_MD_CTX *ctx;
	unsigned char md[32];
	unsigned int mdlen = 0;
	static const char hexd[] = "0123456789abcdef";

	if (sha256 == NULL && (sha256 = EVP_MD_fetch(NULL, "SHA256", NULL)) == NULL)
		abort();
	if (ctx == NULL && (ctx = EVP_MD_CTX_new()) == NULL)
		abort();
	if (EVP_DigestInit_ex(ctx, sha256, NULL) != 1)
		abort();
	for (size_t i = 0; i < n; i++) {
		const char *p = parts[i] != NULL ? parts[i] : "";

		if (EVP_DigestUpdate(ctx, p, strlen(p) + 1) != 1) /* the NUL separates */
			abort();
	}
	if (EVP_DigestFinal_ex(ctx, md, &mdlen) != 1 || mdlen != 32)
		abort();
	for (size_t i = 0; i < 32; i++) {
		out[2 * i] = hexd[md[i] >> 4];
		out[2 * i + 1] = hexd[md[i] & 15];
	}
	out[64] = '\0';
}

/* Config validator: a listen address we can parse (absent: fine). */
int gateway_conf_valid_listen(const void *value, const char **reason_r)
{
	const char *const *s = value;
	char host[GATEWAY_HOST_MAX + 1];
	uint16_t port;

	if (*s == NULL)
		return 0;
	return gateway_listen_parse(*s, host, sizeof host, &port, reason_r);
}

/* Config validator: a DNS name (absent: fine). */
int gateway_conf_valid_domain(const void *value, const char **reason_r)
{
	const char *const *s = value;

	if (*s != NULL && !gateway_hostname_ok(*s)) {
		*reason_r = "not a valid DNS name";
		return -1;
	}
	return 0;
}
