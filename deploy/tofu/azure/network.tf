# Network and firewall.
#
# One VNet, three subnets: the Application Gateway's own subnet (v2 requires a dedicated one),
# the nodes' subnet, and one for the Redis private endpoint. Network security groups:
#   internet          -> gateway 80, 443 (plus the GatewayManager ports the v2 SKU requires)
#   gateway subnet    -> nodes 8080 (everything else in the VNet is denied 8080)
#   VNet              -> nodes 9898 (metrics)
#   admin_cidr        -> nodes 22 (only if set)
# The nodes reach the internet (apt, the release) through their own Standard public IPv4
# addresses (no inbound rule allows anything from the internet to them); Azure's implicit
# "default outbound access" is switched off on every subnet.

locals {
  vnet_cidr     = "10.40.0.0/16"
  gateway_cidr  = "10.40.0.0/24"
  nodes_cidr    = "10.40.1.0/24"
  endpoint_cidr = "10.40.2.0/24"
  # Fixed private addresses, so that cloud.env names the metrics address and the Prometheus
  # targets are known.
  node_ips = [for i in range(var.node_count) : cidrhost(local.nodes_cidr, 10 + i)]
}

# hashicorp/azurerm 5.2.0: website/docs/r/resource_group.html.markdown — name, location
resource "azurerm_resource_group" "main" {
  name     = var.resource_group_name
  location = var.location
}

# hashicorp/azurerm 5.2.0: website/docs/r/virtual_network.html.markdown — address_space
resource "azurerm_virtual_network" "main" {
  name                = var.name
  resource_group_name = azurerm_resource_group.main.name
  location            = azurerm_resource_group.main.location
  address_space       = [local.vnet_cidr]
}

# hashicorp/azurerm 5.2.0: website/docs/r/subnet.html.markdown — address_prefixes,
# default_outbound_access_enabled, private_endpoint_network_policies
resource "azurerm_subnet" "gateway" {
  name                            = "${var.name}-gateway"
  resource_group_name             = azurerm_resource_group.main.name
  virtual_network_name            = azurerm_virtual_network.main.name
  address_prefixes                = [local.gateway_cidr]
  default_outbound_access_enabled = false
}

resource "azurerm_subnet" "nodes" {
  name                            = "${var.name}-nodes"
  resource_group_name             = azurerm_resource_group.main.name
  virtual_network_name            = azurerm_virtual_network.main.name
  address_prefixes                = [local.nodes_cidr]
  default_outbound_access_enabled = false
}

resource "azurerm_subnet" "endpoints" {
  name                              = "${var.name}-endpoints"
  resource_group_name               = azurerm_resource_group.main.name
  virtual_network_name              = azurerm_virtual_network.main.name
  address_prefixes                  = [local.endpoint_cidr]
  default_outbound_access_enabled   = false
  private_endpoint_network_policies = "Enabled"
}

# hashicorp/azurerm 5.2.0: website/docs/r/network_security_group.html.markdown — security_rule
# { name, priority, direction, access, protocol, source_port_range, destination_port_range(s),
# source_address_prefix, destination_address_prefix }
resource "azurerm_network_security_group" "gateway" {
  #checkov:skip=CKV_AZURE_160:port 80 on the gateway only answers a permanent redirect to https://
  name                = "${var.name}-gateway"
  resource_group_name = azurerm_resource_group.main.name
  location            = azurerm_resource_group.main.location

  security_rule {
    name                       = "clients"
    priority                   = 100
    direction                  = "Inbound"
    access                     = "Allow"
    protocol                   = "Tcp"
    source_port_range          = "*"
    destination_port_ranges    = ["80", "443"]
    source_address_prefix      = "Internet"
    destination_address_prefix = "*"
  }
  # Application Gateway v2 refuses to deploy into a subnet whose NSG blocks its management
  # ports (Azure docs "Application Gateway infrastructure configuration").
  security_rule {
    name                       = "gateway-manager"
    priority                   = 110
    direction                  = "Inbound"
    access                     = "Allow"
    protocol                   = "Tcp"
    source_port_range          = "*"
    destination_port_range     = "65200-65535"
    source_address_prefix      = "GatewayManager"
    destination_address_prefix = "*"
  }
  security_rule {
    name                       = "azure-load-balancer"
    priority                   = 120
    direction                  = "Inbound"
    access                     = "Allow"
    protocol                   = "*"
    source_port_range          = "*"
    destination_port_range     = "*"
    source_address_prefix      = "AzureLoadBalancer"
    destination_address_prefix = "*"
  }
}

resource "azurerm_network_security_group" "nodes" {
  name                = "${var.name}-nodes"
  resource_group_name = azurerm_resource_group.main.name
  location            = azurerm_resource_group.main.location

  security_rule {
    name                       = "roulette-from-gateway"
    priority                   = 100
    direction                  = "Inbound"
    access                     = "Allow"
    protocol                   = "Tcp"
    source_port_range          = "*"
    destination_port_range     = "8080"
    source_address_prefix      = local.gateway_cidr
    destination_address_prefix = local.nodes_cidr
  }
  security_rule {
    name                       = "metrics-from-vnet"
    priority                   = 110
    direction                  = "Inbound"
    access                     = "Allow"
    protocol                   = "Tcp"
    source_port_range          = "*"
    destination_port_range     = "9898"
    source_address_prefix      = local.vnet_cidr
    destination_address_prefix = local.nodes_cidr
  }
  dynamic "security_rule" {
    for_each = var.admin_cidr == null ? [] : [var.admin_cidr]
    content {
      name                       = "ssh-from-admin"
      priority                   = 120
      direction                  = "Inbound"
      access                     = "Allow"
      protocol                   = "Tcp"
      source_port_range          = "*"
      destination_port_range     = "22"
      source_address_prefix      = security_rule.value
      destination_address_prefix = local.nodes_cidr
    }
  }
  # Azure's default rules allow all traffic inside the VNet; roulette's port is for the
  # gateway only.
  security_rule {
    name                       = "deny-roulette-from-elsewhere"
    priority                   = 4000
    direction                  = "Inbound"
    access                     = "Deny"
    protocol                   = "*"
    source_port_range          = "*"
    destination_port_range     = "8080"
    source_address_prefix      = "*"
    destination_address_prefix = "*"
  }
}

resource "azurerm_network_security_group" "endpoints" {
  name                = "${var.name}-endpoints"
  resource_group_name = azurerm_resource_group.main.name
  location            = azurerm_resource_group.main.location

  security_rule {
    name                       = "redis-from-nodes"
    priority                   = 100
    direction                  = "Inbound"
    access                     = "Allow"
    protocol                   = "Tcp"
    source_port_range          = "*"
    destination_port_range     = "6380"
    source_address_prefix      = local.nodes_cidr
    destination_address_prefix = local.endpoint_cidr
  }
  security_rule {
    name                       = "deny-other-vnet"
    priority                   = 4000
    direction                  = "Inbound"
    access                     = "Deny"
    protocol                   = "*"
    source_port_range          = "*"
    destination_port_range     = "*"
    source_address_prefix      = "VirtualNetwork"
    destination_address_prefix = "*"
  }
}

# hashicorp/azurerm 5.2.0: website/docs/r/subnet_network_security_group_association.html.markdown
# — subnet_id, network_security_group_id
resource "azurerm_subnet_network_security_group_association" "gateway" {
  subnet_id                 = azurerm_subnet.gateway.id
  network_security_group_id = azurerm_network_security_group.gateway.id
}

resource "azurerm_subnet_network_security_group_association" "nodes" {
  subnet_id                 = azurerm_subnet.nodes.id
  network_security_group_id = azurerm_network_security_group.nodes.id
}

resource "azurerm_subnet_network_security_group_association" "endpoints" {
  subnet_id                 = azurerm_subnet.endpoints.id
  network_security_group_id = azurerm_network_security_group.endpoints.id
}
