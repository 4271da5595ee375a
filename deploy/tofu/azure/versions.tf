# Provider versions are pinned to the releases whose documentation was read for every resource
# and argument used here (the "# hashicorp/azurerm 5.2.0: website/docs/r/..." comments). Before
# raising a pin, read the provider's CHANGELOG between the two versions, then `tofu init -upgrade`.
terraform {
  required_version = ">= 1.6.0"

  required_providers {
    azurerm = {
      source  = "hashicorp/azurerm"
      version = "5.2.0"
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

# hashicorp/azurerm 5.2.0: website/docs/index.html.markdown — features {}, subscription_id
provider "azurerm" {
  features {}
  subscription_id = var.subscription_id
}
