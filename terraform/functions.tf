# The five HTTP functions (2nd gen). Sizing is per role:
# - api: short requests plus SSE streams that last at most timeout_s + 30 s; I/O bound, so one instance
#   serves many requests at once (the runtime is built once per instance, thread-safe).
# - generate: holds a 10 MB input and up to 4 outputs while Vertex works for up to timeout_s; ONE request
#   per instance on purpose, so memory is bounded and max_instance_count is the cap on parallel model calls.
# - expire / sweep: tiny, fast state transitions.
locals {
  functions = {
    api = {
      entry_point = "api", memory = "512Mi", cpu = "1", timeout = var.timeout_s + 60,
      concurrency = 40, min = var.api_min_instances, max = var.api_max_instances, public = true,
      ingress     = "ALLOW_ALL"
    }
    callback = {
      entry_point = "callback", memory = "512Mi", cpu = "1", timeout = 60,
      concurrency = 20, min = 0, max = 10, public = true,
      ingress     = "ALLOW_ALL"
    }
    generate = {
      entry_point = "generate", memory = "1Gi", cpu = "1", timeout = var.timeout_s + 60,
      concurrency = 1, min = 0, max = var.generate_max_instances, public = false,
      ingress     = "ALLOW_INTERNAL_ONLY"
    }
    expire = {
      entry_point = "expire", memory = "256Mi", cpu = "0.5", timeout = 60,
      concurrency = 20, min = 0, max = 5, public = false,
      ingress     = "ALLOW_INTERNAL_ONLY"
    }
    sweep = {
      entry_point = "sweep", memory = "256Mi", cpu = "0.5", timeout = 120,
      concurrency = 1, min = 0, max = 1, public = false,
      ingress     = "ALLOW_INTERNAL_ONLY"
    }
  }
}

resource "google_cloudfunctions2_function" "fn" {
  #checkov:skip=CKV_GCP_124:api and callback are public by design (builder HTTPS API, signed processor callback); generate/expire/sweep are ALLOW_INTERNAL_ONLY, asserted by tests/infra
  for_each    = local.functions
  name        = "${var.name_prefix}-${each.key}"
  location    = var.region
  description = "Nano Banana ${each.key}"

  build_config {
    runtime     = "python311"
    entry_point = each.value.entry_point
    source {
      storage_source {
        bucket = google_storage_bucket.source.name
        object = google_storage_bucket_object.source.name
      }
    }
  }

  service_config {
    available_memory                 = each.value.memory
    available_cpu                    = each.value.cpu
    timeout_seconds                  = each.value.timeout
    max_instance_request_concurrency = each.value.concurrency
    min_instance_count               = each.value.min
    max_instance_count               = each.value.max
    ingress_settings                 = each.value.ingress # internal-only still admits Cloud Tasks and Scheduler
    all_traffic_on_latest_revision   = true
    service_account_email            = google_service_account.runtime.email
    environment_variables            = local.common_env

    dynamic "secret_environment_variables" {
      for_each = local.secret_env
      content {
        key        = secret_environment_variables.key
        project_id = var.project_id
        secret     = secret_environment_variables.value
        version    = "latest"
      }
    }
  }

  labels = { app = "nano-banana", role = each.key }

  depends_on = [
    google_project_service.apis,
    google_secret_manager_secret_iam_member.runtime,
  ]
}

# Public entry points: the builder's API and the signed processor callback.
resource "google_cloud_run_service_iam_member" "public" {
  #checkov:skip=CKV_GCP_102:only api (JWT-authenticated) and callback (HMAC-signed) are public; tests/infra asserts no private function is
  for_each = { for k, v in local.functions : k => v if v.public }
  location = var.region
  service  = google_cloudfunctions2_function.fn[each.key].name
  role     = "roles/run.invoker"
  member   = "allUsers"
}

# Private: only Cloud Tasks' service account may call generate and expire.
resource "google_cloud_run_service_iam_member" "tasks_invoker" {
  for_each = toset(["generate", "expire"])
  location = var.region
  service  = google_cloudfunctions2_function.fn[each.key].name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.tasks.email}"
}

# Private: only Cloud Scheduler's service account may call sweep.
resource "google_cloud_run_service_iam_member" "scheduler_invoker" {
  location = var.region
  service  = google_cloudfunctions2_function.fn["sweep"].name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.scheduler.email}"
}
