output "function_urls" {
  description = "HTTPS URL of each function."
  value       = local.function_url
}

output "api_base_url" {
  description = "Base URL of the builder API."
  value       = "${local.function_url["api"]}/api/nano-banana"
}

output "healthz_url" {
  description = "Liveness URL for smoke tests."
  value       = "${local.function_url["api"]}/healthz"
}

output "queue_name" {
  description = "Cloud Tasks queue name (NANO_BANANA_TASKS_QUEUE)."
  value       = google_cloud_tasks_queue.jobs.name
}

output "queue_id" {
  description = "Cloud Tasks queue resource id (projects/<p>/locations/<r>/queues/<name>)."
  value       = google_cloud_tasks_queue.jobs.id
}

output "service_accounts" {
  description = "One service account per role."
  value = {
    runtime   = google_service_account.runtime.email
    tasks     = google_service_account.tasks.email
    scheduler = google_service_account.scheduler.email
    builder   = google_service_account.builder.email
  }
}

output "secret_ids" {
  description = "Add the secret values to these (gcloud secrets versions add <id> --data-file=-)."
  value       = { for k, s in google_secret_manager_secret.service : k => s.secret_id }
}

output "function_names" {
  description = "Each function's name (<name_prefix>-<role>): gcloud functions describe <name> --gen2 --region <region>."
  value       = { for role, fn in google_cloudfunctions2_function.fn : role => fn.name }
}

output "region" {
  description = "The region of the functions, the queue and the scheduler job."
  value       = var.region
}
