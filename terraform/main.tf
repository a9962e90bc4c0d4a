# terraform/main.tf — the region cells. Adding a region: one provider and one module
# block here (its vpc_cidr and AWS region as in its deploy/regions.yaml entry), then
# deploy/deploy.sh (ops/runbooks/add-region.md). tests/e2e/test_terraform.sh checks
# that this file and deploy/regions.yaml name the same regions.
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
  # The first region of deploy/regions.yaml serves status.<domain>.
  status_page = true
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
