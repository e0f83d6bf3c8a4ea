# One queue for generate and expire tasks.
# - A generate task's handler runs at most timeout_s (+60 s of dispatch slack); retries stop once the
#   job's deadline has passed (max_retry_duration = timeout_s), because the expire task fails the job then.
# - Concurrency caps parallel Vertex calls; the rate smooths bursts.
resource "google_cloud_tasks_queue" "jobs" {
  name     = var.name_prefix
  location = var.region

  rate_limits {
    max_dispatches_per_second = 20
    max_concurrent_dispatches = 50
  }

  retry_config {
    max_attempts       = 10
    max_retry_duration = "${var.timeout_s}s"
    min_backoff        = "2s"
    max_backoff        = "30s"
    max_doublings      = 4
  }

  stackdriver_logging_config {
    sampling_ratio = 1.0
  }

  depends_on = [google_project_service.apis]
}
