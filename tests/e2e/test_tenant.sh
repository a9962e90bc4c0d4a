#!/usr/bin/env bash
# wardctl tenant create|list|show: pinned to its region, unique across regions,
# encrypted at rest, and nothing but the directory entry in the other cells.
. "$(dirname "$0")/lib.sh"

out=$("$BIN/wardctl" tenant create --slug acme-e2e --region eu --name "Acme E2E" --admin-email Boss@Acme.example 2>&1)
if echo "$out" | grep -q '"admin_password": *"[^"]\{12,\}"' && echo "$out" | grep -q "https://acme-e2e.eu.$WARD_DOMAIN:"; then
	ok "tenant create prints the tenant URL and a one-time admin password"
else
	not_ok "tenant create"; echo "# $out"
fi
pw=$(echo "$out" | sed -n 's/.*"admin_password": *"\([^"]*\)".*/\1/p')

refuse "tenant create: the same slug again in eu is refused" "$BIN/wardctl" tenant create --slug acme-e2e --region eu --name X --admin-email a@b.example
refuse "tenant create: the same slug in us is refused (unique across regions)" "$BIN/wardctl" tenant create --slug acme-e2e --region us --name X --admin-email a@b.example
for bad in "ab" "Acme" "acme_e2e" "a very bad slug" "$(printf 'x%.0s' $(seq 41))" "acme';drop" ""; do
	refuse "tenant create: invalid slug '$bad' is refused" "$BIN/wardctl" tenant create --slug "$bad" --region eu --name X --admin-email a@b.example
done
refuse "tenant create: unknown region is refused" "$BIN/wardctl" tenant create --slug okslug --region fr --name X --admin-email a@b.example
refuse "tenant create: a bad admin email is refused" "$BIN/wardctl" tenant create --slug okslug2 --region eu --name X --admin-email not-an-email
check "tenant create: errors go to stderr with a non-zero exit, nothing on stdout" \
	bash -c "[ -z \"\$($BIN/wardctl tenant create --slug Bad --region eu --name X --admin-email a@b.example 2>/dev/null)\" ]"

check "tenant show: eu tenant shown with its region" bash -c "$BIN/wardctl tenant show --slug acme-e2e | grep -q '\"region\": *\"eu\"'"
check "tenant list: includes acme-e2e" bash -c "$BIN/wardctl tenant list | grep -q acme-e2e"
refuse "tenant show: never prints key material" bash -c "$BIN/wardctl tenant show --slug acme-e2e | grep -qi 'wrapped\\|\"dek\"'"

# Pinned: the eu cell holds the tenant; us and uk hold only the directory entry.
check "eu holds the tenant row" bash -c "[ \"\$(pg_super eu \"SELECT count(*) FROM tenant.tenants WHERE slug = 'acme-e2e'\")\" = 1 ]"
check "eu holds the admin user" bash -c "[ \"\$(pg_super eu \"SELECT count(*) FROM auth.users u JOIN tenant.tenants t ON t.id = u.tenant_id WHERE t.slug = 'acme-e2e' AND u.role = 'admin'\")\" = 1 ]"
tid=$(pg_super eu "SELECT id FROM tenant.tenants WHERE slug = 'acme-e2e'")
for other in us uk; do
	check "$other: no tenant, key or user row of the eu tenant" bash -c \
		"[ \"\$(pg_super $other \"SELECT (SELECT count(*) FROM tenant.tenants WHERE id = '$tid' OR slug = 'acme-e2e') + (SELECT count(*) FROM tenant.keys WHERE tenant_id = '$tid') + (SELECT count(*) FROM auth.users WHERE tenant_id = '$tid')\")\" = 0 ]"
	check "$other: the directory says acme-e2e lives in eu" bash -c \
		"[ \"\$(pg_super $other \"SELECT region FROM directory.tenants WHERE slug = 'acme-e2e'\")\" = eu ]"
done

# At rest: the admin email is ciphertext, the DEK is wrapped, the password is Argon2id.
check "the admin email is not stored in clear" bash -c \
	"! pg_super eu \"SELECT encode(email_enc, 'escape') || email_bidx FROM auth.users\" | grep -qi 'boss@acme'"
check "the password is stored as an Argon2id hash" bash -c \
	"pg_super eu \"SELECT password_hash FROM auth.users u JOIN tenant.tenants t ON t.id = u.tenant_id WHERE t.slug = 'acme-e2e'\" | grep -q '^\\\$argon2id\\\$'"
check "the password is not stored in clear" bash -c "! pg_super eu \"SELECT password_hash FROM auth.users\" | grep -qF -- '$pw'"
check "the DEK is stored wrapped (65 bytes: version, key version, nonce, key, tag)" bash -c \
	"[ \"\$(pg_super eu \"SELECT length(wrapped) FROM tenant.keys k JOIN tenant.tenants t ON t.id = k.tenant_id WHERE t.slug = 'acme-e2e'\")\" = 65 ]"
check "pg_dump of the eu cell has no plaintext admin email" bash -c \
	"! PGPASSWORD=\$(cat $WARD_VAR/eu/secrets/pg-admin) /usr/lib/postgresql/15/bin/pg_dump -h 127.0.0.1 -p $(port_of eu PG) -U postgres ward | grep -qi 'boss@acme'"
