# Application Gateway v2 (Standard_v2): TLS with a certificate from Key Vault, http -> https
# redirect, health probe on /healthz, X-Forwarded-For to the nodes.
#
# Chosen over the Standard Load Balancer (L4): that one cannot terminate TLS, so every node would
# need its own certificate and TLS terminator, and it gives no HTTP health view. The gateway costs
# more (a fixed hourly price plus capacity units, docs/deploy/azure.md) and supports about 13,500
# wss:// connections per instance (Azure docs "WebSocket support in Application Gateway"):
# autoscaling adds instances.
#
# Timeouts: the gateway's frontend has a TCP idle timeout (4 minutes by default, set on its public
# IP, 4-30; Azure "Application Gateway FAQ"), and backend_http_settings.request_timeout (default
# 30 s). The server's idle ping (30 s) keeps both busy; request_timeout is raised anyway, because
# a WebSocket is one long "request" to the gateway.

locals {
  # ROULETTE_GRACE_PERIOD: how long a stopping node waits for its clients to close.
  grace_period = 10
  # The frontend public IP's TCP idle timeout (minutes): above idle ping + pong timeout (60 s).
  frontend_idle_timeout_minutes = 10
  # Seconds the gateway waits on a backend "request"; a WebSocket is one. A day.
  backend_request_timeout = 86400
  gw = {
    frontend_ip   = "public"
    port_http     = "http"
    port_https    = "https"
    listen_http   = "http"
    listen_https  = "https"
    pool          = "nodes"
    settings      = "roulette"
    probe         = "healthz"
    cert          = "tls"
    redirect      = "to-https"
    rewrite       = "client-address"
    identity_role = "Key Vault Secrets User"
  }
}

data "azurerm_client_config" "current" {}

# hashicorp/random 3.9.0: docs/resources/string.md — length, special, upper
# (Key Vault names are global and stay reserved while soft-deleted: a random suffix)
resource "random_string" "vault" {
  length  = 6
  special = false
  upper   = false
}

# hashicorp/azurerm 5.2.0: website/docs/r/key_vault.html.markdown — tenant_id, sku_name,
# rbac_authorization_enabled, purge_protection_enabled, soft_delete_retention_days, network_acls
resource "azurerm_key_vault" "main" {
  #checkov:skip=CKV_AZURE_109:the vault must be reachable by whoever runs `tofu apply` (it imports the certificate); access is by Azure RBAC
  #checkov:skip=CKV_AZURE_189:public network access so that `tofu apply` can import the certificate; access is by Azure RBAC
  #checkov:skip=CKV2_AZURE_32:no private endpoint for a vault that holds one TLS certificate and must be reachable by whoever runs `tofu apply`; access is by Azure RBAC
  name                       = "${var.name}-${random_string.vault.result}"
  resource_group_name        = azurerm_resource_group.main.name
  location                   = azurerm_resource_group.main.location
  tenant_id                  = data.azurerm_client_config.current.tenant_id
  sku_name                   = "standard"
  rbac_authorization_enabled = true
  purge_protection_enabled   = true
  soft_delete_retention_days = 7
  network_acls {
    default_action = "Allow"
    bypass         = "AzureServices"
  }
}

# hashicorp/azurerm 5.2.0: website/docs/r/role_assignment.html.markdown — scope,
# role_definition_name, principal_id. Whoever runs tofu imports the certificate.
resource "azurerm_role_assignment" "deployer_certificates" {
  scope                = azurerm_key_vault.main.id
  role_definition_name = "Key Vault Certificates Officer"
  principal_id         = data.azurerm_client_config.current.object_id
}

# hashicorp/azurerm 5.2.0: website/docs/r/key_vault_certificate.html.markdown — key_vault_id,
# certificate { contents, password }; attribute versionless_secret_id
resource "azurerm_key_vault_certificate" "tls" {
  name         = "${var.name}-tls"
  key_vault_id = azurerm_key_vault.main.id
  certificate {
    contents = filebase64(var.tls_certificate_pfx)
    password = var.tls_certificate_password
  }
  depends_on = [azurerm_role_assignment.deployer_certificates]
}

# hashicorp/azurerm 5.2.0: website/docs/r/user_assigned_identity.html.markdown — name,
# resource_group_name, location; attribute principal_id
resource "azurerm_user_assigned_identity" "gateway" {
  name                = "${var.name}-gateway"
  resource_group_name = azurerm_resource_group.main.name
  location            = azurerm_resource_group.main.location
}

resource "azurerm_role_assignment" "gateway_secrets" {
  scope                = azurerm_key_vault.main.id
  role_definition_name = local.gw.identity_role
  principal_id         = azurerm_user_assigned_identity.gateway.principal_id
}

# hashicorp/azurerm 5.2.0: website/docs/r/public_ip.html.markdown — allocation_method, sku,
# idle_timeout_in_minutes (4-30)
resource "azurerm_public_ip" "gateway" {
  name                    = "${var.name}-gateway"
  resource_group_name     = azurerm_resource_group.main.name
  location                = azurerm_resource_group.main.location
  allocation_method       = "Static"
  sku                     = "Standard"
  idle_timeout_in_minutes = local.frontend_idle_timeout_minutes
}

# hashicorp/azurerm 5.2.0: website/docs/r/application_gateway.html.markdown — sku { name, tier },
# autoscale_configuration, identity, gateway_ip_configuration, frontend_ip_configuration,
# frontend_port, ssl_certificate { key_vault_secret_id }, ssl_policy, http_listener,
# backend_address_pool, backend_http_settings { request_timeout, connection_draining,
# probe_name }, probe { path, match }, redirect_configuration, rewrite_rule_set,
# request_routing_rule { priority }
resource "azurerm_application_gateway" "main" {
  #checkov:skip=CKV_AZURE_120:WAF_v2 costs about twice Standard_v2 and cannot inspect WebSocket frames; the server limits handshakes and connections per client address itself
  name                = var.name
  resource_group_name = azurerm_resource_group.main.name
  location            = azurerm_resource_group.main.location

  sku {
    name = "Standard_v2"
    tier = "Standard_v2"
  }
  # Each instance of min_capacity reserves (and bills) 10 capacity units whether used or not
  # (Azure "Understanding pricing for Application Gateway"); 0 bills only what is used. One
  # capacity unit is 2,500 persistent connections.
  autoscale_configuration {
    min_capacity = 0
    max_capacity = 10
  }
  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.gateway.id]
  }

  gateway_ip_configuration {
    name      = "gateway"
    subnet_id = azurerm_subnet.gateway.id
  }
  frontend_ip_configuration {
    name                 = local.gw.frontend_ip
    public_ip_address_id = azurerm_public_ip.gateway.id
  }
  frontend_port {
    name = local.gw.port_http
    port = 80
  }
  frontend_port {
    name = local.gw.port_https
    port = 443
  }

  # The versionless secret ID: the gateway picks up a renewed certificate version by itself
  # (Azure docs: within 4 hours).
  ssl_certificate {
    name                = local.gw.cert
    key_vault_secret_id = azurerm_key_vault_certificate.tls.versionless_secret_id
  }
  ssl_policy {
    policy_type = "Predefined"
    policy_name = "AppGwSslPolicy20220101S"
  }

  http_listener {
    name                           = local.gw.listen_https
    frontend_ip_configuration_name = local.gw.frontend_ip
    frontend_port_name             = local.gw.port_https
    protocol                       = "Https"
    ssl_certificate_name           = local.gw.cert
    host_name                      = var.domain
    require_sni                    = true
  }
  http_listener {
    name                           = local.gw.listen_http
    frontend_ip_configuration_name = local.gw.frontend_ip
    frontend_port_name             = local.gw.port_http
    protocol                       = "Http"
  }

  backend_address_pool {
    name         = local.gw.pool
    ip_addresses = local.node_ips
  }

  backend_http_settings {
    name                  = local.gw.settings
    cookie_based_affinity = "Disabled"
    port                  = 8080
    protocol              = "Http"
    request_timeout       = local.backend_request_timeout
    probe_name            = local.gw.probe
    # A node removed from the pool keeps its connections this long; the server closes its
    # clients with 1001 within the grace period once it is told to stop.
    connection_draining {
      enabled           = true
      drain_timeout_sec = local.grace_period + 5
    }
  }

  probe {
    name                = local.gw.probe
    protocol            = "Http"
    host                = "127.0.0.1"
    port                = 8080
    path                = "/healthz"
    interval            = 5
    timeout             = 3
    unhealthy_threshold = 2
    match {
      status_code = ["200"]
    }
  }

  redirect_configuration {
    name                 = local.gw.redirect
    redirect_type        = "Permanent"
    target_listener_name = local.gw.listen_https
    include_path         = true
    include_query_string = true
  }

  # The gateway appends the client as IP:PORT to X-Forwarded-For; the server wants addresses.
  # {var_add_x_forwarded_for_proxy} is the same header with the client IP without its port
  # (Azure docs "Rewrite HTTP headers and URL with Application Gateway", server variables).
  rewrite_rule_set {
    name = local.gw.rewrite
    rewrite_rule {
      name          = "x-forwarded-for-without-port"
      rule_sequence = 100
      request_header_configuration {
        header_name  = "X-Forwarded-For"
        header_value = "{var_add_x_forwarded_for_proxy}"
      }
    }
  }

  request_routing_rule {
    name                       = "https"
    priority                   = 100
    rule_type                  = "Basic"
    http_listener_name         = local.gw.listen_https
    backend_address_pool_name  = local.gw.pool
    backend_http_settings_name = local.gw.settings
    rewrite_rule_set_name      = local.gw.rewrite
  }
  request_routing_rule {
    name                        = "http-redirect"
    priority                    = 200
    rule_type                   = "Basic"
    http_listener_name          = local.gw.listen_http
    redirect_configuration_name = local.gw.redirect
  }

  depends_on = [azurerm_role_assignment.gateway_secrets, azurerm_subnet_network_security_group_association.gateway]
}

# hashicorp/azurerm 5.2.0: website/docs/r/dns_a_record.html.markdown — zone_name,
# resource_group_name, ttl, records
resource "azurerm_dns_a_record" "domain" {
  count               = var.dns_zone_name == null ? 0 : 1
  # "@" when the domain is the zone apex.
  name                = var.domain == var.dns_zone_name ? "@" : trimsuffix(trimsuffix(var.domain, var.dns_zone_name), ".")
  zone_name           = var.dns_zone_name
  resource_group_name = var.dns_zone_resource_group
  ttl                 = 300
  records             = [azurerm_public_ip.gateway.ip_address]
}
