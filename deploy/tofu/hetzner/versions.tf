# Provider versions are pinned to the releases whose documentation was read for every resource
# and argument used here (the "# hetznercloud/hcloud 1.68.0: docs/resources/..." comments).
# Before raising a pin, read the provider's CHANGELOG between the two versions, then
# `tofu init -upgrade`.
terraform {
  required_version = ">= 1.6.0"

  required_providers {
    hcloud = {
      source  = "hetznercloud/hcloud"
      version = "1.68.0"
    }
    cloudinit = {
      source  = "hashicorp/cloudinit"
      version = "2.4.0"
    }
    random = {
      source  = "hashicorp/random"
      version = "3.9.0"
    }
  }
}

# hetznercloud/hcloud 1.68.0: docs/index.md — token (or HCLOUD_TOKEN in the environment,
# which keeps it out of files)
provider "hcloud" {}
