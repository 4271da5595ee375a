output "url" {
  description = "The chat page."
  value       = "https://${var.domain}/"
}

output "websocket_url" {
  description = "The WebSocket endpoint the page connects to."
  value       = "wss://${var.domain}/ws"
}

output "prometheus_targets" {
  description = "Private address:port of each node's metrics listener (scrape from inside the VPC)."
  value       = [for ip in local.node_ips : "${ip}:9898"]
}

output "node_public_ips" {
  description = "For SSH from admin_cidr (login user: admin)."
  value       = aws_instance.node[*].public_ip
}

output "alb_dns_name" {
  description = "The ALB's own name (the domain's A record is an alias to it)."
  value       = aws_lb.main.dns_name
}

output "redis_primary_endpoint" {
  description = "ElastiCache primary endpoint (cluster mode), or null."
  value       = local.cluster ? aws_elasticache_replication_group.redis[0].primary_endpoint_address : null
}
