# Redis for cluster mode (node_count > 1): Azure Cache for Redis, Standard tier (a primary and
# a replica with automatic failover; no clustering: shard_count is left unset, which the server
# requires), TLS 1.2 only on port 6380, the non-TLS port off, reached through a private endpoint
# (public network access off). Its certificate chains to a public root: no CA file.
# The access key goes to each node as /etc/roulette/cluster-password (LoadCredential=).

locals {
  cluster = var.node_count > 1
}

# hashicorp/azurerm 5.2.0: website/docs/r/redis_cache.html.markdown — capacity, family,
# sku_name, non_ssl_port_enabled, minimum_tls_version, public_network_access_enabled,
# redis_version, redis_configuration; attributes hostname, ssl_port, primary_access_key
resource "azurerm_redis_cache" "redis" {
  count                         = local.cluster ? 1 : 0
  name                          = "${var.name}-redis-${random_string.vault.result}"
  resource_group_name           = azurerm_resource_group.main.name
  location                      = azurerm_resource_group.main.location
  sku_name                      = "Standard"
  family                        = "C"
  capacity                      = 0
  non_ssl_port_enabled          = false
  minimum_tls_version           = "1.2"
  public_network_access_enabled = false
  redis_version                 = "6"
  redis_configuration {
    maxmemory_policy = "noeviction"
  }
}

# hashicorp/azurerm 5.2.0: website/docs/r/private_dns_zone.html.markdown — name
resource "azurerm_private_dns_zone" "redis" {
  count               = local.cluster ? 1 : 0
  name                = "privatelink.redis.cache.windows.net"
  resource_group_name = azurerm_resource_group.main.name
}

# hashicorp/azurerm 5.2.0: website/docs/r/private_dns_zone_virtual_network_link.html.markdown —
# private_dns_zone_name, virtual_network_id, registration_enabled
resource "azurerm_private_dns_zone_virtual_network_link" "redis" {
  count                 = local.cluster ? 1 : 0
  name                  = var.name
  resource_group_name   = azurerm_resource_group.main.name
  private_dns_zone_name = azurerm_private_dns_zone.redis[0].name
  virtual_network_id    = azurerm_virtual_network.main.id
  registration_enabled  = false
}

# hashicorp/azurerm 5.2.0: website/docs/r/private_endpoint.html.markdown — subnet_id,
# private_service_connection { private_connection_resource_id, subresource_names,
# is_manual_connection }, private_dns_zone_group { private_dns_zone_ids }
resource "azurerm_private_endpoint" "redis" {
  count               = local.cluster ? 1 : 0
  name                = "${var.name}-redis"
  resource_group_name = azurerm_resource_group.main.name
  location            = azurerm_resource_group.main.location
  subnet_id           = azurerm_subnet.endpoints.id
  private_service_connection {
    name                           = "redis"
    private_connection_resource_id = azurerm_redis_cache.redis[0].id
    subresource_names              = ["redisCache"]
    is_manual_connection           = false
  }
  private_dns_zone_group {
    name                 = "redis"
    private_dns_zone_ids = [azurerm_private_dns_zone.redis[0].id]
  }
}
