# The functions' source: functions/ zipped (main.py, nano_banana/, requirements.txt) into a private bucket.
data "archive_file" "functions" {
  type        = "zip"
  source_dir  = "${path.module}/../functions"
  output_path = "${path.module}/function-source.zip"
  excludes    = ["**/__pycache__/**", "**/*.pyc", ".mypy_cache/**"]
}

resource "google_storage_bucket" "source" {
  #checkov:skip=CKV_GCP_62:holds only build artifacts of public-in-repo code; object changes are audited by Cloud Audit Logs, and a log bucket would need its own log bucket
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
