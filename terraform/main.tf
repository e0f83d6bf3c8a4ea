locals {
  apis = toset([
    "aiplatform.googleapis.com",       # Vertex AI (Gemini image model)
    "artifactregistry.googleapis.com", # the functions' built images
    "cloudbuild.googleapis.com",       # builds the functions from source
    "cloudfunctions.googleapis.com",
    "cloudscheduler.googleapis.com",
    "cloudtasks.googleapis.com",
    "firestore.googleapis.com",
    "iam.googleapis.com",
    "logging.googleapis.com",
    "monitoring.googleapis.com", # alert policies, uptime check, dashboard, SLO (monitoring.tf)
    "run.googleapis.com",        # 2nd-gen functions run on Cloud Run
    "secretmanager.googleapis.com",
    "storage.googleapis.com",
  ])

  # The functions need each other's URLs (api enqueues tasks to generate/expire; generate/expire/sweep
  # check the OIDC audience against their own URL; the scheduler calls sweep). Reading
  # google_cloudfunctions2_function.fn["generate"].url inside the same for_each resource would be a
  # self-reference cycle, and splitting the resource only moves the cycle. A 2nd-gen function's
  # cloudfunctions.net URL is predictable from (region, project, name), so it is computed here, before
  # any function exists. outputs.tf exposes the same map.
  function_url = { for name in ["api", "callback", "generate", "expire", "webhook", "sweep"] :
    name => "https://${var.region}-${var.project_id}.cloudfunctions.net/${var.name_prefix}-${name}"
  }

  # Non-secret configuration (names are the settings' env vars, functions/nano_banana/settings.py).
  # NANO_BANANA_TASK_OIDC_AUDIENCE is left unset on purpose: each task's OIDC audience is then its own
  # target URL, which is what Cloud Run's IAM check and the function's own check both expect. One shared
  # audience would be refused by one of the two task functions.
  common_env = {
    NANO_BANANA_LIMITS                    = "firestore"
    NANO_BANANA_QUEUE                     = "cloudtasks"
    NANO_BANANA_STORAGE                   = "supabase"
    NANO_BANANA_GENERATOR                 = var.generator
    GOOGLE_CLOUD_PROJECT                  = var.project_id
    NANO_BANANA_LOCATION                  = var.region
    NANO_BANANA_VERTEX_LOCATION           = var.vertex_location
    NANO_BANANA_MODEL                     = var.model
    NANO_BANANA_TASKS_QUEUE               = google_cloud_tasks_queue.jobs.name
    NANO_BANANA_GENERATE_URL              = local.function_url["generate"]
    NANO_BANANA_EXPIRE_URL                = local.function_url["expire"]
    NANO_BANANA_TASKS_SERVICE_ACCOUNT     = google_service_account.tasks.email
    NANO_BANANA_SCHEDULER_SERVICE_ACCOUNT = google_service_account.scheduler.email
    NANO_BANANA_SWEEP_URL                 = local.function_url["sweep"]
    NANO_BANANA_WEBHOOK_URL               = local.function_url["webhook"]
    NANO_BANANA_WEBHOOK_TASKS_QUEUE       = google_cloud_tasks_queue.webhooks.name
    NANO_BANANA_WEBHOOK_ALLOWED_HOSTS     = join(",", var.webhook_allowed_hosts)
    NANO_BANANA_CALLBACK_URL              = "${local.function_url["callback"]}/api/nano-banana/callback"
    NANO_BANANA_PUBLIC_URL                = local.function_url["api"]
    NANO_BANANA_TIMEOUT_S                 = tostring(var.timeout_s)
    NANO_BANANA_RATE_PER_HOUR             = tostring(var.rate_per_hour)
    NANO_BANANA_MAX_ACTIVE_PER_PROJECT    = tostring(var.max_active_per_project)
    NANO_BANANA_PROJECT_MONTHLY_IMAGES    = tostring(var.project_monthly_images)
    NANO_BANANA_BUCKET                    = var.bucket
    NANO_BANANA_JWKS_URL                  = var.jwks_url
    NANO_BANANA_CORS_ORIGINS              = join(",", var.cors_origins)
    SUPABASE_URL                          = var.supabase_url
    N8N_WEBHOOK_NANO_BANANA_PROCESSOR     = var.n8n_webhook_url
    NANO_BANANA_LOG_LEVEL                 = "INFO"
  }

  # Secret (key of var.secret_ids) -> the env var it is mounted as.
  secret_env_names = {
    database_url         = "NANO_BANANA_DATABASE_URL"
    jwt_secret           = "NANO_BANANA_JWT_SECRET"
    supabase_service_key = "SUPABASE_SERVICE_ROLE_KEY"
    n8n_secret           = "N8N_NANO_BANANA_SECRET"
    webhook_secrets      = "NANO_BANANA_WEBHOOK_SIGNING_SECRETS"
  }
}

resource "google_project_service" "apis" {
  for_each           = local.apis
  service            = each.value
  disable_on_destroy = false
}

# ---------------------------------------------------------------- service accounts (one per role)

resource "google_service_account" "runtime" {
  account_id   = "${var.name_prefix}-runtime"
  display_name = "Nano Banana functions runtime"
}

resource "google_service_account" "tasks" {
  account_id   = "${var.name_prefix}-tasks"
  display_name = "Nano Banana Cloud Tasks invoker (generate, expire)"
}

# The webhook function's own identity: it POSTs to builders' servers (URLs from outside), so it holds only
# what a delivery needs (the database, Storage for signed URLs, the signing secrets) and no other role.
resource "google_service_account" "webhooks" {
  account_id   = "${var.name_prefix}-webhooks"
  display_name = "Nano Banana webhook deliveries"
}

resource "google_service_account" "scheduler" {
  account_id   = "${var.name_prefix}-scheduler"
  display_name = "Nano Banana Cloud Scheduler invoker (sweep)"
}

# Builds the functions' images (Cloud Build, at deploy time only). Since 2024 new projects' default build
# account may lack these permissions, so the module brings its own; no runtime code runs as it.
resource "google_service_account" "builder" {
  account_id   = "${var.name_prefix}-builder"
  display_name = "Nano Banana function builds"
}

# Runtime: call Vertex AI, read/write the limits documents. (stdout logs need no role on Cloud Run.)
resource "google_project_iam_member" "runtime" {
  for_each = toset(["roles/aiplatform.user", "roles/datastore.user"])
  project  = var.project_id
  role     = each.value
  member   = "serviceAccount:${google_service_account.runtime.email}"
}

# Runtime: create tasks (api) and delete a job's pending expire task (generate), on this queue only.
# roles/cloudtasks.enqueuer grants only cloudtasks.tasks.create, hence the separate deleter role.
resource "google_cloud_tasks_queue_iam_member" "runtime" {
  for_each = toset(["roles/cloudtasks.enqueuer", "roles/cloudtasks.taskDeleter"])
  name     = google_cloud_tasks_queue.jobs.name
  location = var.region
  role     = each.value
  member   = "serviceAccount:${google_service_account.runtime.email}"
}

# Runtime: hand a recorded webhook delivery to its queue (after a transition, and the sweep); create only.
resource "google_cloud_tasks_queue_iam_member" "runtime_webhooks" {
  name     = google_cloud_tasks_queue.webhooks.name
  location = var.region
  role     = "roles/cloudtasks.enqueuer"
  member   = "serviceAccount:${google_service_account.runtime.email}"
}

# Runtime: attach the tasks account's identity (OIDC token) to the tasks it creates; on that account only.
resource "google_service_account_iam_member" "runtime_acts_as_tasks" {
  service_account_id = google_service_account.tasks.name
  role               = "roles/iam.serviceAccountUser"
  member             = "serviceAccount:${google_service_account.runtime.email}"
}

# Runtime: read each secret it mounts, nothing else (the webhook signing secrets are the webhook function's).
resource "google_secret_manager_secret_iam_member" "runtime" {
  for_each  = { for k, s in google_secret_manager_secret.service : k => s if k != "webhook_secrets" }
  secret_id = each.value.id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.runtime.email}"
}

# Webhooks: read the secrets the webhook function mounts, nothing else.
resource "google_secret_manager_secret_iam_member" "webhooks" {
  for_each  = { for k, s in google_secret_manager_secret.service : k => s if contains(local.functions["webhook"].secrets, k) }
  secret_id = each.value.id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.webhooks.email}"
}

# Builder: what Cloud Run functions documents for a custom build account: build logs, the image in
# Artifact Registry, and object access for the source and the build's own gcf-* buckets. The storage role
# is conditioned on those buckets, so a build (which runs third-party pip code) cannot touch other
# buckets of the project, such as the Terraform state.
resource "google_project_iam_member" "builder" {
  for_each = toset(["roles/logging.logWriter", "roles/artifactregistry.writer"])
  project  = var.project_id
  role     = each.value
  member   = "serviceAccount:${google_service_account.builder.email}"
}

resource "google_project_iam_member" "builder_storage" {
  project = var.project_id
  role    = "roles/storage.objectAdmin"
  member  = "serviceAccount:${google_service_account.builder.email}"

  condition {
    title       = "function-build-buckets"
    description = "The function source bucket and the gcf-* buckets Cloud Run functions builds use."
    expression  = "resource.name.startsWith(\"projects/_/buckets/${google_storage_bucket.source.name}\") || resource.name.startsWith(\"projects/_/buckets/gcf-\")"
  }
}
