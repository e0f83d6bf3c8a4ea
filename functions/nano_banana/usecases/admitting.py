"""A creation's round trips 2-3: reserve the limits, insert the row beside both enqueues, or undo all of it."""

from __future__ import annotations

import dataclasses
import functools
import logging
import uuid
from collections.abc import Callable, Sequence
from datetime import timedelta

from nano_banana.domain import (
    ErrorCode,
    Job,
    NewJob,
    month_of,
)
from nano_banana.errors import (
    IdempotencyKeyInUse,
    InvalidRequest,
    NanoBananaError,
    Unavailable,
)
from nano_banana.images import ImageInfo
from nano_banana.ports import (
    BudgetUse,
    KeyClaimed,
    LimitsReading,
    Reservation,
    TaskKind,
)
from nano_banana.together import Outcome, attempt, settle, settle_each
from nano_banana.usecases.commands import Created, Inspected
from nano_banana.usecases.idempotency import earlier_job, replay_or_wait, wait_for_key
from nano_banana.usecases.services import (
    LEASE_GRACE,
    Services,
    delete_quietly,
    delete_unreferenced,
    expire_task,
    generate_task,
)
from nano_banana.usecases.usage import note_budget

log = logging.getLogger("nano_banana")


def admit(
    svc: Services,
    new: NewJob,
    *,
    beside: Callable[[], ImageInfo | Inspected | None] | None = None,
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
    the reservation, the claim and the images are given back (a reservation whose outcome is unknown, by
    job id). Not when the row is no longer the creation's to discard: a task claimed it or a same-key retry
    was answered with it (`idempotency`: the job lives, answered 202), or the database cannot say whether it
    exists (nothing more is undone: 503 outcome_unknown naming the job). A definite refusal of the insert
    (the job or variant it is made from was deleted: NotFound) undoes everything, like any failure. The
    reservation takes `variant_count` images from the project's month in the same commit (`monthly_images`:
    its budget, None for none)."""

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

    side: Outcome[ImageInfo | Inspected | None] = Outcome(None, None)
    if beside is None:
        reserved = attempt(lambda: reserve(reading))
    else:  # on what round trip 1 read, only the commit is left
        reserved, side = settle(svc.fanout, lambda: reserve(reading), beside)
    stored = [new.input_path, *(r.path for r in new.references)] if stores and side.ok else []
    try:
        reservation = _reservation(svc, new, reserve, reserved)
    except BaseException as exc:
        if _reserve_outcome_unknown(exc):  # its commit may have applied: give back what it may have taken
            _give_back_by_job(svc, new)
        delete_quietly(svc, stored, new.id)
        raise
    if not isinstance(reservation, Reservation):  # the key's holder created the job meanwhile
        delete_quietly(svc, stored, new.id)
        return Created(job=reservation, message_id=None, replayed=True)
    if not side.ok:
        _undo(svc, reservation, stored)
        _raise_failure(side.error)
    if isinstance(read := side.value, Inspected):
        new = dataclasses.replace(new, references=read.references)
    if isinstance(info := read.input if isinstance(read, Inspected) else read, ImageInfo):
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
        job = _committed_anyway(svc, new)
    if job is None:
        _drop_tasks(svc, new.id, enqueued)
        _undo(svc, reservation, stored)
        _raise_failure(inserted.error)
        if isinstance(result, int):
            raise InvalidRequest(
                f"this thread already has {result} turns; the limit is {max_turns}", details={"maxTurns": max_turns}
            )
        # None: a concurrent identical request inserted first (its claim had expired): answer with its job,
        # handed out like any replay (it may still be rolled back by its own creation).
        key = new.idempotency_key
        found = earlier_job(svc, new.user_id, key)
        replay = (
            None
            if found is None or key is None
            else replay_or_wait(svc, new.user_id, key, new.request_hash or "", found)
        )
        if replay is None:
            raise Unavailable("could not create the job; retry")
        return Created(job=replay, message_id=None, replayed=True)
    if not (generate.ok and expire.ok) and _roll_back(svc, reservation, stored, job):
        _drop_tasks(svc, new.id, enqueued)
        _raise_failure(generate.error, expire.error, reason=ErrorCode.enqueue_failed.value)
    note_budget(reservation)
    return Created(job=job, message_id=new.message_id, replayed=False)


def _outcome_unknown(error: BaseException) -> bool:
    """A write that failed this way may still have applied (the connection broke around COMMIT, the
    answer was lost past its timeout). A definite refusal (ours: NotFound, InvalidRequest...) did not."""
    return isinstance(error, Unavailable) or (isinstance(error, Exception) and not isinstance(error, NanoBananaError))


def _reserve_outcome_unknown(error: BaseException) -> bool:
    """Whether a reservation that raised this may have committed (IdempotencyKeyInUse: it never did)."""
    return _outcome_unknown(error) and not isinstance(error, IdempotencyKeyInUse)


def _give_back_by_job(svc: Services, new: NewJob) -> None:
    """After a reservation whose outcome is unknown (the commit may have applied and its answer been lost):
    give back what it may have taken, by this job's id: the key's claim only if this job holds it, then
    its rate entry, lease and images. Each is idempotent, so giving back what was never taken is harmless. What
    this misses (the limits store still down, or a commit applied after this ran) is the sweep's: a lease
    or claim whose job row is missing past a grace is given back there."""
    try:
        if new.idempotency_key is not None:
            svc.limits.release_claim(
                user_id=new.user_id, project_id=new.project_id, job_id=new.id, idempotency_key=new.idempotency_key
            )
        reserved_at = new.deadline_at - timedelta(seconds=svc.settings.timeout_s)  # the month it reserved in
        month = BudgetUse(month_of(reserved_at), 0, 0)
        svc.limits.give_back(
            Reservation(
                new.user_id,
                new.project_id,
                new.id,
                svc.clock(),
                new.deadline_at + LEASE_GRACE,
                images=new.variant_count,
                budget=month,
            )
        )
    except Exception:
        log.exception(
            "could not give back a reservation whose outcome is unknown",
            extra={"event": "give_back_failed", "jobId": str(new.id)},
        )


def _cannot_tell(job_id: uuid.UUID, project_id: uuid.UUID) -> Unavailable:
    """A creation that cannot tell whether its job exists (the database failed while it undid it): nothing
    more is undone (the job may exist, and then it runs), and the answer says so and names the job."""
    log.exception(
        "could not tell whether a failed creation's job exists; nothing undone",
        extra={"event": "job_discard_failed", "jobId": str(job_id), "projectId": str(project_id)},
    )
    return Unavailable(
        f"could not tell whether job {job_id} was created: GET /jobs/{job_id} says, and a retry with the "
        "same Idempotency-Key answers with it",
        details={"reason": "outcome_unknown", "jobId": str(job_id)},
    )


def _committed_anyway(svc: Services, new: NewJob) -> Job | None:
    """After an insert whose outcome is unknown: delete its row if it did commit and is still queued
    (compare-and-set), so no row outlives the failed answer; a row that a task already claimed or a
    same-key retry was answered with (`idempotency`) is a live job, returned to be answered 202. None:
    there is no row. If the database cannot say, nothing is undone and the answer is 503 outcome_unknown."""
    try:
        if svc.store.discard_queued(new.id):
            return None
        return svc.store.get_job(new.id)
    except Exception as exc:
        raise _cannot_tell(new.id, new.project_id) from exc


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
    the row cannot go: a task claimed it, it was canceled, or a same-key retry was answered with it (the
    job lives; the sweep schedules a missing task; its own transitions free its slot). When the database
    fails, nothing is undone and the answer is 503 outcome_unknown naming the job (it may exist and run)."""
    if job is not None:
        try:
            discarded = svc.store.discard_queued(job.id)
        except Exception as exc:
            raise _cannot_tell(job.id, job.project_id) from exc
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
            delete_unreferenced(svc, stored)
        except Exception:
            log.exception(
                "could not delete an input", extra={"event": "input_cleanup_failed", "jobId": str(reservation.job_id)}
            )
