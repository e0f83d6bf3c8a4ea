# One queue for both task kinds: `generate` (right after the job is created) and `expire` (scheduled at
# the job's deadline). Every number below follows from NANO_BANANA_TIMEOUT_S (var.timeout_s, 300 s):
#
# - Dispatch: the service sets each generate task's dispatch deadline to the job's remaining time + 30 s
#   (usecases/services.py), and the generate function's timeout is timeout_s + 60 s, so Cloud Tasks gives up on an
#   attempt before the function is killed.
# - Retries: a job is worth retrying only until its deadline (the expire task fails it then, and a late
#   generate attempt is a cheap no-op on a terminal job), so max_retry_duration = timeout_s. Cloud Tasks
#   stops only when BOTH max_retry_duration has passed AND max_attempts were made, so max_attempts is
#   derived from the backoff schedule: the number of fast-failing retries (5, 10, 20, 40, then every 60 s)
#   that fit in timeout_s. For 300 s: 1 + 4 + floor((300 - 75) / 60) = 8 attempts, the last at +255 s.
# - Concurrency: no more tasks in flight than the two task functions can hold at once (generate serves
#   one request per instance), so a burst waits in the queue instead of bouncing off Cloud Run as 429s
#   that would burn the retry budget. The rate smooths bursts of job creation.
locals {
  retry_min_backoff_s   = 5
  retry_max_backoff_s   = 60
  retry_max_doublings   = 3
  retry_doubling_span_s = 75 # 5 + 10 + 20 + 40: the four retries before the interval reaches 60 s
  retry_max_attempts    = 1 + 4 + floor((var.timeout_s - local.retry_doubling_span_s) / local.retry_max_backoff_s)
}

resource "google_cloud_tasks_queue" "jobs" {
  name     = var.name_prefix
  location = var.region

  rate_limits {
    max_dispatches_per_second = var.queue_max_dispatches_per_second
    max_concurrent_dispatches = local.functions["generate"].max + local.functions["expire"].max
  }

  retry_config {
    max_attempts       = local.retry_max_attempts
    max_retry_duration = "${var.timeout_s}s"
    min_backoff        = "${local.retry_min_backoff_s}s"
    max_backoff        = "${local.retry_max_backoff_s}s"
    max_doublings      = local.retry_max_doublings
  }

  stackdriver_logging_config {
    sampling_ratio = 1.0
  }

  depends_on = [google_project_service.apis]
}

# Completion webhooks (docs/webhooks.md) have their own queue: a slow or failing receiver never holds up
# generation, and its retries follow the receiver's time, not the job's. Every failure (non-2xx, timeout,
# connection error) is retried with exponential backoff, 10 s doubling to 1 h, for a little over 24 h
# (the service gives a delivery up once it is 24 h old: usecases/notifying.py RETRY_WINDOW); attempts are
# unlimited within that window. Task names derive from (job, event), so a second enqueue is a no-op.
locals {
  webhook_retry_window_s = 25 * 3600
}

resource "google_cloud_tasks_queue" "webhooks" {
  name     = "${var.name_prefix}-webhooks"
  location = var.region

  rate_limits {
    max_dispatches_per_second = var.queue_max_dispatches_per_second
    max_concurrent_dispatches = local.functions["webhook"].max * local.functions["webhook"].concurrency
  }

  retry_config {
    max_attempts       = -1
    max_retry_duration = "${local.webhook_retry_window_s}s"
    min_backoff        = "10s"
    max_backoff        = "3600s"
    max_doublings      = 9
  }

  stackdriver_logging_config {
    sampling_ratio = 1.0
  }

  depends_on = [google_project_service.apis]
}
