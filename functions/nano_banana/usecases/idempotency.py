"""Idempotency-Keys: the job an earlier request with the same key created, and waiting for one still being created.

Who owns a young row. A creation inserts its row beside its two enqueues and, if something failed, may
discard the row again (`admitting`): a failed creation leaves nothing behind. A same-key retry that finds
the row must never answer with a job its creation then discards. So the row decides, by compare-and-set:
a replay hands a row out only through `store.mark_replayed` (an UPDATE that marks it replayed), and a
creation discards only through `store.discard_queued`, which spares a replayed row. Whichever commits
first wins: a discarded row is never handed out (the mark finds nothing, and the retry creates the job
itself), and a handed-out row is never discarded (its creation then answers with the job, 202, and if
one of its tasks is missing the sweep schedules it after the requeue grace). A replay still waits until
the row looks settled (`_settled`: both tasks scheduled, claimed, or old) before it marks it, so it rarely
takes over a row whose creation is about to roll back; correctness does not depend on that wait.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from datetime import timedelta

from nano_banana.domain import (
    Job,
    JobStatus,
)
from nano_banana.errors import (
    IdempotencyConflict,
    IdempotencyKeyInUse,
)
from nano_banana.ports import (
    KeyClaimed,
    Reservation,
)
from nano_banana.together import together
from nano_banana.usecases.services import Services, expire_task, generate_task

log = logging.getLogger("nano_banana")


# A request whose Idempotency-Key another request is still using waits this long for that job's row.
KEY_WAIT_S = 15.0


_KEY_POLL_FIRST_S = 0.05


_KEY_POLL_MAX_S = 0.5


def earlier_job(svc: Services, user_id: uuid.UUID, key: str | None) -> tuple[Job, str | None] | None:
    """The job an earlier request with this Idempotency-Key created, and its request's fingerprint."""
    return None if key is None else svc.store.find_by_idempotency_key(user_id, key)


def matching(found: tuple[Job, str | None], fingerprint: str) -> Job:
    job, stored_hash = found
    if stored_hash != fingerprint:
        raise IdempotencyConflict(
            "this Idempotency-Key was used with a different request", details={"jobId": str(job.id)}
        )
    return job


def _settled(svc: Services, job: Job) -> bool:
    """Whether a job found by its key looks done being created, so marking it replayed will not take it
    over from a creation about to roll back: a task moved it, it is older than any creation request, or
    (young and queued) both its tasks are scheduled, its creation's last step."""
    if job.status is not JobStatus.queued or svc.clock() - job.created_at >= timedelta(
        seconds=svc.settings.requeue_grace_s
    ):
        return True
    generate, expire = together(
        svc.fanout,
        lambda: svc.queue.is_pending(generate_task(svc, job.id, job.deadline_at)),
        lambda: svc.queue.is_pending(expire_task(job.id, job.deadline_at)),
    )
    return generate and expire


def wait_for_key(
    svc: Services,
    user_id: uuid.UUID,
    key: str,
    fingerprint: str,
    reserve: Callable[[], Reservation] | None,
) -> Job | Reservation | None:
    """Another request holds this Idempotency-Key (its claim, or its row before it was scheduled).
    Look for its job with a short backoff, up to KEY_WAIT_S: its job once settled and marked replayed (a
    different body: IdempotencyConflict). If the row is not there (or its creation discarded it before the
    mark), `reserve` tries to claim the key again (the holder may have rolled back); without `reserve`
    None: create it. Past the wait: IdempotencyKeyInUse (503, retry)."""
    deadline = time.monotonic() + KEY_WAIT_S
    pause = _KEY_POLL_FIRST_S
    while time.monotonic() + pause < deadline:
        time.sleep(pause)
        pause = min(2 * pause, _KEY_POLL_MAX_S)
        found = svc.store.find_by_idempotency_key(user_id, key)
        if found is not None:
            job = matching(found, fingerprint)
            if _settled(svc, job):
                if (handed := svc.store.mark_replayed(job.id)) is not None:
                    return handed
                if reserve is None:  # its creation discarded it first: create it
                    return None
        elif reserve is None:
            return None
        else:
            try:
                return reserve()
            except KeyClaimed:
                pass
    raise IdempotencyKeyInUse("a request with this Idempotency-Key is still creating its job; retry shortly")


def replay_or_wait(
    svc: Services, user_id: uuid.UUID, key: str, fingerprint: str, found: tuple[Job, str | None]
) -> Job | None:
    """The job an earlier request with this key created, handed out (marked replayed: its creation can no
    longer discard it). None: its creation rolled back meanwhile."""
    job = matching(found, fingerprint)
    if _settled(svc, job):
        return svc.store.mark_replayed(job.id)
    waited = wait_for_key(svc, user_id, key, fingerprint, None)
    assert not isinstance(waited, Reservation)
    return waited
