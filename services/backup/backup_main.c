/*
 * ward-backup — encrypted per-tenant backups, retention and restore.
 *
 * Runs under the common skeleton (common/daemon.c): config, log, refusal of root,
 * its own Redis credentials and PostgreSQL role, heartbeat, clean SIGTERM.
 * It answers the built-in \"ping\" on q:backup; its own methods come as rows of a
 * daemon_method table (name, handler, roles, largest payload).
 */
#include "daemon.h"

static const struct daemon_service backup_service = {
	.name = "backup",
	.consumes = true,
	.needs_db = true,
	.forbid_db = false,
	.needs_kek = true,
	.outbox_schema = "backup",
};

int main(int argc, char **argv)
{
	return daemon_main(argc, argv, &backup_service);
}
