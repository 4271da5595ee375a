# Redis for cluster mode (node_count > 1): ElastiCache for Redis, cluster mode DISABLED (the
# server refuses a Redis Cluster endpoint), one primary and one replica in the other zone with
# automatic failover, TLS in transit, AUTH token.
#
# The nodes connect to rediss://PRIMARY-ENDPOINT:6379; the endpoint's DNS name follows a
# failover. The token goes to each node as /etc/roulette/cluster-password (LoadCredential=), not
# in the URL. ElastiCache's certificate chains to a public root, so no CA file is needed.

locals {
  cluster = var.node_count > 1
}

# hashicorp/random 3.9.0: docs/resources/password.md — length, special
# (AUTH tokens may not contain '@', '"' or '/'; letters and digits only keeps the URL safe too)
resource "random_password" "redis" {
  count   = local.cluster ? 1 : 0
  length  = 64
  special = false
}

# hashicorp/aws 5.45.0: website/docs/r/elasticache_subnet_group.html.markdown — name, subnet_ids
resource "aws_elasticache_subnet_group" "redis" {
  count      = local.cluster ? 1 : 0
  name       = "${var.name}-redis"
  subnet_ids = aws_subnet.public[*].id
}

resource "aws_security_group" "redis" {
  count       = local.cluster ? 1 : 0
  name        = "${var.name}-redis"
  description = "roulette Redis: 6379 from the nodes only"
  vpc_id      = aws_vpc.main.id
}

resource "aws_vpc_security_group_ingress_rule" "redis_from_nodes" {
  count                        = local.cluster ? 1 : 0
  security_group_id            = aws_security_group.redis[0].id
  description                  = "Redis (TLS) from the roulette nodes"
  ip_protocol                  = "tcp"
  from_port                    = 6379
  to_port                      = 6379
  referenced_security_group_id = aws_security_group.node.id
}

resource "aws_vpc_security_group_egress_rule" "node_to_redis" {
  count                        = local.cluster ? 1 : 0
  security_group_id            = aws_security_group.node.id
  description                  = "the cluster's Redis"
  ip_protocol                  = "tcp"
  from_port                    = 6379
  to_port                      = 6379
  referenced_security_group_id = aws_security_group.redis[0].id
}

# hashicorp/aws 5.45.0: website/docs/r/elasticache_replication_group.html.markdown —
# replication_group_id, description, engine, engine_version, node_type, num_cache_clusters,
# parameter_group_name, automatic_failover_enabled, multi_az_enabled,
# transit_encryption_enabled, at_rest_encryption_enabled, auth_token, subnet_group_name,
# security_group_ids, apply_immediately; attribute primary_endpoint_address
resource "aws_elasticache_replication_group" "redis" {
  #checkov:skip=CKV_AWS_191:encrypted at rest with the AWS-managed key; a customer-managed KMS key adds cost and adds nothing for ephemeral data
  count                = local.cluster ? 1 : 0
  replication_group_id = "${var.name}-redis"
  description          = "roulette cluster: shared waiting queue and cross-node relay"
  engine               = "redis"
  engine_version       = "7.1"
  node_type            = var.redis_node_type
  # One primary and one replica. The default parameter group has cluster mode disabled
  # (".cluster.on" groups enable it, which the server refuses).
  num_cache_clusters         = 2
  parameter_group_name       = "default.redis7"
  automatic_failover_enabled = true
  multi_az_enabled           = true
  transit_encryption_enabled = true
  at_rest_encryption_enabled = true
  auth_token                 = random_password.redis[0].result
  subnet_group_name          = aws_elasticache_subnet_group.redis[0].name
  security_group_ids         = [aws_security_group.redis[0].id]
  apply_immediately          = true
  snapshot_retention_limit   = 0
}
