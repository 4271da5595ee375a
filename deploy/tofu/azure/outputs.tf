output "url" {
  description = "The chat page."
  value       = "https://${var.domain}/"
}

output "websocket_url" {
  description = "The WebSocket endpoint the page connects to."
  value       = "wss://${var.domain}/ws"
}

output "gateway_ip_address" {
  description = "The Application Gateway's address: the A record of domain (created here if dns_zone_name is set)."
  value       = azurerm_public_ip.gateway.ip_address
}

output "prometheus_targets" {
  description = "Private address:port of each node's metrics listener (scrape from inside the VNet)."
  value       = [for ip in local.node_ips : "${ip}:9898"]
}

output "node_public_ips" {
  description = "For SSH from admin_cidr (login user: azureuser)."
  value       = azurerm_public_ip.node[*].ip_address
}

output "redis_hostname" {
  description = "Azure Cache for Redis host:port (cluster mode), or null."
  value       = local.cluster ? "${azurerm_redis_cache.redis[0].hostname}:${azurerm_redis_cache.redis[0].ssl_port}" : null
}
