"""The `callback` function: an external processor (n8n) reports a job's progress, signed.

Order matters: cap the body, verify the signature over the raw bytes, then parse; record the webhook
id atomically (a replay is acknowledged and ignored), apply the same CAS transitions as the in-house
generator, and forget the receipt again if a retry could help.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Literal

from flask import Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from nano_banana import log as log_context
from nano_banana import usecases, webhooks
from nano_banana.domain import JobStatus, VariantUpload, job_prefix
from nano_banana.errors import (
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


class CallbackBody(_Strict):
    job_id: uuid.UUID = Field(alias="jobId")
    status: Literal["running", "succeeded", "failed"]
    variants: list[ReportedVariant] | None = Field(None, max_length=4)
    error: ReportedError | None = None
    attempt: int | None = Field(None, ge=1)  # `running`: which attempt asks for upload URLs (default: current)


def _answer(body: dict[str, object], status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, mimetype="application/json")


def _read_capped(request: Request, cap: int) -> bytes:
    if request.content_length is not None and request.content_length > cap:
        raise FileTooLarge(f"callback bodies are limited to {cap} bytes")
    body = request.stream.read(cap + 1)
    if len(body) > cap:
        raise FileTooLarge(f"callback bodies are limited to {cap} bytes")
    return body


def _checked_outputs(svc: usecases.Services, job_id: uuid.UUID, variants: list[ReportedVariant]) -> list[VariantUpload]:
    """Every reported output must lie under the job's prefix, exist, and be an accepted image by content."""
    prefix = job_prefix(job_id)
    paths = [v.path for v in variants]
    if not paths:
        raise InvalidRequest("a succeeded callback needs at least one variant", details={"field": "variants"})
    if len(set(paths)) != len(paths):
        raise InvalidRequest("variant paths must be distinct", details={"field": "variants"})
    uploads = []
    for index, reported in enumerate(variants):
        path = reported.path
        if not path.startswith(prefix) or ".." in path or "//" in path or "\\" in path:
            raise InvalidRequest(
                "variant paths must lie under the job's own prefix", details={"path": path[:200], "prefix": prefix}
            )
        if svc.blobs.stat(path) is None:
            raise InvalidRequest("a reported variant does not exist in storage", details={"path": path[:200]})
        data = svc.blobs.get(path, max_bytes=svc.settings.max_file_bytes)
        info = inspect_image(data, max_bytes=svc.settings.max_file_bytes, max_pixels=svc.settings.max_pixels)
        uploads.append(VariantUpload(index, path, info.mime_type, info.width, info.height, info.bytes))
    return uploads


def _apply(svc: usecases.Services, body: CallbackBody) -> dict[str, object]:
    job = svc.store.get_job(body.job_id)
    if job is None:
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
        failed = usecases.fail_job(svc, job, error.code, error.message)
        if failed is None:
            raise InvalidTransition(f"job is {job.status.value}", details={"status": job.status.value})
        return {"jobId": str(job.id), "status": failed.status.value}
    uploads = _checked_outputs(svc, job.id, body.variants or [])
    if job.status is not JobStatus.running:
        usecases.discard_outputs(svc, job.id, [u.storage_path for u in uploads])
        raise InvalidTransition(
            f"job is {job.status.value}; the result is discarded", details={"status": job.status.value}
        )
    note = None
    if len(uploads) < job.variant_count:
        note = f"{len(uploads)} of {job.variant_count} variants came back."
    done = usecases.complete_job(svc, job, job.attempt, uploads, note)
    if done is None:  # canceled or timed out meanwhile: complete_job deleted the outputs
        latest = svc.store.get_job(job.id) or job
        raise InvalidTransition(
            f"job is {latest.status.value}; the result is discarded", details={"status": latest.status.value}
        )
    return {"jobId": str(job.id), "status": done.status.value, "variants": len(done.variants)}


def handle(svc: usecases.Services, request: Request) -> Response:
    """POST /api/nano-banana/callback."""
    with log_context.request_scope(request.headers.items(), svc.settings.gcp_project):
        return _handle(svc, request)


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
        recorded = body.status != "running"  # a running report changes no state: repeats are safe, no receipt
        if recorded and not svc.store.record_webhook(webhook_id):
            log.info("callback replay ignored", extra={"event": "callback_replay", "webhookId": webhook_id})
            return _answer({"duplicate": True})
        try:
            result = _apply(svc, body)
        except BaseException:
            if recorded:
                svc.store.forget_webhook(webhook_id)  # nothing was applied: a rejected callback writes nothing
            raise
        log.info(
            "callback applied", extra={"event": "callback_applied", "jobId": str(body.job_id), "status": body.status}
        )
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
