variable "name" {
  description = "Prefix of every resource name."
  type        = string
  default     = "roulette"
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,19}$", var.name))
    error_message = "name: 1-20 characters, lower-case letters, digits and '-', starting with a letter."
  }
}

variable "project" {
  description = "Google Cloud project ID."
  type        = string
}

variable "region" {
  description = "Region of the VMs, the NAT and Memorystore, e.g. europe-west1. The load balancer is global."
  type        = string
  default     = "europe-west1"
}

variable "node_count" {
  description = "Number of roulette VMs (spread over two zones). Above 1 the nodes share a Memorystore Redis (cluster mode)."
  type        = number
  default     = 2
  validation {
    condition     = var.node_count >= 1 && var.node_count <= 40 && floor(var.node_count) == var.node_count
    error_message = "node_count is a whole number from 1 to 40."
  }
}

variable "machine_type" {
  description = "Compute Engine machine type of the nodes (x86_64: the release .deb is amd64)."
  type        = string
  default     = "e2-small"
}

variable "domain" {
  description = "The chat's host name, e.g. chat.example.org. Its A record must point at the load balancer's address before Google issues the managed certificate."
  type        = string
}

variable "dns_managed_zone" {
  description = "Name of the Cloud DNS managed zone that holds domain; the A record is created there. null: create the record yourself (output lb_ip_address)."
  type        = string
  default     = null
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
  description = "OpenSSH public key for the login user `admin` (instance metadata ssh-keys)."
  type        = string
}

variable "admin_cidr" {
  description = "CIDR allowed to reach port 22, e.g. 203.0.113.7/32, or 35.235.240.0/20 for `gcloud compute ssh --tunnel-through-iap`. null (the default) opens no SSH port."
  type        = string
  default     = null
}
