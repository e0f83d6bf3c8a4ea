# The functions' source: functions/ (main.py, nano_banana/, requirements.txt) zipped by Terraform itself
# (archive_file) rather than by a Cloud Build step, so `terraform apply` from any checkout deploys exactly
# that checkout, and the object's name carries the archive's MD5: a new object (and a rebuild of the
# five functions) only when the code changed. Cloud Build's "package" step verifies the same directory
# installs from requirements.txt on Python 3.11 and imports all five entry points before this runs.
data "archive_file" "functions" {
  type        = "zip"
  source_dir  = "${path.module}/../functions"
  output_path = "${path.module}/function-source.zip"
  excludes    = ["**/__pycache__/**", "**/*.pyc", "*.egg-info/**", ".mypy_cache/**"]
}

resource "google_storage_bucket" "source" {
  #checkov:skip=CKV_GCP_62:holds only the functions' source archives (the same files as in git); object access is in Cloud Audit Logs, and a dedicated log bucket would itself need one
  name                        = "${var.project_id}-${var.name_prefix}-source"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false

  versioning {
    enabled = true
  }

  lifecycle_rule {
    condition {
      num_newer_versions = 5
    }
    action {
      type = "Delete"
    }
  }
}

resource "google_storage_bucket_object" "source" {
  name   = "functions-${data.archive_file.functions.output_md5}.zip"
  bucket = google_storage_bucket.source.name
  source = data.archive_file.functions.output_path
}
