# Operations as code: the deployment watches itself from the JSON lines the service already writes.
#
# Every function writes one JSON line per event to stdout (functions/nano_banana/log.py); Cloud Logging
# parses it into jsonPayload (event names: functions/nano_banana/events.py). The log-based metrics below
# count those lines; the alert policies and the dashboard read the metrics, plus Cloud Tasks' own queue
# metrics and an uptime check of /healthz. What each alert means and what to do: docs/operations.md.
# tests/infra/test_monitoring.py checks each filter against the event registry and against log lines
# captured from a real run, and that every alert and dashboard chart reads a metric that exists.

locals {
  # Our functions' stdout on Cloud Run (2nd-gen functions run as Cloud Run services of the same name).
  log_base = "resource.type=\"cloud_run_revision\" AND resource.labels.service_name=~\"^${var.name_prefix}-(api|callback|generate|expire|webhook|sweep)$\""

  # The one line each terminal transition writes (usecases._log_end), whatever ended the job.
  terminal_events = "(jsonPayload.event=\"job_succeeded\" OR jsonPayload.event=\"job_failed\" OR jsonPayload.event=\"job_canceled\" OR jsonPayload.event=\"job_expired\")"

  # Counters (DELTA, INT64): name => filter and label extractors (every label is a STRING).
  log_counters = {
    jobs_finished = {
      description = "Jobs that reached a terminal state, by event (job_succeeded, job_failed, job_canceled, job_expired), status and errorCode."
      filter      = "${local.log_base} AND ${local.terminal_events}"
      labels = {
        event      = "EXTRACT(jsonPayload.event)"
        status     = "EXTRACT(jsonPayload.status)"
        error_code = "EXTRACT(jsonPayload.errorCode)"
      }
    }
    # The SLO's good events: succeeded, or refused by the model's safety filters, within slo_seconds.
    jobs_good = {
      description = "Jobs that ended succeeded or content_blocked within the SLO's time (slo_seconds)."
      filter      = "${local.log_base} AND ${local.terminal_events} AND (jsonPayload.status=\"succeeded\" OR jsonPayload.errorCode=\"content_blocked\") AND jsonPayload.durationMs<=${var.slo_seconds * 1000}"
      labels      = {}
    }
    api_responses = {
      description = "API answers (the request line), by status class (the first digit of the status) and error code."
      filter      = "${local.log_base} AND jsonPayload.event=\"request\""
      labels = {
        status_class = "REGEXP_EXTRACT(jsonPayload.status, \"^([1-5])\")"
        code         = "EXTRACT(jsonPayload.code)"
      }
    }
    api_rate_limited = {
      description = "429 answers, by code (rate_limited: the user's hourly window; concurrency_limited: the project's active jobs)."
      filter      = "${local.log_base} AND jsonPayload.event=\"request\" AND jsonPayload.status=429"
      labels = {
        code = "EXTRACT(jsonPayload.code)"
      }
    }
    callback_invalid_signature = {
      description = "Processor callbacks refused for their signature (missing, wrong key, stale timestamp, changed body)."
      filter      = "${local.log_base} AND jsonPayload.event=\"callback_rejected\" AND jsonPayload.code=\"invalid_signature\""
      labels      = {}
    }
    # A creation whose tasks could not be enqueued is rolled back (row, input, reservation, key) and answered
    # 503: no job exists to fail, so the rejection line says why (usecases._raise_failure).
    jobs_unscheduled = {
      description = "Creations rolled back because their tasks could not be enqueued (answered 503, nothing kept)."
      filter      = "${local.log_base} AND jsonPayload.event=\"job_rejected\" AND jsonPayload.reason=\"enqueue_failed\""
      labels      = {}
    }
    slot_release_failed = {
      description = "Slot releases that failed after a job ended (the expire task and the sweep give the slot back later)."
      filter      = "${local.log_base} AND jsonPayload.event=\"release_failed\""
      labels      = {}
    }
    sweep_expired_jobs = {
      description = "Jobs the sweep had to expire: their expire task never ran. Zero when Cloud Tasks works."
      filter      = "${local.log_base} AND jsonPayload.event=\"job_expired\" AND jsonPayload.by=\"sweep\""
      labels      = {}
    }
    listener_reconnects = {
      description = "Reconnections of the event streams' shared LISTEN connection to Postgres."
      filter      = "${local.log_base} AND jsonPayload.event=\"listener_reconnected\""
      labels      = {}
    }
    # Completion webhooks (docs/webhooks.md): attempts that failed (non-2xx, timeout, connection error) and
    # are retried, and deliveries given up after the 24 h retry window.
    webhook_failures = {
      description = "Webhook delivery attempts that failed (retried: webhook_attempt_failed) or were given up (webhook_abandoned)."
      filter      = "${local.log_base} AND (jsonPayload.event=\"webhook_attempt_failed\" OR jsonPayload.event=\"webhook_abandoned\")"
      labels = {
        event = "EXTRACT(jsonPayload.event)"
      }
    }
    # A creation took its project's month across 80 % or 100 % of its image budget (usecases/usage.py).
    budget_thresholds = {
      description = "Projects whose month crossed 80 % or 100 % of their image budget, by percent."
      filter      = "${local.log_base} AND jsonPayload.event=\"budget_threshold\""
      labels = {
        percent = "EXTRACT(jsonPayload.percent)"
      }
    }
    vertex_retries = {
      description = "Vertex AI calls retried, by cause: the HTTP status (429 = quota, 5xx), timeout or connection error."
      filter      = "${local.log_base} AND jsonPayload.event=\"vertex_retry\""
      labels = {
        cause = "REGEXP_EXTRACT(jsonPayload.reason, \"^([0-9]{3}|timeout|connection error)\")"
      }
    }
  }

  # Job duration, created to terminal (ms), as a distribution.
  duration_filter = "${local.log_base} AND ${local.terminal_events}"
  duration_labels = {
    event      = "EXTRACT(jsonPayload.event)"
    error_code = "EXTRACT(jsonPayload.errorCode)"
  }

  # What the jobs used, summed from their terminal lines (usecases/usage.py usage_fields): images stored and
  # model tokens, by model. Distributions, so charts and queries can sum the values (a counter counts lines).
  usage_distributions = {
    images = {
      description = "Images each job stored (0 for a failed or canceled job), by model."
      filter      = "${local.log_base} AND ${local.terminal_events}"
      value       = "EXTRACT(jsonPayload.images)"
      labels = {
        model = "EXTRACT(jsonPayload.model)"
      }
      # 0, 1, 2, ... 16 images: one bucket per count.
      width = 1
      count = 17
    }
    tokens = {
      description = "Model tokens each job used (usageMetadata totalTokenCount), by model; jobs whose model reported none are left out."
      filter      = "${local.log_base} AND ${local.terminal_events} AND jsonPayload.totalTokens>=0"
      value       = "EXTRACT(jsonPayload.totalTokens)"
      labels = {
        model = "EXTRACT(jsonPayload.model)"
      }
      # 0 to 20,000 tokens per job in steps of 500 (an image is ~1,290 output tokens).
      width = 500
      count = 40
    }
  }

  metric_type = merge(
    { for name, m in google_logging_metric.counter : name => "logging.googleapis.com/user/${m.name}" },
    { for name, m in google_logging_metric.usage : name => "logging.googleapis.com/user/${m.name}" },
    { job_duration = "logging.googleapis.com/user/${google_logging_metric.job_duration.name}" },
  )

  # Cloud Monitoring's PromQL name of our log-based metrics (a distribution's sum is <name>_sum).
  promql_prefix = "logging_googleapis_com:user_${replace(var.name_prefix, "-", "_")}"

  queue_filter          = "resource.type=\"cloud_tasks_queue\" AND resource.label.queue_id=\"${google_cloud_tasks_queue.jobs.name}\""
  notification_channels = [for c in google_monitoring_notification_channel.email : c.name]
}

# ---------------------------------------------------------------- log-based metrics

resource "google_logging_metric" "counter" {
  for_each    = local.log_counters
  name        = "${var.name_prefix}/${each.key}"
  description = each.value.description
  filter      = each.value.filter

  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "INT64"
    unit        = "1"
    dynamic "labels" {
      for_each = each.value.labels
      content {
        key        = labels.key
        value_type = "STRING"
      }
    }
  }
  label_extractors = each.value.labels

  depends_on = [google_project_service.apis]
}

resource "google_logging_metric" "job_duration" {
  name        = "${var.name_prefix}/job_duration"
  description = "Time from a job's creation to its terminal state (the durationMs of its terminal line), by event and errorCode."
  filter      = local.duration_filter

  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "DISTRIBUTION"
    unit        = "ms"
    dynamic "labels" {
      for_each = local.duration_labels
      content {
        key        = labels.key
        value_type = "STRING"
      }
    }
  }
  value_extractor  = "EXTRACT(jsonPayload.durationMs)"
  label_extractors = local.duration_labels

  # 100 ms to ~28 min in steps of x1.5: p50/p95 within 25 % across the whole deadline range.
  bucket_options {
    exponential_buckets {
      num_finite_buckets = 24
      growth_factor      = 1.5
      scale              = 100
    }
  }

  depends_on = [google_project_service.apis]
}

resource "google_logging_metric" "usage" {
  for_each    = local.usage_distributions
  name        = "${var.name_prefix}/${each.key}"
  description = each.value.description
  filter      = each.value.filter

  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "DISTRIBUTION"
    unit        = "1"
    dynamic "labels" {
      for_each = each.value.labels
      content {
        key        = labels.key
        value_type = "STRING"
      }
    }
  }
  value_extractor  = each.value.value
  label_extractors = each.value.labels

  bucket_options {
    linear_buckets {
      num_finite_buckets = each.value.count
      width              = each.value.width
      offset             = 0
    }
  }

  depends_on = [google_project_service.apis]
}

# ---------------------------------------------------------------- notification channels

resource "google_monitoring_notification_channel" "email" {
  for_each     = toset(var.alert_emails)
  display_name = "${var.name_prefix} alerts: ${each.value}"
  type         = "email"
  labels = {
    email_address = each.value
  }

  depends_on = [google_project_service.apis]
}

# ---------------------------------------------------------------- uptime check

resource "google_monitoring_uptime_check_config" "healthz" {
  display_name     = "${var.name_prefix} api /healthz"
  timeout          = "10s"
  period           = "60s"
  selected_regions = var.uptime_regions

  http_check {
    path           = "/${var.name_prefix}-api/healthz"
    port           = 443
    use_ssl        = true
    validate_ssl   = true
    request_method = "GET"
    accepted_response_status_codes {
      status_class = "STATUS_CLASS_2XX"
    }
  }

  monitored_resource {
    type = "uptime_url"
    labels = {
      project_id = var.project_id
      host       = "${var.region}-${var.project_id}.cloudfunctions.net"
    }
  }

  content_matchers {
    content = "\"ok\""
    matcher = "CONTAINS_STRING"
  }

  depends_on = [google_project_service.apis]
}

# ---------------------------------------------------------------- alert policies (docs/operations.md)

resource "google_monitoring_alert_policy" "job_failure_ratio" {
  display_name          = "${var.name_prefix}: jobs failing"
  combiner              = "AND"
  severity              = "ERROR"
  notification_channels = local.notification_channels

  # Failed (any errorCode but content_blocked: the model refusing a prompt is not our failure) over all
  # jobs that ended, in a sliding window.
  conditions {
    display_name = "failed ratio (excluding content_blocked) above alert_failed_ratio"
    condition_threshold {
      filter             = "metric.type=\"${local.metric_type.jobs_finished}\" AND resource.type=\"cloud_run_revision\" AND metric.label.status=\"failed\" AND metric.label.error_code!=\"content_blocked\""
      denominator_filter = "metric.type=\"${local.metric_type.jobs_finished}\" AND resource.type=\"cloud_run_revision\""
      comparison         = "COMPARISON_GT"
      threshold_value    = var.alert_failed_ratio
      duration           = "0s"
      aggregations {
        alignment_period     = "${var.alert_window_s}s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
      }
      denominator_aggregations {
        alignment_period     = "${var.alert_window_s}s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
      }
    }
  }

  # ... and enough jobs ended for the ratio to mean something (1 failure of 1 job is not 100 %).
  conditions {
    display_name = "at least alert_failed_min_jobs jobs ended"
    condition_threshold {
      filter          = "metric.type=\"${local.metric_type.jobs_finished}\" AND resource.type=\"cloud_run_revision\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.alert_failed_min_jobs - 1
      duration        = "0s"
      aggregations {
        alignment_period     = "${var.alert_window_s}s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
      }
    }
  }

  documentation {
    content   = "More than ${var.alert_failed_ratio * 100} % of the jobs that ended in ${var.alert_window_s / 60} minutes failed (content_blocked excluded). Runbook: docs/operations.md#jobs-failing"
    mime_type = "text/markdown"
  }
}

resource "google_monitoring_alert_policy" "timeouts" {
  display_name          = "${var.name_prefix}: jobs timing out or never scheduled"
  combiner              = "OR"
  severity              = "ERROR"
  notification_channels = local.notification_channels

  conditions {
    display_name = "jobs failed with timeout"
    condition_threshold {
      filter          = "metric.type=\"${local.metric_type.jobs_finished}\" AND resource.type=\"cloud_run_revision\" AND metric.label.error_code=\"timeout\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.alert_timeouts_threshold
      duration        = "0s"
      aggregations {
        alignment_period     = "${var.alert_window_s}s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["metric.label.error_code"]
      }
    }
  }

  conditions {
    display_name = "creations rolled back because their tasks could not be enqueued"
    condition_threshold {
      filter          = "metric.type=\"${local.metric_type.jobs_unscheduled}\" AND resource.type=\"cloud_run_revision\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.alert_timeouts_threshold
      duration        = "0s"
      aggregations {
        alignment_period     = "${var.alert_window_s}s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
      }
    }
  }

  documentation {
    content   = "Jobs failed with timeout or enqueue_failed in the last ${var.alert_window_s / 60} minutes. Runbook: docs/operations.md#timeouts-or-enqueue_failed"
    mime_type = "text/markdown"
  }
}

resource "google_monitoring_alert_policy" "api_5xx_ratio" {
  display_name          = "${var.name_prefix}: API answering 5xx"
  combiner              = "OR"
  severity              = "ERROR"
  notification_channels = local.notification_channels

  conditions {
    display_name = "5xx answers above alert_api_5xx_ratio of all answers"
    condition_threshold {
      filter             = "metric.type=\"${local.metric_type.api_responses}\" AND resource.type=\"cloud_run_revision\" AND metric.label.status_class=\"5\""
      denominator_filter = "metric.type=\"${local.metric_type.api_responses}\" AND resource.type=\"cloud_run_revision\""
      comparison         = "COMPARISON_GT"
      threshold_value    = var.alert_api_5xx_ratio
      duration           = "0s"
      aggregations {
        alignment_period     = "${var.alert_api_window_s}s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
      }
      denominator_aggregations {
        alignment_period     = "${var.alert_api_window_s}s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
      }
    }
  }

  documentation {
    content   = "More than ${var.alert_api_5xx_ratio * 100} % of API answers in ${var.alert_api_window_s / 60} minutes were 5xx. Runbook: docs/operations.md#api-answering-5xx"
    mime_type = "text/markdown"
  }
}

# Cloud Tasks publishes no "oldest task age" metric; the queue's depth and the delay between a task's
# scheduled time and its attempt (task_attempt_delays) say the same: tasks wait longer than they should.
# Every active job keeps one expire task in the queue until its deadline, so depth ~ active jobs when healthy.
resource "google_monitoring_alert_policy" "queue_backlog" {
  display_name          = "${var.name_prefix}: task queue backing up"
  combiner              = "OR"
  severity              = "WARNING"
  notification_channels = local.notification_channels

  conditions {
    display_name = "queue depth above alert_queue_depth"
    condition_threshold {
      filter          = "metric.type=\"cloudtasks.googleapis.com/queue/depth\" AND ${local.queue_filter}"
      comparison      = "COMPARISON_GT"
      threshold_value = var.alert_queue_depth
      duration        = "300s"
      aggregations {
        alignment_period   = "60s"
        per_series_aligner = "ALIGN_MAX"
      }
    }
  }

  conditions {
    display_name = "tasks attempted later than alert_queue_delay_s after their scheduled time (p99)"
    condition_threshold {
      filter          = "metric.type=\"cloudtasks.googleapis.com/queue/task_attempt_delays\" AND ${local.queue_filter}"
      comparison      = "COMPARISON_GT"
      threshold_value = var.alert_queue_delay_s * 1000
      duration        = "300s"
      aggregations {
        alignment_period   = "300s"
        per_series_aligner = "ALIGN_PERCENTILE_99"
      }
    }
  }

  documentation {
    content   = "The Cloud Tasks queue ${google_cloud_tasks_queue.jobs.name} holds more than ${var.alert_queue_depth} tasks, or tasks start more than ${var.alert_queue_delay_s} s late (the job deadline is ${var.timeout_s} s). Runbook: docs/operations.md#task-queue-backing-up"
    mime_type = "text/markdown"
  }
}

resource "google_monitoring_alert_policy" "healthz" {
  display_name          = "${var.name_prefix}: /healthz failing"
  combiner              = "OR"
  severity              = "CRITICAL"
  notification_channels = local.notification_channels

  conditions {
    display_name = "uptime check failing from alert_uptime_failing_regions or more checker locations"
    condition_threshold {
      filter          = "metric.type=\"monitoring.googleapis.com/uptime_check/check_passed\" AND resource.type=\"uptime_url\" AND metric.label.check_id=\"${google_monitoring_uptime_check_config.healthz.uptime_check_id}\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.alert_uptime_failing_regions - 1
      duration        = "60s"
      aggregations {
        alignment_period     = "1200s"
        per_series_aligner   = "ALIGN_NEXT_OLDER"
        cross_series_reducer = "REDUCE_COUNT_FALSE"
        group_by_fields      = ["resource.label.*"]
      }
    }
  }

  documentation {
    content   = "GET /healthz of the api function fails from ${var.alert_uptime_failing_regions} or more locations. Runbook: docs/operations.md#healthz-failing"
    mime_type = "text/markdown"
  }
}

resource "google_monitoring_alert_policy" "sweep_expiring" {
  display_name          = "${var.name_prefix}: the sweep is expiring jobs"
  combiner              = "OR"
  severity              = "WARNING"
  notification_channels = local.notification_channels

  conditions {
    display_name = "jobs expired by the sweep instead of their expire task"
    condition_threshold {
      filter          = "metric.type=\"${local.metric_type.sweep_expired_jobs}\" AND resource.type=\"cloud_run_revision\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.alert_sweep_expired_threshold
      duration        = "0s"
      aggregations {
        alignment_period     = "${var.alert_window_s}s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
      }
    }
  }

  documentation {
    content   = "The sweep expired jobs whose expire task never ran. Runbook: docs/operations.md#the-sweep-is-expiring-jobs"
    mime_type = "text/markdown"
  }
}

resource "google_monitoring_alert_policy" "vertex_quota" {
  display_name          = "${var.name_prefix}: Vertex AI answering 429 (quota)"
  combiner              = "OR"
  severity              = "WARNING"
  notification_channels = local.notification_channels

  conditions {
    display_name = "Vertex 429 retries above alert_vertex_429_threshold per window, sustained"
    condition_threshold {
      filter          = "metric.type=\"${local.metric_type.vertex_retries}\" AND resource.type=\"cloud_run_revision\" AND metric.label.cause=\"429\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.alert_vertex_429_threshold
      duration        = "${var.alert_vertex_429_duration_s}s"
      aggregations {
        alignment_period     = "${var.alert_api_window_s}s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
      }
    }
  }

  documentation {
    content   = "Vertex AI kept answering 429 (resource exhausted) for ${var.alert_vertex_429_duration_s / 60} minutes. Runbook: docs/operations.md#vertex-ai-answering-429"
    mime_type = "text/markdown"
  }
}

resource "google_monitoring_alert_policy" "webhook_failures" {
  display_name          = "${var.name_prefix}: webhook deliveries failing"
  combiner              = "OR"
  severity              = "WARNING"
  notification_channels = local.notification_channels

  conditions {
    display_name = "failed webhook attempts above alert_webhook_failures per window, sustained"
    condition_threshold {
      filter          = "metric.type=\"${local.metric_type.webhook_failures}\" AND resource.type=\"cloud_run_revision\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.alert_webhook_failures
      duration        = "${var.alert_webhook_failures_duration_s}s"
      aggregations {
        alignment_period     = "${var.alert_window_s}s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
      }
    }
  }

  documentation {
    content   = "More than ${var.alert_webhook_failures} webhook delivery attempts failed per ${var.alert_window_s / 60} minutes for ${var.alert_webhook_failures_duration_s / 60} minutes. Runbook: docs/operations.md#webhook-deliveries-failing"
    mime_type = "text/markdown"
  }
}

resource "google_monitoring_alert_policy" "budget_threshold" {
  display_name          = "${var.name_prefix}: a project reached 80 % or 100 % of its monthly image budget"
  combiner              = "OR"
  severity              = "WARNING"
  notification_channels = local.notification_channels

  conditions {
    display_name = "budget_threshold lines above alert_budget_threshold_count per window"
    condition_threshold {
      filter          = "metric.type=\"${local.metric_type.budget_thresholds}\" AND resource.type=\"cloud_run_revision\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.alert_budget_threshold_count
      duration        = "0s"
      aggregations {
        alignment_period     = "${var.alert_window_s}s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["metric.label.percent"]
      }
    }
  }

  documentation {
    content   = "A project's images this UTC month reached 80 % or 100 % of its budget (the log line names the project and the percent; at 100 % its creations get 429 budget_exceeded until the month ends). Runbook: docs/operations.md#a-project-reached-its-image-budget"
    mime_type = "text/markdown"
  }
}

# ---------------------------------------------------------------- SLO: jobs done in time

resource "google_monitoring_custom_service" "jobs" {
  service_id   = "${var.name_prefix}-jobs"
  display_name = "${var.name_prefix} jobs"

  depends_on = [google_project_service.apis]
}

# slo_goal of the jobs that end (canceled ones aside) end succeeded or content_blocked within slo_seconds.
resource "google_monitoring_slo" "jobs_in_time" {
  service             = google_monitoring_custom_service.jobs.service_id
  slo_id              = "jobs-done-in-time"
  display_name        = "${var.slo_goal * 100} % of jobs succeed (or are content_blocked) within ${var.slo_seconds} s"
  goal                = var.slo_goal
  rolling_period_days = 28

  request_based_sli {
    good_total_ratio {
      good_service_filter  = "metric.type=\"${local.metric_type.jobs_good}\" AND resource.type=\"cloud_run_revision\""
      total_service_filter = "metric.type=\"${local.metric_type.jobs_finished}\" AND resource.type=\"cloud_run_revision\" AND metric.label.status!=\"canceled\""
    }
  }
}

resource "google_monitoring_alert_policy" "slo_burn" {
  display_name          = "${var.name_prefix}: jobs SLO burning its error budget"
  combiner              = "OR"
  severity              = "ERROR"
  notification_channels = local.notification_channels

  conditions {
    display_name = "error budget burn rate over 1 h above slo_burn_rate_threshold"
    condition_threshold {
      filter          = "select_slo_burn_rate(\"${google_monitoring_slo.jobs_in_time.name}\", \"3600s\")"
      comparison      = "COMPARISON_GT"
      threshold_value = var.slo_burn_rate_threshold
      duration        = "300s"
    }
  }

  documentation {
    content   = "The jobs SLO (${var.slo_goal * 100} % within ${var.slo_seconds} s) burns its 28-day error budget ${var.slo_burn_rate_threshold}x too fast. Runbook: docs/operations.md#jobs-slo-burning"
    mime_type = "text/markdown"
  }
}

# ---------------------------------------------------------------- dashboard

resource "google_monitoring_dashboard" "service" {
  dashboard_json = templatefile("${path.module}/dashboard.json.tftpl", {
    title   = "${var.name_prefix} jobs"
    metrics = local.metric_type
    queue   = google_cloud_tasks_queue.jobs.name
    prefix  = var.name_prefix
    promql  = local.promql_prefix
  })

  depends_on = [google_project_service.apis]
}
