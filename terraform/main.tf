locals {
  apis = toset([
    "aiplatform.googleapis.com",
    "artifactregistry.googleapis.com",
    "cloudbuild.googleapis.com",
    "cloudfunctions.googleapis.com",
    "cloudscheduler.googleapis.com",
    "cloudtasks.googleapis.com",
    "firestore.googleapis.com",
    "iam.googleapis.com",
    "logging.googleapis.com",
    "run.googleapis.com",
    "secretmanager.googleapis.com",
    "storage.googleapis.com",
  ])

  # Predictable 2nd-gen URLs: the api function enqueues tasks to generate/expire, and those functions
  # verify the OIDC audience against the same URL, without a dependency cycle between functions.
  function_url = { for name in ["api", "callback", "generate", "expire", "sweep"] :
    name => "https://${var.region}-${var.project_id}.cloudfunctions.net/${var.name_prefix}-${name}"
  }

  # Non-secret configuration shared by every function (names are the settings' env vars).
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
    NANO_BANANA_CALLBACK_URL              = "${local.function_url["callback"]}/api/nano-banana/callback"
    NANO_BANANA_PUBLIC_URL                = local.function_url["api"]
    NANO_BANANA_TIMEOUT_S                 = tostring(var.timeout_s)
    NANO_BANANA_RATE_PER_HOUR             = tostring(var.rate_per_hour)
    NANO_BANANA_MAX_ACTIVE_PER_PROJECT    = tostring(var.max_active_per_project)
    NANO_BANANA_BUCKET                    = var.bucket
    NANO_BANANA_JWKS_URL                  = var.jwks_url
    SUPABASE_URL                          = var.supabase_url
    N8N_WEBHOOK_NANO_BANANA_PROCESSOR     = var.n8n_webhook_url
    NANO_BANANA_LOG_LEVEL                 = "INFO"
  }

  # Secret env var -> Secret Manager secret; every function gets all four (the settings object validates
  # the whole configuration at start, whichever function it is).
  secret_env = {
    NANO_BANANA_DATABASE_URL  = google_secret_manager_secret.service["database_url"].secret_id
    NANO_BANANA_JWT_SECRET    = google_secret_manager_secret.service["jwt_secret"].secret_id
    SUPABASE_SERVICE_ROLE_KEY = google_secret_manager_secret.service["supabase_service_key"].secret_id
    N8N_NANO_BANANA_SECRET    = google_secret_manager_secret.service["n8n_secret"].secret_id
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

resource "google_service_account" "scheduler" {
  account_id   = "${var.name_prefix}-scheduler"
  display_name = "Nano Banana Cloud Scheduler invoker (sweep)"
}

# Runtime: call Vertex AI, read/write the limits documents, write logs.
resource "google_project_iam_member" "runtime" {
  for_each = toset(["roles/aiplatform.user", "roles/datastore.user", "roles/logging.logWriter"])
  project  = var.project_id
  role     = each.value
  member   = "serviceAccount:${google_service_account.runtime.email}"
}

# Runtime: create and delete tasks on this queue only.
resource "google_cloud_tasks_queue_iam_member" "runtime" {
  for_each = toset(["roles/cloudtasks.enqueuer", "roles/cloudtasks.taskDeleter"])
  name     = google_cloud_tasks_queue.jobs.name
  location = var.region
  role     = each.value
  member   = "serviceAccount:${google_service_account.runtime.email}"
}

# Runtime: attach the tasks account's identity (OIDC token) to the tasks it creates.
resource "google_service_account_iam_member" "runtime_acts_as_tasks" {
  service_account_id = google_service_account.tasks.name
  role               = "roles/iam.serviceAccountUser"
  member             = "serviceAccount:${google_service_account.runtime.email}"
}

# Runtime: read each secret it mounts, nothing else.
resource "google_secret_manager_secret_iam_member" "runtime" {
  for_each  = google_secret_manager_secret.service
  secret_id = each.value.id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.runtime.email}"
}
