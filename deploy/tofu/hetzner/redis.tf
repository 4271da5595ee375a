# Redis for cluster mode (node_count > 1). Hetzner has no managed Redis: one server set up by
# deploy/redis/cloud-init.yaml (Debian's redis-server with deploy/redis/redis.conf: persistence
# off, noeviction, password required), listening on its private address only.
#
# Two adjustments, both through cloud-init rather than edits of deploy/redis/:
#  - the runcmd line gets `--bind PRIVATE-IP` (setup.sh would otherwise guess the one private
#    address, and stop if the private interface were not up yet);
#  - the password is made here (the nodes need it), not by setup.sh: a second cloud-config part
#    writes a minimal /etc/redis/roulette-local.conf with `bind` and `requirepass` before
#    runcmd; setup.sh keeps an existing password and rewrites that file in its own format and
#    ownership (root:redis 0640).
# Traffic is plain redis:// inside the private network (Hetzner firewalls do not filter it, and
# only this deployment's machines are in it); there is no failover: a Redis outage ends
# cross-node chats until it is back (README "Cluster": nodes keep serving local pairs).

locals {
  cluster = var.node_count > 1
  redis_runcmd = {
    from = "  - [/usr/local/lib/roulette-redis/setup.sh]\n"
    to   = "  - [/usr/local/lib/roulette-redis/setup.sh, --bind, ${local.redis_ip}]\n"
  }
}

# hashicorp/random 3.9.0: docs/resources/password.md — length, special (setup.sh accepts
# letters, digits and ._~- only, so the URL needs no escaping)
resource "random_password" "redis" {
  count   = local.cluster ? 1 : 0
  length  = 64
  special = false
}

data "cloudinit_config" "redis" {
  count         = local.cluster ? 1 : 0
  gzip          = false
  base64_encode = false
  part {
    filename     = "redis.yaml"
    content_type = "text/cloud-config"
    content      = replace(file("${path.module}/../../redis/cloud-init.yaml"), local.redis_runcmd.from, local.redis_runcmd.to)
  }
  part {
    filename     = "redis-password.yaml"
    content_type = "text/cloud-config"
    merge_type   = local.merge_type
    content = "#cloud-config\n${yamlencode({ write_files = [{
      path        = "/etc/redis/roulette-local.conf"
      owner       = "root:root"
      permissions = "0600"
      content     = "bind ${local.redis_ip} 127.0.0.1 -::1\nrequirepass ${random_password.redis[0].result}\n"
    }] })}"
  }
}

# hetznercloud/hcloud 1.68.0: docs/resources/server.md — as for the nodes
resource "hcloud_server" "redis" {
  count        = local.cluster ? 1 : 0
  name         = "${var.name}-redis"
  server_type  = var.redis_server_type
  image        = "debian-12"
  location     = var.location
  ssh_keys     = [hcloud_ssh_key.admin.id]
  user_data    = data.cloudinit_config.redis[0].rendered
  firewall_ids = [hcloud_firewall.servers.id]
  public_net {
    ipv4_enabled = true
    ipv6_enabled = true
  }
  network {
    subnet_id = hcloud_network_subnet.main.id
    ip        = local.redis_ip
    alias_ips = []
  }
  shutdown_before_deletion = true
  lifecycle {
    ignore_changes = [user_data, image]
  }
}
