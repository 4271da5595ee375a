# Provider versions are pinned to the releases whose documentation was read for every resource
# and argument used here (the "# hashicorp/aws 5.45.0: website/docs/r/..." comments). Before
# raising a pin, read the provider's CHANGELOG between the two versions, then `tofu init -upgrade`.
terraform {
  required_version = ">= 1.6.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "5.45.0"
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

# hashicorp/aws 5.45.0: website/docs/index.html.markdown — region, default_tags
provider "aws" {
  region = var.region

  default_tags {
    tags = {
      app        = "roulette"
      deployment = var.name
    }
  }
}
