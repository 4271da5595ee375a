output "url" {
  description = "The chat page."
  value       = "https://${var.domain}/"
}

output "websocket_url" {
  description = "The WebSocket endpoint the page connects to."
  value       = "wss://${var.domain}/ws"
}

output "lb_ip_address" {
  description = "The load balancer's address: the A record of domain (created here if dns_managed_zone is set)."
  value       = google_compute_global_address.lb.address
}

output "prometheus_targets" {
  description = "Private address:port of each node's metrics listener (scrape from inside the VPC)."
  value       = [for ip in local.node_ips : "${ip}:9898"]
}

output "redis_host" {
  description = "Memorystore primary endpoint host:port (cluster mode), or null."
  value       = local.cluster ? "${google_redis_instance.redis[0].host}:${google_redis_instance.redis[0].port}" : null
}
