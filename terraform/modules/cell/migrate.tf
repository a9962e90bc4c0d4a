# The migration host of a cell: what deploy/deploy.sh step 5 runs on (migrations of
# deploy/sql/ as the migration role, then `ward-policy sql`). No daemon may read the
# migration role's credentials, so it has its own instance role, reading only
# ward/<region>/migrate/* secrets (and the public certificates, tls/*: rds-ca.pem), no
# KMS, no S3; its own security group, reaching
# only PostgreSQL and the AWS API endpoints. Its autoscaling group is empty between
# deploys: the operator sets its desired capacity to 1 for a deploy, then back to 0.
resource "aws_iam_role" "migrate" {
  name               = "ward-${var.region}-migrate"
  assume_role_policy = data.aws_iam_policy_document.assume.json
}

resource "aws_iam_role_policy" "migrate_secrets" {
  name = "secrets"
  role = aws_iam_role.migrate.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect   = "Allow"
      Action   = ["secretsmanager:GetSecretValue"]
      Resource = ["arn:aws:secretsmanager:${data.aws_region.current.name}:${data.aws_caller_identity.me.account_id}:secret:ward/${var.region}/migrate/*",
      "arn:aws:secretsmanager:${data.aws_region.current.name}:${data.aws_caller_identity.me.account_id}:secret:ward/${var.region}/tls/*"]
    }]
  })
}

resource "aws_iam_instance_profile" "migrate" {
  name = "ward-${var.region}-migrate"
  role = aws_iam_role.migrate.name
}

resource "aws_security_group" "migrate" {
  name        = "ward-${var.region}-migrate"
  description = "Migration host: PostgreSQL and the API endpoints only"
  vpc_id      = aws_vpc.cell.id
}

resource "aws_security_group_rule" "migrate_to_pg" {
  type                     = "egress"
  from_port                = 5432
  to_port                  = 5432
  protocol                 = "tcp"
  security_group_id        = aws_security_group.migrate.id
  source_security_group_id = aws_security_group.pg.id
}

resource "aws_security_group_rule" "pg_from_migrate" {
  type                     = "ingress"
  from_port                = 5432
  to_port                  = 5432
  protocol                 = "tcp"
  security_group_id        = aws_security_group.pg.id
  source_security_group_id = aws_security_group.migrate.id
}

resource "aws_security_group_rule" "migrate_to_endpoints" {
  type                     = "egress"
  from_port                = 443
  to_port                  = 443
  protocol                 = "tcp"
  security_group_id        = aws_security_group.migrate.id
  source_security_group_id = aws_security_group.endpoints.id
}

resource "aws_security_group_rule" "endpoints_from_migrate" {
  type                     = "ingress"
  from_port                = 443
  to_port                  = 443
  protocol                 = "tcp"
  security_group_id        = aws_security_group.endpoints.id
  source_security_group_id = aws_security_group.migrate.id
}

resource "aws_launch_template" "migrate" {
  name          = "ward-${var.region}-migrate"
  image_id      = data.aws_ami.debian.id
  instance_type = var.instance_type
  iam_instance_profile { name = aws_iam_instance_profile.migrate.name }
  vpc_security_group_ids = [aws_security_group.migrate.id]
  metadata_options {
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }
  block_device_mappings {
    device_name = "/dev/xvda"
    ebs {
      encrypted  = true
      kms_key_id = aws_kms_key.cell.arn
    }
  }
}

resource "aws_autoscaling_group" "migrate" {
  name                = "ward-${var.region}-migrate"
  min_size            = 0
  max_size            = 1
  desired_capacity    = 0
  vpc_zone_identifier = aws_subnet.private[*].id
  launch_template {
    id      = aws_launch_template.migrate.id
    version = "$Latest"
  }
  lifecycle {
    ignore_changes = [desired_capacity] # set to 1 by the operator for a deploy
  }
}
