"""The generate task: claim the job, read its input, call the model (or hand it to the processor), store the outputs."""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from nano_banana.domain import (
    MIME_EXT,
    ErrorCode,
    GeneratedImage,
    GenerationRequest,
    InlineImage,
    Job,
    JobStatus,
    ModelUsage,
    Turn,
    VariantUpload,
    job_prefix,
    output_path,
)
from nano_banana.errors import (
    ContentBlocked,
    GenerationFailed,
    InvalidTransition,
    NotFound,
    ProcessorUnavailable,
    TransientError,
    Unavailable,
)
from nano_banana.images import for_model, inspect_image
from nano_banana.ports import (
    ProcessorJob,
)
from nano_banana.together import settle_each
from nano_banana.usecases.finishing import complete_job, expire_job, fail_job
from nano_banana.usecases.notifying import hand_over
from nano_banana.usecases.services import Services, delete_quietly

log = logging.getLogger("nano_banana")


def _generation_request(
    job: Job, image: bytes, mime: str, history: Sequence[Job], references: Sequence[InlineImage] = ()
) -> GenerationRequest:
    return GenerationRequest(
        job_id=job.id,
        prompt=job.prompt,
        image=image,
        image_mime=mime,
        variant_count=job.variant_count,
        aspect_ratio=job.aspect_ratio,
        history=tuple(Turn(prompt=j.prompt) for j in history),
        model=job.model,
        resolution=job.resolution,
        references=tuple(references),
    )


def _read_input(svc: Services, job: Job, path: str | None = None) -> bytes:
    """The job's input (or the reference at `path`). A missing one is NotFound only if storage can be
    read at all: a key that row-level security applies to sees every object as missing, and must not
    fail jobs for good."""
    try:
        return svc.blobs.get(path or job.input_path, max_bytes=svc.settings.max_file_bytes)
    except NotFound:
        svc.blobs.check_access()
        raise


# The creation enqueues a job's tasks while it inserts the row (admitting.admit), so a generate task can
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
    seen_queued = False
    while (job := svc.store.claim_for_generation(job_id, svc.clock())) is None:
        current = svc.store.get_job(job_id)
        if current is not None:
            if current.status is JobStatus.queued and current.deadline_at > svc.clock():
                # Its insert committed between the claim and this read: claim it now, once even past the
                # wait (acknowledging a queued job leaves it to the sweep's requeue, 30 s+ later).
                if svc.monotonic() < deadline or not seen_queued:
                    seen_queued = True
                    continue
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
    if job.webhook is not None and "running" in job.webhook.events:  # beside the work, never before it
        svc.fanout.submit(hand_over, svc, job, "running")
    log.info(
        "job_started",
        extra={"event": "job_started", "jobId": str(job.id), "projectId": str(job.project_id), "attempt": attempt},
    )
    # The history, the input and every reference at once (a reference is read like the input).
    reads: list[Callable[[], bytes | Sequence[Job]]] = [lambda: svc.store.thread_history(job)]
    reads += [functools.partial(_read_input, svc, job, path) for path in (job.input_path, *job.reference_paths)]
    history, *images = settle_each(svc.fanout, reads)
    try:
        blobs = [cast(bytes, read.get()) for read in images]
    except NotFound:
        what = "the input image" if images[0].error is not None else "a reference image"
        return fail_job(svc, job, ErrorCode.input_unavailable, f"{what} is missing", attempt=attempt)
    except Unavailable as exc:  # an outage, a lock, or our own storage configuration: redelivered (503)
        raise TransientError(f"storage unavailable while reading the input: {exc.message}") from exc
    image = blobs[0]
    mime = inspect_image(image, max_bytes=svc.settings.max_file_bytes, max_pixels=svc.settings.max_pixels).mime_type
    references = [InlineImage(data, r.mime_type) for data, r in zip(blobs[1:], job.references, strict=True)]
    request = _generation_request(job, image, mime, cast(Sequence[Job], history.get()), references)
    if svc.processor is not None:
        return _hand_to_processor(svc, job, request)
    assert svc.generator is not None
    calling = time.perf_counter()
    try:
        result = svc.generator.generate(request, deadline=job.deadline_at)
    except (ContentBlocked, GenerationFailed) as exc:
        spent = ModelUsage(generation_ms=round((time.perf_counter() - calling) * 1000))
        code = ErrorCode.content_blocked if isinstance(exc, ContentBlocked) else ErrorCode.generation_failed
        if code is ErrorCode.generation_failed and svc.clock() >= job.deadline_at:
            code = ErrorCode.timeout
        return fail_job(svc, job, code, exc.message, attempt=attempt, usage=spent)
    used = dataclasses.replace(result.usage, generation_ms=round((time.perf_counter() - calling) * 1000))
    try:
        uploads = _store_outputs(svc, job, attempt, result.images)
    except Unavailable as exc:
        if svc.clock() >= job.deadline_at:
            return fail_job(svc, job, ErrorCode.timeout, "storage unavailable until the deadline", attempt=attempt)
        raise TransientError("storage unavailable while uploading outputs") from exc
    done = complete_job(svc, job, attempt, uploads, result.note, usage=used)
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
        delete_quietly(svc, paths, job.id)
        raise errors[0]
    return [o.get() for o in outcomes]


def _hand_to_processor(svc: Services, job: Job, request: GenerationRequest) -> Job | None:
    assert svc.processor is not None
    ttl = _processor_url_ttl(svc, job)
    prefix = f"{job_prefix(job.id)}{job.attempt}/"
    # The processor sends the images to the model inline, as they are: give it the upright, small-enough
    # versions the Vertex adapter would send (stored next to this attempt's outputs, deleted with them).
    input_path, image = _model_ready(
        svc, prefix, "model-input", job.input_path, InlineImage(request.image, request.image_mime)
    )
    refs = [
        _model_ready(svc, prefix, f"model-ref-{i}", ref.path, inline)
        for i, (ref, inline) in enumerate(zip(job.references, request.references, strict=True))
    ]
    request = dataclasses.replace(
        request, image=image.data, image_mime=image.mime_type, references=tuple(inline for _, inline in refs)
    )
    work = ProcessorJob(
        job=job,
        request=request,
        input_url=svc.blobs.signed_url(input_path, ttl_s=ttl),
        output_prefix=prefix,
        upload_urls=tuple(svc.blobs.signed_upload_url(f"{prefix}{i}.png", ttl_s=ttl) for i in range(job.variant_count)),
        callback_url=svc.settings.callback_url or f"{svc.settings.base_url}/api/nano-banana/callback",
        reference_urls=tuple(svc.blobs.signed_url(path, ttl_s=ttl) for path, _ in refs),
    )
    try:
        svc.processor.submit(work, deadline=job.deadline_at)
    except ProcessorUnavailable as exc:
        return fail_job(svc, job, ErrorCode.processor_unavailable, exc.message, attempt=job.attempt)
    return job


def _model_ready(svc: Services, prefix: str, name: str, path: str, image: InlineImage) -> tuple[str, InlineImage]:
    """Where the processor reads an image from: its own path when the model can take it as it is, else
    an upright, small-enough copy stored as {prefix}{name}.{ext}."""
    data, mime = for_model(image.data, image.mime_type, max_bytes=svc.settings.vertex_inline_max_bytes)
    if data is image.data:
        return path, image
    ready = f"{prefix}{name}.{MIME_EXT[mime]}"
    try:
        svc.blobs.put(ready, data, mime)
    except Unavailable as exc:
        raise TransientError("storage unavailable while preparing the model input") from exc
    return ready, InlineImage(data, mime)


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
