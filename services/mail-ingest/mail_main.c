/*
 * ward-mail-ingest — the SMTP door that turns mail into tickets.
 *
 * Runs under the common skeleton (common/daemon.c): config, log, refusal of root,
 * its own Redis credentials, heartbeat, clean SIGTERM. Like the gateway it faces
 * the internet, so it holds no database credential and no region key: the
 * skeleton refuses to start if its config names either. It reads no queue; it
 * sends to q:ticket, q:auth and q:audit and reads only its own reply stream.
 */
#include "daemon.h"

static const struct daemon_service mail_service = {
	.name = "mail-ingest",
	.consumes = false,
	.forbid_db = true,
	.needs_kek = false,
};

int main(int argc, char **argv)
{
	return daemon_main(argc, argv, &mail_service);
}
