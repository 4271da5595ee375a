# Network and firewall.
#
# A custom-mode VPC with one regional subnet; the nodes have no external address and reach the
# internet (apt, the release download) through Cloud NAT. VPC firewalls deny all ingress unless a
# rule allows it:
#   Google Front Ends and health checks (35.191.0.0/16, 130.211.0.0/22) -> nodes 8080
#   the subnet (Prometheus inside the VPC)                                -> nodes 9898
#   admin_cidr                                                            -> nodes 22 (if set)
# Egress is open (the VPC's implied rule): packages, the release, Memorystore.

locals {
  subnet_cidr = "10.30.0.0/24"
  # The source ranges of a global external Application Load Balancer's proxies and of its health
  # checks (Google Cloud "Firewall rules" for load balancers): the only peers allowed to set
  # X-Forwarded-For, and the only ones the firewall lets reach port 8080.
  gfe_ranges = ["35.191.0.0/16", "130.211.0.0/22"]
  zones      = slice(data.google_compute_zones.up.names, 0, 2)
  # Fixed private addresses, so that cloud.env names the metrics address and the Prometheus
  # targets are known: node i at host 10 + i, in zone i % 2.
  node_ips = [for i in range(var.node_count) : cidrhost(local.subnet_cidr, 10 + i)]
}

# hashicorp/google 7.45.0: website/docs/d/compute_zones.html.markdown — region, status
data "google_compute_zones" "up" {
  region = var.region
  status = "UP"
}

# hashicorp/google 7.45.0: website/docs/r/compute_network.html.markdown — auto_create_subnetworks
resource "google_compute_network" "main" {
  name                    = var.name
  auto_create_subnetworks = false
}

# hashicorp/google 7.45.0: website/docs/r/compute_subnetwork.html.markdown — ip_cidr_range,
# region, network, private_ip_google_access
resource "google_compute_subnetwork" "main" {
  #checkov:skip=CKV_GCP_26:VPC flow logs cost per GB of logs; turn them on where the organisation collects them
  name                     = var.name
  ip_cidr_range            = local.subnet_cidr
  region                   = var.region
  network                  = google_compute_network.main.id
  private_ip_google_access = true
}

# hashicorp/google 7.45.0: website/docs/r/compute_router.html.markdown — name, region, network
resource "google_compute_router" "main" {
  name    = var.name
  region  = var.region
  network = google_compute_network.main.id
}

# hashicorp/google 7.45.0: website/docs/r/compute_router_nat.html.markdown — router, region,
# nat_ip_allocate_option, source_subnetwork_ip_ranges_to_nat, log_config { enable, filter }
resource "google_compute_router_nat" "main" {
  name                               = var.name
  router                             = google_compute_router.main.name
  region                             = var.region
  nat_ip_allocate_option             = "AUTO_ONLY"
  source_subnetwork_ip_ranges_to_nat = "ALL_SUBNETWORKS_ALL_IP_RANGES"
  log_config {
    enable = true
    filter = "ERRORS_ONLY"
  }
}

# hashicorp/google 7.45.0: website/docs/r/compute_firewall.html.markdown — network, direction,
# allow { protocol, ports }, source_ranges, target_tags
resource "google_compute_firewall" "lb_to_nodes" {
  name          = "${var.name}-lb-to-nodes"
  network       = google_compute_network.main.id
  direction     = "INGRESS"
  source_ranges = local.gfe_ranges
  target_tags   = ["${var.name}-node"]
  allow {
    protocol = "tcp"
    ports    = ["8080"]
  }
}

resource "google_compute_firewall" "metrics" {
  name          = "${var.name}-metrics"
  network       = google_compute_network.main.id
  direction     = "INGRESS"
  source_ranges = [local.subnet_cidr]
  target_tags   = ["${var.name}-node"]
  allow {
    protocol = "tcp"
    ports    = ["9898"]
  }
}

resource "google_compute_firewall" "ssh" {
  count         = var.admin_cidr == null ? 0 : 1
  name          = "${var.name}-ssh"
  network       = google_compute_network.main.id
  direction     = "INGRESS"
  source_ranges = [var.admin_cidr]
  target_tags   = ["${var.name}-node"]
  allow {
    protocol = "tcp"
    ports    = ["22"]
  }
}
