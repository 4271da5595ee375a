# Inputs of the per-node settings. Every cloud folder computes them from its own resources
# (private address, load balancer source ranges, Redis endpoint) and hands them here, so that
# /etc/roulette/cloud.env has one format on every cloud.

variable "node_name" {
  description = "ROULETTE_NODE_NAME: unique among the nodes that share one Redis (logs, metrics)."
  type        = string
}

variable "metrics_address" {
  description = "This node's private IPv4 address; the metrics listener binds <address>:9898 there, never on a public address."
  type        = string
}

variable "trusted_proxies" {
  description = "CIDRs the load balancer connects from (ROULETTE_TRUSTED_PROXY); only peers inside them may name the client address."
  type        = list(string)
}

variable "proxy_header" {
  description = "How the load balancer passes the client address: x-forwarded-for or proxy-protocol (ROULETTE_PROXY_HEADER)."
  type        = string
  validation {
    condition     = contains(["x-forwarded-for", "proxy-protocol"], var.proxy_header)
    error_message = "proxy_header is x-forwarded-for or proxy-protocol."
  }
}

variable "allowed_origin" {
  description = "ROULETTE_ALLOWED_ORIGIN: the page's origin, https://DOMAIN; other browser origins are refused."
  type        = string
}

variable "grace_period" {
  description = "ROULETTE_GRACE_PERIOD in seconds; the load balancer's draining time is sized from the same number."
  type        = number
}

variable "cluster_url" {
  description = "ROULETTE_CLUSTER without the password (redis:// or rediss://HOST:PORT), or null for a single node."
  type        = string
  default     = null
}

variable "cluster_password" {
  description = "Redis password, written to /etc/roulette/cluster-password and handed to the service with LoadCredential=, never put in the URL."
  type        = string
  default     = null
  sensitive   = true
}

variable "cluster_ca_pem" {
  description = "PEM CA bundle of a Redis with a private CA (rediss://), or null to use the built-in WebPKI roots."
  type        = string
  default     = null
}
