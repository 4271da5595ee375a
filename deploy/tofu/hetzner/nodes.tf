# The roulette servers: Debian 12 (Hetzner's image runs cloud-init) booted from
# deploy/cloud-init.yaml (release URL and SHA-256 filled in) plus a second cloud-config part with
# this node's /etc/roulette/cloud.env and, in cluster mode, the Redis password file.
#
# Upgrades are per node: user_data is ignored after creation, so changing release_url and
# release_sha256 changes no running server; `tofu apply -replace='hcloud_server.node[0]'`
# rebuilds one node with the new release (docs/deploy/hetzner.md).

locals {
  base_user_data = replace(replace(file("${path.module}/../../cloud-init.yaml"),
  "@RELEASE_URL@", var.release_url), "@RELEASE_SHA256@", var.release_sha256)
  merge_type = "list(append)+dict(no_replace,recurse_list)+str()"
}

module "node_config" {
  source          = "../modules/node-config"
  count           = var.node_count
  node_name       = "${var.name}-${count.index + 1}"
  metrics_address = local.node_ips[count.index]
  # The load balancer connects from its private address and adds X-Forwarded-For.
  trusted_proxies = ["${local.lb_ip}/32"]
  proxy_header    = "x-forwarded-for"
  allowed_origin  = "https://${var.domain}"
  grace_period    = local.grace_period
  # Plain redis:// inside the private network (no TLS on the self-run Redis; see redis.tf).
  cluster_url      = local.cluster ? "redis://${local.redis_ip}:6379" : null
  cluster_password = local.cluster ? random_password.redis[0].result : null
}

# hashicorp/cloudinit 2.4.0: docs/data-sources/config.md — gzip, base64_encode, part {
# content_type, filename, merge_type, content }. Plain text: Hetzner passes user_data as is
# (32 KiB at most).
data "cloudinit_config" "node" {
  count         = var.node_count
  gzip          = false
  base64_encode = false
  part {
    filename     = "roulette.yaml"
    content_type = "text/cloud-config"
    content      = local.base_user_data
  }
  part {
    filename     = "roulette-node.yaml"
    content_type = "text/cloud-config"
    merge_type   = local.merge_type
    content      = module.node_config[count.index].cloud_config
  }
}

# hetznercloud/hcloud 1.68.0: docs/resources/server.md — name, server_type, image, location,
# ssh_keys, user_data, firewall_ids, placement_group_id, public_net { ipv4_enabled,
# ipv6_enabled }, network { subnet_id, ip, alias_ips } (attached at creation, so the private
# address exists when roulette binds its metrics listener; alias_ips = [] per that page's
# note), shutdown_before_deletion
resource "hcloud_server" "node" {
  count              = var.node_count
  name               = "${var.name}-${count.index + 1}"
  server_type        = var.server_type
  image              = "debian-12"
  location           = var.location
  ssh_keys           = [hcloud_ssh_key.admin.id]
  user_data          = data.cloudinit_config.node[count.index].rendered
  firewall_ids       = [hcloud_firewall.servers.id]
  placement_group_id = hcloud_placement_group.nodes.id
  # The public addresses carry outgoing traffic (apt, the release); the firewall admits nothing.
  public_net {
    ipv4_enabled = true
    ipv6_enabled = true
  }
  network {
    subnet_id = hcloud_network_subnet.main.id
    ip        = local.node_ips[count.index]
    alias_ips = []
  }
  # A clean shutdown lets roulette drain its clients (SIGTERM, close 1001) before deletion.
  shutdown_before_deletion = true
  lifecycle {
    ignore_changes = [user_data, image]
  }
}
