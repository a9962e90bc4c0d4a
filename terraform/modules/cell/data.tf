# The region's key (KEK wrapping, RDS, ElastiCache, S3), PostgreSQL, Redis, backups.
data "aws_caller_identity" "me" {}

resource "aws_kms_key" "cell" {
  description             = "Ward ${var.region}: region key"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  # The account administers the key; the services that encrypt with it (RDS,
  # ElastiCache, S3, EBS, CloudWatch Logs) are granted through their own roles and
  # the daemons' instance roles (compute.tf) name it explicitly.
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid       = "AccountAdministers"
        Effect    = "Allow"
        Principal = { AWS = "arn:aws:iam::${data.aws_caller_identity.me.account_id}:root" }
        Action    = ["kms:*"]
        Resource  = ["*"]
      },
      {
        Sid       = "FlowLogs"
        Effect    = "Allow"
        Principal = { Service = "logs.${data.aws_region.current.name}.amazonaws.com" }
        Action    = ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey"]
        Resource  = ["*"]
      }
    ]
  })
}

resource "aws_kms_alias" "cell" {
  name          = "alias/ward-${var.region}"
  target_key_id = aws_kms_key.cell.key_id
}

# Connections to PostgreSQL must use TLS.
resource "aws_db_parameter_group" "pg" {
  name   = "ward-${var.region}"
  family = "postgres15"
  parameter {
    name  = "rds.force_ssl"
    value = "1"
  }
  parameter {
    name  = "log_connections"
    value = "1"
  }
}

resource "aws_db_subnet_group" "pg" {
  name       = "ward-${var.region}"
  subnet_ids = aws_subnet.private[*].id
}

resource "aws_db_instance" "pg" {
  identifier                   = "ward-${var.region}"
  engine                       = "postgres"
  engine_version               = "15"
  instance_class               = "db.t3.medium"
  allocated_storage            = 50
  multi_az                     = true
  storage_encrypted            = true
  kms_key_id                   = aws_kms_key.cell.arn
  backup_retention_period      = 35
  deletion_protection          = true
  publicly_accessible          = false
  db_subnet_group_name         = aws_db_subnet_group.pg.name
  parameter_group_name         = aws_db_parameter_group.pg.name
  auto_minor_version_upgrade   = true
  enabled_cloudwatch_logs_exports = ["postgresql"]
  vpc_security_group_ids       = [aws_security_group.pg.id]
  username                     = "ward_migrate"
  manage_master_user_password  = true
  iam_database_authentication_enabled = false
  performance_insights_enabled = true
  performance_insights_kms_key_id = aws_kms_key.cell.arn
  copy_tags_to_snapshot        = true
  skip_final_snapshot          = false
  final_snapshot_identifier    = "ward-${var.region}-final"
}

resource "aws_elasticache_subnet_group" "redis" {
  name       = "ward-${var.region}"
  subnet_ids = aws_subnet.private[*].id
}

resource "aws_elasticache_replication_group" "redis" {
  replication_group_id       = "ward-${var.region}"
  description                = "Ward ${var.region} queues"
  engine                     = "redis"
  engine_version             = "7.0"
  node_type                  = "cache.t3.small"
  num_cache_clusters         = 2
  automatic_failover_enabled = true
  multi_az_enabled           = true
  transit_encryption_enabled = true
  at_rest_encryption_enabled = true
  kms_key_id                 = aws_kms_key.cell.arn
  user_group_ids             = [aws_elasticache_user_group.ward.id]
  subnet_group_name          = aws_elasticache_subnet_group.redis.name
  security_group_ids         = [aws_security_group.redis.id]
}

# ACL users come from deploy/policy.yaml (ward-policy redis-acl); the default user is off.
resource "aws_elasticache_user" "default" {
  user_id       = "ward-${var.region}-default"
  user_name     = "default"
  access_string = "off -@all"
  engine        = "REDIS"
  authentication_mode { type = "no-password-required" }
}

resource "aws_elasticache_user_group" "ward" {
  engine        = "REDIS"
  user_group_id = "ward-${var.region}"
  user_ids      = [aws_elasticache_user.default.user_id]
  lifecycle { ignore_changes = [user_ids] } # the policy's users are added by deploy
}

resource "aws_s3_bucket" "backups" {
  bucket        = "ward-${var.region}-backups-${data.aws_caller_identity.me.account_id}"
  force_destroy = false
}

resource "aws_s3_bucket_versioning" "backups" {
  bucket = aws_s3_bucket.backups.id
  versioning_configuration { status = "Enabled" }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "backups" {
  bucket = aws_s3_bucket.backups.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.cell.arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_public_access_block" "backups" {
  bucket                  = aws_s3_bucket.backups.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

# Only TLS requests reach the bucket.
resource "aws_s3_bucket_policy" "backups" {
  bucket = aws_s3_bucket.backups.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid       = "TLSOnly"
      Effect    = "Deny"
      Principal = "*"
      Action    = ["s3:*"]
      Resource  = [aws_s3_bucket.backups.arn, "${aws_s3_bucket.backups.arn}/*"]
      Condition = { Bool = { "aws:SecureTransport" = "false" } }
    }]
  })
}

resource "aws_s3_bucket_ownership_controls" "backups" {
  bucket = aws_s3_bucket.backups.id
  rule { object_ownership = "BucketOwnerEnforced" }
}

resource "aws_s3_bucket_lifecycle_configuration" "backups" {
  bucket = aws_s3_bucket.backups.id
  rule {
    id     = "retention-60-days"
    status = "Enabled"
    filter {}
    expiration { days = 60 }
    noncurrent_version_expiration { noncurrent_days = 60 }
    abort_incomplete_multipart_upload { days_after_initiation = 7 }
  }
}
