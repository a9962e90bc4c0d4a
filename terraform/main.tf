# terraform/main.tf — the three region cells. Adding a region: one module block here,
# one entry in deploy/regions/<r>.env, then deploy/deploy.sh (ops/runbooks/add-region.md).
terraform {
  required_version = ">= 1.5"
  required_providers {
    aws = { source = "hashicorp/aws", version = "~> 5.0" }
  }
}

variable "domain" {
  type        = string
  description = "Public domain: tenants are <slug>.<region>.<domain>"
}

variable "zone_id" {
  type        = string
  description = "Route 53 hosted zone of var.domain"
}

provider "aws" {
  alias  = "us"
  region = "us-east-1"
}

provider "aws" {
  alias  = "eu"
  region = "eu-west-1"
}

provider "aws" {
  alias  = "uk"
  region = "eu-west-2"
}

module "cell_us" {
  source    = "./modules/cell"
  providers = { aws = aws.us }
  region    = "us"
  domain    = var.domain
  zone_id   = var.zone_id
  vpc_cidr  = "10.10.0.0/16"
}

module "cell_eu" {
  source    = "./modules/cell"
  providers = { aws = aws.eu }
  region    = "eu"
  domain    = var.domain
  zone_id   = var.zone_id
  vpc_cidr  = "10.20.0.0/16"
}

module "cell_uk" {
  source    = "./modules/cell"
  providers = { aws = aws.uk }
  region    = "uk"
  domain    = var.domain
  zone_id   = var.zone_id
  vpc_cidr  = "10.30.0.0/16"
}
