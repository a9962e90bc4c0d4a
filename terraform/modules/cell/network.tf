# Network of a cell: the daemons in private subnets of two availability zones, the
# public load balancers in public subnets; no NAT: AWS APIs through VPC endpoints.
data "aws_availability_zones" "az" { state = "available" }
data "aws_region" "current" {}

resource "aws_vpc" "cell" {
  cidr_block           = var.vpc_cidr
  enable_dns_hostnames = true
  enable_dns_support   = true
  tags                 = { Name = "ward-${var.region}" }
}

# No rule in the VPC's default security group: nothing can use it by accident.
resource "aws_default_security_group" "none" {
  vpc_id = aws_vpc.cell.id
}

resource "aws_subnet" "private" {
  count             = 2
  vpc_id            = aws_vpc.cell.id
  cidr_block        = cidrsubnet(var.vpc_cidr, 8, count.index)
  availability_zone = data.aws_availability_zones.az.names[count.index]
  tags              = { Name = "ward-${var.region}-private-${count.index}" }
}

resource "aws_subnet" "public" {
  count                   = 2
  vpc_id                  = aws_vpc.cell.id
  cidr_block              = cidrsubnet(var.vpc_cidr, 8, 100 + count.index)
  availability_zone       = data.aws_availability_zones.az.names[count.index]
  map_public_ip_on_launch = false
  tags                    = { Name = "ward-${var.region}-public-${count.index}" }
}

resource "aws_internet_gateway" "igw" { vpc_id = aws_vpc.cell.id }

# Only the public subnets (load balancers) route to the internet.
resource "aws_route_table" "public" {
  vpc_id = aws_vpc.cell.id
  route {
    cidr_block = "0.0.0.0/0"
    gateway_id = aws_internet_gateway.igw.id
  }
}

resource "aws_route_table_association" "public" {
  count          = 2
  subnet_id      = aws_subnet.public[count.index].id
  route_table_id = aws_route_table.public.id
}

resource "aws_route_table" "private" {
  vpc_id = aws_vpc.cell.id
}

resource "aws_route_table_association" "private" {
  count          = 2
  subnet_id      = aws_subnet.private[count.index].id
  route_table_id = aws_route_table.private.id
}

# AWS APIs the daemons need (secrets at boot, KMS for the KEK, S3 for backups) stay
# inside the VPC.
resource "aws_vpc_endpoint" "s3" {
  vpc_id            = aws_vpc.cell.id
  service_name      = "com.amazonaws.${data.aws_region.current.name}.s3"
  vpc_endpoint_type = "Gateway"
  route_table_ids   = [aws_route_table.private.id]
}

resource "aws_vpc_endpoint" "api" {
  for_each            = toset(["secretsmanager", "kms", "logs"])
  vpc_id              = aws_vpc.cell.id
  service_name        = "com.amazonaws.${data.aws_region.current.name}.${each.key}"
  vpc_endpoint_type   = "Interface"
  private_dns_enabled = true
  subnet_ids          = aws_subnet.private[*].id
  security_group_ids  = [aws_security_group.endpoints.id]
}

# VPC flow logs, encrypted with the region key, kept a year.
resource "aws_cloudwatch_log_group" "flow" {
  name              = "/ward/${var.region}/vpc-flow"
  retention_in_days = 365
  kms_key_id        = aws_kms_key.cell.arn
}

resource "aws_iam_role" "flow" {
  name = "ward-${var.region}-vpc-flow"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Action    = ["sts:AssumeRole"]
      Principal = { Service = "vpc-flow-logs.amazonaws.com" }
    }]
  })
}

resource "aws_iam_role_policy" "flow" {
  name = "flow-logs"
  role = aws_iam_role.flow.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect   = "Allow"
      Action   = ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
      Resource = ["${aws_cloudwatch_log_group.flow.arn}:*"]
    }]
  })
}

resource "aws_flow_log" "cell" {
  vpc_id          = aws_vpc.cell.id
  traffic_type    = "ALL"
  log_destination = aws_cloudwatch_log_group.flow.arn
  iam_role_arn    = aws_iam_role.flow.arn
}

# ------------------------------------------------------------------ security groups
# Exactly the flows of deploy/policy.yaml. The internet reaches 443 (gateway; the
# status page's balancer too, to ward-status: status.tf) and 25 (mail-ingest);
# nothing else from anywhere.
# Rules are separate resources so that groups can name each other without cycles.
resource "aws_security_group" "lb_https" {
  name        = "ward-${var.region}-lb-https"
  description = "Public HTTPS balancer"
  vpc_id      = aws_vpc.cell.id
}

resource "aws_security_group" "lb_smtp" {
  name        = "ward-${var.region}-lb-smtp"
  description = "Public SMTP balancer"
  vpc_id      = aws_vpc.cell.id
}

resource "aws_security_group" "daemon" {
  for_each    = toset(var.daemons)
  name        = "ward-${var.region}-${each.key}"
  description = "ward-${each.key}"
  vpc_id      = aws_vpc.cell.id
}

resource "aws_security_group" "redis" {
  name        = "ward-${var.region}-redis"
  description = "ElastiCache Redis: the daemons only"
  vpc_id      = aws_vpc.cell.id
}

resource "aws_security_group" "pg" {
  name        = "ward-${var.region}-pg"
  description = "RDS PostgreSQL: the daemons with a database role only"
  vpc_id      = aws_vpc.cell.id
}

resource "aws_security_group" "endpoints" {
  name        = "ward-${var.region}-endpoints"
  description = "VPC interface endpoints: the daemons only"
  vpc_id      = aws_vpc.cell.id
}

resource "aws_security_group_rule" "https_from_internet" {
  type              = "ingress"
  description       = "HTTPS from the internet"
  from_port         = 443
  to_port           = 443
  protocol          = "tcp"
  security_group_id = aws_security_group.lb_https.id
  cidr_blocks       = ["0.0.0.0/0"]
}

resource "aws_security_group_rule" "smtp_from_internet" {
  type              = "ingress"
  description       = "SMTP from the internet"
  from_port         = 25
  to_port           = 25
  protocol          = "tcp"
  security_group_id = aws_security_group.lb_smtp.id
  cidr_blocks       = ["0.0.0.0/0"]
}

# Balancer → daemon, and only the daemon's own port (the status page: status.tf).
resource "aws_security_group_rule" "lb_to_gateway" {
  type                     = "egress"
  from_port                = 443
  to_port                  = 443
  protocol                 = "tcp"
  security_group_id        = aws_security_group.lb_https.id
  source_security_group_id = aws_security_group.daemon["gateway"].id
}

resource "aws_security_group_rule" "gateway_from_lb" {
  type                     = "ingress"
  from_port                = 443
  to_port                  = 443
  protocol                 = "tcp"
  security_group_id        = aws_security_group.daemon["gateway"].id
  source_security_group_id = aws_security_group.lb_https.id
}

resource "aws_security_group_rule" "lb_to_mail" {
  type                     = "egress"
  from_port                = 25
  to_port                  = 25
  protocol                 = "tcp"
  security_group_id        = aws_security_group.lb_smtp.id
  source_security_group_id = aws_security_group.daemon["mail-ingest"].id
}

resource "aws_security_group_rule" "mail_from_lb" {
  type                     = "ingress"
  from_port                = 25
  to_port                  = 25
  protocol                 = "tcp"
  security_group_id        = aws_security_group.daemon["mail-ingest"].id
  source_security_group_id = aws_security_group.lb_smtp.id
}

# ward-mail-out → the region's SMTP relay (var.mail_relay_cidrs, its port only).
resource "aws_security_group_rule" "mail_out_to_relay" {
  count             = length(var.mail_relay_cidrs) > 0 ? 1 : 0
  type              = "egress"
  description       = "SMTP (STARTTLS) to the region's relay"
  from_port         = var.mail_relay_port
  to_port           = var.mail_relay_port
  protocol          = "tcp"
  security_group_id = aws_security_group.daemon["mail-out"].id
  cidr_blocks       = var.mail_relay_cidrs
}

# Every daemon talks to Redis (its streams), TLS on 6379.
resource "aws_security_group_rule" "daemon_to_redis" {
  for_each                 = toset(var.daemons)
  type                     = "egress"
  from_port                = 6379
  to_port                  = 6379
  protocol                 = "tcp"
  security_group_id        = aws_security_group.daemon[each.key].id
  source_security_group_id = aws_security_group.redis.id
}

resource "aws_security_group_rule" "redis_from_daemon" {
  for_each                 = toset(var.daemons)
  type                     = "ingress"
  from_port                = 6379
  to_port                  = 6379
  protocol                 = "tcp"
  security_group_id        = aws_security_group.redis.id
  source_security_group_id = aws_security_group.daemon[each.key].id
}

# Only the daemons with a database role reach PostgreSQL (gateway and mail-ingest do not).
resource "aws_security_group_rule" "daemon_to_pg" {
  for_each                 = toset(var.db_daemons)
  type                     = "egress"
  from_port                = 5432
  to_port                  = 5432
  protocol                 = "tcp"
  security_group_id        = aws_security_group.daemon[each.key].id
  source_security_group_id = aws_security_group.pg.id
}

resource "aws_security_group_rule" "pg_from_daemon" {
  for_each                 = toset(var.db_daemons)
  type                     = "ingress"
  from_port                = 5432
  to_port                  = 5432
  protocol                 = "tcp"
  security_group_id        = aws_security_group.pg.id
  source_security_group_id = aws_security_group.daemon[each.key].id
}

# AWS APIs (secrets, KMS, logs) through the interface endpoints; S3 (backup only)
# through the gateway endpoint's prefix list.
resource "aws_security_group_rule" "daemon_to_endpoints" {
  for_each                 = toset(var.daemons)
  type                     = "egress"
  from_port                = 443
  to_port                  = 443
  protocol                 = "tcp"
  security_group_id        = aws_security_group.daemon[each.key].id
  source_security_group_id = aws_security_group.endpoints.id
}

resource "aws_security_group_rule" "endpoints_from_daemon" {
  for_each                 = toset(var.daemons)
  type                     = "ingress"
  from_port                = 443
  to_port                  = 443
  protocol                 = "tcp"
  security_group_id        = aws_security_group.endpoints.id
  source_security_group_id = aws_security_group.daemon[each.key].id
}

resource "aws_security_group_rule" "backup_to_s3" {
  type              = "egress"
  from_port         = 443
  to_port           = 443
  protocol          = "tcp"
  security_group_id = aws_security_group.daemon["backup"].id
  prefix_list_ids   = [aws_vpc_endpoint.s3.prefix_list_id]
}
