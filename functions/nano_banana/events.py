"""Every event name the service logs, in one place.

Each JSON log line carries `event` (see log.py). Operations build on these names: the log-based metrics,
alerts and dashboard in terraform/monitoring.tf filter on them, and docs/operations.md tells ops what
each one means. tests/unit/test_events.py derives the names the code really logs (from its syntax tree)
and checks both directions: every name logged is listed here, and every name listed is logged.

`FIELDS` lists, for the events monitoring reads, the fields their lines carry (besides `COMMON_FIELDS`);
tests/infra/test_monitoring.py checks that every metric filter names only these, and that the lines an
e2e run captures really carry them.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping


class Event(enum.StrEnum):
    # ---- job lifecycle (usecases/)
    job_created = "job_created"  # a job was created (or a refinement): jobId, projectId, status
    job_rejected = "job_rejected"  # a creation that made no job: code, status, reason (enqueue_failed: rolled back)
    job_replayed = "job_replayed"  # an Idempotency-Key replay answered with the existing job
    job_discard_failed = "job_discard_failed"  # a failed creation cannot tell if its row exists: outcome_unknown
    claim_release_failed = "claim_release_failed"  # a deleted job's Idempotency-Key stays claimed until its lease ends
    job_started = "job_started"
    task_without_job = "task_without_job"  # a generate task found no row after ROW_WAIT_S: acknowledged
    generation_finished = "generation_finished"
    job_succeeded = "job_succeeded"
    job_failed = "job_failed"
    job_canceled = "job_canceled"
    job_expired = "job_expired"  # failed(timeout) at the deadline; `by`: expire_task or sweep
    result_discarded = "result_discarded"
    jobs_deleted = "jobs_deleted"
    user_erased = "user_erased"
    purge_deferred = "purge_deferred"
    give_back_failed = "give_back_failed"  # a failed creation's reservation stays (the sweep reclaims it)
    input_cleanup_failed = "input_cleanup_failed"
    expire_delete_failed = "expire_delete_failed"
    blob_cleanup_failed = "blob_cleanup_failed"
    release_failed = "release_failed"  # a slot could not be given back (the sweep reclaims it)
    settle_failed = "settle_failed"  # an ended job's images stay reserved in its month (counted as asked)
    budget_threshold = "budget_threshold"  # a creation took its project's month across 80 % or 100 % of its budget
    # ---- the sweep
    sweep = "sweep"
    sweep_step_failed = "sweep_step_failed"
    generate_requeued = "generate_requeued"
    requeue_failed = "requeue_failed"
    slot_reclaimed = "slot_reclaimed"  # the sweep gave back a lease no live job holds (ended, deleted, never inserted)
    claim_reclaimed = "claim_reclaimed"  # the sweep gave back an Idempotency-Key claim whose job has no row
    reclaim_failed = "reclaim_failed"
    orphans_deleted = "orphans_deleted"
    # ---- HTTP (http/)
    request = "request"  # one per API call: method, path, status, code, durationMs
    request_failed = "request_failed"
    internal_error = "internal_error"
    not_ready = "not_ready"
    signing_unavailable = "signing_unavailable"
    # ---- callbacks (callback.py)
    callback_applied = "callback_applied"
    callback_repeated = "callback_repeated"
    callback_replay = "callback_replay"
    callback_in_progress = "callback_in_progress"
    callback_rejected = "callback_rejected"
    receipt_release_failed = "receipt_release_failed"
    receipt_settle_failed = "receipt_settle_failed"
    # ---- completion webhooks (usecases/notifying.py; docs/webhooks.md)
    webhook_delivered = "webhook_delivered"  # the receiver answered 2xx: jobId, on (the event), attempt, httpStatus
    webhook_attempt_failed = "webhook_attempt_failed"  # non-2xx, timeout or connection error: retried by the queue
    webhook_abandoned = "webhook_abandoned"  # still failing past the 24 h retry window: given up
    webhook_refused = "webhook_refused"  # the address is not allowed at delivery (resolves privately): not retried
    webhook_gone = "webhook_gone"  # the receiver answered 410 Gone: not retried
    webhook_not_owed = "webhook_not_owed"  # a webhook task found its delivery settled or its job deleted
    webhook_enqueue_failed = "webhook_enqueue_failed"  # the sweep hands the delivery over instead
    webhook_requeued = "webhook_requeued"  # the sweep enqueued a delivery whose task never ran
    # ---- task handlers (tasks.py, task_auth.py)
    task_retry = "task_retry"
    task_error = "task_error"
    task_ignored = "task_ignored"
    task_auth_rejected = "task_auth_rejected"
    task_auth_wrong_identity = "task_auth_wrong_identity"
    task_auth_certs_unavailable = "task_auth_certs_unavailable"
    # ---- Cloud Tasks and the in-process queue
    task_enqueued = "task_enqueued"
    task_duplicate = "task_duplicate"
    task_enqueue_failed = "task_enqueue_failed"
    task_lookup_failed = "task_lookup_failed"
    task_deleted = "task_deleted"
    task_delete_failed = "task_delete_failed"
    task_failed = "task_failed"
    # ---- Firestore limits
    limits_reserve_unavailable = "limits_reserve_unavailable"
    limits_give_back_unavailable = "limits_give_back_unavailable"
    limits_release_unavailable = "limits_release_unavailable"
    limits_check_unavailable = "limits_check_unavailable"
    limits_reserve_contended = "limits_reserve_contended"
    limits_give_back_contended = "limits_give_back_contended"
    limits_release_contended = "limits_release_contended"
    limits_release_claim_unavailable = "limits_release_claim_unavailable"
    limits_release_claim_contended = "limits_release_claim_contended"
    limits_settle_unavailable = "limits_settle_unavailable"
    limits_settle_contended = "limits_settle_contended"
    limits_warmed_up = "limits_warmed_up"
    limits_warm_up_failed = "limits_warm_up_failed"
    # ---- a cold instance's warm-ups (bootstrap.warm_up_clients, after the first answer or as a write begins)
    jwks_prefetched = "jwks_prefetched"
    jwks_prefetch_failed = "jwks_prefetch_failed"
    storage_warmed_up = "storage_warmed_up"
    storage_warm_up_failed = "storage_warm_up_failed"
    write_clients_built = "write_clients_built"
    write_clients_build_failed = "write_clients_build_failed"
    queue_warmed_up = "queue_warmed_up"
    queue_warm_up_failed = "queue_warm_up_failed"
    # ---- storage, model, processor
    storage_retry = "storage_retry"
    storage_misconfigured = "storage_misconfigured"
    vertex_retry = "vertex_retry"  # reason starts with the HTTP status (429 ...), or timeout / connection error
    vertex_bad_image = "vertex_bad_image"
    processor_submitted = "processor_submitted"
    processor_retry = "processor_retry"
    # ---- event streams (adapters/pg_notify.py)
    listener_down = "listener_down"
    listener_reconnected = "listener_reconnected"
    # ---- local tooling (dev server, migrations)
    migration_applied = "migration_applied"
    migration_drift = "migration_drift"
    pg_stop = "pg_stop"


# Fields every line may carry, whatever its event (log.py): the request scope and the formatter's own.
COMMON_FIELDS: frozenset[str] = frozenset(
    {
        "time",
        "severity",
        "message",
        "event",
        "requestId",
        "executionId",
        "taskName",
        "taskRetryCount",
        "logging.googleapis.com/trace",
        "logging.googleapis.com/spanId",
        "errorType",
        "error",
    }
)

_TERMINAL = frozenset(
    {
        "jobId",
        "projectId",
        "status",
        "errorCode",
        "durationMs",
        # what the job used (usecases/usage.py): the log-based metrics count images and tokens by model
        "model",
        "images",
        "promptTokens",
        "outputTokens",
        "totalTokens",
        "queuedMs",
        "generationMs",
        "totalMs",
    }
)

# The fields of the events that monitoring reads (terraform/monitoring.tf), besides COMMON_FIELDS.
FIELDS: Mapping[Event, frozenset[str]] = {
    Event.request: frozenset({"method", "path", "status", "code", "durationMs"}),
    Event.job_created: frozenset({"jobId", "projectId", "parentJobId", "status", "durationMs"}),
    Event.job_rejected: frozenset({"projectId", "parentJobId", "code", "status", "reason", "durationMs"}),
    Event.job_succeeded: _TERMINAL | {"variants"},
    Event.job_failed: _TERMINAL,
    Event.job_canceled: _TERMINAL | {"reason"},
    Event.job_expired: _TERMINAL | {"by"},
    Event.callback_rejected: frozenset({"code", "webhookId"}),
    Event.release_failed: frozenset({"jobId"}),
    Event.budget_threshold: frozenset({"projectId", "jobId", "month", "percent", "limit", "used", "reserved"}),
    Event.sweep: frozenset(
        {
            "expired",
            "requeued",
            "slotsReclaimed",
            "purged",
            "retained",
            "orphans",
            "orphanOutputs",
            "receipts",
            "webhooksHandedOver",
            "durationMs",
        }
    ),
    Event.listener_reconnected: frozenset(),
    Event.listener_down: frozenset({"attempt", "reason"}),
    Event.vertex_retry: frozenset({"attempt", "reason", "delayMs"}),
    Event.task_enqueue_failed: frozenset({"jobId", "kind"}),
    Event.webhook_attempt_failed: frozenset({"jobId", "projectId", "on", "attempt", "httpStatus", "reason"}),
    Event.webhook_abandoned: frozenset({"jobId", "projectId", "on", "attempt", "httpStatus", "reason"}),
}

TERMINAL_EVENTS: frozenset[Event] = frozenset(
    {Event.job_succeeded, Event.job_failed, Event.job_canceled, Event.job_expired}
)
