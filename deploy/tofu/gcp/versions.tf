# Provider versions are pinned to the releases whose documentation was read for every resource
# and argument used here (the "# hashicorp/google 7.45.0: website/docs/r/..." comments). Before
# raising a pin, read the provider's CHANGELOG between the two versions, then `tofu init -upgrade`.
terraform {
  required_version = ">= 1.6.0"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "7.45.0"
    }
  }
}

# hashicorp/google 7.45.0: website/docs/guides/provider_reference.html.markdown — project, region
provider "google" {
  project = var.project
  region  = var.region
}
