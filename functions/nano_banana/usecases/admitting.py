"""A creation's round trips 2-3: reserve the limits, insert the row beside both enqueues, or undo all of it."""

from __future__ import annotations

import dataclasses
import functools
import logging
import uuid
from collections.abc import Callable, Sequence

from nano_banana.domain import (
    ErrorCode,
    Job,
    NewJob,
)
from nano_banana.errors import (
    InvalidRequest,
    NanoBananaError,
    Unavailable,
)
from nano_banana.images import ImageInfo
from nano_banana.ports import (
    KeyClaimed,
    LimitsReading,
    Reservation,
    TaskKind,
)
from nano_banana.together import Outcome, attempt, settle, settle_each
from nano_banana.usecases.commands import Created
from nano_banana.usecases.idempotency import earlier_job, matching, wait_for_key
from nano_banana.usecases.services import LEASE_GRACE, Services, delete_quietly, expire_task, generate_task
from nano_banana.usecases.usage import note_budget

log = logging.getLogger("nano_banana")


def admit(
    svc: Services,
    new: NewJob,
    *,
    beside: Callable[[], ImageInfo | None] | None = None,
    stores: bool = False,
    max_turns: int | None = None,
    reading: LimitsReading | None = None,
    monthly_images: int | None = None,
) -> Created:
    """Round trips 2-3: reserve the limits and claim the key (one commit) ‖ `beside` (store the uploaded
    input, `stores`, or read an `inputPath` for its type and size: the limits were checked in round trip
    1, so nothing expensive ran for a request they refuse); then insert the job ‖ enqueue generate ‖
    enqueue expire. A generate task that arrives before its row commits waits for it (run_generation).
    Any failure undoes what succeeded: the row goes (it was never scheduled), the tasks and the input go,
    the reservation, the claim and the images are given back. The reservation takes `variant_count` images
    from the project's month in the same commit (`monthly_images`: its budget, None for none)."""

    def reserve(on: LimitsReading | None = None) -> Reservation:
        return svc.limits.reserve(
            user_id=new.user_id,
            project_id=new.project_id,
            job_id=new.id,
            lease_expires_at=new.deadline_at + LEASE_GRACE,
            idempotency_key=new.idempotency_key,
            reading=on,
            images=new.variant_count,
            monthly_images=monthly_images,
        )

    side: Outcome[ImageInfo | None] = Outcome(None, None)
    if beside is None:
        reserved = attempt(lambda: reserve(reading))
    else:  # on what round trip 1 read, only the commit is left
        reserved, side = settle(svc.fanout, lambda: reserve(reading), beside)
    stored = [new.input_path] if stores and side.ok else []
    try:
        reservation = _reservation(svc, new, reserve, reserved)
    except BaseException:
        delete_quietly(svc, stored, new.id)
        raise
    if not isinstance(reservation, Reservation):  # the key's holder created the job meanwhile
        delete_quietly(svc, stored, new.id)
        return Created(job=reservation, message_id=None, replayed=True)
    if not side.ok:
        _undo(svc, reservation, stored)
        _raise_failure(side.error)
    if isinstance(info := side.value, ImageInfo):
        new = dataclasses.replace(new, input_mime_type=info.mime_type, input_width=info.width, input_height=info.height)

    def insert() -> Job | int | None:
        if max_turns is None:
            return svc.store.create_job(new)
        return svc.store.create_refinement(new, max_turns=max_turns)

    inserted, generate, expire = settle(
        svc.fanout,
        insert,
        lambda: svc.queue.enqueue(generate_task(svc, new.id, new.deadline_at)),
        lambda: svc.queue.enqueue(expire_task(new.id, new.deadline_at)),
    )
    kinds: tuple[tuple[TaskKind, Outcome[bool]], ...] = (("generate", generate), ("expire", expire))
    enqueued = [kind for kind, outcome in kinds if outcome.ok]
    result = inserted.value if inserted.ok else None
    job = result if isinstance(result, Job) else None
    if job is None and inserted.error is not None and _outcome_unknown(inserted.error):
        job = _committed_anyway(svc, new, inserted.error)
    if job is None:
        _drop_tasks(svc, new.id, enqueued)
        _undo(svc, reservation, stored)
        _raise_failure(inserted.error)
        if isinstance(result, int):
            raise InvalidRequest(
                f"this thread already has {result} turns; the limit is {max_turns}", details={"maxTurns": max_turns}
            )
        # None: a concurrent identical request inserted first (its claim had expired): answer with its job.
        replay = earlier_job(svc, new.user_id, new.idempotency_key)
        if replay is None:
            raise Unavailable("could not create the job; retry")
        return Created(job=matching(replay, new.request_hash or ""), message_id=None, replayed=True)
    if not (generate.ok and expire.ok) and _roll_back(svc, reservation, stored, job):
        _drop_tasks(svc, new.id, enqueued)
        _raise_failure(generate.error, expire.error, reason=ErrorCode.enqueue_failed.value)
    note_budget(reservation)
    return Created(job=job, message_id=new.message_id, replayed=False)


def _outcome_unknown(error: BaseException) -> bool:
    """An insert that failed this way may still have committed (the connection broke around COMMIT)."""
    return isinstance(error, Unavailable) or (isinstance(error, Exception) and not isinstance(error, NanoBananaError))


def _committed_anyway(svc: Services, new: NewJob, error: BaseException) -> Job | None:
    """After an insert whose outcome is unknown: delete its row if it did commit and is still queued
    (compare-and-set), so no row outlives the failed answer; a row the generate task enqueued beside it
    already claimed is a live job, returned to be answered 202. None: there is no row. If the database
    cannot say, nothing is undone (a row may exist and run) and the answer is 503."""
    try:
        if svc.store.discard_queued(new.id):
            return None
        return svc.store.get_job(new.id)
    except Exception:
        log.exception(
            "could not tell whether a failed insert committed; nothing undone",
            extra={"event": "job_discard_failed", "jobId": str(new.id), "projectId": str(new.project_id)},
        )
        raise Unavailable(
            "could not tell whether the job was created; a retry with the same Idempotency-Key answers with it"
        ) from error


def _reservation(
    svc: Services, new: NewJob, reserve: Callable[[], Reservation], reserved: Outcome[Reservation]
) -> Reservation | Job:
    """The reservation round trip 2 made; if another request holds the key, the reservation made after
    waiting for it, or the job it created."""
    try:
        return reserved.get()
    except KeyClaimed:
        assert new.idempotency_key is not None
        waited = wait_for_key(svc, new.user_id, new.idempotency_key, new.request_hash or "", reserve)
        assert waited is not None
        return waited


def _drop_tasks(svc: Services, job_id: uuid.UUID, kinds: Sequence[TaskKind]) -> None:
    """Delete the tasks of a creation that rolled back (best effort: a generate task that still arrives
    finds no row and is acknowledged; an expire task finds nothing to expire)."""
    settle_each(svc.fanout, [functools.partial(svc.queue.delete, kind, job_id) for kind in kinds])


def _raise_failure(*errors: BaseException | None, reason: str | None = None) -> None:
    """Raise the first of the errors: ours as they are, anything else as Unavailable. With a `reason`
    (`enqueue_failed`: the job could not be scheduled, so it was rolled back) every failure is Unavailable
    with that reason, which `job_rejected` logs and monitoring counts."""
    for exc in errors:
        if exc is not None:
            if not isinstance(exc, Exception):  # KeyboardInterrupt, SystemExit: after the undo, as they are
                raise exc
            if reason is not None:
                raise Unavailable(
                    "the job could not be scheduled; nothing was kept, retry", details={"reason": reason}
                ) from exc
            if isinstance(exc, NanoBananaError):
                raise exc
            raise Unavailable("could not create the job; nothing was reserved") from exc


def _roll_back(svc: Services, reservation: Reservation, stored: Sequence[str], job: Job | None) -> bool:
    """Undo a creation: its row (still queued: never scheduled), the stored input, the reservation and the
    key claim (a retry with the same Idempotency-Key then creates the job). False, undoing nothing, when
    the row cannot go: a task claimed it or it was canceled (the job lives; its own transitions free its
    slot), or the database failed (the row stays queued; the sweep schedules it after the grace)."""
    if job is not None:
        try:
            discarded = svc.store.discard_queued(job.id)
        except Exception:
            log.exception(
                "could not discard a job whose scheduling failed",
                extra={"event": "job_discard_failed", "jobId": str(job.id), "projectId": str(job.project_id)},
            )
            return True  # the answer stays the failure; the job itself will still run
        if not discarded:
            return False
    _undo(svc, reservation, stored)
    return True


def _undo(svc: Services, reservation: Reservation, stored: Sequence[str]) -> None:
    try:
        svc.limits.give_back(reservation)
    except Exception:
        log.exception(
            "could not give back a reservation", extra={"event": "give_back_failed", "jobId": str(reservation.job_id)}
        )
    if stored:
        try:
            svc.blobs.delete(stored)
        except Exception:
            log.exception(
                "could not delete an input", extra={"event": "input_cleanup_failed", "jobId": str(reservation.job_id)}
            )
