/*
 * policy_acl — the Redis ACL file (users.acl) of a cell, from the policy.
 *
 * The default user is off with no password and no rights. "admin" (the cell's
 * bootstrap superuser, used only to create consumer groups and by the dev stack)
 * gets everything. Each principal gets PING/AUTH/HELLO with no key, and one
 * Redis 7 selector per key class with only the commands that class needs:
 *   (~q:X  XREADGROUP XACK XDEL XAUTOCLAIM XPENDING XLEN)  queues it consumes
 *                                                      (XREADGROUP writes, so full ~;
 *                                                      XDEL of what it acked)
 *   (%W~q:T %W~r:S:* %W~dl:X  XADD)                    sends, replies, dead letters
 *   (~r:X:*  XREAD XLEN DEL EXPIRE)                    its own reply streams
 *   (%W~hb:X:*  SET EXPIRE DEL)                        its heartbeats
 *   (~rl:X:*  INCR PEXPIRE GET)                        rate-limit counters, only with
 *                                                      redis.ratelimit: true (gateway)
 *   (~memo:X:*  SET GET EXISTS)                        what it must remember a while,
 *                                                      only with redis.memo: true
 *                                                      (mail-out: Message-IDs it sent)
 * dl:X is X's if it consumes, or with redis.dead_letters: true (mail-ingest: what
 * it accepted and could not deliver).
 * so a sender can append to a queue but never delete, overwrite or ack it.
 * Passwords appear only as SHA-256 (#<hex>).
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "crypto.h"
#include "policy.h"

/* Commands allowed with no key, then per key class (Redis 7 selectors), so a
 * sender's write access to a queue is XADD only: no DEL, SET or XACK on it. */
#define ACL_ROOT "-@all +ping +auth +hello"
#define ACL_CONSUME "+xreadgroup +xack +xdel +xautoclaim +xpending +xlen"
#define ACL_SEND "+xadd"
#define ACL_OWN_REPLY "+xread +xlen +del +expire"
#define ACL_HEARTBEAT "+set +expire +del"
/* Sliding-window counters (services/gateway/gateway_ratelimit.c): no EVAL, no SET. */
#define ACL_RATELIMIT "+incr +pexpire +get +mget"
/* Keys a service remembers for a while (ward-mail-out: the Message-IDs it sent). */
#define ACL_MEMO "+set +get +exists"

#define ACL_HEALTH_KEYS "+get +ttl +exists"
/* XLEN: a queue's depth (consumers delete what they handled), XPENDING: how much of
 * it is delivered and not acked; no entry. */
#define ACL_HEALTH_STREAMS "+xlen +xpending"
/* The operator's reads, for status-style commands. */
#define ACL_OPERATOR_ROOT " +scan"
#define ACL_OPERATOR_READ "+get +ttl +exists +xlen +xrange +xrevrange +xpending +xinfo|stream"

/* SHA-256 hex of the password in file name (trailing newline stripped). */
static int acl_password_hash(int dirfd, const char *name, char hex[65], const char **error_r)
{
	char *buf = NULL;
	size_t len = 0;
	uint8_t digest[32];
	int ret = -1;

	if (policy_file_read(dirfd, name, 4096, &buf, &len, error_r) < 0)
		return -1;
	while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
		len--;
	if (len < 16) {
		*error_r = "password too short";
		goto out;
	}
	for (size_t i = 0; i < len; i++)
		if (buf[i] <= ' ' || buf[i] > '~') {
			*error_r = "password must be printable without spaces";
			goto out;
		}
	if (crypto_sha256(buf, len, digest) < 0) {
		*error_r = "sha256 failed";
		goto out;
	}
	crypto_hex(digest, sizeof digest, hex);
	ret = 0;
out:
	crypto_wipe(buf, len);
	free(buf);
	return ret;
}

/* The ACL line of one principal: commands by key class, one selector each. */
static void acl_principal(const struct policy *pol, const struct policy_principal *p,
			  const char *hash, FILE *out)
{
	fprintf(out, "user %s on #%s resetchannels resetkeys " ACL_ROOT, p->name, hash);
	if (p->operator)
		fputs(ACL_OPERATOR_ROOT, out);
	if (p->n_consume > 0) {
		fputs(" (", out);
		for (size_t i = 0; i < p->n_consume; i++)
			fprintf(out, "~%s ", p->consume[i]);
		fputs(ACL_CONSUME ")", out);
	}
	/* Sends, the replies to everyone who sends to its queues, its dead letters. */
	fputs(" (", out);
	for (size_t i = 0; i < p->n_send; i++)
		fprintf(out, "%%W~%s ", p->send[i]);
	for (size_t j = 0; j < pol->n; j++) {
		int sends = 0;

		for (size_t i = 0; i < p->n_consume; i++)
			if (policy_sends_to(&pol->p[j], p->consume[i]))
				sends = 1;
		if (sends)
			fprintf(out, "%%W~r:%s:* ", pol->p[j].name);
	}
	if (p->n_consume > 0 || p->dead_letters)
		fprintf(out, "%%W~dl:%s ", p->name);
	fputs(ACL_SEND ")", out);
	fprintf(out, " (~r:%s:* " ACL_OWN_REPLY ")", p->name);
	fprintf(out, " (%%W~hb:%s:* " ACL_HEARTBEAT ")", p->name);
	if (p->ratelimit)
		fprintf(out, " (~rl:%s:* " ACL_RATELIMIT ")", p->name);
	if (p->memo)
		fprintf(out, " (~memo:%s:* " ACL_MEMO ")", p->name);
	/* Health readers (the status page) see heartbeats, queue lengths and pending
	 * counts, never an entry of a queue. */
	if (p->operator && p->health_only)
		fputs(" (%R~hb:* " ACL_HEALTH_KEYS ") (%R~dl:* %R~q:* " ACL_HEALTH_STREAMS ")", out);
	else if (p->operator)
		fputs(" (%R~hb:* %R~dl:* %R~q:* " ACL_OPERATOR_READ ")", out);
	fputc('\n', out);
}

int policy_redis_acl(const struct policy *pol, const char *dir, FILE *out, const char **error_r)
{
	int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	char hash[65];
	static __thread char msg[128];
	const char *err = NULL;
	int ret = -1;

	if (dirfd < 0) {
		*error_r = "cannot open the secrets directory";
		return -1;
	}
	/* Redis ACL files take no comments: every line is a user. */
	fputs("user default off resetpass resetkeys resetchannels -@all\n", out);
	if (acl_password_hash(dirfd, "redis-admin", hash, &err) < 0) {
		snprintf(msg, sizeof msg, "redis-admin: %s", err);
		*error_r = msg;
		goto out;
	}
	fprintf(out, "user admin on #%s ~* &* +@all\n", hash);
	for (size_t i = 0; i < pol->n; i++) {
		char name[POLICY_NAME_MAX + 8];

		snprintf(name, sizeof name, "redis-%s", pol->p[i].name);
		if (acl_password_hash(dirfd, name, hash, &err) < 0) {
			snprintf(msg, sizeof msg, "%s: %s", name, err);
			*error_r = msg;
			goto out;
		}
		acl_principal(pol, &pol->p[i], hash, out);
	}
	ret = 0;
out:
	close(dirfd);
	return ret;
}

void policy_streams(const struct policy *pol, FILE *out)
{
	for (size_t i = 0; i < pol->n; i++)
		for (size_t j = 0; j < pol->p[i].n_consume; j++)
			fprintf(out, "%s %s\n", pol->p[i].consume[j], pol->p[i].name);
}
