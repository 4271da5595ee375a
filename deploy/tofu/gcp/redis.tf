# Redis for cluster mode (node_count > 1): Memorystore for Redis, tier STANDARD_HA (a primary
# and a replica in another zone, automatic failover; not Redis Cluster, which the server
# refuses), AUTH on, TLS on (SERVER_AUTHENTICATION: Memorystore then listens on port 6378 with a
# certificate from its own CA, handed to the nodes as ROULETTE_CLUSTER_CA_FILE).

locals {
  cluster = var.node_count > 1
}

# hashicorp/google 7.45.0: website/docs/r/redis_instance.html.markdown — tier, memory_size_gb,
# region, redis_version, authorized_network, connect_mode, auth_enabled,
# transit_encryption_mode, deletion_protection; attributes host, port, auth_string,
# server_ca_certs[].cert
resource "google_redis_instance" "redis" {
  count              = local.cluster ? 1 : 0
  name               = "${var.name}-redis"
  tier               = "STANDARD_HA"
  memory_size_gb     = 1
  region             = var.region
  redis_version      = "REDIS_7_2"
  authorized_network = google_compute_network.main.id
  connect_mode       = "DIRECT_PEERING"
  auth_enabled       = true
  # TLS with server authentication; the AUTH string travels inside it.
  transit_encryption_mode = "SERVER_AUTHENTICATION"
  # The instance holds only ephemeral state (queue, heartbeats): no persistence, and
  # `tofu destroy` may delete it (the provider's default would refuse).
  deletion_protection = false
}
