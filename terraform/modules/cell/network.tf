# Private subnets in two availability zones; public subnets hold only the load balancers.
data "aws_availability_zones" "az" { state = "available" }

resource "aws_vpc" "cell" {
  cidr_block           = var.vpc_cidr
  enable_dns_hostnames = true
  tags                 = { Name = "ward-${var.region}" }
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

# Security groups: exactly the flows of deploy/policy.yaml. Internet: 443 to the
# gateway's load balancer, 25 to mail-ingest's; nothing else from anywhere.
resource "aws_security_group" "lb_https" {
  name   = "ward-${var.region}-lb-https"
  vpc_id = aws_vpc.cell.id
  ingress {
    description = "HTTPS from the internet"
    from_port   = 443
    to_port     = 443
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }
  egress {
    from_port       = 443
    to_port         = 443
    protocol        = "tcp"
    security_groups = [aws_security_group.daemon["gateway"].id]
  }
}

resource "aws_security_group" "lb_smtp" {
  name   = "ward-${var.region}-lb-smtp"
  vpc_id = aws_vpc.cell.id
  ingress {
    description = "SMTP from the internet"
    from_port   = 25
    to_port     = 25
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }
  egress {
    from_port       = 25
    to_port         = 25
    protocol        = "tcp"
    security_groups = [aws_security_group.daemon["mail-ingest"].id]
  }
}

resource "aws_security_group" "daemon" {
  for_each = toset(var.daemons)
  name     = "ward-${var.region}-${each.key}"
  vpc_id   = aws_vpc.cell.id
  egress {
    description = "Redis"
    from_port   = 6379
    to_port     = 6379
    protocol    = "tcp"
    cidr_blocks = [var.vpc_cidr]
  }
}

resource "aws_security_group_rule" "gateway_from_lb" {
  type                     = "ingress"
  from_port                = 443
  to_port                  = 443
  protocol                 = "tcp"
  security_group_id        = aws_security_group.daemon["gateway"].id
  source_security_group_id = aws_security_group.lb_https.id
}

resource "aws_security_group_rule" "mail_from_lb" {
  type                     = "ingress"
  from_port                = 25
  to_port                  = 25
  protocol                 = "tcp"
  security_group_id        = aws_security_group.daemon["mail-ingest"].id
  source_security_group_id = aws_security_group.lb_smtp.id
}

# Only the daemons with a database role reach PostgreSQL (gateway and mail-ingest do not).
resource "aws_security_group_rule" "db_egress" {
  for_each          = toset(["auth", "ticket", "audit", "backup"])
  type              = "egress"
  from_port         = 5432
  to_port           = 5432
  protocol          = "tcp"
  security_group_id = aws_security_group.daemon[each.key].id
  cidr_blocks       = [for s in aws_subnet.private : s.cidr_block]
}

resource "aws_security_group" "redis" {
  name   = "ward-${var.region}-redis"
  vpc_id = aws_vpc.cell.id
  ingress {
    from_port       = 6379
    to_port         = 6379
    protocol        = "tcp"
    security_groups = [for d in aws_security_group.daemon : d.id]
  }
}

resource "aws_security_group" "pg" {
  name   = "ward-${var.region}-pg"
  vpc_id = aws_vpc.cell.id
  ingress {
    from_port       = 5432
    to_port         = 5432
    protocol        = "tcp"
    security_groups = [for k in ["auth", "ticket", "audit", "backup"] : aws_security_group.daemon[k].id]
  }
}
