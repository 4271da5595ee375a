# The roulette VMs: Google's Debian 12 image (debian-cloud/debian-12) with the startup script
# deploy/tofu/gcp/startup.sh.
#
# Why a startup script and not cloud-init: Google's Debian images run the guest agent's
# startup-script mechanism and no cloud-init, so user-data would be ignored. An image that runs
# cloud-init (Ubuntu, or Debian's "genericcloud" build imported by hand) would let this folder
# reuse deploy/cloud-init.yaml, but would mean either another distribution than the other clouds
# or an image to build and keep patched. The startup script is small, runs at every boot (so it
# is written to be idempotent), and reads everything per node from instance metadata, which
# `tofu apply` updates in place: a new release is rolled out by changing release_url/sha256,
# applying, and running `sudo google_metadata_script_runner startup` on one node at a time
# (docs/deploy/gcp.md).
#
# Metadata can be read by every process on the VM (as user-data elsewhere), and the Redis AUTH
# string is in it in cluster mode.

module "node_config" {
  source          = "../modules/node-config"
  count           = var.node_count
  node_name       = "${var.name}-${count.index + 1}"
  metrics_address = local.node_ips[count.index]
  # Google's proxies send `X-Forwarded-For: <client>,<load-balancer-ip>` (appending to what the
  # client sent) from the GFE ranges. The load balancer's own address is the rightmost entry
  # and lies outside those ranges, so it is trusted too; the server then takes the rightmost
  # entry that is not trusted: the client.
  trusted_proxies  = concat(local.gfe_ranges, ["${google_compute_global_address.lb.address}/32"])
  proxy_header     = "x-forwarded-for"
  allowed_origin   = "https://${var.domain}"
  grace_period     = local.grace_period
  cluster_url      = local.cluster ? "rediss://${google_redis_instance.redis[0].host}:${google_redis_instance.redis[0].port}" : null
  cluster_password = local.cluster ? google_redis_instance.redis[0].auth_string : null
  cluster_ca_pem   = local.cluster ? google_redis_instance.redis[0].server_ca_certs[0].cert : null
}

# hashicorp/google 7.45.0: website/docs/r/google_service_account.html.markdown — account_id,
# display_name. The nodes call no Google API: an account with no roles instead of the project's
# default compute account (which has Editor on many projects).
resource "google_service_account" "node" {
  account_id   = "${var.name}-node"
  display_name = "roulette node (no roles)"
}

# hashicorp/google 7.45.0: website/docs/r/compute_instance.html.markdown — machine_type, zone,
# boot_disk { initialize_params { image, size, type } }, network_interface { subnetwork,
# network_ip }, metadata (startup-script, block-project-ssh-keys, ssh-keys), tags,
# service_account { email, scopes }, shielded_instance_config, allow_stopping_for_update
resource "google_compute_instance" "node" {
  #checkov:skip=CKV_GCP_38:boot disk encrypted with Google-managed keys; a customer-supplied key would have to be handed in at every start
  count        = var.node_count
  name         = "${var.name}-${count.index + 1}"
  machine_type = var.machine_type
  zone         = local.zones[count.index % 2]
  tags         = ["${var.name}-node"]

  boot_disk {
    initialize_params {
      image = "debian-cloud/debian-12"
      size  = 10
      type  = "pd-balanced"
    }
  }

  # No access_config block: no external address; egress goes through Cloud NAT.
  network_interface {
    subnetwork = google_compute_subnetwork.main.id
    network_ip = local.node_ips[count.index]
  }

  # A plain map (not merge()) so that policy checks see block-project-ssh-keys. The cluster
  # entries are empty strings on a single node; startup.sh treats empty as absent.
  metadata = {
    startup-script            = file("${path.module}/startup.sh")
    block-project-ssh-keys    = "true"
    ssh-keys                  = "admin:${var.ssh_public_key}"
    roulette-release-url      = var.release_url
    roulette-release-sha256   = var.release_sha256
    roulette-cloud-env        = module.node_config[count.index].cloud_env
    roulette-cluster-password = local.cluster ? google_redis_instance.redis[0].auth_string : ""
    roulette-cluster-ca       = local.cluster ? google_redis_instance.redis[0].server_ca_certs[0].cert : ""
    roulette-credentials      = module.node_config[count.index].credentials_dropin
  }

  service_account {
    email  = google_service_account.node.email
    scopes = ["cloud-platform"]
  }

  shielded_instance_config {
    enable_secure_boot          = true
    enable_vtpm                 = true
    enable_integrity_monitoring = true
  }

  allow_stopping_for_update = true

  lifecycle {
    # A newer debian-12 image must not replace running nodes; `tofu apply -replace` does.
    ignore_changes = [boot_disk[0].initialize_params[0].image]
  }
}

# hashicorp/google 7.45.0: website/docs/r/compute_instance_group.html.markdown — zone,
# instances, named_port { name, port } (unmanaged: one group per zone, fixed members)
resource "google_compute_instance_group" "nodes" {
  count     = 2
  name      = "${var.name}-${local.zones[count.index]}"
  zone      = local.zones[count.index]
  instances = [for i in range(var.node_count) : google_compute_instance.node[i].self_link if i % 2 == count.index]
  named_port {
    name = "http"
    port = 8080
  }
}
