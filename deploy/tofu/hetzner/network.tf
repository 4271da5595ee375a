# Network and firewall.
#
# A private network (10.50.0.0/16, one cloud subnet) joins the load balancer, the nodes and the
# Redis server. The load balancer reaches the nodes on their private addresses. Hetzner Cloud
# Firewalls filter the PUBLIC interfaces only (traffic inside a private network is not
# filtered), so:
#   internet   -> load balancer 80, 443 (the load balancer has no firewall; it only listens there)
#   internet   -> servers: nothing, except 22 from admin_cidr if set
#   private network -> nodes 8080 (the load balancer), 9898 (metrics), Redis 6379
# Only this deployment's servers and load balancer are in the network.

locals {
  network_cidr = "10.50.0.0/16"
  subnet_cidr  = "10.50.0.0/24"
  lb_ip        = cidrhost(local.subnet_cidr, 2)
  redis_ip     = cidrhost(local.subnet_cidr, 5)
  # Fixed private addresses, so that cloud.env names the metrics address and the Prometheus
  # targets are known.
  node_ips = [for i in range(var.node_count) : cidrhost(local.subnet_cidr, 10 + i)]
}

# hetznercloud/hcloud 1.68.0: docs/resources/network.md — name, ip_range
resource "hcloud_network" "main" {
  name     = var.name
  ip_range = local.network_cidr
}

# hetznercloud/hcloud 1.68.0: docs/resources/network_subnet.md — network_id, type, ip_range,
# network_zone
resource "hcloud_network_subnet" "main" {
  network_id   = hcloud_network.main.id
  type         = "cloud"
  network_zone = var.network_zone
  ip_range     = local.subnet_cidr
}

# hetznercloud/hcloud 1.68.0: docs/resources/firewall.md — rule { direction, protocol, port,
# source_ips, description }. No rule = every inbound packet on the public interface dropped
# (outbound is not filtered: apt, the release download).
resource "hcloud_firewall" "servers" {
  name = "${var.name}-servers"
  dynamic "rule" {
    for_each = var.admin_cidr == null ? [] : [var.admin_cidr]
    content {
      description = "SSH from the operator"
      direction   = "in"
      protocol    = "tcp"
      port        = "22"
      source_ips  = [rule.value]
    }
  }
  rule {
    description = "ping"
    direction   = "in"
    protocol    = "icmp"
    source_ips  = ["0.0.0.0/0", "::/0"]
  }
}

# hetznercloud/hcloud 1.68.0: docs/resources/placement_group.md — type = "spread": the nodes
# land on different physical hosts.
resource "hcloud_placement_group" "nodes" {
  name = "${var.name}-nodes"
  type = "spread"
}

# hetznercloud/hcloud 1.68.0: docs/resources/ssh_key.md — name, public_key
resource "hcloud_ssh_key" "admin" {
  name       = "${var.name}-admin"
  public_key = var.ssh_public_key
}
