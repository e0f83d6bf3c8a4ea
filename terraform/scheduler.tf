# The sweep: every minute, the safety net for expire tasks that never ran.
resource "google_cloud_scheduler_job" "sweep" {
  name             = "${var.name_prefix}-sweep"
  region           = var.region
  schedule         = "* * * * *"
  time_zone        = "Etc/UTC"
  attempt_deadline = "120s"

  retry_config {
    retry_count = 0 # the next minute's run is the retry
  }

  http_target {
    http_method = "POST"
    uri         = local.function_url["sweep"]
    body        = base64encode("{}")
    headers     = { "Content-Type" = "application/json" }

    oidc_token {
      service_account_email = google_service_account.scheduler.email
      audience              = local.function_url["sweep"]
    }
  }

  depends_on = [google_project_service.apis, google_cloud_run_service_iam_member.scheduler_invoker]
}
