"""POST /jobs and POST /messages: validate, read the limits and the key, and hand the new job to `admitting`."""

from __future__ import annotations

import functools
import hashlib
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import timedelta

from nano_banana.domain import (
    JobStatus,
    NewJob,
    Reference,
    input_path,
    new_id,
    reference_path,
    storable_text,
)
from nano_banana.errors import (
    Forbidden,
    InvalidRequest,
    InvalidTransition,
    NanoBananaError,
    NotFound,
)
from nano_banana.images import ImageInfo, inspect_image, upload_budget
from nano_banana.models import choose
from nano_banana.ports import (
    LimitsReading,
)
from nano_banana.together import settle, settle_each
from nano_banana.usecases.admitting import admit
from nano_banana.usecases.commands import Created, CreateJob, Inspected, Refine, request_hash
from nano_banana.usecases.idempotency import earlier_job, replay_or_wait
from nano_banana.usecases.notifying import webhook_fingerprint, webhook_request
from nano_banana.usecases.services import Services, delete_quietly, require_access
from nano_banana.usecases.usage import monthly_limit

log = logging.getLogger("nano_banana")


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


def _may_use(svc: Services, user_id: uuid.UUID, cmd: CreateJob) -> None:
    """The user is a member of the project, and an `inputPath` (and each of `referencePaths`) is their own
    upload or a project variant."""
    require_access(svc, cmd.project_id, user_id)
    named: list[tuple[str, str, int | None]] = [("inputPath", cmd.input_path, None)] if cmd.input_path else []
    named += [("referencePaths", path, i) for i, path in enumerate(cmd.reference_paths)]
    for field, path, index in named:
        if path.startswith(f"inputs/{user_id}/") and path.count("/") == 2:
            continue
        if svc.store.variant_in_project(path, cmd.project_id) is None:
            details: dict[str, object] = {"field": field} if index is None else {"field": field, "index": index}
            raise Forbidden(f"{field} must name one of your uploads or a variant of this project", details=details)


def _download_input(svc: Services, path: str) -> ImageInfo:
    """Read an `inputPath` input (or a reference path) to learn its type and size; its bytes count
    against the upload memory budget while they are held (like a multipart body), and are dropped
    before the job is admitted."""
    cap = svc.settings.max_file_bytes
    with upload_budget().hold(cap):
        data = svc.blobs.get(path, max_bytes=cap)
        return inspect_image(data, max_bytes=cap, max_pixels=svc.settings.max_pixels)


def _download_all(svc: Services, input_path: str, reference_paths: Sequence[str]) -> Inspected:
    """The input and every reference path read at once (each within the upload memory budget); a
    reference that is not an image is refused naming it."""
    outcomes = settle_each(
        svc.fanout, [functools.partial(_download_input, svc, path) for path in (input_path, *reference_paths)]
    )
    for index, outcome in enumerate(outcomes[1:]):
        if isinstance(outcome.error, NanoBananaError):
            outcome.error.details.update({"field": "referencePaths", "index": index})
    infos = [outcome.get() for outcome in outcomes]
    return Inspected(
        infos[0],
        tuple(
            Reference(p, i.mime_type, i.width, i.height, i.bytes)
            for p, i in zip(reference_paths, infos[1:], strict=True)
        ),
    )


def _store_all(svc: Services, job_id: uuid.UUID, uploads: Sequence[tuple[str, bytes, str]]) -> None:
    """The input and every reference file stored at once; if any put fails, the ones that succeeded are
    deleted and the first error raised (so admit has nothing of this creation to delete)."""
    outcomes = settle_each(svc.fanout, [functools.partial(svc.blobs.put, *upload) for upload in uploads])
    if errors := [o.error for o in outcomes if o.error is not None]:
        delete_quietly(svc, [path for (path, _, _), o in zip(uploads, outcomes, strict=True) if o.ok], job_id)
        raise errors[0]


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
    model = choose(svc.settings.models, cmd.model, cmd.resolution, len(cmd.references) + len(cmd.reference_paths))
    key = cmd.idempotency_key
    webhook_url, webhook_events = webhook_request(svc.settings, cmd.webhook_url, cmd.webhook_events)
    fingerprint = request_hash(
        "job",
        cmd.project_id,
        prompt,
        cmd.variant_count,
        cmd.aspect_ratio,
        hashlib.sha256(cmd.upload.data).hexdigest() if cmd.upload else cmd.input_path,
        *webhook_fingerprint(webhook_url, webhook_events),
        model,
        cmd.resolution,
        *(hashlib.sha256(ref.data).hexdigest() for ref in cmd.references),
        *cmd.reference_paths,
    )
    # Round trip 1: membership ‖ the limits, read only (before any download) ‖ an earlier job with this key
    # ‖ the project's monthly budget (cached: usually no query).
    images = cmd.variant_count
    access, earlier, admissible, budget = settle(
        svc.fanout,
        lambda: _may_use(svc, user_id, cmd),
        lambda: earlier_job(svc, user_id, key),
        lambda: svc.limits.check(user_id=user_id, project_id=cmd.project_id, idempotency_key=key, images=images),
        lambda: monthly_limit(svc, cmd.project_id),
    )
    access.get()
    reading: LimitsReading | None = None
    if (found := earlier.get()) is not None:
        assert key is not None
        if (replay := replay_or_wait(svc, user_id, key, fingerprint, found)) is not None:
            return Created(job=replay, message_id=None, replayed=True)
        # That job's creation rolled back while we waited: the limits are read again before any download.
        reading = svc.limits.check(user_id=user_id, project_id=cmd.project_id, idempotency_key=key, images=images)
    else:
        reading = admissible.get()
    job_id = new_id()
    references: tuple[Reference, ...]
    if cmd.upload is not None:
        info: ImageInfo | None = cmd.upload.info
        assert info is not None
        path = input_path(user_id, new_id(), info.mime_type)
        references = tuple(
            Reference(
                reference_path(job_id, i, r.info.mime_type), r.info.mime_type, r.info.width, r.info.height, r.info.bytes
            )
            for i, r in enumerate(cmd.references)
        )
        puts = [(path, cmd.upload.data, info.mime_type)]
        puts += [(ref.path, upload.data, ref.mime_type) for ref, upload in zip(references, cmd.references, strict=True)]
        beside: Callable[[], ImageInfo | Inspected | None] = functools.partial(_store_all, svc, job_id, puts)
    else:
        path, info = str(cmd.input_path), None
        # Known once read, beside the reservation (like an inputPath's type and size).
        references = tuple(Reference(p, "", 0, 0, 0) for p in cmd.reference_paths)
        beside = functools.partial(_download_all, svc, path, cmd.reference_paths)
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
        model=model,
        idempotency_key=key,
        request_hash=fingerprint,
        deadline_at=svc.clock() + timedelta(seconds=svc.settings.timeout_s),
        webhook_url=webhook_url,
        webhook_events=webhook_events,
        resolution=cmd.resolution,
        references=references,
        input_borrowed=cmd.upload is None,
    )
    return admit(svc, new, beside=beside, stores=cmd.upload is not None, reading=reading, monthly_images=budget.get())


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
    webhook_url, webhook_events = webhook_request(svc.settings, cmd.webhook_url, cmd.webhook_events)
    fingerprint = request_hash(
        "refine", cmd.job_id, cmd.variant_id, prompt, *webhook_fingerprint(webhook_url, webhook_events)
    )
    # Round trip 1: the parent (and the caller's access to it) ‖ an earlier job with this key.
    got, earlier = settle(
        svc.fanout, lambda: svc.store.get_job(cmd.job_id, user_id=user_id), lambda: earlier_job(svc, user_id, key)
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
        if (replay := replay_or_wait(svc, user_id, key, fingerprint, found)) is not None:
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
        webhook_url=webhook_url,
        webhook_events=webhook_events,
        resolution=parent.resolution,
    )
    return admit(
        svc, new, max_turns=svc.settings.max_thread_turns, monthly_images=monthly_limit(svc, parent.project_id)
    )
