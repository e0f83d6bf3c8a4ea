terraform {
  required_version = ">= 1.9.0, < 2.0.0" # 1.9: validations that read other variables

  # Exact pins: a provider upgrade is a reviewed change (tests/infra checks these are exact).
  # google-beta is not needed: every resource here is GA in hashicorp/google.
  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "= 7.45.0"
    }
    archive = {
      source  = "hashicorp/archive"
      version = "= 2.8.0"
    }
  }
}

provider "google" {
  project = var.project_id
  region  = var.region
}
