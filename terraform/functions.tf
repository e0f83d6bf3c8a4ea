# The six HTTP functions (2nd gen, python311), all built from the same source archive (source.tf).
#
# Sizing, per role:
# - api: short JSON requests plus SSE streams that end at the job's deadline + 30 s, so its timeout is
#   timeout_s + 60. I/O bound (Postgres, Firestore, Storage, Cloud Tasks), and the runtime is built once
#   per instance and is thread-safe, so one instance serves 40 requests at once. 1 GiB because uploads
#   are held and decoded in memory: the process's budgets (NANO_BANANA_UPLOAD_MEMORY_MB 192 +
#   NANO_BANANA_DECODE_MEMORY_MB 256) on top of ~150 MiB of runtime; past the budgets requests wait, then
#   answer 503, instead of the instance dying (bench/api_memory.py: 40 uploads of a 50 MP PNG peak at
#   ~6.9 GB unbounded, ~360 MiB bounded).
# - generate: holds the (<= 10 MiB) input and up to 4 outputs in memory while Vertex AI works for up to
#   timeout_s. max_instance_request_concurrency = 1 ON PURPOSE: memory per instance stays bounded (one
#   job), a slow model call never queues another job behind it on the same CPU, and
#   generate_max_instances becomes the exact cap on parallel model calls (and on Vertex AI spend rate).
#   Its timeout (timeout_s + 60) outlives the 5-minute generation deadline and the task's dispatch
#   deadline (remaining + 30 s).
# - callback: small signed JSON bodies (<= 64 KiB), a few database writes; 60 s is plenty. 1 GiB: it
#   downloads and decodes each reported variant (decodes within the same 256 MiB budget).
# - webhook: one signed POST to a builder's server per task (5 s timeout, 1 KiB read), I/O bound: 20 at
#   once per instance; its own service account (main.tf) holds nothing but its secrets.
# - expire / sweep: tiny state transitions. Cloud Run needs a full CPU for concurrency > 1, so the
#   fractional-CPU sweep serves one request at a time (it runs once a minute anyway).
#
# `secrets` names the Secret Manager secrets (keys of var.secret_ids) each function mounts. Every function
# builds the same runtime (database, limits, queue, storage), so the database URL, the Supabase service
# key and the JWT secret (the settings refuse a database URL without it) go everywhere; the n8n secret
# only where it is used: callback (verifies signatures) and generate (signs requests to n8n), and
# everywhere when generator = "n8n", because the settings object then requires it in every function.
locals {
  runtime_secrets    = ["database_url", "jwt_secret", "supabase_service_key"]
  n8n_secret_for_all = var.generator == "n8n" ? ["n8n_secret"] : []

  functions = {
    api = {
      entry_point = "api", memory = "1Gi", cpu = "1", timeout = var.timeout_s + 60, concurrency = 40,
      min         = var.api_min_instances, max = var.api_max_instances, public = true,
      secrets     = concat(local.runtime_secrets, local.n8n_secret_for_all)
    }
    callback = {
      entry_point = "callback", memory = "1Gi", cpu = "1", timeout = 60, concurrency = 20,
      min         = 0, max = var.callback_max_instances, public = true,
      secrets     = concat(local.runtime_secrets, ["n8n_secret"])
    }
    generate = {
      entry_point = "generate", memory = "1Gi", cpu = "1", timeout = var.timeout_s + 60, concurrency = 1,
      min         = 0, max = var.generate_max_instances, public = false,
      secrets     = concat(local.runtime_secrets, ["n8n_secret"])
    }
    expire = {
      entry_point = "expire", memory = "512Mi", cpu = "1", timeout = 60, concurrency = 10,
      min         = 0, max = var.expire_max_instances, public = false,
      secrets     = concat(local.runtime_secrets, local.n8n_secret_for_all)
    }
    sweep = {
      entry_point = "sweep", memory = "512Mi", cpu = "0.5", timeout = 120, concurrency = 1,
      min         = 0, max = 1, public = false,
      secrets     = concat(local.runtime_secrets, local.n8n_secret_for_all)
    }
    webhook = {
      entry_point = "webhook", memory = "512Mi", cpu = "1", timeout = 60, concurrency = 20,
      min         = 0, max = var.webhook_max_instances, public = false,
      secrets     = concat(local.runtime_secrets, local.n8n_secret_for_all, ["webhook_secrets"])
    }
  }
}

resource "google_cloudfunctions2_function" "fn" {
  #checkov:skip=CKV_GCP_124:api and callback must accept internet traffic (builder API with Supabase JWTs, signed processor callbacks); generate/expire/sweep use var.private_ingress, asserted by tests/infra
  for_each    = local.functions
  name        = "${var.name_prefix}-${each.key}"
  location    = var.region
  description = "Nano Banana ${each.key}"

  build_config {
    runtime         = "python311"
    entry_point     = each.value.entry_point
    service_account = google_service_account.builder.id
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
    ingress_settings                 = each.value.public ? "ALLOW_ALL" : var.private_ingress
    all_traffic_on_latest_revision   = true
    service_account_email            = each.key == "webhook" ? google_service_account.webhooks.email : google_service_account.runtime.email
    # THREADS: the Functions Framework's gunicorn otherwise runs 4 threads per CPU whatever the
    # concurrency says, so an api instance holding 4 event streams would queue every other request.
    environment_variables = merge(local.common_env, { THREADS = tostring(each.value.concurrency) })

    # Secrets arrive as env vars resolved by the platform at instance start; Terraform only knows the
    # secret ids, never the values.
    dynamic "secret_environment_variables" {
      for_each = { for s in each.value.secrets : local.secret_env_names[s] => google_secret_manager_secret.service[s].secret_id }
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
    google_secret_manager_secret_iam_member.webhooks,
    google_project_iam_member.builder,
    google_project_iam_member.builder_storage,
  ]
}

# Public entry points only: the builder's API (Supabase JWT checked in the app) and the signed callback.
resource "google_cloud_run_service_iam_member" "public" {
  #checkov:skip=CKV_GCP_102:only api (JWT-authenticated in the app) and callback (Standard Webhooks signature) are public; tests/infra asserts no private function is
  for_each = { for k, v in local.functions : k => v if v.public }
  location = var.region
  service  = google_cloudfunctions2_function.fn[each.key].name # a 2nd-gen function's Cloud Run service has its name
  role     = "roles/run.invoker"
  member   = "allUsers"
}

# Private: only Cloud Tasks' service account may call generate, expire and webhook.
resource "google_cloud_run_service_iam_member" "tasks_invoker" {
  for_each = toset(["generate", "expire", "webhook"])
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
