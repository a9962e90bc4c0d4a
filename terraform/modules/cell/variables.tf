variable "region" {
  type        = string
  description = "Ward region name (us, eu, uk, ...)"
  validation {
    condition     = can(regex("^[a-z]{2,8}$", var.region))
    error_message = "region must be [a-z]{2,8}"
  }
}

variable "domain" { type = string }
variable "zone_id" { type = string }
variable "vpc_cidr" { type = string }

variable "instance_type" {
  type    = string
  default = "t3.small"
}

variable "daemons" {
  type    = list(string)
  default = ["gateway", "auth", "ticket", "mail-ingest", "audit", "backup"]
}
