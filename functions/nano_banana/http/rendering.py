"""Responses: the error envelope, jobs and variants as JSON (signed URLs), Document Builder blocks."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from flask import Response

from nano_banana import log as logs
from nano_banana import usecases
from nano_banana.domain import Job, JobStatus, Variant, Webhook
from nano_banana.errors import (
    InvalidTransition,
    NanoBananaError,
    NotFound,
)
from nano_banana.http.api import Api
from nano_banana.http.bodies import BlocksQuery
from nano_banana.signing import UrlSigner
from nano_banana.usecases.usage import timings, usage

log = logging.getLogger("nano_banana")


def error_response(exc: NanoBananaError) -> Response:
    error: dict[str, Any] = {"code": exc.code, "message": exc.message, "details": exc.details}
    if request_id := logs.request_id():
        error["requestId"] = request_id  # the key to this request's log lines, for support
    return json_response({"error": error}, exc.status, headers=exc.headers)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    response = Response(json.dumps(body, separators=(",", ":")), status=status, mimetype="application/json")
    response.headers["Cache-Control"] = "no-store"
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def _iso(value: Any) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def render_variant(v: Variant, urls: Mapping[str, str]) -> dict[str, Any]:
    return {
        "id": str(v.id),
        "index": v.index,
        "url": urls.get(v.storage_path),
        "storagePath": v.storage_path,
        "mimeType": v.mime_type,
        "width": v.width,
        "height": v.height,
        "bytes": v.bytes,
    }


def signed_paths(job: Job) -> list[str]:
    return [job.input_path, *(r.path for r in job.references), *(v.storage_path for v in job.variants)]


def render_jobs(api: Api, jobs: Sequence[Job]) -> list[dict[str, Any]]:
    """Jobs as the API shows them, every image URL of them signed in one store call."""
    urls = api.signer.sign(path for job in jobs for path in signed_paths(job)).urls
    return [render_job(job, urls) for job in jobs]


def render_job(job: Job, urls: Mapping[str, str]) -> dict[str, Any]:
    """One job; `urls` holds its images' signed URLs (a path missing from it renders as null)."""
    return {
        "id": str(job.id),
        "projectId": str(job.project_id),
        "userId": str(job.user_id),
        "threadId": str(job.thread_id),
        "parentJobId": str(job.parent_job_id) if job.parent_job_id else None,
        "sourceVariantId": str(job.source_variant_id) if job.source_variant_id else None,
        "prompt": job.prompt,
        "status": job.status.value,
        "errorCode": job.error_code,
        "errorMessage": job.error_message,
        "note": job.note,
        "variantCount": job.variant_count,
        "aspectRatio": job.aspect_ratio,
        "model": job.model,
        "resolution": job.resolution,
        "attempt": job.attempt,
        "inputUrl": urls.get(job.input_path),
        "inputPath": job.input_path,
        "inputWidth": job.input_width,
        "inputHeight": job.input_height,
        "createdAt": _iso(job.created_at),
        "startedAt": _iso(job.started_at),
        "finishedAt": _iso(job.finished_at),
        "deadlineAt": _iso(job.deadline_at),
        "updatedAt": _iso(job.updated_at),
        "variants": [render_variant(v, urls) for v in job.variants],
        "webhook": render_webhook(job.webhook),
        "references": [
            {
                "path": r.path,
                "url": urls.get(r.path),
                "mimeType": r.mime_type,
                "width": r.width,
                "height": r.height,
                "bytes": r.bytes,
            }
            for r in job.references
        ],
        "usage": usage(job),
        "timings": timings(job),
    }


def render_webhook(webhook: Webhook | None) -> dict[str, Any] | None:
    """Where the job's events go and what became of each delivery (null: the job asked for none)."""
    if webhook is None:
        return None
    deliveries = [
        {
            "event": d.event,
            "state": d.state,
            "attempts": d.attempts,
            "lastStatus": d.last_status,
            "deliveredAt": _iso(d.delivered_at),
            "reason": d.reason,
        }
        for d in webhook.deliveries
    ]
    return {"url": webhook.url, "events": list(webhook.events), "deliveries": deliveries}


def job_renderer(services: usecases.Services) -> Callable[[Job], dict[str, Any]]:
    """A job as GET /jobs/{id} renders it, signed URLs included: what a completion webhook carries."""
    signer = UrlSigner(services.blobs, ttl_s=services.settings.signed_url_ttl_s, clock=services.clock)

    def render(job: Job) -> dict[str, Any]:
        urls = signer.sign(signed_paths(job)).urls
        return render_job(job, urls)

    return render


def _alt(prompt: str, prefix: str) -> str:
    text = " ".join(prompt.split())
    return f"{prefix}: {text[:160]}{'…' if len(text) > 160 else ''}"


def render_block(api: Api, job: Job, query: BlocksQuery, *, before_of: Job | None = None) -> dict[str, Any]:
    """Document Builder block JSON for a succeeded job's variant; an image_compare's "before" is the input
    of `before_of` (the job itself unless the caller asked for the thread's original photo)."""
    source = before_of or job
    if job.status is not JobStatus.succeeded:
        raise InvalidTransition(
            f"job is {job.status.value}; only succeeded jobs have blocks", details={"status": job.status.value}
        )
    variant = next((v for v in job.variants if v.id == query.variant_id), None)
    if variant is None:
        raise NotFound("variant not found in this job", details={"variantId": str(query.variant_id)})
    urls = api.signer.sign([variant.storage_path, source.input_path]).urls
    after = {
        "src": urls.get(variant.storage_path),
        "storagePath": variant.storage_path,
        "width": variant.width,
        "height": variant.height,
    }
    if query.type == "image":
        props = {
            **after,
            "alt": _alt(job.prompt, "AI-edited image"),
            "jobId": str(job.id),
            "variantId": str(variant.id),
        }
        return {"type": "image", "props": props}
    before = {
        "src": urls.get(source.input_path),
        "storagePath": source.input_path,
        "width": source.input_width,
        "height": source.input_height,
    }
    return {
        "type": "image_compare",
        "props": {
            "layout": query.layout,
            "before": before,
            "after": after,
            "initialPosition": 50,
            "alt": _alt(job.prompt, "Before and after"),
            "jobId": str(job.id),
            "variantId": str(variant.id),
        },
    }
