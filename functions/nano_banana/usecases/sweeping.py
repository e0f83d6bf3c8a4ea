"""The sweep: expire what an expire task missed, requeue lost generate tasks, reclaim leaked slots, and the
housekeeping steps."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from nano_banana.domain import (
    TERMINAL,
    Job,
    JobStatus,
)
from nano_banana.errors import (
    Unavailable,
)
from nano_banana.log import timed
from nano_banana.ports import Holding
from nano_banana.usecases.deleting import apply_retention, finish_purges
from nano_banana.usecases.finishing import expire_job
from nano_banana.usecases.services import CREATION_GRACE, LEASE_GRACE, Services, delete_unreferenced, generate_task

log = logging.getLogger("nano_banana")


def sweep(svc: Services, limit: int = 200) -> int:
    """Safety net for expire tasks that never ran, generate tasks that were lost, and leases and key
    claims no live job holds. Each part reads at most `limit` rows (or limits documents). Returns how
    many jobs it expired."""
    expired = 0
    with timed("sweep") as event:
        for job_id in svc.store.overdue_jobs(svc.clock(), limit):
            if expire_job(svc, job_id, by="sweep") is not None:
                expired += 1
        event["requeued"] = _requeue_lost_generate_tasks(svc, limit)
        event["slotsReclaimed"] = _reconcile_holdings(svc, limit)
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


def _reconcile_holdings(svc: Services, limit: int) -> int:
    """Give back what the limits store holds for a job no row keeps alive: a lease whose job ended (a
    crash or an outage between the transition and its release), was deleted (a DELETE whose release
    failed) or was never inserted (a creation that died, or a reservation whose answer was lost); a key
    claim whose job has no row. A missing row counts only past CREATION_GRACE after the admission (its
    creation may still be inserting it). A claim of an existing row stays: a retry with that key is
    answered from the row. Each run reads the next `limit` projects' and users' documents, resuming where
    the last run stopped. Returns how many it gave back."""
    given = 0
    for kind in ("lease", "claim"):
        cursor = f"held_{kind}s"
        position, _ = svc.store.sweep_cursor(cursor)
        try:
            page = svc.limits.holdings(kind, offset=position, limit=limit)
        except Unavailable:
            log.warning("the limits store is unavailable; reconciliation stops", extra={"event": "reclaim_failed"})
            break
        statuses = svc.store.job_statuses(sorted({h.job_id for h in page.holdings}))
        now = svc.clock()
        for holding in page.holdings:
            if _held_for_nothing(svc, holding, statuses.get(holding.job_id), now) and _give_back(svc, holding):
                given += 1
        svc.store.set_sweep_cursor(cursor, position + page.documents if page.documents >= limit else 0, now)
    return given


def _held_for_nothing(svc: Services, holding: Holding, status: JobStatus | None, now: datetime) -> bool:
    if status is None:  # deleted or never inserted: past the grace, no creation can still insert it
        admitted_at = holding.expires_at - LEASE_GRACE - timedelta(seconds=svc.settings.timeout_s)
        return now - admitted_at > CREATION_GRACE
    return holding.kind == "lease" and status in TERMINAL


def _give_back(svc: Services, holding: Holding) -> bool:
    try:
        dropped = svc.limits.drop(holding)
    except Exception:  # the next pass tries again; at worst it expires on its own
        log.exception("could not give back a holding", extra={"event": "reclaim_failed", "jobId": str(holding.job_id)})
        return False
    if dropped and holding.kind == "lease":
        log.info(
            "slot_reclaimed",
            extra={"event": "slot_reclaimed", "jobId": str(holding.job_id), "projectId": str(holding.owner)},
        )
    elif dropped:
        log.info("claim_reclaimed", extra={"event": "claim_reclaimed", "jobId": str(holding.job_id)})
    return dropped


def delete_orphan_inputs(svc: Services) -> int:
    """Sweep step: uploads under `inputs/` that no job references and that are older than the grace
    period (a creation that died between upload and insert, or whose clean-up failed) are deleted.
    Bounded and resumable as `_delete_orphans` says. Returns blobs deleted."""
    return _delete_orphans(svc, "inputs", list)


def delete_orphan_outputs(svc: Services) -> int:
    """Sweep step: objects under `jobs/{id}/` of a job that ended or has no row, older than the grace
    period, that no row references (a worker's upload after its job ended, a discard or an end-of-job
    clean-up that failed, a purge lost with its record). A running job's folder is left to its worker.
    Returns blobs deleted."""

    def settled(folders: Sequence[str]) -> list[str]:
        ids = {name: _job_id(name) for name in folders}
        statuses = svc.store.job_statuses(sorted({i for i in ids.values() if i is not None}))
        return [name for name, i in ids.items() if i is None or statuses.get(i, JobStatus.failed) in TERMINAL]

    return _delete_orphans(svc, "jobs", settled)


def _job_id(folder: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(folder)
    except ValueError:
        return None


def _delete_orphans(svc: Services, top: str, candidates: Callable[[Sequence[str]], list[str]]) -> int:
    """Delete the objects older than the grace period in the next NANO_BANANA_ORPHAN_BATCH folders of
    `top` (those `candidates` keeps), through the gate (what a row references stays), resuming where the
    last run stopped; after a full pass it rests for the grace period (nothing new can have become an
    orphan sooner)."""
    cursor = f"orphan_{top}"
    now = svc.clock()
    grace = timedelta(seconds=svc.settings.orphan_grace_s)
    position, saved_at = svc.store.sweep_cursor(cursor)
    if position == 0 and saved_at is not None and now - saved_at < grace:
        return 0
    batch = svc.settings.orphan_batch
    folders = svc.blobs.list_folder(top, offset=position, limit=batch)
    stale: list[str] = []
    for name in candidates([f.name for f in folders if f.folder]):
        stale += _objects_before(svc, f"{top}/{name}", now - grace)
    orphans = delete_unreferenced(svc, stale)
    if orphans:
        log.info("orphans deleted", extra={"event": "orphans_deleted", "blobs": len(orphans), "folder": top})
    # Past the last folder: start over next run. (A folder emptied here may shift later ones back by one;
    # the next cycle sees them.)
    svc.store.set_sweep_cursor(cursor, position + len(folders) if len(folders) == batch else 0, now)
    return len(orphans)


def _objects_before(svc: Services, folder: str, cutoff: datetime) -> list[str]:
    """Every object under `folder` (recursively) last written before `cutoff`."""
    found: list[str] = []
    offset = 0
    while True:
        page = svc.blobs.list_folder(folder, offset=offset, limit=_LIST_PAGE)
        for entry in page:
            if entry.folder:
                found += _objects_before(svc, f"{folder}/{entry.name}", cutoff)
            elif entry.updated_at is not None and entry.updated_at < cutoff:
                found.append(f"{folder}/{entry.name}")
        if len(page) < _LIST_PAGE:
            return found
        offset += _LIST_PAGE


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
        ("orphanOutputs", delete_orphan_outputs),
        ("receipts", prune_receipts),
    ]
    for name, step in steps:
        try:
            event[name] = step(svc)
        except Exception as exc:
            event[name] = type(exc).__name__
            log.exception("sweep step failed", extra={"event": "sweep_step_failed", "step": name})


_LIST_PAGE = 1000
