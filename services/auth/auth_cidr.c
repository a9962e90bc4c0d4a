/*
 * auth_cidr — source address allow-lists (tenant IP allow-list for staff, API
 * key CIDRs): parse "addr/prefix" for IPv4 and IPv6, and match an address.
 * IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) are compared as IPv4.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "auth.h"

/* Parse an address into family and 16 bytes (IPv4 in the first 4); 0 or -1. */
static int auth_cidr_addr(const char *s, int *family, uint8_t addr[16])
{
	static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

	memset(addr, 0, 16);
	if (inet_pton(AF_INET, s, addr) == 1) {
		*family = AF_INET;
		return 0;
	}
	if (inet_pton(AF_INET6, s, addr) == 1) {
		if (memcmp(addr, mapped, sizeof mapped) == 0) {
			memmove(addr, addr + 12, 4);
			memset(addr + 4, 0, 12);
			*family = AF_INET;
		} else {
			*family = AF_INET6;
		}
		return 0;
	}
	return -1;
}

/* Parse a CIDR (or a bare address). */
int auth_cidr_parse(const char *s, struct auth_cidr *out)
{
	char buf[64], *slash, *end;
	int max, bits;
	long prefix;

	if (strlen(s) >= sizeof buf)
		return -1;
	snprintf(buf, sizeof buf, "%s", s);
	slash = strchr(buf, '/');
	if (slash != NULL)
		*slash = '\0';
	if (auth_cidr_addr(buf, &out->family, out->addr) < 0)
		return -1;
	if (out->family == AF_INET && strchr(buf, ':') != NULL)
		return -1; /* a mapped address with an IPv6 prefix length: ambiguous */
	max = out->family == AF_INET ? 32 : 128;
	if (slash == NULL) {
		out->prefix = max;
		return 0;
	}
	if (slash[1] < '0' || slash[1] > '9' || (slash[1] == '0' && slash[2] != '\0'))
		return -1;
	prefix = strtol(slash + 1, &end, 10);
	if (*end != '\0' || prefix < 0 || prefix > max)
		return -1;
	out->prefix = (int)prefix;
	/* host bits must be zero: 10.0.0.1/8 is a typo, not a network */
	for (bits = out->prefix; bits < max; bits++)
		if (out->addr[bits / 8] & (0x80 >> (bits % 8)))
			return -1;
	return 0;
}

/* Is ip inside c? */
int auth_cidr_match(const struct auth_cidr *c, const char *ip)
{
	uint8_t a[16];
	int family, full, rest;

	if (ip == NULL || auth_cidr_addr(ip, &family, a) < 0 || family != c->family)
		return 0;
	full = c->prefix / 8;
	rest = c->prefix % 8;
	if (memcmp(a, c->addr, (size_t)full) != 0)
		return 0;
	if (rest != 0) {
		uint8_t mask = (uint8_t)(0xff << (8 - rest));

		if ((a[full] & mask) != (c->addr[full] & mask))
			return 0;
	}
	return 1;
}

/* Empty list = allowed; else ip must be in one entry. */
int auth_cidr_list_allows(char *const *cidrs, size_t n, const char *ip)
{
	struct auth_cidr c;

	if (n == 0)
		return 1;
	for (size_t i = 0; i < n; i++)
		if (auth_cidr_parse(cidrs[i], &c) == 0 && auth_cidr_match(&c, ip))
			return 1;
	return 0;
}
