"""One function per thing a user (or the platform) can do. Ports in, domain objects out."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import re
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from nano_banana.domain import (
    ACTIVE,
    MIME_EXT,
    ErrorCode,
    GeneratedImage,
    GenerationRequest,
    Job,
    JobStatus,
    Message,
    NewJob,
    Turn,
    VariantUpload,
    input_path,
    job_prefix,
    new_id,
    output_path,
    storable_text,
)
from nano_banana.errors import (
    ContentBlocked,
    Forbidden,
    GenerationFailed,
    IdempotencyConflict,
    IdempotencyKeyInUse,
    InvalidRequest,
    InvalidTransition,
    NanoBananaError,
    NotFound,
    ProcessorUnavailable,
    TransientError,
    Unavailable,
)
from nano_banana.images import ImageInfo, for_model, inspect_image, upload_budget
from nano_banana.log import redact, timed
from nano_banana.ports import (
    BlobStore,
    Clock,
    DeletedJob,
    ImageGenerator,
    JobPage,
    JobStore,
    KeyClaimed,
    Limits,
    LimitsReading,
    Processor,
    ProcessorJob,
    Reservation,
    Task,
    TaskKind,
    TaskQueue,
)
from nano_banana.settings import Settings
from nano_banana.together import Outcome, attempt, pool, settle, settle_each, together

log = logging.getLogger("nano_banana")

LEASE_GRACE = timedelta(seconds=60)


@dataclass
class Services:
    """The ports a use case may touch, wired once by bootstrap.py."""

    settings: Settings
    store: JobStore
    limits: Limits
    queue: TaskQueue
    blobs: BlobStore
    # Built on first use (the Vertex client is heavy; the `api` function never needs it).
    generator_factory: Callable[[], ImageGenerator] | None
    processor_factory: Callable[[], Processor] | None
    clock: Clock
    extras: dict[str, object] = field(default_factory=dict)
    closers: list[Callable[[], None]] = field(default_factory=list)
    # Threads for round trips that do not depend on each other (nano_banana.together).
    fanout: Executor = field(default_factory=pool)
    # The waits of polling loops (KEY_WAIT_S, ROW_WAIT_S): injectable, so a simulation runs them in virtual time.
    sleep: Callable[[float], None] = time.sleep
    monotonic: Callable[[], float] = time.monotonic

    @property
    def generator(self) -> ImageGenerator | None:
        return self.generator_factory() if self.generator_factory else None

    @property
    def processor(self) -> Processor | None:
        return self.processor_factory() if self.processor_factory else None

    def close(self) -> None:
        for close in self.closers:
            close()
        self.fanout.shutdown(wait=False, cancel_futures=True)


# ---------------------------------------------------------------- commands


@dataclass(frozen=True, slots=True)
class ImageUpload:
    data: bytes
    info: ImageInfo


@dataclass(frozen=True, slots=True)
class CreateJob:
    project_id: uuid.UUID
    prompt: str
    variant_count: int
    aspect_ratio: str | None
    upload: ImageUpload | None = None
    input_path: str | None = None
    idempotency_key: str | None = None


@dataclass(frozen=True, slots=True)
class Refine:
    job_id: uuid.UUID
    variant_id: uuid.UUID
    prompt: str
    idempotency_key: str | None = None


@dataclass(frozen=True, slots=True)
class Created:
    job: Job
    message_id: uuid.UUID | None
    replayed: bool


def request_hash(*parts: object) -> str:
    """Fingerprint of a creation request, to tell an idempotent retry from a key reused for another body."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part if isinstance(part, bytes) else str(part).encode())
        digest.update(b"\x1f")
    return digest.hexdigest()


# ---------------------------------------------------------------- creation


def _check_prompt(svc: Services, prompt: str) -> str:
    if not storable_text(prompt):
        raise InvalidRequest(
            "prompt may not contain NUL characters or unpaired surrogates", details={"field": "prompt"}
        )
    prompt = prompt.strip()
    if not prompt:
        raise InvalidRequest("prompt is required", details={"field": "prompt"})
    if len(prompt) > svc.settings.max_prompt_chars:
        raise InvalidRequest(
            f"prompt is longer than {svc.settings.max_prompt_chars} characters",
            details={"field": "prompt", "maxChars": svc.settings.max_prompt_chars},
        )
    return prompt


def _require_access(svc: Services, project_id: uuid.UUID, user_id: uuid.UUID) -> None:
    if not svc.store.can_access(project_id, user_id):
        raise Forbidden("you are not a member of this project", details={"projectId": str(project_id)})


# A request whose Idempotency-Key another request is still using waits this long for that job's row.
KEY_WAIT_S = 15.0
_KEY_POLL_FIRST_S = 0.05
_KEY_POLL_MAX_S = 0.5


def _earlier(svc: Services, user_id: uuid.UUID, key: str | None) -> tuple[Job, str | None] | None:
    """The job an earlier request with this Idempotency-Key created, and its request's fingerprint."""
    return None if key is None else svc.store.find_by_idempotency_key(user_id, key)


def _matching(found: tuple[Job, str | None], fingerprint: str) -> Job:
    job, stored_hash = found
    if stored_hash != fingerprint:
        raise IdempotencyConflict(
            "this Idempotency-Key was used with a different request", details={"jobId": str(job.id)}
        )
    return job


def _settled(svc: Services, job: Job) -> bool:
    """Whether a job found by its key can be handed out: its creation can no longer roll back (which
    deletes the row). True once a task moved it, or once it is older than any creation request; a
    young queued job only when both its tasks are scheduled (its creation's last step)."""
    if job.status is not JobStatus.queued or svc.clock() - job.created_at >= timedelta(
        seconds=svc.settings.requeue_grace_s
    ):
        return True
    generate, expire = together(
        svc.fanout,
        lambda: svc.queue.is_pending(_generate_task(svc, job.id, job.deadline_at)),
        lambda: svc.queue.is_pending(_expire_task(job.id, job.deadline_at)),
    )
    return generate and expire


def _wait_for_key(
    svc: Services,
    user_id: uuid.UUID,
    key: str,
    fingerprint: str,
    reserve: Callable[[], Reservation] | None,
) -> Job | Reservation | None:
    """Another request holds this Idempotency-Key (its claim, or its row before it was scheduled).
    Look for its job with a short backoff, up to KEY_WAIT_S: its job once settled (a different body:
    IdempotencyConflict). If the row is not there, `reserve` tries to claim the key again (the holder
    may have rolled back); without `reserve` (the row was seen, so it has been rolled back) None: create
    it. Past the wait: IdempotencyKeyInUse (503, retry)."""
    deadline = svc.monotonic() + KEY_WAIT_S
    pause = _KEY_POLL_FIRST_S
    while svc.monotonic() + pause < deadline:
        svc.sleep(pause)
        pause = min(2 * pause, _KEY_POLL_MAX_S)
        found = svc.store.find_by_idempotency_key(user_id, key)
        if found is not None:
            job = _matching(found, fingerprint)
            if _settled(svc, job):
                return job
        elif reserve is None:
            return None
        else:
            try:
                return reserve()
            except KeyClaimed:
                pass
    raise IdempotencyKeyInUse("a request with this Idempotency-Key is still creating its job; retry shortly")


def _replay_or_wait(
    svc: Services, user_id: uuid.UUID, key: str, fingerprint: str, found: tuple[Job, str | None]
) -> Job | None:
    """The job an earlier request with this key created (None: its creation rolled back meanwhile)."""
    job = _matching(found, fingerprint)
    if _settled(svc, job):
        return job
    waited = _wait_for_key(svc, user_id, key, fingerprint, None)
    assert not isinstance(waited, Reservation)
    return waited


def _may_use(svc: Services, user_id: uuid.UUID, cmd: CreateJob) -> None:
    """The user is a member of the project, and an `inputPath` is their own upload or a project variant."""
    _require_access(svc, cmd.project_id, user_id)
    path = cmd.input_path
    if path is None or (path.startswith(f"inputs/{user_id}/") and path.count("/") == 2):
        return
    if svc.store.variant_in_project(path, cmd.project_id) is None:
        raise Forbidden(
            "inputPath must be one of your uploads or a variant of this project", details={"field": "inputPath"}
        )


def _download_input(svc: Services, path: str) -> ImageInfo:
    """Read an `inputPath` input to learn its type and size; its bytes count against the upload memory
    budget while they are held (like a multipart body), and are dropped before the job is admitted."""
    cap = svc.settings.max_file_bytes
    with upload_budget().hold(cap):
        data = svc.blobs.get(path, max_bytes=cap)
        return inspect_image(data, max_bytes=cap, max_pixels=svc.settings.max_pixels)


def create_job(svc: Services, user_id: uuid.UUID, cmd: CreateJob) -> Created:
    """Validate, check the limits, store the input, insert the job and enqueue its tasks — or undo all of
    it. Logs `job_created`, `job_replayed` or `job_rejected`."""
    started = time.perf_counter()
    try:
        created = _create_job(svc, user_id, cmd)
    except Exception as exc:
        _log_rejected(exc, started, projectId=str(cmd.project_id))
        raise
    return _log_created(created, started)


def _create_job(svc: Services, user_id: uuid.UUID, cmd: CreateJob) -> Created:
    prompt = _check_prompt(svc, cmd.prompt)
    if cmd.upload is None and not cmd.input_path:
        raise InvalidRequest("send an image file or an inputPath", details={"field": "image"})
    key = cmd.idempotency_key
    fingerprint = request_hash(
        "job",
        cmd.project_id,
        prompt,
        cmd.variant_count,
        cmd.aspect_ratio,
        hashlib.sha256(cmd.upload.data).hexdigest() if cmd.upload else cmd.input_path,
    )
    # Round trip 1: membership ‖ the limits, read only (before any download) ‖ an earlier job with this key.
    access, earlier, admissible = settle(
        svc.fanout,
        lambda: _may_use(svc, user_id, cmd),
        lambda: _earlier(svc, user_id, key),
        lambda: svc.limits.check(user_id=user_id, project_id=cmd.project_id, idempotency_key=key),
    )
    access.get()
    reading: LimitsReading | None = None
    if (found := earlier.get()) is not None:
        assert key is not None
        if (replay := _replay_or_wait(svc, user_id, key, fingerprint, found)) is not None:
            return Created(job=replay, message_id=None, replayed=True)
        # That job's creation rolled back while we waited: the limits are read again before any download.
        reading = svc.limits.check(user_id=user_id, project_id=cmd.project_id, idempotency_key=key)
    else:
        reading = admissible.get()
    job_id = new_id()
    if cmd.upload is not None:
        info: ImageInfo | None = cmd.upload.info
        assert info is not None
        path = input_path(user_id, new_id(), info.mime_type)
        beside: Callable[[], ImageInfo | None] = functools.partial(svc.blobs.put, path, cmd.upload.data, info.mime_type)
    else:
        path, info = str(cmd.input_path), None
        beside = functools.partial(_download_input, svc, path)
    new = NewJob(
        id=job_id,
        project_id=cmd.project_id,
        user_id=user_id,
        thread_id=job_id,
        parent_job_id=None,
        source_variant_id=None,
        prompt=prompt,
        input_path=path,
        input_mime_type=info.mime_type if info else "",  # an inputPath's: once read, beside the reservation
        input_width=info.width if info else 0,
        input_height=info.height if info else 0,
        variant_count=cmd.variant_count,
        aspect_ratio=cmd.aspect_ratio,
        model=svc.settings.model if svc.settings.generator != "preview" else "preview",
        idempotency_key=key,
        request_hash=fingerprint,
        deadline_at=svc.clock() + timedelta(seconds=svc.settings.timeout_s),
    )
    return _admit(svc, new, beside=beside, stores=cmd.upload is not None, reading=reading)


def _admit(
    svc: Services,
    new: NewJob,
    *,
    beside: Callable[[], ImageInfo | None] | None = None,
    stores: bool = False,
    max_turns: int | None = None,
    reading: LimitsReading | None = None,
) -> Created:
    """Round trips 2-3: reserve the limits and claim the key (one commit) ‖ `beside` (store the uploaded
    input, `stores`, or read an `inputPath` for its type and size: the limits were checked in round trip
    1, so nothing expensive ran for a request they refuse); then insert the job ‖ enqueue generate ‖
    enqueue expire. A generate task that arrives before its row commits waits for it (run_generation).
    Any failure undoes what succeeded: the row goes (it was never scheduled), the tasks and the input go,
    the reservation and the claim are given back."""

    def reserve(on: LimitsReading | None = None) -> Reservation:
        return svc.limits.reserve(
            user_id=new.user_id,
            project_id=new.project_id,
            job_id=new.id,
            lease_expires_at=new.deadline_at + LEASE_GRACE,
            idempotency_key=new.idempotency_key,
            reading=on,
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
        _delete_quietly(svc, stored, new.id)
        raise
    if not isinstance(reservation, Reservation):  # the key's holder created the job meanwhile
        _delete_quietly(svc, stored, new.id)
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
        lambda: svc.queue.enqueue(_generate_task(svc, new.id, new.deadline_at)),
        lambda: svc.queue.enqueue(_expire_task(new.id, new.deadline_at)),
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
        replay = _earlier(svc, new.user_id, new.idempotency_key)
        if replay is None:
            raise Unavailable("could not create the job; retry")
        return Created(job=_matching(replay, new.request_hash or ""), message_id=None, replayed=True)
    if not (generate.ok and expire.ok) and _roll_back(svc, reservation, stored, job):
        _drop_tasks(svc, new.id, enqueued)
        _raise_failure(generate.error, expire.error, reason=ErrorCode.enqueue_failed.value)
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
        waited = _wait_for_key(svc, new.user_id, new.idempotency_key, new.request_hash or "", reserve)
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


def _log_created(created: Created, started: float, **fields: object) -> Created:
    event = "job_replayed" if created.replayed else "job_created"
    log.info(
        event,
        extra={
            "event": "job_replayed" if created.replayed else "job_created",
            "jobId": str(created.job.id),
            "projectId": str(created.job.project_id),
            "status": created.job.status.value,
            "durationMs": round((time.perf_counter() - started) * 1000, 1),
            **fields,
        },
    )
    return created


def _log_rejected(exc: Exception, started: float, **fields: object) -> None:
    """A creation that made no job: its error code and HTTP status (no job id: there is no job)."""
    error = exc if isinstance(exc, NanoBananaError) else NanoBananaError("internal error")
    extra: dict[str, object] = {
        "event": "job_rejected",
        "code": error.code,
        "status": error.status,
        "durationMs": round((time.perf_counter() - started) * 1000, 1),
        **fields,
    }
    if isinstance(reason := error.details.get("reason"), str):
        extra["reason"] = reason
    log.info("job_rejected", extra=extra)


def _expire_task(job_id: uuid.UUID, deadline_at: datetime) -> Task:
    return Task(kind="expire", job_id=job_id, schedule_at=deadline_at, dispatch_deadline_s=60)


def _generate_task(svc: Services, job_id: uuid.UUID, deadline_at: datetime, replacement: int | None = None) -> Task:
    remaining = (deadline_at - svc.clock()).total_seconds()
    return Task(kind="generate", job_id=job_id, dispatch_deadline_s=max(15.0, remaining + 30), replacement=replacement)


# ---------------------------------------------------------------- refinement


def refine(svc: Services, user_id: uuid.UUID, cmd: Refine) -> Created:
    """A new job in the same thread, made from a variant of a succeeded job, with the thread as context.
    Logs `job_created`, `job_replayed` or `job_rejected` like create_job."""
    started = time.perf_counter()
    try:
        created = _refine(svc, user_id, cmd)
    except Exception as exc:
        _log_rejected(exc, started, parentJobId=str(cmd.job_id))
        raise
    return _log_created(created, started, parentJobId=str(cmd.job_id))


def _refine(svc: Services, user_id: uuid.UUID, cmd: Refine) -> Created:
    prompt = _check_prompt(svc, cmd.prompt)
    key = cmd.idempotency_key
    fingerprint = request_hash("refine", cmd.job_id, cmd.variant_id, prompt)
    # Round trip 1: the parent (and the caller's access to it) ‖ an earlier job with this key.
    got, earlier = settle(
        svc.fanout, lambda: svc.store.get_job(cmd.job_id, user_id=user_id), lambda: _earlier(svc, user_id, key)
    )
    parent = got.get()
    if parent is None:
        raise NotFound("job not found", details={"jobId": str(cmd.job_id)})
    variant = next((v for v in parent.variants if v.id == cmd.variant_id), None)
    if variant is None:
        if parent.status is not JobStatus.succeeded:
            raise InvalidTransition(
                f"job is {parent.status.value}; only a succeeded job's variants can be refined",
                details={"status": parent.status.value},
            )
        raise NotFound("variant not found in this job", details={"variantId": str(cmd.variant_id)})
    if (found := earlier.get()) is not None:
        assert key is not None
        if (replay := _replay_or_wait(svc, user_id, key, fingerprint, found)) is not None:
            return Created(job=replay, message_id=None, replayed=True)
    job_id = new_id()
    new = NewJob(
        id=job_id,
        project_id=parent.project_id,
        user_id=user_id,
        thread_id=parent.thread_id,
        parent_job_id=parent.id,
        source_variant_id=variant.id,
        prompt=prompt,
        input_path=variant.storage_path,
        input_mime_type=variant.mime_type,
        input_width=variant.width,
        input_height=variant.height,
        variant_count=parent.variant_count,
        aspect_ratio=parent.aspect_ratio,
        model=parent.model,
        idempotency_key=key,
        request_hash=fingerprint,
        deadline_at=svc.clock() + timedelta(seconds=svc.settings.timeout_s),
    )
    return _admit(svc, new, max_turns=svc.settings.max_thread_turns)


# ---------------------------------------------------------------- reads


def get_job(svc: Services, user_id: uuid.UUID, job_id: uuid.UUID) -> Job:
    job = svc.store.get_job(job_id, user_id=user_id)
    if job is None:
        raise NotFound("job not found", details={"jobId": str(job_id)})
    return job


_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_OUTPUT_PATH = re.compile(rf"^jobs/({_UUID})/[A-Za-z0-9._/-]+$")  # the shape pip_ai_image_variants allows
_INPUT_PATH = re.compile(rf"^inputs/{_UUID}/[A-Za-z0-9._-]+$")


def visible_paths(svc: Services, user_id: uuid.UUID, paths: Sequence[str]) -> set[str]:
    """The stored images among `paths` the user may see: variants and inputs of their projects' jobs.
    Anything else (malformed, another project's, deleted) is simply not among them."""
    candidates: list[tuple[str, uuid.UUID | None]] = []
    for path in paths:
        if ".." in path:
            continue
        if match := _OUTPUT_PATH.match(path):
            candidates.append((path, uuid.UUID(match.group(1))))
        elif _INPUT_PATH.match(path):
            candidates.append((path, None))
    return svc.store.visible_paths(user_id, candidates)


def list_jobs(
    svc: Services,
    user_id: uuid.UUID,
    project_id: uuid.UUID,
    *,
    status: JobStatus | None,
    limit: int,
    cursor: str | None,
) -> JobPage:
    _require_access(svc, project_id, user_id)
    return svc.store.list_jobs(project_id, status=status, limit=limit, cursor=cursor)


def thread(svc: Services, user_id: uuid.UUID, job_id: uuid.UUID) -> tuple[uuid.UUID, list[tuple[Message, Job]]]:
    job = get_job(svc, user_id, job_id)
    return job.thread_id, svc.store.messages(job.thread_id)


# ---------------------------------------------------------------- transitions into terminal states


def _ended(svc: Services, job: Job, event: str, **fields: object) -> None:
    """After a won transition into a terminal state, side by side (each idempotent, each failure logged,
    none raised): free the slot (once), drop the expire task, delete the outputs no variant records."""
    cleanups: list[Callable[[], object]] = [
        lambda: _release_slot(svc, job.project_id, job.id),
        lambda: _delete_unrecorded_outputs(svc, job),
    ]
    if event != "job_expired":
        cleanups.append(lambda: _drop_expire_task(svc, job.id))
    for outcome in settle_each(svc.fanout, cleanups):
        outcome.get()  # each logs its own failures: only what is no Exception (an interrupt) gets here
    _log_end(job, event, **fields)


def _log_end(job: Job, event: str, **fields: object) -> None:
    """The one line of a job's terminal transition: what the jobs-finished metrics count (monitoring.tf)."""
    log.info(
        event,
        extra={
            "event": event,
            "jobId": str(job.id),
            "projectId": str(job.project_id),
            "status": job.status.value,
            "errorCode": job.error_code,
            "durationMs": round((job.updated_at - job.created_at).total_seconds() * 1000, 1),
            **fields,
        },
    )


def cancel_job(svc: Services, user_id: uuid.UUID, job_id: uuid.UUID) -> Job:
    current = get_job(svc, user_id, job_id)
    job = svc.store.cancel(job_id)
    if job is None:
        latest = svc.store.get_job(job_id) or current
        raise InvalidTransition(
            f"job is {latest.status.value}; it can no longer be canceled", details={"status": latest.status.value}
        )
    _ended(svc, job, "job_canceled")
    return job


def fail_job(
    svc: Services, job: Job, code: str, message: str, *, attempt: int | None = None, receipt: str | None = None
) -> Job | None:
    failed = svc.store.fail(
        job.id, code=code, message=redact(message), from_statuses=list(ACTIVE), attempt=attempt, receipt=receipt
    )
    if failed is not None:
        _ended(svc, failed, "job_failed")
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
        _ended(svc, job, "job_expired", by=by)
        return job
    current = svc.store.get_job(job_id)
    if current is not None and current.terminal:
        # Its transition may have crashed before giving the lease back; releasing again is harmless.
        _release_slot(svc, current.project_id, current.id)
        return None
    if current is not None and current.deadline_at > now:
        raise TransientError("the deadline has not passed yet by this clock")
    return None


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
    if any(svc.queue.is_pending(_generate_task(svc, job.id, job.deadline_at, r)) for r in (None, round_ - 1, round_)):
        return False
    # A task that claimed the job finished after its claim committed: a job still queued now was not claimed.
    current = svc.store.get_job(job.id)
    if current is None or current.status is not JobStatus.queued:
        return False
    for replacement in (None, round_):
        task = _generate_task(svc, job.id, job.deadline_at, replacement)
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
            if _release_slot(svc, project_id, job_id):
                reclaimed += 1
                log.info(
                    "slot_reclaimed",
                    extra={"event": "slot_reclaimed", "jobId": str(job_id), "projectId": str(project_id)},
                )
    return reclaimed


def _drop_expire_task(svc: Services, job_id: uuid.UUID) -> None:
    try:
        svc.queue.delete("expire", job_id)
    except Exception:  # it runs at the deadline, finds the job ended and does nothing
        log.warning("could not delete an expire task", extra={"event": "expire_delete_failed", "jobId": str(job_id)})


def _release_slot(svc: Services, project_id: uuid.UUID, job_id: uuid.UUID) -> bool:
    try:
        svc.limits.release_slot(project_id=project_id, job_id=job_id)
    except Exception:  # the sweep gives it back later; at worst the lease expires at deadline + grace
        log.exception("could not release a slot", extra={"event": "release_failed", "jobId": str(job_id)})
        return False
    return True


def complete_job(
    svc: Services,
    job: Job,
    attempt: int,
    uploads: Sequence[VariantUpload],
    note: str | None,
    *,
    receipt: str | None = None,
) -> Job | None:
    """running(attempt) -> succeeded with its variants (and `receipt` applied, in the same transaction).
    If the CAS loses, the outputs are deleted, except paths the job recorded meanwhile (a concurrent
    report of the same result). Once the CAS won, nothing here raises: cleanup failures are logged."""
    done = svc.store.complete(job.id, attempt, uploads, note, now=svc.clock(), receipt=receipt)
    if done is None:
        discard_outputs(svc, job.id, [u.storage_path for u in uploads])
        log.info("result discarded", extra={"event": "result_discarded", "jobId": str(job.id), "attempt": attempt})
        return None
    _ended(svc, done, "job_succeeded", variants=len(uploads))
    return done


def _delete_unrecorded_outputs(svc: Services, job: Job) -> None:
    """After a job ended: every output of any attempt but its variants (a failed or canceled job has
    none; a crashed worker's outputs included; a live worker deletes its own after losing)."""
    recorded = {v.storage_path for v in job.variants}
    try:
        stale = [p for p in svc.blobs.list(job_prefix(job.id)) if p not in recorded]
    except Exception as exc:  # the transition is committed; orphans are harmless, a failed answer is not
        log.warning(
            "could not list outputs",
            extra={"event": "blob_cleanup_failed", "jobId": str(job.id), "errorType": type(exc).__name__},
        )
        return
    _delete_quietly(svc, stale, job.id)


def discard_outputs(svc: Services, job_id: uuid.UUID, paths: Sequence[str]) -> None:
    """Delete outputs that will never be recorded (a late, rejected or repeated result). A path the job
    has recorded as a variant is never deleted: a repeated success report names the job's own images."""
    if not paths:
        return
    try:
        job = svc.store.get_job(job_id)
    except Exception as exc:  # cannot tell which are variants: keep them all (an orphan beats a lost image)
        log.warning(
            "could not read the job; outputs kept",
            extra={"event": "blob_cleanup_failed", "jobId": str(job_id), "errorType": type(exc).__name__},
        )
        return
    recorded = {v.storage_path for v in job.variants} if job is not None else set()
    _delete_quietly(svc, [p for p in paths if p not in recorded], job_id)


def _delete_quietly(svc: Services, paths: Sequence[str], job_id: uuid.UUID) -> None:
    if not paths:
        return
    try:
        svc.blobs.delete(paths)
    except Exception:
        log.warning("could not delete blobs", extra={"event": "blob_cleanup_failed", "jobId": str(job_id)})


# ---------------------------------------------------------------- generation (the generate task)


def _generation_request(job: Job, image: bytes, mime: str, history: Sequence[Job]) -> GenerationRequest:
    return GenerationRequest(
        job_id=job.id,
        prompt=job.prompt,
        image=image,
        image_mime=mime,
        variant_count=job.variant_count,
        aspect_ratio=job.aspect_ratio,
        history=tuple(Turn(prompt=j.prompt) for j in history),
    )


def _read_input(svc: Services, job: Job) -> bytes:
    """The job's input. A missing one is NotFound only if storage can be read at all: a key that
    row-level security applies to sees every object as missing, and must not fail jobs for good."""
    try:
        return svc.blobs.get(job.input_path, max_bytes=svc.settings.max_file_bytes)
    except NotFound:
        svc.blobs.check_access()
        raise


# The creation enqueues a job's tasks while it inserts the row (usecases._admit), so a generate task can
# arrive first: it waits this long for the row before it concludes there is none (a creation that
# rolled back, or a deleted job) and is acknowledged. The insert is one round trip; this covers a slow one.
ROW_WAIT_S = 2.0
_ROW_POLL_FIRST_S = 0.01
_ROW_POLL_MAX_S = 0.4


def _claim(svc: Services, job_id: uuid.UUID, *, retry_if_missing: bool = False) -> Job | None:
    """Move the job from queued to running (compare-and-set), waiting up to ROW_WAIT_S for a row that
    is not there yet. None when there is nothing to run: the job is past queued (and expired here if its
    deadline passed while nothing ran it), or it does not exist. With `retry_if_missing` (a task's first
    delivery), a row still missing after the wait raises TransientError: the queue delivers it again
    after its backoff, which gives a slow insert longer; a later delivery is acknowledged."""
    deadline, pause = svc.monotonic() + ROW_WAIT_S, _ROW_POLL_FIRST_S
    while (job := svc.store.claim_for_generation(job_id, svc.clock())) is None:
        current = svc.store.get_job(job_id)
        if current is not None:
            if current.status is JobStatus.queued and current.deadline_at > svc.clock():
                if svc.monotonic() < deadline:
                    continue  # its insert committed between the claim and this read: claim it now
            elif not current.terminal and current.deadline_at <= svc.clock():
                expire_job(svc, job_id)
            return None
        if svc.monotonic() + pause > deadline:
            if retry_if_missing:
                raise TransientError(f"job {job_id} does not exist (yet): its creation may still be inserting it")
            log.info(
                "generate task for a job that does not exist", extra={"event": "task_without_job", "jobId": str(job_id)}
            )
            return None
        svc.sleep(pause)
        pause = min(2 * pause, _ROW_POLL_MAX_S)
    return job


def run_generation(svc: Services, job_id: uuid.UUID, *, retry_if_missing: bool = False) -> Job | None:
    """The generate task. Idempotent under redelivery: a job past this step is left alone (2xx);
    raises TransientError only when a retry can help (`retry_if_missing`: see _claim)."""
    started = time.perf_counter()
    job = _claim(svc, job_id, retry_if_missing=retry_if_missing)
    if job is None:
        return None
    attempt = job.attempt
    log.info(
        "job_started",
        extra={"event": "job_started", "jobId": str(job.id), "projectId": str(job.project_id), "attempt": attempt},
    )
    read, history = settle(svc.fanout, lambda: _read_input(svc, job), lambda: svc.store.thread_history(job))
    try:
        image = read.get()
    except NotFound:
        return fail_job(svc, job, ErrorCode.input_unavailable, "the input image is missing", attempt=attempt)
    except Unavailable as exc:  # an outage, a lock, or our own storage configuration: redelivered (503)
        raise TransientError(f"storage unavailable while reading the input: {exc.message}") from exc
    mime = inspect_image(image, max_bytes=svc.settings.max_file_bytes, max_pixels=svc.settings.max_pixels).mime_type
    request = _generation_request(job, image, mime, history.get())
    if svc.processor is not None:
        return _hand_to_processor(svc, job, request)
    assert svc.generator is not None
    try:
        result = svc.generator.generate(request, deadline=job.deadline_at)
    except ContentBlocked as exc:
        return fail_job(svc, job, ErrorCode.content_blocked, exc.message, attempt=attempt)
    except GenerationFailed as exc:
        code = ErrorCode.timeout if svc.clock() >= job.deadline_at else ErrorCode.generation_failed
        return fail_job(svc, job, code, exc.message, attempt=attempt)
    try:
        uploads = _store_outputs(svc, job, attempt, result.images)
    except Unavailable as exc:
        if svc.clock() >= job.deadline_at:
            return fail_job(svc, job, ErrorCode.timeout, "storage unavailable until the deadline", attempt=attempt)
        raise TransientError("storage unavailable while uploading outputs") from exc
    done = complete_job(svc, job, attempt, uploads, result.note)
    log.info(
        "generation_finished",
        extra={
            "event": "generation_finished",
            "jobId": str(job.id),
            "won": done is not None,
            "durationMs": round((time.perf_counter() - started) * 1000, 1),
        },
    )
    return done


def _store_outputs(svc: Services, job: Job, attempt: int, images: Sequence[GeneratedImage]) -> list[VariantUpload]:
    """Upload every output at once. If any upload fails, all of them are deleted once every one has
    ended (one that failed may still have been stored) and the first error is raised."""
    paths = [output_path(job.id, attempt, index, image.mime_type) for index, image in enumerate(images)]

    def upload(index: int) -> VariantUpload:
        image = images[index]
        svc.blobs.put(paths[index], image.data, image.mime_type)
        return VariantUpload(index, paths[index], image.mime_type, image.width, image.height, len(image.data))

    outcomes = settle_each(svc.fanout, [functools.partial(upload, index) for index in range(len(images))])
    errors = [o.error for o in outcomes if o.error is not None]
    if errors:
        _delete_quietly(svc, paths, job.id)
        raise errors[0]
    return [o.get() for o in outcomes]


def _hand_to_processor(svc: Services, job: Job, request: GenerationRequest) -> Job | None:
    assert svc.processor is not None
    ttl = _processor_url_ttl(svc, job)
    prefix = f"{job_prefix(job.id)}{job.attempt}/"
    # The processor sends the input to the model inline, as is: give it the upright, small-enough version
    # the Vertex adapter would send (stored next to this attempt's outputs, deleted with them).
    input_path = job.input_path
    data, mime = for_model(request.image, request.image_mime, max_bytes=svc.settings.vertex_inline_max_bytes)
    if data is not request.image:
        input_path = f"{prefix}model-input.{MIME_EXT[mime]}"
        try:
            svc.blobs.put(input_path, data, mime)
        except Unavailable as exc:
            raise TransientError("storage unavailable while preparing the model input") from exc
        request = dataclasses.replace(request, image=data, image_mime=mime)
    work = ProcessorJob(
        job=job,
        request=request,
        input_url=svc.blobs.signed_url(input_path, ttl_s=ttl),
        output_prefix=prefix,
        upload_urls=tuple(svc.blobs.signed_upload_url(f"{prefix}{i}.png", ttl_s=ttl) for i in range(job.variant_count)),
        callback_url=svc.settings.callback_url or f"{svc.settings.base_url}/api/nano-banana/callback",
    )
    try:
        svc.processor.submit(work, deadline=job.deadline_at)
    except ProcessorUnavailable as exc:
        return fail_job(svc, job, ErrorCode.processor_unavailable, exc.message, attempt=job.attempt)
    return job


def _processor_url_ttl(svc: Services, job: Job) -> int:
    """Signed URLs handed to a processor: valid until a minute past the job's deadline (the store may cap it)."""
    return max(60, int((job.deadline_at - svc.clock()).total_seconds()) + 60)


@dataclass(frozen=True, slots=True)
class UploadGrant:
    """Where a processor puts a running job's outputs, and until when the URLs work."""

    job: Job
    output_prefix: str
    upload_urls: tuple[str, ...]
    expires_at: datetime


def grant_uploads(svc: Services, job_id: uuid.UUID, attempt: int | None) -> UploadGrant:
    """Fresh upload URLs for a running job (attempt: the job's current one if None), asked for by its
    processor once its images exist: Storage lets upload URLs live as little as 60 s, and generation can
    take minutes. Changes no state, so asking twice is harmless."""
    job = svc.store.get_job(job_id)
    if job is None:
        raise NotFound("job not found", details={"jobId": str(job_id)})
    if job.status is not JobStatus.running or attempt not in (None, job.attempt):
        raise InvalidTransition(
            f"job is {job.status.value} in attempt {job.attempt}",
            details={"status": job.status.value, "attempt": job.attempt},
        )
    paths = [output_path(job.id, job.attempt, i, "image/png") for i in range(job.variant_count)]
    urls, expires_at = svc.blobs.signed_upload_urls(paths, ttl_s=_processor_url_ttl(svc, job))
    return UploadGrant(job, f"{job_prefix(job.id)}{job.attempt}/", urls, expires_at)


# ---------------------------------------------------------------- deletion and the data lifecycle

# How long after its deadline a deleted job's output prefix is purged again: a worker or processor that
# was still busy may upload after the deletion and die before deleting what it uploaded.
LATE_UPLOAD_GRACE = timedelta(minutes=2)
# A webhook id must be remembered while a replay could still pass the timestamp check: its timestamp may
# be up to the tolerance ahead of the first delivery and a replay up to the tolerance after it.
RECEIPT_MARGIN = timedelta(minutes=5)
PURGE_BATCH = 200
_LIST_PAGE = 1000


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
    svc: Services, roots: Sequence[uuid.UUID], *, by_input: bool = False, extra_purges: Sequence[str] = ()
) -> Deletion:
    """Cancel what is still active (the normal CAS: slot released, expire task dropped), delete the rows
    in one transaction that records their blobs, then delete the blobs. A crash after the transaction
    leaves the recorded purges for the sweep; a worker finishing later finds no row and deletes its own."""
    for job in svc.store.job_subtree(roots, by_input=by_input):
        if job.status in ACTIVE and (canceled := svc.store.cancel(job.id)) is not None:
            _ended(svc, canceled, "job_canceled", reason="deleted")
    now = svc.clock()
    deleted = svc.store.delete_jobs(
        roots,
        now=now,
        by_input=by_input,
        late_uploads_s=(LEASE_GRACE + LATE_UPLOAD_GRACE).total_seconds(),
        extra_purges=extra_purges,
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


def _purge(svc: Services, entries: Sequence[str], now: datetime) -> list[str]:
    """Delete the blobs behind recorded purge entries, except those a remaining job still uses (a
    refinement's input is its parent's variant), then forget the entries. Returns the paths deleted."""
    paths = _expand(svc, entries)
    keep = svc.store.referenced_paths(paths)
    doomed = [p for p in paths if p not in keep]
    if doomed:
        svc.blobs.delete(doomed)
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
    roots = svc.store.expired_threads(svc.clock() - timedelta(days=days), svc.settings.retention_batch)
    if not roots:
        return 0
    with timed("jobs_deleted", reason="retention", threads=len(roots)) as event:
        deletion = _delete_subtrees(svc, roots)
        event.update(jobs=len(deletion.job_ids), blobs=len(deletion.blobs))
    return len(deletion.job_ids)


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


def _lifecycle_steps(svc: Services, event: dict[str, object]) -> None:
    """The sweep's housekeeping after its own work; one failing step (storage down) skips only itself."""
    steps: list[tuple[str, Callable[[Services], int | None]]] = [
        ("purged", finish_purges),
        ("retained", apply_retention),
        ("orphans", delete_orphan_inputs),
        ("receipts", prune_receipts),
    ]
    for name, step in steps:
        try:
            event[name] = step(svc)
        except Exception as exc:
            event[name] = type(exc).__name__
            log.exception("sweep step failed", extra={"event": "sweep_step_failed", "step": name})


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
