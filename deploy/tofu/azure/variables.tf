variable "name" {
  description = "Prefix of every resource name."
  type        = string
  default     = "roulette"
  validation {
    condition     = can(regex("^[a-z][a-z0-9]{0,11}$", var.name))
    error_message = "name: 1-12 lower-case letters and digits, starting with a letter (Key Vault and Redis names derive from it)."
  }
}

variable "subscription_id" {
  description = "Azure subscription ID."
  type        = string
}

variable "resource_group_name" {
  description = "Resource group created for this deployment (everything is in it; deleting it deletes everything)."
  type        = string
}

variable "location" {
  description = "Azure region, e.g. westeurope."
  type        = string
  default     = "westeurope"
}

variable "node_count" {
  description = "Number of roulette VMs. Above 1 the nodes share an Azure Cache for Redis (cluster mode)."
  type        = number
  default     = 2
  validation {
    condition     = var.node_count >= 1 && var.node_count <= 40 && floor(var.node_count) == var.node_count
    error_message = "node_count is a whole number from 1 to 40."
  }
}

variable "vm_size" {
  description = "VM size of the nodes (x86_64: the release .deb is amd64)."
  type        = string
  default     = "Standard_B2s"
}

variable "domain" {
  description = "The chat's host name, e.g. chat.example.org; the TLS certificate must be issued for it."
  type        = string
}

variable "dns_zone_name" {
  description = "Azure DNS zone that holds domain (e.g. example.org); the A record is created there. null: create it yourself (output gateway_ip_address)."
  type        = string
  default     = null
}

variable "dns_zone_resource_group" {
  description = "Resource group of dns_zone_name."
  type        = string
  default     = null
}

variable "tls_certificate_pfx" {
  description = "Path to a PKCS#12 (.pfx) file with the certificate chain and key for domain (e.g. from Let's Encrypt, `openssl pkcs12 -export`). It is imported into a Key Vault; the Application Gateway reads it from there."
  type        = string
}

variable "tls_certificate_password" {
  description = "Password of the .pfx file."
  type        = string
  sensitive   = true
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
  description = "OpenSSH public key of the login user `azureuser` (RSA or ed25519)."
  type        = string
}

variable "admin_cidr" {
  description = "CIDR allowed to reach port 22 on the nodes, e.g. 203.0.113.7/32. null (the default) opens no SSH port."
  type        = string
  default     = null
}
