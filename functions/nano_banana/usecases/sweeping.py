"""The sweep: expire what an expire task missed, requeue lost generate tasks, reclaim leaked slots, and the
housekeeping steps."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from nano_banana.domain import (
    Job,
    JobStatus,
)
from nano_banana.errors import (
    Unavailable,
)
from nano_banana.log import timed
from nano_banana.usecases.deleting import apply_retention, finish_purges
from nano_banana.usecases.finishing import expire_job
from nano_banana.usecases.notifying import hand_over_unsent
from nano_banana.usecases.services import LEASE_GRACE, Services, generate_task, release_slot

log = logging.getLogger("nano_banana")


def sweep(svc: Services, limit: int = 200) -> int:
    """Safety net for expire tasks that never ran, generate tasks that were lost and leases that were
    not given back. Each part reads at most `limit` rows. Returns how many jobs it expired."""
    expired = 0
    with timed("sweep") as event:
        for job_id in svc.store.overdue_jobs(svc.clock(), limit):
            if expire_job(svc, job_id, by="sweep") is not None:
                expired += 1
        event["requeued"] = _requeue_lost_generate_tasks(svc, limit)
        event["slotsReclaimed"] = _reclaim_leaked_slots(svc, limit)
        event["expired"] = expired
        _lifecycle_steps(svc, event)
    return expired


# A replacement generate task is named per round (a used name is refused for ~1 h): one per job and round.
REQUEUE_ROUND_S = 600


def _requeue_lost_generate_tasks(svc: Services, limit: int) -> int:
    """Re-enqueue the generate task of jobs still queued past the grace (a crash between the insert and
    the enqueue, or a task the queue gave up on). Returns how many tasks it created."""
    now = svc.clock()
    started_by = now + timedelta(seconds=svc.settings.timeout_s - svc.settings.requeue_grace_s)
    requeued = 0
    for job in svc.store.stale_queued_jobs(now, started_by, limit):
        try:
            if _replace_generate_task(svc, job, now):
                requeued += 1
        except Unavailable:
            log.warning("the task queue is unavailable; requeueing stops", extra={"event": "requeue_failed"})
            break
    return requeued


def _replace_generate_task(svc: Services, job: Job, now: datetime) -> bool:
    """Enqueue the job's generate task again unless one is waiting: under its own name if that was never
    used, else under this round's name. Never beside a waiting one: a second delivery would take over
    the first one's claim (a redelivery supersedes a running attempt)."""
    round_ = int(now.timestamp()) // REQUEUE_ROUND_S
    if any(svc.queue.is_pending(generate_task(svc, job.id, job.deadline_at, r)) for r in (None, round_ - 1, round_)):
        return False
    # A task that claimed the job finished after its claim committed: a job still queued now was not claimed.
    current = svc.store.get_job(job.id)
    if current is None or current.status is not JobStatus.queued:
        return False
    for replacement in (None, round_):
        task = generate_task(svc, job.id, job.deadline_at, replacement)
        if svc.queue.enqueue(task):
            log.info(
                "generate_requeued",
                extra={
                    "event": "generate_requeued",
                    "jobId": str(job.id),
                    "projectId": str(job.project_id),
                    "replacement": replacement,
                },
            )
            return True
        if svc.queue.is_pending(task):  # a concurrent sweep just created it
            return False
    return False


def _reclaim_leaked_slots(svc: Services, limit: int) -> int:
    """Give back leases still held by ended jobs (a crash between the terminal transition and the
    release, or a release during a limits outage). A lease lives until its job's deadline + LEASE_GRACE,
    so only projects with a job ended within that window are read: one lease read each, and one
    release per leaked lease. Returns how many leases it gave back."""
    reclaimed = 0
    for project_id in svc.store.projects_with_recent_ends(svc.clock() - LEASE_GRACE, limit):
        try:
            held = svc.limits.active_jobs(project_id)
        except Unavailable:
            log.warning("the limits store is unavailable; slot reclaim stops", extra={"event": "reclaim_failed"})
            break
        for job_id in sorted(svc.store.ended_among(held)):
            if release_slot(svc, project_id, job_id):
                reclaimed += 1
                log.info(
                    "slot_reclaimed",
                    extra={"event": "slot_reclaimed", "jobId": str(job_id), "projectId": str(project_id)},
                )
    return reclaimed


def delete_orphan_inputs(svc: Services) -> int:
    """Sweep step: uploads under `inputs/` that no job references and that are older than the grace
    period (a creation that died between upload and insert) are deleted. Each run scans the next
    NANO_BANANA_ORPHAN_BATCH user folders, resuming where the last run stopped; after a full pass it rests
    for the grace period (nothing new can have become an orphan sooner). Returns blobs deleted."""
    cursor = "orphan_inputs"
    now = svc.clock()
    grace = timedelta(seconds=svc.settings.orphan_grace_s)
    position, saved_at = svc.store.sweep_cursor(cursor)
    if position == 0 and saved_at is not None and now - saved_at < grace:
        return 0
    batch = svc.settings.orphan_batch
    folders = svc.blobs.list_folder("inputs", offset=position, limit=batch)
    cutoff = now - grace
    stale: list[str] = []
    for folder in (f for f in folders if f.folder):
        offset = 0
        while True:
            page = svc.blobs.list_folder(f"inputs/{folder.name}", offset=offset, limit=_LIST_PAGE)
            stale += [
                f"inputs/{folder.name}/{e.name}"
                for e in page
                if not e.folder and e.updated_at is not None and e.updated_at < cutoff
            ]
            if len(page) < _LIST_PAGE:
                break
            offset += _LIST_PAGE
    keep = svc.store.referenced_paths(stale)
    orphans = [p for p in stale if p not in keep]
    if orphans:
        svc.blobs.delete(orphans)
        log.info("orphan inputs deleted", extra={"event": "orphans_deleted", "blobs": len(orphans)})
    # Past the last folder: start over next run. (A folder emptied here may shift later ones back by one;
    # the next cycle sees them.)
    svc.store.set_sweep_cursor(cursor, position + len(folders) if len(folders) == batch else 0, now)
    return len(orphans)


def prune_receipts(svc: Services) -> None:
    """Sweep step: forget webhook receipts (any state) once no replay could pass the timestamp check."""
    tolerance = timedelta(seconds=svc.settings.callback_tolerance_s)
    svc.store.prune_webhooks(svc.clock() - 2 * tolerance - RECEIPT_MARGIN)


# A webhook id must be remembered while a replay could still pass the timestamp check: its timestamp may
# be up to the tolerance ahead of the first delivery and a replay up to the tolerance after it.
RECEIPT_MARGIN = timedelta(minutes=5)


def _lifecycle_steps(svc: Services, event: dict[str, object]) -> None:
    """The sweep's housekeeping after its own work; one failing step (storage down) skips only itself."""
    steps: list[tuple[str, Callable[[Services], int | None]]] = [
        ("purged", finish_purges),
        ("retained", apply_retention),
        ("orphans", delete_orphan_inputs),
        ("receipts", prune_receipts),
        ("webhooksHandedOver", hand_over_unsent),
    ]
    for name, step in steps:
        try:
            event[name] = step(svc)
        except Exception as exc:
            event[name] = type(exc).__name__
            log.exception("sweep step failed", extra={"event": "sweep_step_failed", "step": name})


_LIST_PAGE = 1000
