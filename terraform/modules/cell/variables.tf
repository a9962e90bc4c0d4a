# Inputs of a region cell; main.tf sets them per region (one module block each).
variable "region" {
  type        = string
  description = "Ward region name (us, eu, uk, ...), as in deploy/regions.yaml"
  validation {
    condition     = can(regex("^[a-z]{2,8}$", var.region))
    error_message = "region must be [a-z]{2,8}"
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

variable "vpc_cidr" {
  type        = string
  description = "The cell's VPC, a /16 distinct from every other cell's"
}

variable "status_page" {
  type        = bool
  default     = false
  description = "This cell runs the status page, ward-status, for status.<domain> (exactly one cell: status.tf)"
}

variable "instance_type" {
  type    = string
  default = "t3.small"
}

variable "daemons" {
  type    = list(string)
  default = ["gateway", "auth", "ticket", "mail-ingest", "mail-out", "audit", "backup"]
}

# ward-mail-out's SMTP relay (deploy/regions.yaml mail_relay): the only egress of its
# group besides Redis, to these addresses on this port (STARTTLS); none by default
# (no mail leaves until the relay's addresses are set). Never the whole internet.
variable "mail_relay_cidrs" {
  type        = list(string)
  default     = []
  description = "Addresses of the region's SMTP relay (ward-mail-out's egress)"
  validation {
    condition     = alltrue([for c in var.mail_relay_cidrs : can(cidrhost(c, 0)) && c != "0.0.0.0/0" && !endswith(c, "/0")])
    error_message = "mail_relay_cidrs: CIDR blocks of the relay, never 0.0.0.0/0"
  }
}

variable "mail_relay_port" {
  type    = number
  default = 587
}

# The daemons with a PostgreSQL role in deploy/policy.yaml (gateway and mail-ingest
# have "postgres: none").
variable "db_daemons" {
  type    = list(string)
  default = ["auth", "ticket", "audit", "backup"]
}
