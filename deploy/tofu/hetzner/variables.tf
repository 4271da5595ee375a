variable "name" {
  description = "Prefix of every resource name."
  type        = string
  default     = "roulette"
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,19}$", var.name))
    error_message = "name: 1-20 characters, lower-case letters, digits and '-', starting with a letter."
  }
}

variable "location" {
  description = "Hetzner location of the servers and the load balancer (fsn1, nbg1, hel1, ash, hil, sin)."
  type        = string
  default     = "nbg1"
}

variable "network_zone" {
  description = "Network zone of that location (eu-central for fsn1/nbg1/hel1, us-east for ash, us-west for hil, ap-southeast for sin)."
  type        = string
  default     = "eu-central"
}

variable "node_count" {
  description = "Number of roulette servers. Above 1 a Redis server joins the private network (cluster mode)."
  type        = number
  default     = 2
  validation {
    condition     = var.node_count >= 1 && var.node_count <= 40 && floor(var.node_count) == var.node_count
    error_message = "node_count is a whole number from 1 to 40."
  }
}

variable "server_type" {
  description = "Server type of the nodes (x86: the release .deb is amd64)."
  type        = string
  default     = "cx23"
}

variable "redis_server_type" {
  description = "Server type of the Redis server (node_count > 1 only)."
  type        = string
  default     = "cx23"
}

variable "domain" {
  description = "The chat's host name, e.g. chat.example.org. It must lie in dns_zone."
  type        = string
}

variable "dns_zone" {
  description = "The Hetzner DNS zone that holds domain (e.g. example.org). Hetzner's managed certificates are validated through it; the A/AAAA records of domain go there."
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
  description = "OpenSSH public key installed for root (Hetzner's images log in as root)."
  type        = string
}

variable "admin_cidr" {
  description = "CIDR allowed to reach port 22 on the servers, e.g. 203.0.113.7/32. null (the default) opens no SSH port."
  type        = string
  default     = null
}
