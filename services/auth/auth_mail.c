/*
 * auth_mail — auth.mail_customer: the account of an inbound mail's sender.
 *
 * ward-mail-ingest asks it (principal kind "service", id "mail-ingest"; the
 * skeleton checked that the envelope's sender is that service) before it hands a
 * spooled mail to ward-ticket, so that an unknown sender becomes a customer of
 * the recipient tenant (SPEC §6) and the ticket's requester. Accounts are
 * ward-auth's: ward-ticket only reads auth.users (id, email_bidx, role,
 * disabled) to tell agents from customers.
 *
 * Idempotent without a processed mark: the account is keyed on (tenant, blind
 * index of the address) — INSERT … ON CONFLICT DO NOTHING, then read it back —
 * so a redelivered request, a replayed spool file or two mails of the same new
 * sender at once give one account. An existing account (agent, admin, disabled
 * customer) is answered as it is, never changed. A created customer has no
 * password (it may sign in once it sets one through the usual recovery) and
 * produces one audit event (user create, actor service:mail-ingest).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "auth.h"
#include "crypto.h"
#include "daemon.h"
#include "mail.pb-c.h"

/* A display name we can keep: 1 to 200 bytes, no control characters. */
static int auth_mail_name_ok(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > 200)
		return 0;
	for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++)
		if (*p < 0x20 || *p == 0x7f)
			return 0;
	return 1;
}

/* Read the account of bidx into id/role; 1 found, 0 none, -1 error. With
 * commit, the statement ends the transaction too (one round trip with BEGIN and
 * COMMIT when it is the first): the usual case, an address that has an account. */
static int auth_mail_find(struct auth_req *r, const char *bidx, char id[AUTH_UUID_LEN + 1],
			  char role[16], bool commit, const char **error_r)
{
	static const char sql[] = "SELECT id, role FROM auth.users WHERE email_bidx = $1";
	const char *p[1] = { bidx };
	PGresult *res = commit ? db_exec_commit(r->db, sql, 1, p, error_r)
			       : db_exec(r->db, sql, 1, p, error_r);
	int found;

	if (res == NULL)
		return -1;
	found = PQntuples(res) == 1;
	if (found) {
		snprintf(id, AUTH_UUID_LEN + 1, "%s", PQgetvalue(res, 0, 0));
		snprintf(role, 16, "%s", PQgetvalue(res, 0, 1));
	}
	PQclear(res);
	return found;
}

AUTH_HANDLER(auth_mail_customer)
{
	Ward__MailCustomerRequest *req;
	Ward__MailCustomerReply out = WARD__MAIL_CUSTOMER_REPLY__INIT;
	struct auth_req r;
	char id[AUTH_UUID_LEN + 1], email[AUTH_EMAIL_MAX + 1], bidx[65], role[16] = "",
		target[64];
	uint8_t *eenc = NULL, *nenc = NULL;
	size_t eenc_len = 0, nenc_len = 0;
	const char *err = NULL;
	bool created = false;
	queue_result_t ret;
	int found;

	if (!auth_sender_is(env, "mail-ingest") || env->principal == NULL ||
	    env->principal->kind == NULL || strcmp(env->principal->kind, "service") != 0)
		return auth_problem(reply, 403, "Forbidden", "auth.mail_customer is for mail-ingest");
	req = ward__mail_customer_request__unpack(NULL, len, payload);
	if (req == NULL)
		return auth_problem(reply, 400, "Bad Request", "malformed request");
	if (!auth_email_normalize(req->email, email)) {
		static const struct auth_rule_error e = { "email", "not an email address" };

		ret = auth_problem_rules(reply, 422, "Unprocessable Content", &e, 1);
		goto out_req;
	}
	if (auth_begin(&r, d, env, &err) < 0) {
		ret = auth_fail(reply, "mail customer: begin", err);
		goto out_req;
	}
	if (auth_email_bidx(&r, email, bidx) < 0) {
		err = "cannot compute the blind index";
		goto fail;
	}
	/* read and committed at once: nothing to write when the account exists */
	found = auth_mail_find(&r, bidx, id, role, true, &err);
	if (found < 0) {
		ret = auth_fail(reply, "mail customer", err);
		goto out;
	}
	if (found == 0) {
		const char *name = auth_mail_name_ok(req->name) ? req->name : "";
		PGresult *res;

		/* a transaction of its own for the account (a concurrent twin may
		 * create it first: ON CONFLICT below, then read back) */
		if (auth_begin(&r, d, env, &err) < 0)
			goto fail;
		if (auth_uuid_random(id) < 0 ||
		    auth_seal(&r, "auth.users", "email_enc", id, email, strlen(email), &eenc,
			      &eenc_len) < 0 ||
		    (name[0] != '\0' && auth_seal(&r, "auth.users", "name_enc", id, name,
						  strlen(name), &nenc, &nenc_len) < 0)) {
			err = "cannot seal";
			goto fail;
		}
		{
			const char *params[5] = { id, r.tenant, (const char *)eenc, bidx,
						  (const char *)nenc };
			const int lens[5] = { 0, 0, (int)eenc_len, 0, (int)nenc_len };
			const int fmts[5] = { 0, 0, 1, 0, 1 };

			/* a concurrent twin may win the unique (tenant, email_bidx) */
			res = db_exec_bin(r.db,
					  "INSERT INTO auth.users (id, tenant_id, email_enc, "
					  "email_bidx, name_enc, role) VALUES ($1, $2, $3, $4, $5, "
					  "'customer') ON CONFLICT (tenant_id, email_bidx) DO NOTHING "
					  "RETURNING id",
					  5, params, lens, fmts, &err);
		}
		if (res == NULL)
			goto fail;
		created = PQntuples(res) == 1;
		PQclear(res);
		if (created) {
			snprintf(role, sizeof role, "customer");
			snprintf(target, sizeof target, "user:%s", id);
			if (auth_audit(&r, "user", "create", NULL, target, NULL,
				       "{\"role\":\"customer\",\"via\":\"mail\"}", &err) < 0)
				goto fail;
		} else if ((found = auth_mail_find(&r, bidx, id, role, false, &err)) <= 0) {
			if (found == 0)
				err = "the account vanished";
			goto fail;
		}
	}
	if (created && auth_commit(&r, &err) < 0) {
		ret = auth_fail(reply, "mail customer: commit", err);
		goto out;
	}
	if (!created && db_in_transaction(r.db))
		db_rollback(r.db); /* a twin created it: nothing of ours to keep */
	out.user_id = id;
	out.role = role;
	out.created = created;
	ret = auth_reply(reply, &out.base);
	goto out;
fail:
	auth_rollback(&r);
	ret = auth_fail(reply, "mail customer", err);
out:
	/* the DEK too: the usual path ends with db_exec_commit, not auth_commit */
	crypto_wipe(r.dek, sizeof r.dek);
	crypto_wipe(r.blind_root, sizeof r.blind_root);
	free(eenc);
	free(nenc);
out_req:
	crypto_wipe(email, sizeof email);
	ward__mail_customer_request__free_unpacked(req, NULL);
	return ret;
}

/* ============================== auth.mail_recipient ===================== */

/*
 * Does <local>@<slug>.<region>.<domain> reach a tenant of this cell? The tenant
 * must be homed here and active and list local in tenant.tenants.mail_local_parts:
 * auth.mail_recipient (deploy/sql/092_mail_recipient.sql, a function that runs as
 * its owner and answers that question only), one statement, no transaction.
 * Anything else answers tenant_id "" (mail-ingest: 550).
 */
AUTH_HANDLER(auth_mail_recipient)
{
	Ward__MailRecipientRequest *req;
	Ward__MailRecipientReply out = WARD__MAIL_RECIPIENT_REPLY__INIT;
	db_t *db = daemon_db(d);
	const char *err = NULL, *here = daemon_config(d)->region;
	char tenant[AUTH_UUID_LEN + 1] = "";
	PGresult *res;

	if (!auth_sender_is(env, "mail-ingest"))
		return auth_problem(reply, 403, "Forbidden", "auth.mail_recipient is for mail-ingest");
	req = ward__mail_recipient_request__unpack(NULL, len, payload);
	if (req == NULL)
		return auth_problem(reply, 400, "Bad Request", "malformed request");
	res = db_exec(db, "SELECT coalesce(auth.mail_recipient($1, $2, $3)::text, '')", 3,
		      (const char *const[]){ req->slug, req->local_part, here }, &err);
	if (res == NULL) {
		ward__mail_recipient_request__free_unpacked(req, NULL);
		return auth_fail(reply, "mail recipient", err);
	}
	if (PQntuples(res) == 1)
		snprintf(tenant, sizeof tenant, "%s", PQgetvalue(res, 0, 0));
	PQclear(res);
	out.tenant_id = tenant;
	ward__mail_recipient_request__free_unpacked(req, NULL);
	return auth_reply(reply, &out.base);
}

/* ============================== auth.mail_address ======================= */

/*
 * auth.mail_address: the address ward-mail-out mails a ticket's requester at,
 * when the ticket names an account (requester_id) rather than an address. Only
 * the service principal "mail-out" sent by ward-mail-out may ask (no user, no
 * other service); a disabled or unknown account answers "" (nothing is mailed).
 * Read only, in the envelope's tenant (row-level security); nothing logged.
 */
AUTH_HANDLER(auth_mail_address)
{
	Ward__MailAddressRequest *req;
	Ward__MailAddressReply out = WARD__MAIL_ADDRESS_REPLY__INIT;
	struct auth_req r;
	const char *err = NULL;
	char *email = NULL;
	PGresult *res = NULL;
	queue_result_t ret;

	if (!auth_sender_is(env, "mail-out") || env->principal == NULL ||
	    env->principal->kind == NULL || strcmp(env->principal->kind, "service") != 0)
		return auth_problem(reply, 403, "Forbidden", "auth.mail_address is for mail-out");
	req = ward__mail_address_request__unpack(NULL, len, payload);
	if (req == NULL)
		return auth_problem(reply, 400, "Bad Request", "malformed request");
	if (strlen(req->user_id) != AUTH_UUID_LEN ||
	    strspn(req->user_id, "0123456789abcdef-") != AUTH_UUID_LEN) {
		ret = auth_reply(reply, &out.base);
		goto out_req;
	}
	if (auth_begin(&r, d, env, &err) < 0) {
		ret = auth_fail(reply, "mail address: begin", err);
		goto out_req;
	}
	res = db_exec(r.db, "SELECT id::text, email_enc FROM auth.users WHERE id = $1 AND NOT disabled",
		      1, (const char *const[]){ req->user_id }, &err);
	if (res == NULL) {
		auth_rollback(&r);
		ret = auth_fail(reply, "mail address", err);
		goto out;
	}
	if (PQntuples(res) == 1 && !PQgetisnull(res, 0, 1)) {
		email = auth_open_column(&r, res, 0, 1, "auth.users", "email_enc",
					 PQgetvalue(res, 0, 0));
		if (email == NULL) {
			auth_rollback(&r);
			ret = auth_fail(reply, "mail address", "cannot open the address");
			goto out;
		}
	}
	if (auth_commit(&r, &err) < 0) {
		ret = auth_fail(reply, "mail address: commit", err);
		goto out;
	}
	out.email = email != NULL ? email : (char *)"";
	ret = auth_reply(reply, &out.base);
out:
	if (res != NULL)
		PQclear(res);
	if (email != NULL) {
		crypto_wipe(email, strlen(email));
		free(email);
	}
	crypto_wipe(r.dek, sizeof r.dek);
	crypto_wipe(r.blind_root, sizeof r.blind_root);
out_req:
	ward__mail_address_request__free_unpacked(req, NULL);
	return ret;
}
