/*
 * ward-auth — users, roles, passwords, sessions, API credentials.
 *
 * Runs under the common skeleton (common/daemon.c): config, log, refusal of root,
 * its own Redis credentials and PostgreSQL role, heartbeat, clean SIGTERM.
 * It answers the built-in \"ping\" on q:auth; its own methods come as rows of a
 * daemon_method table (name, handler, roles, largest payload).
 */
#include "daemon.h"

static const struct daemon_service auth_service = {
	.name = "auth",
	.consumes = true,
	.needs_db = true,
	.forbid_db = false,
	.needs_kek = true,
};

int main(int argc, char **argv)
{
	return daemon_main(argc, argv, &auth_service);
}
