/*
 * ward-ticket — tickets and messages, encrypted per tenant.
 *
 * Runs under the common skeleton (common/daemon.c): config, log, refusal of root,
 * its own Redis credentials and PostgreSQL role, heartbeat, clean SIGTERM.
 * It answers the built-in \"ping\" on q:ticket; its own methods come as rows of a
 * daemon_method table (name, handler, roles, largest payload).
 */
#include "daemon.h"

static const struct daemon_service ticket_service = {
	.name = "ticket",
	.consumes = true,
	.needs_db = true,
	.forbid_db = false,
	.needs_kek = true,
};

int main(int argc, char **argv)
{
	return daemon_main(argc, argv, &ticket_service);
}
