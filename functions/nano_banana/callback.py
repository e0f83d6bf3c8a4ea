"""The `callback` function: an external processor (n8n) reports a job's progress, signed.

Order matters: cap the body, verify the signature over the raw bytes, then parse; claim the webhook id
(a replay of an applied delivery is acknowledged and ignored, a duplicate of one still being applied waits
for its outcome: it applies itself if that one failed, else is told to retry), apply the same CAS
transitions as the in-house generator (the transition marks the receipt applied in its own transaction),
and release the claim if nothing was applied.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from datetime import datetime, timedelta
from typing import Literal

from flask import Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from nano_banana import log as log_context
from nano_banana import usecases, webhooks
from nano_banana.domain import Job, JobStatus, ModelUsage, VariantUpload, job_prefix
from nano_banana.errors import (
    CallbackInProgress,
    FileTooLarge,
    InvalidRequest,
    InvalidTransition,
    MethodNotAllowed,
    NanoBananaError,
    NotFound,
    TransientError,
    Unavailable,
)
from nano_banana.http import error_response
from nano_banana.images import inspect_image

log = logging.getLogger("nano_banana")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReportedVariant(_Strict):
    path: str = Field(min_length=1, max_length=512)
    mime_type: Literal["image/png", "image/jpeg", "image/webp"] = Field(alias="mimeType")
    width: int | None = Field(None, ge=1, le=20_000)
    height: int | None = Field(None, ge=1, le=20_000)


class ReportedError(_Strict):
    code: Literal["generation_failed", "content_blocked"]
    message: str = Field(max_length=2000)


class ReportedUsage(_Strict):
    """Optional: what the processor's model call(s) used (Vertex `usageMetadata`) and how long they took."""

    prompt_tokens: int | None = Field(None, ge=0, le=100_000_000, alias="promptTokens")
    output_tokens: int | None = Field(None, ge=0, le=100_000_000, alias="outputTokens")
    total_tokens: int | None = Field(None, ge=0, le=100_000_000, alias="totalTokens")
    generation_ms: int | None = Field(None, ge=0, le=86_400_000, alias="generationMs")

    def model_usage(self) -> ModelUsage:
        return ModelUsage(self.prompt_tokens, self.output_tokens, self.total_tokens, self.generation_ms)


class CallbackBody(_Strict):
    job_id: uuid.UUID = Field(alias="jobId")
    status: Literal["running", "succeeded", "failed"]
    variants: list[ReportedVariant] | None = Field(None, max_length=4)
    error: ReportedError | None = None
    attempt: int | None = Field(None, ge=1)  # `running`: which attempt asks for upload URLs (default: current)
    usage: ReportedUsage | None = None  # `succeeded` / `failed`: recorded on the job


def _answer(body: dict[str, object], status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, mimetype="application/json")


def _read_capped(request: Request, cap: int) -> bytes:
    if request.content_length is not None and request.content_length > cap:
        raise FileTooLarge(f"callback bodies are limited to {cap} bytes")
    body = request.stream.read(cap + 1)
    if len(body) > cap:
        raise FileTooLarge(f"callback bodies are limited to {cap} bytes")
    return body


def _reported_paths(job_id: uuid.UUID, variants: list[ReportedVariant]) -> list[str]:
    """Every reported output must be distinct and lie under the job's prefix (checked before anything
    is read or deleted)."""
    prefix = job_prefix(job_id)
    paths = [v.path for v in variants]
    if not paths:
        raise InvalidRequest("a succeeded callback needs at least one variant", details={"field": "variants"})
    if len(set(paths)) != len(paths):
        raise InvalidRequest("variant paths must be distinct", details={"field": "variants"})
    for path in paths:
        if not path.startswith(prefix) or ".." in path or "//" in path or "\\" in path:
            raise InvalidRequest(
                "variant paths must lie under the job's own prefix", details={"path": path[:200], "prefix": prefix}
            )
    return paths


def _checked_outputs(svc: usecases.Services, variants: list[ReportedVariant]) -> list[VariantUpload]:
    """Every reported output must exist and be an accepted image by content."""
    uploads = []
    for index, reported in enumerate(variants):
        path = reported.path
        if svc.blobs.stat(path) is None:
            raise InvalidRequest("a reported variant does not exist in storage", details={"path": path[:200]})
        data = svc.blobs.get(path, max_bytes=svc.settings.max_file_bytes)
        info = inspect_image(data, max_bytes=svc.settings.max_file_bytes, max_pixels=svc.settings.max_pixels)
        uploads.append(VariantUpload(index, path, info.mime_type, info.width, info.height, info.bytes))
    return uploads


def _apply(svc: usecases.Services, body: CallbackBody, receipt: str | None) -> dict[str, object]:
    job = svc.store.get_job(body.job_id)
    if job is None:
        if body.status == "succeeded" and body.variants:  # a deleted job's late result: nothing will record it
            with contextlib.suppress(InvalidRequest):  # paths outside the job's prefix are never deleted
                usecases.discard_outputs(svc, body.job_id, _reported_paths(body.job_id, body.variants))
        raise NotFound("job not found", details={"jobId": str(body.job_id)})
    if body.status == "running":  # "my images are ready": fresh upload URLs, however long generation took
        grant = usecases.grant_uploads(svc, job.id, body.attempt)
        return {
            "jobId": str(job.id),
            "status": grant.job.status.value,
            "attempt": grant.job.attempt,
            "outputPrefix": grant.output_prefix,
            "uploadUrls": grant.upload_urls,
            "uploadMethod": "PUT",
            "expiresAt": grant.expires_at.isoformat().replace("+00:00", "Z"),
        }
    if body.status == "failed":
        error = body.error or ReportedError(code="generation_failed", message="the processor reported a failure")
        used = body.usage.model_usage() if body.usage is not None else None
        failed = usecases.fail_job(svc, job, error.code, error.message, receipt=receipt, usage=used)
        if failed is None:
            raise InvalidTransition(f"job is {job.status.value}", details={"status": job.status.value})
        _log_applied(failed)
        return {"jobId": str(job.id), "status": failed.status.value}
    return _apply_success(svc, job, body, receipt)


def _apply_success(svc: usecases.Services, job: Job, body: CallbackBody, receipt: str | None) -> dict[str, object]:
    """running -> succeeded. A report for a job that already succeeded (another processor execution, or a
    retry whose first answer was lost) is answered like the first one; its paths that are not the job's
    variants are deleted, the variants never."""
    variants = body.variants or []
    paths = _reported_paths(job.id, variants)
    if job.status is JobStatus.running:
        uploads = _checked_outputs(svc, variants)
        note = None
        if len(uploads) < job.variant_count:
            note = f"{len(uploads)} of {job.variant_count} variants came back."
        used = body.usage.model_usage() if body.usage is not None else None
        done = usecases.complete_job(svc, job, job.attempt, uploads, note, receipt=receipt, usage=used)
        if done is not None:
            _log_applied(done)
            return _succeeded(done)
        job = svc.store.get_job(job.id) or job  # lost the CAS: complete_job deleted what was not recorded
    else:
        usecases.discard_outputs(svc, job.id, paths)
    if job.status is JobStatus.succeeded:
        log.info("repeated success report", extra={"event": "callback_repeated", "jobId": str(job.id)})
        return _succeeded(job)
    raise InvalidTransition(f"job is {job.status.value}; the result is discarded", details={"status": job.status.value})


def _log_applied(job: Job) -> None:
    log.info("callback applied", extra={"event": "callback_applied", "jobId": str(job.id), "status": job.status.value})


def _succeeded(job: Job) -> dict[str, object]:
    return {"jobId": str(job.id), "status": job.status.value, "variants": len(job.variants)}


def handle(svc: usecases.Services, request: Request) -> Response:
    """POST /api/nano-banana/callback."""
    with log_context.request_scope(request.headers.items(), svc.settings.gcp_project):
        return _handle(svc, request)


# A duplicate of a delivery still being applied waits this long (at most the claim TTL) for its outcome:
# applied -> acknowledged; released (it failed) or gone stale -> this one applies. n8n's callback node
# retries 3 times 1 s apart and ignores Retry-After, so answering 503 at once left nobody to deliver again
# when the first delivery then failed; two waiting retries span the claim TTL (30 s).
IN_FLIGHT_WAIT_S = 15.0


_IN_FLIGHT_POLL_S = 0.25


def _claim(svc: usecases.Services, webhook_id: str) -> datetime | None:
    """Claim the delivery (returns the claim's time); None for a replay of an applied one. A duplicate of
    one still being applied waits for its outcome (IN_FLIGHT_WAIT_S), then CallbackInProgress (503): it
    is not done, and may still fail."""
    ttl = timedelta(seconds=svc.settings.callback_claim_ttl_s)
    wait_until = time.monotonic() + min(IN_FLIGHT_WAIT_S, ttl.total_seconds())
    while True:
        now = svc.clock()
        claim = svc.store.claim_webhook(webhook_id, now=now, stale_before=now - ttl)
        if claim == "claimed":
            return now
        if claim == "applied":
            log.info("callback replay ignored", extra={"event": "callback_replay", "webhookId": webhook_id})
            return None
        if time.monotonic() + _IN_FLIGHT_POLL_S > wait_until:
            break
        time.sleep(_IN_FLIGHT_POLL_S)
    log.info("callback still being applied", extra={"event": "callback_in_progress", "webhookId": webhook_id})
    raise CallbackInProgress(
        "this delivery is still being applied; retry shortly",
        retry_after_s=1,
        details={"webhookId": webhook_id[:100]},
    )


def _release(svc: usecases.Services, webhook_id: str, claimed_at: datetime) -> None:
    try:
        svc.store.release_webhook(webhook_id, claimed_at=claimed_at)
    except Exception as exc:  # the claim then lapses after NANO_BANANA_CALLBACK_CLAIM_TTL_S
        log.warning(
            "could not release a callback claim",
            extra={"event": "receipt_release_failed", "webhookId": webhook_id, "errorType": type(exc).__name__},
        )


def _settle(svc: usecases.Services, webhook_id: str) -> None:
    """Mark the receipt applied when the answer needed no transition (a transition already marked it)."""
    try:
        svc.store.settle_webhook(webhook_id)
    except Exception as exc:  # the answer stands; a duplicate re-applies idempotently after the claim TTL
        log.warning(
            "could not settle a callback receipt",
            extra={"event": "receipt_settle_failed", "webhookId": webhook_id, "errorType": type(exc).__name__},
        )


def _handle(svc: usecases.Services, request: Request) -> Response:
    webhook_id: str | None = None
    try:
        if request.method != "POST":
            raise MethodNotAllowed("use POST here", details={"allowed": ["POST"]})
        raw = _read_capped(request, svc.settings.callback_max_bytes)
        webhook_id = webhooks.verify(
            raw,
            dict(request.headers),
            svc.settings.callback_secrets,
            tolerance_s=svc.settings.callback_tolerance_s,
            now=svc.clock(),
        )
        try:
            body = CallbackBody.model_validate_json(raw)
        except ValidationError as exc:
            fields = [
                {"field": ".".join(str(p) for p in e["loc"]) or "body", "problem": e["msg"]}
                for e in exc.errors(include_url=False, include_input=False)
            ]
            raise InvalidRequest("the callback body is not valid", details={"fields": fields}) from exc
        if body.status == "running":  # changes no state: not recorded
            return _answer(_apply(svc, body, receipt=None))
        claimed_at = _claim(svc, webhook_id)
        if claimed_at is None:
            return _answer({"duplicate": True})
        try:
            result = _apply(svc, body, receipt=webhook_id)
        except BaseException:
            _release(svc, webhook_id, claimed_at)  # only our claim, and only if no transition committed
            raise
        _settle(svc, webhook_id)
        return _answer(result)
    except (Unavailable, TransientError) as exc:
        unavailable = exc if isinstance(exc, Unavailable) else Unavailable()
        return error_response(unavailable)
    except NanoBananaError as exc:
        log.info("callback rejected", extra={"event": "callback_rejected", "code": exc.code, "webhookId": webhook_id})
        return error_response(exc)
    except Exception as exc:
        log.error("callback failed", extra={"event": "internal_error", "errorType": type(exc).__name__})
        return _answer({"error": {"code": "internal", "message": "internal error", "details": {}}}, 500)
