# The roulette VMs: Debian 12 (Debian's own Azure image, which runs cloud-init) booted from
# deploy/cloud-init.yaml (release URL and SHA-256 filled in) plus a second cloud-config part
# with this node's /etc/roulette/cloud.env and, in cluster mode, the Redis secret files.
#
# Upgrades are per node: custom_data is ignored after creation, so changing release_url and
# release_sha256 changes no running VM; `tofu apply -replace='azurerm_linux_virtual_machine.node[0]'`
# rebuilds one node with the new release (docs/deploy/azure.md).

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
  # The gateway's instances connect from its subnet and append the client to X-Forwarded-For.
  trusted_proxies  = [local.gateway_cidr]
  proxy_header     = "x-forwarded-for"
  allowed_origin   = "https://${var.domain}"
  grace_period     = local.grace_period
  cluster_url      = local.cluster ? "rediss://${azurerm_redis_cache.redis[0].hostname}:${azurerm_redis_cache.redis[0].ssl_port}" : null
  cluster_password = local.cluster ? azurerm_redis_cache.redis[0].primary_access_key : null
}

# hashicorp/cloudinit 2.4.0: docs/data-sources/config.md — gzip, base64_encode, part {
# content_type, filename, merge_type, content }. Not gzipped: custom_data is plain base64.
data "cloudinit_config" "node" {
  count         = var.node_count
  gzip          = false
  base64_encode = true
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

# hashicorp/azurerm 5.2.0: website/docs/r/public_ip.html.markdown — allocation_method, sku
resource "azurerm_public_ip" "node" {
  count               = var.node_count
  name                = "${var.name}-${count.index + 1}"
  resource_group_name = azurerm_resource_group.main.name
  location            = azurerm_resource_group.main.location
  allocation_method   = "Static"
  sku                 = "Standard"
}

# hashicorp/azurerm 5.2.0: website/docs/r/network_interface.html.markdown — ip_configuration
# { name, subnet_id, private_ip_address_allocation, private_ip_address, public_ip_address_id }
resource "azurerm_network_interface" "node" {
  #checkov:skip=CKV_AZURE_119:the public address is for outgoing traffic (packages, release); the subnet's NSG admits nothing from the internet but SSH from admin_cidr
  count               = var.node_count
  name                = "${var.name}-${count.index + 1}"
  resource_group_name = azurerm_resource_group.main.name
  location            = azurerm_resource_group.main.location
  ip_configuration {
    name                          = "primary"
    subnet_id                     = azurerm_subnet.nodes.id
    private_ip_address_allocation = "Static"
    private_ip_address            = local.node_ips[count.index]
    public_ip_address_id          = azurerm_public_ip.node[count.index].id
  }
}

# hashicorp/azurerm 5.2.0:
# website/docs/r/network_interface_application_gateway_backend_address_pool_association.html.markdown
# is the per-NIC alternative; the pool lists the fixed node addresses instead (gateway.tf), so
# a replaced VM is back in the pool without another resource.

# hashicorp/azurerm 5.2.0: website/docs/r/linux_virtual_machine.html.markdown — size,
# admin_username, admin_ssh_key, disable_password_authentication, network_interface_ids,
# custom_data, os_disk, source_image_reference, secure_boot_enabled, vtpm_enabled,
# allow_extension_operations, encryption_at_host_enabled
resource "azurerm_linux_virtual_machine" "node" {
  count                           = var.node_count
  name                            = "${var.name}-${count.index + 1}"
  resource_group_name             = azurerm_resource_group.main.name
  location                        = azurerm_resource_group.main.location
  size                            = var.vm_size
  # Azure refuses "admin", "root" and similar names; azureuser is its documented example.
  admin_username                  = "azureuser"
  disable_password_authentication = true
  network_interface_ids           = [azurerm_network_interface.node[count.index].id]
  custom_data                     = data.cloudinit_config.node[count.index].rendered
  secure_boot_enabled             = true
  vtpm_enabled                    = true
  # Disks and caches encrypted on the host; needs the EncryptionAtHost feature registered in
  # the subscription (docs/deploy/azure.md).
  encryption_at_host_enabled = true
  allow_extension_operations = false

  admin_ssh_key {
    username   = "azureuser"
    public_key = var.ssh_public_key
  }
  os_disk {
    caching              = "ReadWrite"
    storage_account_type = "StandardSSD_LRS"
    disk_size_gb         = 30
  }
  source_image_reference {
    publisher = "Debian"
    offer     = "debian-12"
    sku       = "12-gen2"
    version   = "latest"
  }
  lifecycle {
    ignore_changes = [custom_data, source_image_reference]
  }
}
