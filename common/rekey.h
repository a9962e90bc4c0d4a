/*
 * rekey — re-encryption of one tenant's sealed columns under its newest DEK
 * (wardctl key rotate-dek), shared by the services that own the data: ward-ticket
 * re-seals the ticket schema, ward-auth the auth schema.
 *
 * The sealed columns are found in the catalog, so a column added later is covered
 * without a change here: every bytea column named *_enc of a table with a
 * tenant_id; a value's associated data is "<tenant>|<schema.table>|<column>|<row>"
 * with row = the table's id column, or tenant_id for one-row-per-tenant tables
 * (the convention of ticket_seal and auth_seal). A value is replaced only if it is
 * still the one read, inside the caller's tenant transaction: a batch is atomic and
 * a stopped run resumes where it left off.
 */
#ifndef WARD_REKEY_H
#define WARD_REKEY_H

#include <stddef.h>
#include <stdint.h>

#include "crypto.h"
#include "db.h"
#include "keys.pb-c.h"
#include "queue.h"

struct rekey_keys {
	/* The tenant's DEK of version into dek; 0, or -1 with *error_r. */
	int (*dek)(void *arg, uint32_t version, uint8_t dek[CRYPTO_KEY_LEN], const char **error_r);
	void *arg;
	const uint8_t *new_dek; /* the newest DEK: what everything is re-sealed under */
	uint32_t new_version;
};

/* Inside tenant's transaction: re-seal at most batch values of schema's sealed
 * columns that are under another version than keys->new_version. *done_r gets the
 * number re-sealed, *remaining_r the number still under another version after it.
 * A value that does not open (unknown or destroyed version, tampered) fails the
 * whole batch with a message naming the table, column and version. */
int rekey_schema(db_t *db, const char *schema, const char *tenant, const struct rekey_keys *keys,
		 long batch, long *done_r, long *remaining_r, const char **error_r);

/* The end of a service's <method> handler (ticket.rekey, auth.rekey): frees req; with
 * err NULL packs the RekeyReply (dek_version, done, remaining) into reply, else a
 * 422 naming method and err. Logged either way. */
queue_result_t rekey_answer(const char *method, const char *tenant, Ward__RekeyRequest *req,
			    const char *err, uint32_t dek_version, long done, long remaining,
			    struct queue_reply *reply, const char **error_r);

#endif
