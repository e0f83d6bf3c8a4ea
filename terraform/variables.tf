variable "project_id" {
  description = "Google Cloud project id."
  type        = string
}

variable "region" {
  description = "Region for the functions, the Cloud Tasks queue and the scheduler."
  type        = string
  default     = "us-central1"
}

variable "firestore_location" {
  description = "Firestore location (multi-region nam5/eur3 or a region)."
  type        = string
  default     = "nam5"
}

variable "name_prefix" {
  description = "Prefix of every resource name."
  type        = string
  default     = "nano-banana"
}

variable "supabase_url" {
  description = "Supabase project URL, e.g. https://<ref>.supabase.co (not secret)."
  type        = string
  validation {
    condition     = startswith(var.supabase_url, "https://")
    error_message = "supabase_url is the project's https:// URL (Settings > API in Supabase)."
  }
}

variable "jwks_url" {
  description = "Optional JWKS URL for RS256/ES256 Supabase tokens; empty to use the HS256 JWT secret."
  type        = string
  default     = ""
}

variable "cors_origins" {
  description = "Browser origins of the builder allowed to call the api function cross-origin (NANO_BANANA_CORS_ORIGINS), e.g. [\"https://app.example.com\"]. Empty: same-origin only."
  type        = list(string)
  default     = []
  validation {
    condition     = alltrue([for o in var.cors_origins : can(regex("^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?$", o))])
    error_message = "Each of cors_origins is an origin: scheme://host[:port], no path or wildcard."
  }
}

# Secrets are passed by reference: the ids of Secret Manager secrets this module creates. Their values
# are added out of band (gcloud secrets versions add), so they never enter variables or state.
variable "secret_ids" {
  description = "Secret Manager secret ids for the service's secrets."
  type = object({
    database_url         = string
    jwt_secret           = string
    supabase_service_key = string
    n8n_secret           = string
    webhook_secrets      = string
  })
  default = {
    database_url         = "nano-banana-database-url"
    jwt_secret           = "nano-banana-jwt-secret"
    supabase_service_key = "nano-banana-supabase-service-key"
    n8n_secret           = "nano-banana-n8n-secret"
    webhook_secrets      = "nano-banana-webhook-signing-secrets"
  }
}

variable "generator" {
  description = "vertex (in-house) or n8n (external processor)."
  type        = string
  default     = "vertex"
  validation {
    condition     = contains(["vertex", "n8n"], var.generator)
    error_message = "generator must be vertex or n8n."
  }
}

variable "n8n_webhook_url" {
  description = "N8N_WEBHOOK_NANO_BANANA_PROCESSOR, when generator = n8n."
  type        = string
  default     = ""
  validation {
    condition     = var.generator != "n8n" || startswith(var.n8n_webhook_url, "https://")
    error_message = "generator = n8n needs n8n_webhook_url (https://...)."
  }
}

variable "model" {
  description = "Gemini image model."
  type        = string
  default     = "gemini-2.5-flash-image"
}

variable "vertex_location" {
  description = "Vertex AI location for the model."
  type        = string
  default     = "global"
}

variable "bucket" {
  description = "Supabase Storage bucket (private)."
  type        = string
  default     = "pip-ai-images"
}

variable "rate_per_hour" {
  description = "Jobs per user per sliding hour."
  type        = number
  default     = 10
}

variable "max_active_per_project" {
  description = "Queued + running jobs per project."
  type        = number
  default     = 2
}

variable "project_monthly_images" {
  description = "Images per project per UTC month (NANO_BANANA_PROJECT_MONTHLY_IMAGES; 0: no budget). A row in pip_ai_project_budgets overrides it per project (docs/operations.md)."
  type        = number
  default     = 0
  validation {
    condition     = var.project_monthly_images >= 0 && floor(var.project_monthly_images) == var.project_monthly_images
    error_message = "project_monthly_images is a whole number, 0 or more."
  }
}

variable "timeout_s" {
  description = "Job deadline in seconds (NANO_BANANA_TIMEOUT_S)."
  type        = number
  default     = 300
  # >= 120: the queue's retry schedule (tasks.tf) needs room for its four doubling retries (75 s).
  # <= 1500: the generate task's dispatch deadline (remaining + 30 s) stays under Cloud Tasks' 30 minutes.
  validation {
    condition     = var.timeout_s >= 120 && var.timeout_s <= 1500
    error_message = "timeout_s must be between 120 and 1500 seconds."
  }
}

variable "api_min_instances" {
  description = "Warm instances of the api function (cost vs cold starts)."
  type        = number
  default     = 0
}

variable "api_max_instances" {
  description = "Maximum instances of the api function."
  type        = number
  default     = 20
}

variable "generate_max_instances" {
  description = "Maximum instances of the generate function (bounds parallel Vertex calls)."
  type        = number
  default     = 10
}

variable "callback_max_instances" {
  description = "Maximum instances of the callback function."
  type        = number
  default     = 10
}

variable "webhook_max_instances" {
  description = "Maximum instances of the webhook function (bounds parallel deliveries to builders' servers)."
  type        = number
  default     = 5
}

variable "webhook_allowed_hosts" {
  description = "If set, the only hosts a job's webhookUrl may name (exact names or *.suffix): NANO_BANANA_WEBHOOK_ALLOWED_HOSTS."
  type        = list(string)
  default     = []
}

variable "expire_max_instances" {
  description = "Maximum instances of the expire function."
  type        = number
  default     = 5
}

variable "queue_max_dispatches_per_second" {
  description = "Cloud Tasks dispatch rate (tasks per second) for generate and expire tasks."
  type        = number
  default     = 10
}

variable "private_ingress" {
  description = "Ingress of generate/expire/sweep. ALLOW_INTERNAL_ONLY admits Cloud Tasks and Cloud Scheduler of this project; IAM (run.invoker) is checked either way."
  type        = string
  default     = "ALLOW_INTERNAL_ONLY"
  validation {
    condition     = contains(["ALLOW_INTERNAL_ONLY", "ALLOW_INTERNAL_AND_GCLB"], var.private_ingress)
    error_message = "private functions never take ALLOW_ALL ingress."
  }
}

# ---------------------------------------------------------------- monitoring (monitoring.tf, docs/operations.md)

variable "alert_emails" {
  description = "E-mail addresses the alert policies notify (one notification channel each). Empty: alerts open incidents in Cloud Monitoring without notifying anyone."
  type        = list(string)
  default     = []
  validation {
    condition     = alltrue([for e in var.alert_emails : can(regex("^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$", e))])
    error_message = "Each of alert_emails is an e-mail address."
  }
}

variable "alert_window_s" {
  description = "Window of the job alerts (failed ratio, timeouts/enqueue_failed, sweep expiring), in seconds."
  type        = number
  default     = 900
  validation {
    condition     = var.alert_window_s >= 60 && var.alert_window_s % 60 == 0 && var.alert_window_s <= 86400
    error_message = "alert_window_s is a whole number of minutes, up to a day."
  }
}

variable "alert_failed_ratio" {
  description = "Alert when more than this fraction of the jobs that ended in alert_window_s failed (content_blocked excluded)."
  type        = number
  default     = 0.1
  validation {
    condition     = var.alert_failed_ratio > 0 && var.alert_failed_ratio < 1
    error_message = "alert_failed_ratio is a fraction between 0 and 1."
  }
}

variable "alert_failed_min_jobs" {
  description = "The failed-ratio alert needs at least this many jobs ended in the window (1 failure of 1 job is not a trend)."
  type        = number
  default     = 5
  validation {
    condition     = var.alert_failed_min_jobs >= 1
    error_message = "alert_failed_min_jobs is at least 1."
  }
}

variable "alert_timeouts_threshold" {
  description = "Alert when more than this many jobs failed with timeout, or creations were rolled back for enqueue_failed, in alert_window_s (0: any)."
  type        = number
  default     = 0
}

variable "alert_api_window_s" {
  description = "Window of the API 5xx ratio and of the Vertex 429 counts, in seconds."
  type        = number
  default     = 300
  validation {
    condition     = var.alert_api_window_s >= 60 && var.alert_api_window_s % 60 == 0 && var.alert_api_window_s <= 86400
    error_message = "alert_api_window_s is a whole number of minutes, up to a day."
  }
}

variable "alert_api_5xx_ratio" {
  description = "Alert when more than this fraction of API answers in alert_api_window_s were 5xx."
  type        = number
  default     = 0.01
  validation {
    condition     = var.alert_api_5xx_ratio > 0 && var.alert_api_5xx_ratio < 1
    error_message = "alert_api_5xx_ratio is a fraction between 0 and 1."
  }
}

variable "alert_queue_depth" {
  description = "Alert when the Cloud Tasks queue holds more tasks than this for 5 minutes (each active job keeps one expire task there until its deadline)."
  type        = number
  default     = 200
}

variable "alert_queue_delay_s" {
  description = "Alert when tasks start (p99) more than this many seconds after their scheduled time for 5 minutes; must leave room in the job deadline (timeout_s)."
  type        = number
  default     = 60
  validation {
    condition     = var.alert_queue_delay_s > 0 && var.alert_queue_delay_s < var.timeout_s
    error_message = "alert_queue_delay_s is positive and below timeout_s: a delay of the whole deadline is already a timed-out job."
  }
}

variable "uptime_regions" {
  description = "Regions the /healthz uptime check runs from (Cloud Monitoring requires enough regions for at least 3 checker locations)."
  type        = list(string)
  default     = ["USA", "EUROPE", "ASIA_PACIFIC"]
  validation {
    condition     = length(var.uptime_regions) >= 3 && alltrue([for r in var.uptime_regions : contains(["USA", "EUROPE", "SOUTH_AMERICA", "ASIA_PACIFIC", "USA_OREGON", "USA_IOWA", "USA_VIRGINIA"], r)])
    error_message = "uptime_regions lists at least 3 of USA, EUROPE, SOUTH_AMERICA, ASIA_PACIFIC, USA_OREGON, USA_IOWA, USA_VIRGINIA."
  }
}

variable "alert_uptime_failing_regions" {
  description = "Alert when the /healthz check fails from at least this many checker locations (one failing location is usually the network, not us)."
  type        = number
  default     = 2
  validation {
    condition     = var.alert_uptime_failing_regions >= 1
    error_message = "alert_uptime_failing_regions is at least 1."
  }
}

variable "alert_sweep_expired_threshold" {
  description = "Alert when the sweep expires more than this many jobs in alert_window_s (their expire tasks never ran; 0: any)."
  type        = number
  default     = 0
}

variable "alert_vertex_429_threshold" {
  description = "Alert when Vertex AI answers 429 (quota) to more than this many calls per alert_api_window_s ..."
  type        = number
  default     = 5
}

variable "alert_vertex_429_duration_s" {
  description = "... for this long (seconds): a short burst is absorbed by the retries, a sustained one fails jobs."
  type        = number
  default     = 600
  validation {
    condition     = var.alert_vertex_429_duration_s >= 0 && var.alert_vertex_429_duration_s % 60 == 0
    error_message = "alert_vertex_429_duration_s is a whole number of minutes."
  }
}

variable "alert_webhook_failures" {
  description = "Alert when more than this many webhook attempts fail per alert_window_s (a receiver down, or refusing us) ..."
  type        = number
  default     = 20
}

variable "alert_webhook_failures_duration_s" {
  description = "... for this long (seconds): one receiver's short outage is absorbed by the retries."
  type        = number
  default     = 1800
  validation {
    condition     = var.alert_webhook_failures_duration_s >= 0 && var.alert_webhook_failures_duration_s % 60 == 0
    error_message = "alert_webhook_failures_duration_s is a whole number of minutes."
  }
}

variable "slo_goal" {
  description = "SLO: this fraction of the jobs that end (canceled aside) end succeeded or content_blocked within slo_seconds (28-day window)."
  type        = number
  default     = 0.99
  validation {
    condition     = var.slo_goal > 0 && var.slo_goal <= 0.999
    error_message = "slo_goal is above 0 and at most 0.999 (Cloud Monitoring's limit)."
  }
}

variable "slo_seconds" {
  description = "SLO: the time within which a job should end."
  type        = number
  default     = 120
  validation {
    condition     = var.slo_seconds > 0 && var.slo_seconds <= var.timeout_s
    error_message = "slo_seconds is positive and at most timeout_s."
  }
}

variable "slo_burn_rate_threshold" {
  description = "Alert when the SLO's error budget burns this many times faster than sustainable, over an hour (10: a 28-day budget gone in ~3 days)."
  type        = number
  default     = 10
}

variable "alert_budget_threshold_count" {
  description = "Alert when more than this many budget_threshold lines (a project's month crossing 80 % or 100 % of its image budget) are written in alert_window_s (0: any)."
  type        = number
  default     = 0
}
