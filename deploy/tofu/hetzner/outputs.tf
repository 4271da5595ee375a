output "url" {
  description = "The chat page."
  value       = "https://${var.domain}/"
}

output "websocket_url" {
  description = "The WebSocket endpoint the page connects to."
  value       = "wss://${var.domain}/ws"
}

output "prometheus_targets" {
  description = "Private address:port of each node's metrics listener (scrape from inside the private network)."
  value       = [for ip in local.node_ips : "${ip}:9898"]
}

output "load_balancer_ipv4" {
  description = "The load balancer's public IPv4 address (the A record of domain)."
  value       = hcloud_load_balancer.main.ipv4
}

output "node_public_ips" {
  description = "For SSH from admin_cidr (login user: root)."
  value       = hcloud_server.node[*].ipv4_address
}

output "redis_private_ip" {
  description = "The Redis server's private address (cluster mode), or null."
  value       = local.cluster ? local.redis_ip : null
}
