variable "name" {
  description = "Prefix of every resource name (ALB and target group names allow 32 characters)."
  type        = string
  default     = "roulette"
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,15}$", var.name))
    error_message = "name: 1-16 characters, lower-case letters, digits and '-', starting with a letter."
  }
}

variable "region" {
  description = "AWS region, e.g. eu-central-1."
  type        = string
  default     = "eu-central-1"
}

variable "node_count" {
  description = "Number of roulette VMs. Above 1 the nodes share an ElastiCache Redis (cluster mode)."
  type        = number
  default     = 2
  validation {
    condition     = var.node_count >= 1 && var.node_count <= 40 && floor(var.node_count) == var.node_count
    error_message = "node_count is a whole number from 1 to 40."
  }
}

variable "instance_type" {
  description = "EC2 instance type of the nodes (x86_64: the release .deb is amd64)."
  type        = string
  default     = "t3.small"
}

variable "domain" {
  description = "The chat's host name, e.g. chat.example.org. It must lie in route53_zone_name."
  type        = string
}

variable "route53_zone_name" {
  description = "The public Route 53 hosted zone that holds domain (e.g. example.org): ACM validates the certificate through it, and the A record of domain goes there."
  type        = string
}

variable "release_url" {
  description = "HTTPS URL of the released roulette_VERSION-1_amd64.deb."
  type        = string
  validation {
    condition     = can(regex("^https://", var.release_url))
    error_message = "release_url must be an https:// URL."
  }
}

variable "release_sha256" {
  description = "SHA-256 of that .deb, from the release's SHA256SUMS (64 hex digits)."
  type        = string
  validation {
    condition     = can(regex("^[0-9a-f]{64}$", var.release_sha256))
    error_message = "release_sha256 is 64 lower-case hex digits."
  }
}

variable "ssh_public_key" {
  description = "OpenSSH public key installed for the image's login user (admin on Debian)."
  type        = string
}

variable "admin_cidr" {
  description = "CIDR allowed to reach port 22 on the nodes, e.g. 203.0.113.7/32. null (the default) opens no SSH port."
  type        = string
  default     = null
}

variable "redis_node_type" {
  description = "ElastiCache node type of the primary and the replica (node_count > 1 only)."
  type        = string
  default     = "cache.t4g.micro"
}
