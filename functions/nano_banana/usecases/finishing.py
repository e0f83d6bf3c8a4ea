"""Transitions into terminal states (succeeded, failed, canceled, expired) and what follows each: the slot,
the expire task, stray outputs."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence

from nano_banana.domain import (
    ACTIVE,
    ErrorCode,
    Job,
    ModelUsage,
    VariantUpload,
    job_prefix,
)
from nano_banana.errors import (
    InvalidTransition,
    TransientError,
)
from nano_banana.log import redact
from nano_banana.together import settle_each
from nano_banana.usecases.notifying import hand_over
from nano_banana.usecases.reading import get_job
from nano_banana.usecases.services import Services, delete_quietly, release_slot
from nano_banana.usecases.usage import settle, usage_fields

log = logging.getLogger("nano_banana")


def ended(svc: Services, job: Job, event: str, **fields: object) -> None:
    """After a won transition into a terminal state, side by side (each idempotent, each failure logged,
    none raised): free the slot (once), settle the month's images to those stored, drop the expire task,
    delete the outputs no variant records, hand the webhook delivery the transition recorded to its queue."""
    cleanups: list[Callable[[], object]] = [
        lambda: release_slot(svc, job.project_id, job.id),
        lambda: settle(svc, job),
        lambda: _delete_unrecorded_outputs(svc, job),
        lambda: hand_over(svc, job, job.status.value),
    ]
    if event != "job_expired":
        cleanups.append(lambda: _drop_expire_task(svc, job.id))
    for outcome in settle_each(svc.fanout, cleanups):
        outcome.get()  # each logs its own failures: only what is no Exception (an interrupt) gets here
    _log_end(job, event, **fields)


def _log_end(job: Job, event: str, **fields: object) -> None:
    """The one line of a job's terminal transition: what the jobs-finished metrics count, and the images
    and tokens by model (monitoring.tf)."""
    log.info(
        event,
        extra={
            "event": event,
            "jobId": str(job.id),
            "projectId": str(job.project_id),
            "status": job.status.value,
            "errorCode": job.error_code,
            "durationMs": round((job.updated_at - job.created_at).total_seconds() * 1000, 1),
            **usage_fields(job),
            **fields,
        },
    )


_ENDED_AS = {"succeeded": "succeeded", "failed": "failed", "canceled": "been canceled"}


def cancel_job(svc: Services, user_id: uuid.UUID, job_id: uuid.UUID) -> Job:
    current = get_job(svc, user_id, job_id)
    job = svc.store.cancel(job_id)
    if job is None:
        latest = svc.store.get_job(job_id) or current
        raise InvalidTransition(
            f"the job has already {_ENDED_AS.get(latest.status.value, latest.status.value)}; only a queued or "
            "running job can be canceled",
            details={"status": latest.status.value},
        )
    ended(svc, job, "job_canceled")
    return job


def fail_job(
    svc: Services,
    job: Job,
    code: str,
    message: str,
    *,
    attempt: int | None = None,
    receipt: str | None = None,
    usage: ModelUsage | None = None,
) -> Job | None:
    failed = svc.store.fail(
        job.id,
        code=code,
        message=redact(message),
        from_statuses=list(ACTIVE),
        attempt=attempt,
        receipt=receipt,
        usage=usage,
    )
    if failed is not None:
        ended(svc, failed, "job_failed")
    return failed


def expire_job(svc: Services, job_id: uuid.UUID, *, by: str = "expire_task") -> Job | None:
    """The deadline passed: a job still queued/running becomes failed(timeout). Early delivery is retried.
    `by` (expire_task | sweep) is logged: the sweep expiring a job means its expire task never ran."""
    now = svc.clock()
    job = svc.store.fail(
        job_id,
        code=ErrorCode.timeout,
        message=f"the job did not finish within {svc.settings.timeout_s} seconds",
        from_statuses=list(ACTIVE),
        now=now,
        only_if_past_deadline=True,
    )
    if job is not None:
        ended(svc, job, "job_expired", by=by)
        return job
    current = svc.store.get_job(job_id)
    if current is not None and current.terminal:
        # Its transition may have crashed before giving the lease back or settling; again is harmless.
        settle_each(
            svc.fanout, [lambda: release_slot(svc, current.project_id, current.id), lambda: settle(svc, current)]
        )
        return None
    if current is not None and current.deadline_at > now:
        raise TransientError("the deadline has not passed yet by this clock")
    return None


def _drop_expire_task(svc: Services, job_id: uuid.UUID) -> None:
    try:
        svc.queue.delete("expire", job_id)
    except Exception:  # it runs at the deadline, finds the job ended and does nothing
        log.warning("could not delete an expire task", extra={"event": "expire_delete_failed", "jobId": str(job_id)})


def complete_job(
    svc: Services,
    job: Job,
    attempt: int,
    uploads: Sequence[VariantUpload],
    note: str | None,
    *,
    receipt: str | None = None,
    usage: ModelUsage | None = None,
) -> Job | None:
    """running(attempt) -> succeeded with its variants (and `receipt` applied, and `usage` recorded, in the
    same transaction).
    If the CAS loses, the outputs are deleted, except paths the job recorded meanwhile (a concurrent
    report of the same result). Once the CAS won, nothing here raises: cleanup failures are logged."""
    done = svc.store.complete(job.id, attempt, uploads, note, now=svc.clock(), receipt=receipt, usage=usage)
    if done is None:
        discard_outputs(svc, job.id, [u.storage_path for u in uploads])
        log.info("result discarded", extra={"event": "result_discarded", "jobId": str(job.id), "attempt": attempt})
        return None
    ended(svc, done, "job_succeeded", variants=len(uploads))
    return done


def _delete_unrecorded_outputs(svc: Services, job: Job) -> None:
    """After a job ended: every output of any attempt but its variants (a failed or canceled job has
    none; a crashed worker's outputs included; a live worker deletes its own after losing). The job's
    reference images (jobs/{id}/refs/) stay: they are part of the job until it is deleted."""
    recorded = {v.storage_path for v in job.variants} | set(job.reference_paths)
    try:  # the gate (delete_quietly) keeps anything a row references; `recorded` only saves it the work
        stale = [p for p in svc.blobs.list(job_prefix(job.id)) if p not in recorded]
    except Exception as exc:  # the transition is committed; orphans are harmless, a failed answer is not
        log.warning(
            "could not list outputs",
            extra={"event": "blob_cleanup_failed", "jobId": str(job.id), "errorType": type(exc).__name__},
        )
        return
    delete_quietly(svc, stale, job.id)


def discard_outputs(svc: Services, job_id: uuid.UUID, paths: Sequence[str]) -> None:
    """Delete outputs that will never be recorded (a late, rejected or repeated result), through the
    gate: a path any row references (this job's variant, or another job's input made from it) stays."""
    delete_quietly(svc, paths, job_id)
