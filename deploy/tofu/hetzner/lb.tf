# Hetzner Cloud load balancer (lb11) with a Hetzner-managed certificate (Let's Encrypt, validated
# through the domain's zone in Hetzner DNS), http -> https redirect, https on 443 to the nodes'
# 8080 over the private network, health check on /healthz.
#
# Client address: in http/https mode the load balancer adds X-Forwarded-For and connects from
# its private address (use_private_ip), so ROULETTE_TRUSTED_PROXY is that address and
# ROULETTE_PROXY_HEADER x-forwarded-for. (proxyprotocol = true would send a PROXY header instead;
# it is off here so that the health check and the traffic use the same plain HTTP.)

locals {
  # ROULETTE_GRACE_PERIOD: how long a stopping node waits for its clients to close. The load
  # balancer has no draining setting: a node answering 503 on /healthz is taken out after
  # `retries` failed checks; the node's own drain closes its clients.
  grace_period = 10
  # Idle timeout of the HTTP(S) service, seconds (30-300; configurable since hcloud 1.68.0's
  # `timeout_idle`, before that a fixed value). The maximum, far above the server's 30 s idle
  # ping and above idle ping + pong timeout (60 s).
  lb_idle_timeout = 300
}

# hetznercloud/hcloud 1.68.0: docs/resources/load_balancer.md — name, load_balancer_type,
# location, algorithm { type }
resource "hcloud_load_balancer" "main" {
  name               = var.name
  load_balancer_type = "lb11"
  location           = var.location
  # Long-lived WebSockets: new connections go to the node with the fewest open ones.
  algorithm {
    type = "least_connections"
  }
}

# hetznercloud/hcloud 1.68.0: docs/resources/load_balancer_network.md — load_balancer_id,
# subnet_id, ip
resource "hcloud_load_balancer_network" "main" {
  load_balancer_id = hcloud_load_balancer.main.id
  subnet_id        = hcloud_network_subnet.main.id
  ip               = local.lb_ip
}

# hetznercloud/hcloud 1.68.0: docs/resources/managed_certificate.md — name, domain_names,
# lifecycle create_before_destroy (as that page recommends)
resource "hcloud_managed_certificate" "main" {
  name         = "${var.name}-${replace(var.domain, ".", "-")}"
  domain_names = [var.domain]
  lifecycle {
    create_before_destroy = true
  }
}

# hetznercloud/hcloud 1.68.0: docs/resources/load_balancer_service.md — protocol = "https",
# listen_port, destination_port, proxyprotocol, http { certificates, redirect_http,
# timeout_idle }, health_check { protocol, port, interval, timeout, retries, http { path,
# status_codes } }
resource "hcloud_load_balancer_service" "https" {
  load_balancer_id = hcloud_load_balancer.main.id
  protocol         = "https"
  listen_port      = 443
  destination_port = 8080
  proxyprotocol    = false
  http {
    certificates  = [hcloud_managed_certificate.main.id]
    redirect_http = true
    # Seconds a connection may carry no data before the load balancer drops it.
    timeout_idle = local.lb_idle_timeout
  }
  health_check {
    protocol = "http"
    port     = 8080
    interval = 5
    timeout  = 3
    retries  = 2
    http {
      path         = "/healthz"
      status_codes = ["200"]
    }
  }
}

# hetznercloud/hcloud 1.68.0: docs/resources/load_balancer_target.md — type = "server",
# load_balancer_id, server_id, use_private_ip
resource "hcloud_load_balancer_target" "nodes" {
  count            = var.node_count
  type             = "server"
  load_balancer_id = hcloud_load_balancer.main.id
  server_id        = hcloud_server.node[count.index].id
  use_private_ip   = true
  depends_on       = [hcloud_load_balancer_network.main]
}

# hetznercloud/hcloud 1.68.0: docs/resources/zone_rrset.md — zone, name, type, ttl,
# records [{ value }]
locals {
  # The record name inside the zone; "@" when the domain is the zone apex.
  dns_name = var.domain == var.dns_zone ? "@" : trimsuffix(trimsuffix(var.domain, var.dns_zone), ".")
}

resource "hcloud_zone_rrset" "a" {
  zone    = var.dns_zone
  name    = local.dns_name
  type    = "A"
  ttl     = 300
  records = [{ value = hcloud_load_balancer.main.ipv4 }]
}

resource "hcloud_zone_rrset" "aaaa" {
  zone    = var.dns_zone
  name    = local.dns_name
  type    = "AAAA"
  ttl     = 300
  records = [{ value = hcloud_load_balancer.main.ipv6 }]
}
