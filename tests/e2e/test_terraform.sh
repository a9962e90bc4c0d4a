#!/usr/bin/env bash
# test_terraform — terraform/ keeps its security posture. Terraform cannot run here, so
# tests/e2e/tf_policy.js parses every .tf file with npm's @cdktf/hcl2json (HashiCorp's
# HCL parser) and applies tfsec/checkov-style rules; then each rule is shown able to
# fail: a copy of terraform/ broken in one place must make exactly that rule fail.
. "$(dirname "$0")/lib.sh"
export NODE_PATH=$TOP/tests/node/node_modules
policy() { node "$TOP/tests/e2e/tf_policy.js" "$1" "$2"; }
[ -d "$NODE_PATH/@cdktf/hcl2json" ] || { not_ok "terraform: @cdktf/hcl2json not installed (sh ops/deps)"; exit 0; }

# The real tree: every rule passes (each prints its own ok/not ok line).
policy "$TOP/terraform" "$TOP/deploy/regions.yaml"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# broken NAME RULE FILE PYTHON-EXPR: copy the tree, apply s = EXPR to FILE (relative to
# terraform/, or regions.yaml), and expect the rule whose name starts with RULE to fail.
broken() {
	local name=$1 rule=$2 file=$3 expr=$4 out
	rm -rf "$tmp/tf" && cp -r "$TOP/terraform" "$tmp/tf" && cp "$TOP/deploy/regions.yaml" "$tmp/regions.yaml"
	local path=$tmp/tf/$file
	[ "$file" = regions.yaml ] && path=$tmp/regions.yaml
	python3 - "$path" "$expr" <<'PY' || { not_ok "terraform: broken copy ($name): the edit did not apply"; return; }
import sys
p, expr = sys.argv[1], sys.argv[2]
s = open(p).read()
t = eval(expr, {"s": s})
assert t != s, "no change"
open(p, "w").write(t)
PY
	out=$(policy "$tmp/tf" "$tmp/regions.yaml")
	if grep -q "^not ok - terraform: $rule" <<<"$out"; then
		ok "terraform: a copy with $name fails \"$rule…\""
	else
		not_ok "terraform: a copy with $name passes \"$rule…\""
		echo "$out" | sed 's/^/#   /'
	fi
}
cell=modules/cell
broken "7-day RDS backups" "RDS" $cell/data.tf 's.replace("backup_retention_period      = 35", "backup_retention_period      = 7")'
broken "RDS unencrypted" "RDS" $cell/data.tf 's.replace("storage_encrypted            = true", "storage_encrypted            = false")'
broken "RDS deletion protection off" "RDS" $cell/data.tf 's.replace("deletion_protection          = true", "deletion_protection          = false")'
broken "RDS single-AZ" "RDS" $cell/data.tf 's.replace("multi_az                     = true", "multi_az                     = false")'
broken "RDS TLS not forced" "RDS" $cell/data.tf 's.replace("\"rds.force_ssl\"", "\"rds.other\"")'
broken "Redis without TLS" "ElastiCache" $cell/data.tf 's.replace("transit_encryption_enabled = true", "transit_encryption_enabled = false")'
broken "Redis without at-rest encryption" "ElastiCache" $cell/data.tf 's.replace("at_rest_encryption_enabled = true", "at_rest_encryption_enabled = false")'
broken "Redis without a replica" "ElastiCache" $cell/data.tf 's.replace("num_cache_clusters         = 2", "num_cache_clusters         = 1")'
broken "Redis default user on" "ElastiCache" $cell/data.tf 's.replace("\"off -@all\"", "\"on ~* +@all\"")'
broken "a 30-day bucket lifecycle" "backups bucket" $cell/data.tf 's.replace("expiration { days = 60 }", "expiration { days = 30 }")'
broken "bucket versioning suspended" "backups bucket" $cell/data.tf 's.replace("status = \"Enabled\" }", "status = \"Suspended\" }")'
broken "a public bucket policy allowed" "backups bucket" $cell/data.tf 's.replace("restrict_public_buckets = true", "restrict_public_buckets = false")'
broken "bucket encrypted with AES256" "backups bucket" $cell/data.tf 's.replace("\"aws:kms\"", "\"AES256\"")'
broken "KMS rotation off" "KMS key" $cell/data.tf 's.replace("enable_key_rotation     = true", "enable_key_rotation     = false")'
broken "SSH open to the internet" "0.0.0.0/0" $cell/network.tf 's.replace("from_port         = 25\n  to_port           = 25", "from_port         = 22\n  to_port           = 22")'
broken "a port range open to the internet" "0.0.0.0/0" $cell/network.tf 's.replace("from_port         = 443\n  to_port           = 443", "from_port         = 443\n  to_port           = 8443", 1)'
broken "Redis reachable from 0.0.0.0/0" "0.0.0.0/0" $cell/network.tf 's + "\nresource \"aws_security_group_rule\" \"x\" {\n  type = \"ingress\"\n  from_port = 6379\n  to_port = 6379\n  protocol = \"tcp\"\n  security_group_id = aws_security_group.redis.id\n  cidr_blocks = [\"0.0.0.0/0\"]\n}\n"'
broken "egress to the internet" "no egress" $cell/network.tf 's + "\nresource \"aws_security_group_rule\" \"y\" {\n  type = \"egress\"\n  from_port = 0\n  to_port = 0\n  protocol = \"-1\"\n  security_group_id = aws_security_group.daemon[\"gateway\"].id\n  cidr_blocks = [\"0.0.0.0/0\"]\n}\n"'
broken "PostgreSQL open to every daemon" "PostgreSQL" $cell/network.tf 's.replace("for_each                 = toset(var.db_daemons)\n  type                     = \"ingress\"", "for_each                 = toset(var.daemons)\n  type                     = \"ingress\"")'
broken "one private subnet" "private subnets" $cell/network.tf 's.replace("count             = 2", "count             = 1")'
broken "a wildcard IAM action" "IAM" $cell/compute.tf 's.replace("[\"secretsmanager:GetSecretValue\"]", "[\"*\"]")'
broken "kms:* for a key holder" "IAM" $cell/compute.tf 's.replace("[\"kms:Decrypt\"]", "[\"kms:*\"]")'
broken "an IAM resource of any account" "IAM" $cell/compute.tf 's.replace("${data.aws_caller_identity.me.account_id}:secret", "*:secret")'
broken "another daemon reading the bucket" "instance roles" $cell/compute.tf 's.replace("aws_iam_role.daemon[\"backup\"].id", "aws_iam_role.daemon[\"gateway\"].id")'
broken "unencrypted EBS" "EBS" $cell/compute.tf 's.replace("encrypted  = true", "encrypted  = false")'
broken "IMDSv1 allowed" "EBS" $cell/compute.tf 's.replace("http_tokens                 = \"required\"", "http_tokens                 = \"optional\"")'
broken "IMDS reachable two hops away" "EBS" $cell/compute.tf 's.replace("http_put_response_hop_limit = 1", "http_put_response_hop_limit = 2")'
broken "IMDSv1 on the migration host" "EBS" $cell/migrate.tf 's.replace("http_tokens                 = \"required\"", "http_tokens                 = \"optional\"")'
broken "the metadata endpoint off (no instance credentials)" "EBS" $cell/compute.tf 's.replace("http_tokens                 = \"required\"", "http_endpoint               = \"disabled\"\n    http_tokens                 = \"required\"")'
broken "the backup role changing the bucket policy" "the backup role" $cell/compute.tf 's.replace("\"s3:DeleteObject\"]", "\"s3:DeleteObject\", \"s3:PutBucketPolicy\"]")'
broken "the backup role reading every bucket" "the backup role" $cell/compute.tf 's.replace("[\"${aws_s3_bucket.backups.arn}/*\"]", "[\"arn:aws:s3:::*\"]")'
broken "the backup role without the key to encrypt" "the backup role" $cell/compute.tf 's.replace("[\"kms:GenerateDataKey\", \"kms:Decrypt\"]", "[\"kms:Decrypt\"]")'
broken "no mx record" "DNS" $cell/compute.tf 's.replace("\"mx.${var.region}.${var.domain}\"", "\"mail.${var.region}.${var.domain}\"")'
broken "uk in the wrong AWS region" "us → us-east-1" regions.yaml 's.replace("aws_region: eu-west-2", "aws_region: eu-west-3")'
broken "a provider not matching regions.yaml" "every region" main.tf 's.replace("region = \"eu-west-1\"", "region = \"eu-central-1\"")'
broken "a region without its module instance" "every region" regions.yaml 's + "  - name: ca\n    aws_region: ca-central-1\n    vpc_cidr: 10.40.0.0/16\n"'
broken "two status cells" "exactly one cell" main.tf 's.replace("vpc_cidr  = \"10.20.0.0/16\"", "vpc_cidr  = \"10.20.0.0/16\"\n  status_page = true")'
broken "flow logs off" "VPC flow logs" $cell/network.tf 's.replace("traffic_type    = \"ALL\"", "traffic_type    = \"REJECT\"")'
broken "a daemon role reading another daemon's secrets" "instance roles" $cell/compute.tf 's.replace("secret:ward/${var.region}/tls/*\"]", "secret:ward/${var.region}/tls/*\", \"arn:aws:secretsmanager:${data.aws_region.current.name}:${data.aws_caller_identity.me.account_id}:secret:ward/${var.region}/auth/*\"]", 1)'
broken "the migration role reading every secret of the cell" "the migration host" $cell/migrate.tf 's.replace("secret:ward/${var.region}/migrate/*", "secret:ward/${var.region}/*")'
broken "KMS for the migration role" "the migration host" $cell/migrate.tf 's + "\nresource \"aws_iam_role_policy\" \"migrate_kms\" {\n  name = \"kms\"\n  role = aws_iam_role.migrate.id\n  policy = jsonencode({ Version = \"2012-10-17\", Statement = [{ Effect = \"Allow\", Action = [\"kms:Decrypt\"], Resource = [aws_kms_key.cell.arn] }] })\n}\n"'
broken "the migration host reaching Redis" "the migration host" $cell/migrate.tf 's + "\nresource \"aws_security_group_rule\" \"migrate_to_redis\" {\n  type = \"egress\"\n  from_port = 6379\n  to_port = 6379\n  protocol = \"tcp\"\n  security_group_id = aws_security_group.migrate.id\n  source_security_group_id = aws_security_group.redis.id\n}\n"'
broken "a migration host left running" "the migration host" $cell/migrate.tf 's.replace("desired_capacity    = 0", "desired_capacity    = 1")'
broken "PostgreSQL open to the gateway through the migration rule" "PostgreSQL" $cell/migrate.tf 's.replace("source_security_group_id = aws_security_group.migrate.id\n}\n\nresource \"aws_security_group_rule\" \"migrate_to_endpoints\"", "source_security_group_id = aws_security_group.daemon[\"gateway\"].id\n}\n\nresource \"aws_security_group_rule\" \"migrate_to_endpoints\"")'
broken "the status role reading the gateway's secrets" "the status page" $cell/status.tf 's.replace("secret:ward/${var.region}/status/*", "secret:ward/${var.region}/gateway/*")'
broken "the status role reading a tenant daemon's secrets too" "the status page" $cell/status.tf 's.replace("secret:ward/${var.region}/tls/*\"]", "secret:ward/${var.region}/tls/*\", \"arn:aws:secretsmanager:${data.aws_region.current.name}:${data.aws_caller_identity.me.account_id}:secret:ward/${var.region}/ticket/*\"]", 1)'
broken "KMS for the status role" "the status page" $cell/status.tf 's + "\nresource \"aws_iam_role_policy\" \"status_kms\" {\n  count = 1\n  name = \"kms\"\n  role = aws_iam_role.status[0].id\n  policy = jsonencode({ Version = \"2012-10-17\", Statement = [{ Effect = \"Allow\", Action = [\"kms:Decrypt\"], Resource = [aws_kms_key.cell.arn] }] })\n}\n"'
broken "the status balancer targeting the gateway" "the status page" $cell/compute.tf 's.replace("each.key == \"gateway\" ? [aws_lb_target_group.https.arn]", "each.key == \"gateway\" ? [aws_lb_target_group.https.arn, aws_lb_target_group.status[0].arn]")'
broken "the status host reaching PostgreSQL" "the status page" $cell/status.tf 's + "\nresource \"aws_security_group_rule\" \"status_to_pg\" {\n  count = 1\n  type = \"egress\"\n  from_port = 5432\n  to_port = 5432\n  protocol = \"tcp\"\n  security_group_id = aws_security_group.status[0].id\n  source_security_group_id = aws_security_group.pg.id\n}\n"'
broken "the gateway reachable on the status port" "the status page" $cell/network.tf 's + "\nresource \"aws_security_group_rule\" \"gateway_8443\" {\n  type = \"ingress\"\n  from_port = 8443\n  to_port = 8443\n  protocol = \"tcp\"\n  security_group_id = aws_security_group.daemon[\"gateway\"].id\n  source_security_group_id = aws_security_group.lb_https.id\n}\n"'
broken "unparseable HCL" "parse" $cell/data.tf 's + "\nresource \"x\" \"y\" {\n"'
