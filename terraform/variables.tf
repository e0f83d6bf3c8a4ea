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
  })
  default = {
    database_url         = "nano-banana-database-url"
    jwt_secret           = "nano-banana-jwt-secret"
    supabase_service_key = "nano-banana-supabase-service-key"
    n8n_secret           = "nano-banana-n8n-secret"
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
