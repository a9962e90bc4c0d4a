/*
 * backup_seed — benchmark helper (tests/bench/backup.sh): give a tenant N tickets,
 * each with one message, sealed exactly as ward-ticket seals them: the tenant's
 * newest DEK unwrapped with the region KEK (context = tenant id), subject and body
 * sealed with crypto_seal under AAD "<tenant>|ticket.tickets|subject_enc|<id>" and
 * "<tenant>|ticket.messages|body_enc|<id>" (services/ticket/ticket_keys.c), loaded
 * with COPY as the cell's superuser, the tenant's ticket counter moved past them.
 * Nothing is stored in clear; the bench reads a seeded ticket back through the API.
 *
 *   backup_seed CONNINFO KEK_FILE TENANT_ID N
 */
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crypto.h"

/* A random version-4 UUID in text form. */
static int seed_uuid(char out[37])
{
	uint8_t b[16];
	char h[33];

	if (crypto_random(b, sizeof b) < 0)
		return -1;
	b[6] = (uint8_t)((b[6] & 0x0f) | 0x40);
	b[8] = (uint8_t)((b[8] & 0x3f) | 0x80);
	crypto_hex(b, 16, h);
	snprintf(out, 37, "%.8s-%.4s-%.4s-%.4s-%.12s", h, h + 8, h + 12, h + 16, h + 20);
	return 0;
}

/* Seal pt for (table, column, row) and append it as COPY text bytea ("\\x…"). */
static int seed_sealed(FILE *f, const uint8_t dek[CRYPTO_KEY_LEN], uint32_t version,
		       const char *tenant, const char *table, const char *column, const char *row,
		       const char *pt)
{
	char aad[256];
	uint8_t *out = NULL;
	size_t len = 0;
	int n = snprintf(aad, sizeof aad, "%s|%s|%s|%s", tenant, table, column, row);

	if (n < 0 || (size_t)n >= sizeof aad ||
	    crypto_seal(dek, version, aad, (size_t)n, pt, strlen(pt), &out, &len) < 0)
		return -1;
	fputs("\\\\x", f);
	for (size_t i = 0; i < len; i++)
		fprintf(f, "%02x", out[i]);
	free(out);
	return 0;
}

/* COPY the buffer into table (columns). */
static int seed_copy(PGconn *pg, const char *sql, const char *buf, size_t len)
{
	PGresult *res = PQexec(pg, sql);
	int ok = PQresultStatus(res) == PGRES_COPY_IN;

	PQclear(res);
	if (!ok || PQputCopyData(pg, buf, (int)len) != 1 || PQputCopyEnd(pg, NULL) != 1)
		return -1;
	res = PQgetResult(pg);
	ok = PQresultStatus(res) == PGRES_COMMAND_OK;
	if (!ok)
		fprintf(stderr, "backup_seed: %s", PQerrorMessage(pg));
	PQclear(res);
	while ((res = PQgetResult(pg)) != NULL)
		PQclear(res);
	return ok ? 0 : -1;
}

int main(int argc, char **argv)
{
	uint8_t kek[CRYPTO_KEY_LEN], dek[CRYPTO_KEY_LEN], *wrapped = NULL;
	const char *params[1];
	char *tb = NULL, *mb = NULL, sql[256];
	size_t tlen = 0, mlen = 0, wlen = 0;
	FILE *kf, *tf = NULL, *mf = NULL;
	PGconn *pg = NULL;
	PGresult *res = NULL;
	uint32_t version;
	long n, base;
	int ret = 1;

	if (argc != 5 || (n = strtol(argv[4], NULL, 10)) <= 0 || n > 10000000) {
		fprintf(stderr, "usage: backup_seed CONNINFO KEK_FILE TENANT_ID N\n");
		return 2;
	}
	kf = fopen(argv[2], "rb");
	if (kf == NULL || fread(kek, 1, sizeof kek, kf) != sizeof kek) {
		fprintf(stderr, "backup_seed: cannot read the KEK\n");
		if (kf != NULL)
			fclose(kf);
		return 1;
	}
	fclose(kf);
	pg = PQconnectdb(argv[1]);
	if (PQstatus(pg) != CONNECTION_OK) {
		fprintf(stderr, "backup_seed: %s", PQerrorMessage(pg));
		goto out;
	}
	params[0] = argv[3];
	res = PQexecParams(pg,
			   "SELECT version, wrapped, coalesce((SELECT last_number FROM ticket.counters"
			   " WHERE tenant_id = $1), 0) FROM tenant.keys WHERE tenant_id = $1 AND"
			   " wrapped IS NOT NULL ORDER BY version DESC LIMIT 1",
			   1, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
		fprintf(stderr, "backup_seed: no live key for tenant %s\n", argv[3]);
		goto out;
	}
	version = (uint32_t)strtoul(PQgetvalue(res, 0, 0), NULL, 10);
	base = strtol(PQgetvalue(res, 0, 2), NULL, 10);
	wrapped = PQunescapeBytea((const unsigned char *)PQgetvalue(res, 0, 1), &wlen);
	if (wrapped == NULL || crypto_unwrap_key(kek, argv[3], wrapped, wlen, dek, NULL) < 0) {
		fprintf(stderr, "backup_seed: cannot unwrap the tenant's key\n");
		goto out;
	}
	PQclear(res);
	res = NULL;
	tf = open_memstream(&tb, &tlen);
	mf = open_memstream(&mb, &mlen);
	if (tf == NULL || mf == NULL)
		goto out;
	for (long i = 1; i <= n; i++) {
		char tid[37], mid[37], subject[128], body[512];

		if (seed_uuid(tid) < 0 || seed_uuid(mid) < 0)
			goto out;
		snprintf(subject, sizeof subject, "Printer on fire in room %ld", i);
		snprintf(body, sizeof body,
			 "The printer in room %ld is on fire again. It started after the last "
			 "toner change; the smoke alarm went off twice. Please send someone with "
			 "an extinguisher and a new printer.",
			 i);
		fprintf(tf, "%s\t%s\t%ld\t", tid, argv[3], base + i);
		if (seed_sealed(tf, dek, version, argv[3], "ticket.tickets", "subject_enc", tid,
				subject) < 0)
			goto out;
		fputs("\tservice:bench\n", tf);
		fprintf(mf, "%s\t%s\t%s\tservice:bench\tagent\t", mid, argv[3], tid);
		if (seed_sealed(mf, dek, version, argv[3], "ticket.messages", "body_enc", mid,
				body) < 0)
			goto out;
		fputc('\n', mf);
	}
	if (fclose(tf) != 0 || fclose(mf) != 0) {
		tf = mf = NULL;
		goto out;
	}
	tf = mf = NULL;
	res = PQexec(pg, "BEGIN");
	PQclear(res);
	res = NULL;
	if (seed_copy(pg, "COPY ticket.tickets (id, tenant_id, number, subject_enc, created_by)"
			  " FROM STDIN", tb, tlen) < 0 ||
	    seed_copy(pg, "COPY ticket.messages (id, tenant_id, ticket_id, author_id, "
			  "author_role, body_enc) FROM STDIN", mb, mlen) < 0)
		goto out;
	snprintf(sql, sizeof sql,
		 "INSERT INTO ticket.counters (tenant_id, last_number) VALUES ('%s', %ld) "
		 "ON CONFLICT (tenant_id) DO UPDATE SET last_number = EXCLUDED.last_number",
		 argv[3], base + n);
	if (strspn(argv[3], "0123456789abcdef-") != strlen(argv[3]))
		goto out;
	res = PQexec(pg, sql);
	if (PQresultStatus(res) != PGRES_COMMAND_OK) {
		fprintf(stderr, "backup_seed: %s", PQerrorMessage(pg));
		goto out;
	}
	PQclear(res);
	res = PQexec(pg, "COMMIT");
	if (PQresultStatus(res) != PGRES_COMMAND_OK)
		goto out;
	printf("{\"tickets\":%ld,\"messages\":%ld}\n", n, n);
	ret = 0;
out:
	if (tf != NULL)
		fclose(tf);
	if (mf != NULL)
		fclose(mf);
	free(tb);
	free(mb);
	PQfreemem(wrapped);
	PQclear(res);
	PQfinish(pg);
	crypto_wipe(dek, sizeof dek);
	crypto_wipe(kek, sizeof kek);
	return ret;
}
