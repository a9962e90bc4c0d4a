# One autoscaling group per daemon; each instance role holds only what its daemon needs.
data "aws_ami" "debian" {
  most_recent = true
  owners      = ["136693071363"] # Debian
  filter {
    name   = "name"
    values = ["debian-12-amd64-*"]
  }
}

data "aws_iam_policy_document" "assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "daemon" {
  for_each           = toset(var.daemons)
  name               = "ward-${var.region}-${each.key}"
  assume_role_policy = data.aws_iam_policy_document.assume.json
}

# Its own secrets only: ward/<region>/<daemon>/<name>, as deploy/deploy.sh fetches them;
# and the region's public certificates, ward/<region>/tls/*.pem (no key there).
resource "aws_iam_role_policy" "secrets" {
  for_each = toset(var.daemons)
  name     = "secrets"
  role     = aws_iam_role.daemon[each.key].id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect   = "Allow"
      Action   = ["secretsmanager:GetSecretValue"]
      Resource = ["arn:aws:secretsmanager:${data.aws_region.current.name}:${data.aws_caller_identity.me.account_id}:secret:ward/${var.region}/${each.key}/*",
      "arn:aws:secretsmanager:${data.aws_region.current.name}:${data.aws_caller_identity.me.account_id}:secret:ward/${var.region}/tls/*"]
    }]
  })
}

# The KEK is unwrapped with KMS only by the daemons that hold tenant keys.
resource "aws_iam_role_policy" "kms" {
  for_each = toset(var.db_daemons)
  name     = "kms"
  role     = aws_iam_role.daemon[each.key].id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect   = "Allow"
      Action   = ["kms:Decrypt"]
      Resource = [aws_kms_key.cell.arn]
    }]
  })
}

# Only backup writes and reads the backup bucket, with exactly what ward-backup's S3
# client does (services/backup/backup_target.c): list the bucket; put, get and delete
# its objects; the bucket's KMS key to encrypt (SSE-KMS PUT) and decrypt (GET) them.
# ward-backup signs with this role's temporary credentials from IMDSv2
# (backup.s3.credentials: instance, rendered by deploy/deploy.sh).
resource "aws_iam_role_policy" "backup_bucket" {
  name = "backup-bucket"
  role = aws_iam_role.daemon["backup"].id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect   = "Allow"
      Action   = ["s3:ListBucket"]
      Resource = [aws_s3_bucket.backups.arn]
      }, {
      Effect   = "Allow"
      Action   = ["s3:PutObject", "s3:GetObject", "s3:DeleteObject"]
      Resource = ["${aws_s3_bucket.backups.arn}/*"]
      }, {
      Effect   = "Allow"
      Action   = ["kms:GenerateDataKey", "kms:Decrypt"]
      Resource = [aws_kms_key.cell.arn]
    }]
  })
}

resource "aws_iam_instance_profile" "daemon" {
  for_each = toset(var.daemons)
  name     = "ward-${var.region}-${each.key}"
  role     = aws_iam_role.daemon[each.key].name
}

resource "aws_launch_template" "daemon" {
  for_each      = toset(var.daemons)
  name          = "ward-${var.region}-${each.key}"
  image_id      = data.aws_ami.debian.id
  instance_type = var.instance_type
  iam_instance_profile { name = aws_iam_instance_profile.daemon[each.key].name }
  vpc_security_group_ids = [aws_security_group.daemon[each.key].id]
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

resource "aws_autoscaling_group" "daemon" {
  for_each            = toset(var.daemons)
  name                = "ward-${var.region}-${each.key}"
  min_size            = 2
  max_size            = 6
  vpc_zone_identifier = aws_subnet.private[*].id
  health_check_type   = contains(["gateway", "mail-ingest"], each.key) ? "ELB" : "EC2"
  target_group_arns = (each.key == "gateway" ? [aws_lb_target_group.https.arn] :
  each.key == "mail-ingest" ? [aws_lb_target_group.smtp.arn] : [])
  launch_template {
    id      = aws_launch_template.daemon[each.key].id
    version = "$Latest"
  }
}

resource "aws_lb" "public" {
  name                             = "ward-${var.region}"
  load_balancer_type               = "network"
  subnets                          = aws_subnet.public[*].id
  security_groups                  = [aws_security_group.lb_https.id, aws_security_group.lb_smtp.id]
  enable_deletion_protection       = true
  enable_cross_zone_load_balancing = true
}

resource "aws_lb_target_group" "https" {
  name     = "ward-${var.region}-https"
  port     = 443
  protocol = "TCP"
  vpc_id   = aws_vpc.cell.id
}

resource "aws_lb_target_group" "smtp" {
  name     = "ward-${var.region}-smtp"
  port     = 25
  protocol = "TCP"
  vpc_id   = aws_vpc.cell.id
}

resource "aws_lb_listener" "https" {
  load_balancer_arn = aws_lb.public.arn
  port              = 443
  protocol          = "TCP"
  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.https.arn
  }
}

resource "aws_lb_listener" "smtp" {
  load_balancer_arn = aws_lb.public.arn
  port              = 25
  protocol          = "TCP"
  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.smtp.arn
  }
}

resource "aws_route53_record" "tenants" {
  zone_id = var.zone_id
  name    = "*.${var.region}.${var.domain}"
  type    = "A"
  alias {
    name                   = aws_lb.public.dns_name
    zone_id                = aws_lb.public.zone_id
    evaluate_target_health = true
  }
}

resource "aws_route53_record" "mx" {
  zone_id = var.zone_id
  name    = "mx.${var.region}.${var.domain}"
  type    = "A"
  alias {
    name                   = aws_lb.public.dns_name
    zone_id                = aws_lb.public.zone_id
    evaluate_target_health = true
  }
}

# The region's bare name (<region>.<domain>, the gateway's own /healthz).
resource "aws_route53_record" "region" {
  zone_id = var.zone_id
  name    = "${var.region}.${var.domain}"
  type    = "A"
  alias {
    name                   = aws_lb.public.dns_name
    zone_id                = aws_lb.public.zone_id
    evaluate_target_health = true
  }
}

# What deploy/regions.yaml records for the region (redis_host, pg_host, ...).
output "redis_host" { value = aws_elasticache_replication_group.redis.primary_endpoint_address }
output "pg_host" { value = aws_db_instance.pg.address }
output "backup_bucket" { value = aws_s3_bucket.backups.bucket }
output "kms_key_arn" { value = aws_kms_key.cell.arn }
