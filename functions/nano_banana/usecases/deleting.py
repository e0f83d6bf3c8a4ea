"""Deletion and the data lifecycle: DELETE /jobs/{id}, recorded purges, retention and erasure."""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from nano_banana.domain import (
    ACTIVE,
    job_prefix,
)
from nano_banana.errors import (
    Forbidden,
    NotFound,
)
from nano_banana.log import timed
from nano_banana.ports import (
    DeletedJob,
)
from nano_banana.together import settle_each
from nano_banana.usecases.finishing import ended
from nano_banana.usecases.reading import get_job
from nano_banana.usecases.services import CREATION_GRACE, LEASE_GRACE, Services, delete_unreferenced
from nano_banana.usecases.usage import settle_to

log = logging.getLogger("nano_banana")


# How long after its deadline a deleted job's output prefix is purged again: a worker or processor that
# was still busy may upload after the deletion and die before deleting what it uploaded.
LATE_UPLOAD_GRACE = timedelta(minutes=2)


PURGE_BATCH = 200
_FOLDER_PAGE = 1000


@dataclass(frozen=True, slots=True)
class Deletion:
    """What a deletion removed: job rows, and blob paths deleted from storage. `deferred`: storage failed
    after the rows were gone; the recorded purges are left to the sweep (the deletion itself stands)."""

    job_ids: list[uuid.UUID]
    blobs: list[str]
    deferred: bool = False


def delete_job(svc: Services, user_id: uuid.UUID, job_id: uuid.UUID) -> Deletion:
    """DELETE /jobs/{id}: the job and every refinement made from it, with their variants, messages and
    blobs. Only its creator may (another member: Forbidden; anyone else: NotFound, as for reads)."""
    job = get_job(svc, user_id, job_id)
    if job.user_id != user_id:
        raise Forbidden("only the job's creator can delete it", details={"jobId": str(job_id)})
    with timed("jobs_deleted", jobId=str(job.id), projectId=str(job.project_id), reason="user") as event:
        deletion = _delete_subtrees(svc, [job.id])
        event.update(jobs=len(deletion.job_ids), blobs=len(deletion.blobs))
    if not deletion.job_ids:  # a concurrent deletion took it between our read and our transaction
        raise NotFound("job not found", details={"jobId": str(job_id)})
    return deletion


def _delete_subtrees(
    svc: Services,
    roots: Sequence[uuid.UUID],
    *,
    by_input: bool = False,
    extra_purges: Sequence[str] = (),
    expired_before: datetime | None = None,
) -> Deletion:
    """Cancel what is still active (the normal CAS: slot released, expire task dropped), delete the rows
    in one transaction that records their blobs, then delete the blobs. A crash after the transaction
    leaves the recorded purges for the sweep; a worker finishing later finds no row and deletes its own.
    Retention (`expired_before`) cancels nothing: a thread with an active job is not expired, and the
    locked delete re-checks that."""
    if expired_before is None:
        for job in svc.store.job_subtree(roots, by_input=by_input):
            if job.status in ACTIVE and (canceled := svc.store.cancel(job.id)) is not None:
                ended(svc, canceled, "job_canceled", reason="deleted")
    now = svc.clock()
    deleted = svc.store.delete_jobs(
        roots,
        now=now,
        by_input=by_input,
        late_uploads_s=(LEASE_GRACE + LATE_UPLOAD_GRACE).total_seconds(),
        extra_purges=extra_purges,
        expired_before=expired_before,
    )
    for gone in deleted:
        if gone.status in ACTIVE:  # created after the cancel step (a racing refinement): no CAS left to win
            _release_deleted(svc, gone)
    _release_claims(svc, [g for g in deleted if g.idempotency_key and g.deadline_at + LEASE_GRACE > now])
    entries = [p for gone in deleted for p in (job_prefix(gone.id), gone.input_path)]
    first = set(roots)
    ids = sorted((gone.id for gone in deleted), key=lambda i: i not in first)
    try:  # everything at once, though an output prefix stays recorded until its job's deadline has passed
        blobs = _purge(svc, [*dict.fromkeys([*entries, *extra_purges])], now) if deleted or extra_purges else []
    except Exception:
        log.warning("blob purge deferred to the sweep", extra={"event": "purge_deferred", "jobs": len(ids)})
        return Deletion(job_ids=ids, blobs=[], deferred=True)
    return Deletion(job_ids=ids, blobs=blobs)


def _release_deleted(svc: Services, gone: DeletedJob) -> None:
    try:
        svc.limits.release_slot(project_id=gone.project_id, job_id=gone.id)
    except Exception:  # the lease expires on its own at deadline + grace
        log.exception("could not release a slot", extra={"event": "release_failed", "jobId": str(gone.id)})
    settle_to(svc, gone.project_id, gone.id, gone.deadline_at, 0)  # it stored nothing: its images come back
    try:
        svc.queue.delete("expire", gone.id)
    except Exception:
        log.warning("could not delete an expire task", extra={"event": "expire_delete_failed", "jobId": str(gone.id)})


def _release_claims(svc: Services, gone: Sequence[DeletedJob]) -> None:
    """Free the Idempotency-Keys of deleted jobs whose claims may still be live (a claim lives as long
    as the lease): reusing such a key creates a new job at once instead of waiting for a row that will
    never appear. A failure only delays that reuse until the claim expires."""

    def release(job: DeletedJob) -> None:
        assert job.idempotency_key is not None
        try:
            svc.limits.release_claim(
                user_id=job.user_id, project_id=job.project_id, job_id=job.id, idempotency_key=job.idempotency_key
            )
        except Exception:
            log.warning(
                "could not release a deleted job's key claim",
                extra={"event": "claim_release_failed", "jobId": str(job.id)},
            )

    settle_each(svc.fanout, [functools.partial(release, job) for job in gone])


def _expand(svc: Services, entries: Sequence[str]) -> list[str]:
    """Purge entries as object paths: a prefix ending in '/' stands for every object under it."""
    paths: list[str] = []
    for entry in entries:
        paths.extend(svc.blobs.list(entry) if entry.endswith("/") else [entry])
    return list(dict.fromkeys(paths))


def _settled_uploads(svc: Services, folder: str, now: datetime) -> list[str]:
    """A user's uploads folder (an erasure's `inputs/{user}/` entry) as object paths, without the uploads
    younger than CREATION_GRACE: such an upload may belong to a creation still in flight, whose row the gate
    cannot see yet. The erasure records the folder once more for later (delete_jobs' second pass), when the
    gate keeps it if its job was inserted and deletes it if not."""
    cutoff, paths, offset = now - CREATION_GRACE, [], 0
    while True:
        page = svc.blobs.list_folder(folder.rstrip("/"), offset=offset, limit=_FOLDER_PAGE)
        paths += [
            f"{folder}{e.name}" for e in page if not e.folder and e.updated_at is not None and e.updated_at <= cutoff
        ]
        if len(page) < _FOLDER_PAGE:
            return paths
        offset += _FOLDER_PAGE


def _purge(svc: Services, entries: Sequence[str], now: datetime) -> list[str]:
    """Delete the blobs behind recorded purge entries, except those a remaining job still uses (a
    refinement's input is its parent's variant) and a user's uploads young enough to be a creation's in
    flight, then forget the entries. Returns the paths deleted."""
    folders = [e for e in entries if e.startswith("inputs/") and e.endswith("/")]
    paths = _expand(svc, [e for e in entries if e not in folders])
    paths += [p for folder in folders for p in _settled_uploads(svc, folder, now)]
    doomed = delete_unreferenced(svc, list(dict.fromkeys(paths)))
    svc.store.finish_purges(entries, now)
    return doomed


def finish_purges(svc: Services) -> int:
    """Sweep step: purges a deletion recorded but did not finish (a crash), and second passes over the
    output prefixes of jobs deleted while active. Bounded per run. Returns how many blobs it deleted."""
    now = svc.clock()
    entries = svc.store.due_purges(now, PURGE_BATCH)
    return len(_purge(svc, entries, now)) if entries else 0


def apply_retention(svc: Services) -> int:
    """Sweep step: with NANO_BANANA_RETENTION_DAYS set, delete whole threads whose newest job finished
    before the cutoff, whole threads of at most NANO_BANANA_RETENTION_BATCH jobs together per run (one
    run stays inside the sweep's time budget; a backlog drains over the next runs). Returns jobs deleted."""
    days = svc.settings.retention_days
    if days is None:
        return 0
    cutoff = svc.clock() - timedelta(days=days)
    roots = svc.store.expired_threads(cutoff, svc.settings.retention_batch)
    if not roots:
        return 0
    with timed("jobs_deleted", reason="retention", threads=len(roots)) as event:
        deletion = _delete_subtrees(svc, roots, expired_before=cutoff)
        event.update(jobs=len(deletion.job_ids), blobs=len(deletion.blobs))
    return len(deletion.job_ids)


@dataclass(frozen=True, slots=True)
class Erasure:
    """What `nano-banana erase-user` deleted (or, with dry_run, would delete). `deferred`: storage failed
    midway; the rows are gone and the sweep deletes the rest within minutes."""

    user_id: uuid.UUID
    dry_run: bool
    job_ids: list[uuid.UUID]
    blobs: list[str]
    deferred: bool = False


def erase_user(svc: Services, user_id: uuid.UUID, *, dry_run: bool = False) -> Erasure:
    """Everything of one user's: the jobs they created with every job made from them (refinements and
    jobs made from their variants, whoever made them), their uploads (`inputs/{user}/`), and their rate
    window. Safe to run again; dry_run reads only."""
    roots = svc.store.user_jobs(user_id)
    uploads = f"inputs/{user_id}/"
    if dry_run:
        jobs = svc.store.job_subtree(roots, by_input=True) if roots else []
        ids = [job.id for job in jobs]
        paths = _expand(svc, [*(job_prefix(i) for i in ids), *(job.input_path for job in jobs), uploads])
        keep = svc.store.referenced_paths(paths, excluding=ids)
        return Erasure(user_id, True, ids, [p for p in paths if p not in keep])
    with timed("user_erased", reason="erasure") as event:
        deletion = _delete_subtrees(svc, roots, by_input=True, extra_purges=[uploads])
        svc.limits.forget_user(user_id)
        event.update(jobs=len(deletion.job_ids), blobs=len(deletion.blobs))
    return Erasure(user_id, False, deletion.job_ids, deletion.blobs, deletion.deferred)
