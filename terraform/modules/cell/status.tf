# The status page of the deployment (status.<domain>, SPEC §7), only in the cell with
# status_page = true (the first region of deploy/regions.yaml): ward-status on its own
# hosts, not the gateway's. It holds no tenant-reaching credential, so it has its own
# instance role, reading only ward/<region>/status/* (the status certificate's key
# and each cell's read-only "status" Redis password) and the public certificates
# ward/<region>/tls/*; no KMS, no S3; its own security group, reached only by the
# status balancer on 8443 and reaching only Redis (6379) and the API endpoints.
# (The other cells' Redis, which it polls too, is reached through the Redis TLS
# tunnel of deploy/deploy.sh; the cross-region path is not part of this module.)
resource "aws_iam_role" "status" {
  count              = var.status_page ? 1 : 0
  name               = "ward-${var.region}-status"
  assume_role_policy = data.aws_iam_policy_document.assume.json
}

resource "aws_iam_role_policy" "status_secrets" {
  count = var.status_page ? 1 : 0
  name  = "secrets"
  role  = aws_iam_role.status[0].id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect   = "Allow"
      Action   = ["secretsmanager:GetSecretValue"]
      Resource = ["arn:aws:secretsmanager:${data.aws_region.current.name}:${data.aws_caller_identity.me.account_id}:secret:ward/${var.region}/status/*",
      "arn:aws:secretsmanager:${data.aws_region.current.name}:${data.aws_caller_identity.me.account_id}:secret:ward/${var.region}/tls/*"]
    }]
  })
}

resource "aws_iam_instance_profile" "status" {
  count = var.status_page ? 1 : 0
  name  = "ward-${var.region}-status"
  role  = aws_iam_role.status[0].name
}

resource "aws_security_group" "status" {
  count       = var.status_page ? 1 : 0
  name        = "ward-${var.region}-status"
  description = "ward-status: the status balancer in on 8443; Redis and the API endpoints out"
  vpc_id      = aws_vpc.cell.id
}

resource "aws_security_group_rule" "lb_to_status" {
  count                    = var.status_page ? 1 : 0
  type                     = "egress"
  from_port                = 8443
  to_port                  = 8443
  protocol                 = "tcp"
  security_group_id        = aws_security_group.lb_https.id
  source_security_group_id = aws_security_group.status[0].id
}

resource "aws_security_group_rule" "status_from_lb" {
  count                    = var.status_page ? 1 : 0
  type                     = "ingress"
  from_port                = 8443
  to_port                  = 8443
  protocol                 = "tcp"
  security_group_id        = aws_security_group.status[0].id
  source_security_group_id = aws_security_group.lb_https.id
}

resource "aws_security_group_rule" "status_to_redis" {
  count                    = var.status_page ? 1 : 0
  type                     = "egress"
  from_port                = 6379
  to_port                  = 6379
  protocol                 = "tcp"
  security_group_id        = aws_security_group.status[0].id
  source_security_group_id = aws_security_group.redis.id
}

resource "aws_security_group_rule" "redis_from_status" {
  count                    = var.status_page ? 1 : 0
  type                     = "ingress"
  from_port                = 6379
  to_port                  = 6379
  protocol                 = "tcp"
  security_group_id        = aws_security_group.redis.id
  source_security_group_id = aws_security_group.status[0].id
}

resource "aws_security_group_rule" "status_to_endpoints" {
  count                    = var.status_page ? 1 : 0
  type                     = "egress"
  from_port                = 443
  to_port                  = 443
  protocol                 = "tcp"
  security_group_id        = aws_security_group.status[0].id
  source_security_group_id = aws_security_group.endpoints.id
}

resource "aws_security_group_rule" "endpoints_from_status" {
  count                    = var.status_page ? 1 : 0
  type                     = "ingress"
  from_port                = 443
  to_port                  = 443
  protocol                 = "tcp"
  security_group_id        = aws_security_group.endpoints.id
  source_security_group_id = aws_security_group.status[0].id
}

resource "aws_launch_template" "status" {
  count         = var.status_page ? 1 : 0
  name          = "ward-${var.region}-status"
  image_id      = data.aws_ami.debian.id
  instance_type = var.instance_type
  iam_instance_profile { name = aws_iam_instance_profile.status[0].name }
  vpc_security_group_ids = [aws_security_group.status[0].id]
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

# Two or more: the uptime lease (hb:status:uptime:owner) makes one of them the writer.
resource "aws_autoscaling_group" "status" {
  count               = var.status_page ? 1 : 0
  name                = "ward-${var.region}-status"
  min_size            = 2
  max_size            = 4
  vpc_zone_identifier = aws_subnet.private[*].id
  health_check_type   = "ELB"
  target_group_arns   = [aws_lb_target_group.status[0].arn]
  launch_template {
    id      = aws_launch_template.status[0].id
    version = "$Latest"
  }
}

# status.<domain>: its own balancer (TCP cannot route on SNI), 443 → ward-status's
# listener (8443) on the status group, never the gateway.
resource "aws_lb" "status" {
  count                      = var.status_page ? 1 : 0
  name                       = "ward-${var.region}-status"
  load_balancer_type         = "network"
  subnets                    = aws_subnet.public[*].id
  security_groups            = [aws_security_group.lb_https.id]
  enable_deletion_protection = true
}

resource "aws_lb_target_group" "status" {
  count    = var.status_page ? 1 : 0
  name     = "ward-${var.region}-status"
  port     = 8443
  protocol = "TCP"
  vpc_id   = aws_vpc.cell.id
}

resource "aws_lb_listener" "status" {
  count             = var.status_page ? 1 : 0
  load_balancer_arn = aws_lb.status[0].arn
  port              = 443
  protocol          = "TCP"
  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.status[0].arn
  }
}

resource "aws_route53_record" "status" {
  count   = var.status_page ? 1 : 0
  zone_id = var.zone_id
  name    = "status.${var.domain}"
  type    = "A"
  alias {
    name                   = aws_lb.status[0].dns_name
    zone_id                = aws_lb.status[0].zone_id
    evaluate_target_health = true
  }
}
