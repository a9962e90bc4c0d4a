/*
 * gateway_util — pure helpers of the gateway: listen addresses, request ids,
 * host names, redirect targets and RFC 9457 problem bodies.
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
