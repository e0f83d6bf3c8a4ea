"""The HTTP edge of the `api` function: parse, call one use case, render. Errors become one envelope."""

from __future__ import annotations

import contextvars
import hashlib
import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any, Literal, TypeVar

from flask import Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from nano_banana import log as logs
from nano_banana import usecases
from nano_banana.auth import TokenVerifier
from nano_banana.domain import ASPECT_RATIOS, Job, JobStatus, Variant, storable_text
from nano_banana.errors import (
    BadRequest,
    FileTooLarge,
    InvalidRequest,
    InvalidTransition,
    MethodNotAllowed,
    NanoBananaError,
    NotFound,
    StorageMisconfigured,
    Unavailable,
    UnsupportedMediaType,
)
from nano_banana.images import ACCEPTED, inspect_image, sniff, upload_budget
from nano_banana.sanitize import strip_metadata
from nano_banana.signing import UrlSigner
from nano_banana.tickets import StreamTickets
from nano_banana.uploads import FORM_OVERHEAD_BYTES, read_multipart

log = logging.getLogger("nano_banana")

BASE_PATH = "/api/nano-banana"
JSON_MAX_BYTES = 64 * 1024
_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")

_M = TypeVar("_M", bound=BaseModel)

AspectRatio = Literal["1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9"]


@dataclass(frozen=True)
class Api:
    """What the `api` entry point needs: the use cases' services, the token verifier, stream tickets and
    the URL signer."""

    services: usecases.Services
    verifier: TokenVerifier
    tickets: StreamTickets
    signer: UrlSigner


# ---------------------------------------------------------------- request bodies


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_max_length=10_000, frozen=True)


class CreateJobBody(_Body):
    project_id: uuid.UUID = Field(alias="projectId")
    prompt: str
    input_path: str = Field(alias="inputPath", max_length=512)
    variant_count: int | None = Field(None, alias="variantCount", ge=1, le=4)
    aspect_ratio: AspectRatio | None = Field(None, alias="aspectRatio")


class SignUrlsBody(_Body):
    paths: list[Annotated[str, Field(min_length=1, max_length=512)]] = Field(min_length=1, max_length=50)


class RefineBody(_Body):
    job_id: uuid.UUID = Field(alias="jobId")
    variant_id: uuid.UUID = Field(alias="variantId")
    prompt: str


class ListQuery(_Body):
    project_id: uuid.UUID = Field(alias="projectId")
    status: JobStatus | None = None
    limit: int = Field(20, ge=1, le=100)
    cursor: str | None = Field(None, max_length=200)


class BlocksQuery(_Body):
    variant_id: uuid.UUID = Field(alias="variantId")
    type: Literal["image", "image_compare"] = "image"
    layout: Literal["slider", "side_by_side"] = "slider"


# ---------------------------------------------------------------- rendering


def error_response(exc: NanoBananaError) -> Response:
    error: dict[str, Any] = {"code": exc.code, "message": exc.message, "details": exc.details}
    if request_id := logs.request_id():
        error["requestId"] = request_id  # the key to this request's log lines, for support
    return _json({"error": error}, exc.status, headers=exc.headers)


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
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


def _paths(job: Job) -> list[str]:
    return [job.input_path, *(v.storage_path for v in job.variants)]


def render_jobs(api: Api, jobs: Sequence[Job]) -> list[dict[str, Any]]:
    """Jobs as the API shows them, every image URL of them signed in one store call."""
    urls = api.signer.sign(path for job in jobs for path in _paths(job)).urls
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
    }


def _alt(prompt: str, prefix: str) -> str:
    text = " ".join(prompt.split())
    return f"{prefix}: {text[:160]}{'…' if len(text) > 160 else ''}"


def render_block(api: Api, job: Job, query: BlocksQuery) -> dict[str, Any]:
    """Document Builder block JSON for a succeeded job's variant."""
    if job.status is not JobStatus.succeeded:
        raise InvalidTransition(
            f"job is {job.status.value}; only succeeded jobs have blocks", details={"status": job.status.value}
        )
    variant = next((v for v in job.variants if v.id == query.variant_id), None)
    if variant is None:
        raise NotFound("variant not found in this job", details={"variantId": str(query.variant_id)})
    urls = api.signer.sign([variant.storage_path, job.input_path]).urls
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
        "src": urls.get(job.input_path),
        "storagePath": job.input_path,
        "width": job.input_width,
        "height": job.input_height,
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


# ---------------------------------------------------------------- parsing helpers


def _unstorable(data: Any, where: str) -> str | None:
    """The first field (dotted path) holding a string that cannot be stored or logged, if any."""
    if isinstance(data, str):
        return None if storable_text(data) else where
    if isinstance(data, dict):
        items: Iterator[tuple[Any, Any]] = iter(data.items())
    elif isinstance(data, list):
        items = enumerate(data)
    else:
        return None
    for key, value in items:
        field = f"{where}.{key}" if where else str(key)
        if isinstance(key, str) and not storable_text(key):
            return where or "body"
        if (found := _unstorable(value, field)) is not None:
            return found
    return None


def _check_text(data: Any) -> None:
    """NUL (Postgres text rejects it) or a lone surrogate (JSON's "\\ud800"; UTF-8 cannot encode it) in
    any string is bad input: refused here, before it can reach the database, storage or a log line."""
    if (field := _unstorable(data, "")) is not None:
        raise InvalidRequest(
            "text may not contain NUL characters or unpaired surrogates",
            details={"field": field[:100].encode("ascii", "backslashreplace").decode()},
        )


def _validated(model: type[_M], data: Any) -> _M:
    _check_text(data)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        fields = [
            {"field": ".".join(str(p) for p in e["loc"]) or "body", "problem": e["msg"]}
            for e in exc.errors(include_url=False, include_input=False)
        ]
        raise InvalidRequest("the request is not valid", details={"fields": fields}) from exc


def _json_body(request: Request) -> Any:
    if request.content_length is not None and request.content_length > JSON_MAX_BYTES:
        raise FileTooLarge(f"JSON bodies are limited to {JSON_MAX_BYTES} bytes")
    raw = request.stream.read(JSON_MAX_BYTES + 1)
    if len(raw) > JSON_MAX_BYTES:
        raise FileTooLarge(f"JSON bodies are limited to {JSON_MAX_BYTES} bytes")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest("the body is not valid JSON") from exc


def _uuid(value: str, field: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError as exc:
        raise NotFound(f"{field} not found", details={field: value[:64]}) from exc


def _idempotency_key(request: Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not _IDEMPOTENCY_KEY.match(key):
        raise InvalidRequest(
            "Idempotency-Key must be 1-255 visible ASCII characters", details={"field": "Idempotency-Key"}
        )
    return key


def _form_int(fields: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = fields.get(name)
    if raw is None or raw == "":
        return default
    # ASCII digits only: str.isdigit() is also true for "²" (U+00B2) and Arabic-Indic digits.
    value = raw.strip()
    if not (value.isascii() and value.isdigit() and len(value) <= 4) or not low <= int(value) <= high:
        raise InvalidRequest(f"{name} must be a whole number from {low} to {high}", details={"field": name})
    return int(value)


def _create_command(api: Api, request: Request) -> usecases.CreateJob:
    settings = api.services.settings
    key = _idempotency_key(request)
    mimetype = request.mimetype
    if mimetype == "multipart/form-data":
        form = read_multipart(
            request.headers.get("Content-Type"),
            request.content_length,
            request.stream.read,
            file_field="image",
            max_file_bytes=settings.max_file_bytes,
        )
        unknown = set(form.fields) - {"projectId", "prompt", "variantCount", "aspectRatio"}
        if unknown:
            raise InvalidRequest("unknown form fields", details={"fields": sorted(unknown)[:10]})
        _check_text(form.fields)
        project = form.fields.get("projectId", "")
        try:
            project_id = uuid.UUID(project)
        except ValueError as exc:
            raise InvalidRequest("projectId must be a UUID", details={"field": "projectId"}) from exc
        aspect = form.fields.get("aspectRatio") or None
        if aspect is not None and aspect not in ASPECT_RATIOS:
            raise InvalidRequest(
                "aspectRatio is not supported", details={"field": "aspectRatio", "allowed": list(ASPECT_RATIOS)}
            )
        # Metadata (EXIF GPS, XMP, comments) and bytes after the image's end never get stored; the
        # stripped image is what gets validated.
        image = strip_metadata(form.file, sniff(form.file) or "")
        info = inspect_image(image, max_bytes=settings.max_file_bytes, max_pixels=settings.max_pixels)
        return usecases.CreateJob(
            project_id=project_id,
            prompt=form.fields.get("prompt", ""),
            variant_count=_form_int(form.fields, "variantCount", settings.default_variant_count, 1, 4),
            aspect_ratio=aspect,
            upload=usecases.ImageUpload(image, info),
            idempotency_key=key,
        )
    if mimetype == "application/json":
        body = _validated(CreateJobBody, _json_body(request))
        return usecases.CreateJob(
            project_id=body.project_id,
            prompt=body.prompt,
            variant_count=body.variant_count or settings.default_variant_count,
            aspect_ratio=body.aspect_ratio,
            input_path=body.input_path,
            idempotency_key=key,
        )
    raise UnsupportedMediaType(
        "send multipart/form-data (with an image) or application/json (with an inputPath)",
        details={"contentType": mimetype[:100]},
    )


# ---------------------------------------------------------------- routes

Handler = Callable[[Api, Request, dict[str, str]], Response]


def _user(api: Api, request: Request) -> uuid.UUID:
    return api.verifier.user_id(request.headers.get("Authorization"))


def create_job(api: Api, request: Request, _: dict[str, str]) -> Response:
    user_id = _user(api, request)
    # A multipart body stays in memory until the job is stored (plus one copy while it is parsed).
    cap = api.services.settings.max_file_bytes + FORM_OVERHEAD_BYTES
    held = 2 * min(request.content_length or cap, cap) if request.mimetype == "multipart/form-data" else 0
    with upload_budget().hold(held):
        created = usecases.create_job(api.services, user_id, _create_command(api, request))
    body = {"jobId": str(created.job.id), "status": created.job.status.value, "threadId": str(created.job.thread_id)}
    return _json(body, 200 if created.replayed else 202, headers={"Location": f"{BASE_PATH}/jobs/{created.job.id}"})


def list_jobs(api: Api, request: Request, _: dict[str, str]) -> Response:
    user_id = _user(api, request)
    query = _validated(ListQuery, request.args.to_dict())
    page = usecases.list_jobs(
        api.services, user_id, query.project_id, status=query.status, limit=query.limit, cursor=query.cursor
    )
    return _json({"jobs": render_jobs(api, page.jobs), "nextCursor": page.next_cursor})


def get_job(api: Api, request: Request, params: dict[str, str]) -> Response:
    user_id = _user(api, request)
    return _json(render_jobs(api, [usecases.get_job(api.services, user_id, _uuid(params["id"], "jobId"))])[0])


def cancel_job(api: Api, request: Request, params: dict[str, str]) -> Response:
    user_id = _user(api, request)
    return _json(render_jobs(api, [usecases.cancel_job(api.services, user_id, _uuid(params["id"], "jobId"))])[0])


def delete_job(api: Api, request: Request, params: dict[str, str]) -> Response:
    user_id = _user(api, request)
    deletion = usecases.delete_job(api.services, user_id, _uuid(params["id"], "jobId"))
    return _json({"deleted": [str(job_id) for job_id in deletion.job_ids]})


def refine(api: Api, request: Request, _: dict[str, str]) -> Response:
    user_id = _user(api, request)
    if request.mimetype != "application/json":
        raise UnsupportedMediaType("send application/json", details={"contentType": request.mimetype[:100]})
    body = _validated(RefineBody, _json_body(request))
    command = usecases.Refine(body.job_id, body.variant_id, body.prompt, _idempotency_key(request))
    created = usecases.refine(api.services, user_id, command)
    result = {
        "jobId": str(created.job.id),
        "messageId": str(created.message_id) if created.message_id else None,
        "status": created.job.status.value,
        "threadId": str(created.job.thread_id),
    }
    return _json(result, 200 if created.replayed else 202, headers={"Location": f"{BASE_PATH}/jobs/{created.job.id}"})


def thread_messages(api: Api, request: Request, params: dict[str, str]) -> Response:
    user_id = _user(api, request)
    thread_id, messages = usecases.thread(api.services, user_id, _uuid(params["id"], "jobId"))
    distinct = list({job.id: job for _, job in messages}.values())
    jobs = {job.id: shown for job, shown in zip(distinct, render_jobs(api, distinct), strict=True)}
    rendered = []
    for message, job in messages:
        rendered.append(
            {
                "id": str(message.id),
                "threadId": str(message.thread_id),
                "jobId": str(message.job_id),
                "role": message.role.value,
                "content": message.content,
                "variantId": str(message.variant_id) if message.variant_id else None,
                "createdAt": _iso(message.created_at),
                "job": jobs[job.id],
            }
        )
    return _json({"threadId": str(thread_id), "messages": rendered})


def blocks(api: Api, request: Request, params: dict[str, str]) -> Response:
    user_id = _user(api, request)
    query = _validated(BlocksQuery, request.args.to_dict())
    job = usecases.get_job(api.services, user_id, _uuid(params["id"], "jobId"))
    return _json(render_block(api, job, query))


def job_events(api: Api, request: Request, params: dict[str, str]) -> Response:
    """Server-sent events: the job now and on every change (Postgres LISTEN/NOTIFY) until it ends. The
    caller authenticates with its Authorization header or, from EventSource, with a stream ticket."""
    job_id = _uuid(params["id"], "jobId")
    header = request.headers.get("Authorization")
    ticket = request.args.get("ticket")
    user_id = api.verifier.user_id(header) if header or not ticket else api.tickets.user_for(ticket, job_id)
    job = usecases.get_job(api.services, user_id, job_id)  # access is checked again: membership may be gone
    svc = api.services

    def stream() -> Generator[str, None, None]:
        current = job
        last = (current.status, current.updated_at)
        yield f"event: job\ndata: {json.dumps(render_jobs(api, [current])[0])}\n\n"
        if current.terminal:
            return
        budget = max(5.0, (current.deadline_at - svc.clock()).total_seconds() + 30)
        for _notified in svc.store.wait_for_change(current.id, budget):
            # Re-read on heartbeats too: a lost notification costs at most one heartbeat of delay.
            try:
                latest = svc.store.get_job(current.id)
            except Unavailable:
                yield ": database unavailable, still watching\n\n"  # the next wake-up reads again
                continue
            if latest is None:
                return
            if (latest.status, latest.updated_at) != last:
                last = (latest.status, latest.updated_at)
                yield f"event: job\ndata: {json.dumps(render_jobs(api, [latest])[0])}\n\n"
            elif not _notified:
                yield ": keepalive\n\n"  # an SSE comment keeps proxies from closing an idle stream
            if latest.terminal:
                return

    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return Response(_in_this_context(stream()), mimetype="text/event-stream", headers=headers)


def _in_this_context(body: Generator[str, None, None]) -> Iterator[str]:
    """A streamed body runs after the handler returned; run it in the handler's context, so its log
    lines keep the request's id and trace."""
    context = contextvars.copy_context()
    try:
        while True:
            try:
                event = context.run(next, body)
            except StopIteration:
                return
            yield event
    finally:
        context.run(body.close)  # a client that went away closes the stream (and its LISTEN wait) now


def signed_urls(api: Api, request: Request, _: dict[str, str]) -> Response:
    """Fresh signed URLs for stored images the caller may see. A document keeps a block's `storagePath`;
    its `src` expires with the signed URL, and this is how the builder renders the block again."""
    user_id = _user(api, request)
    paths = list(dict.fromkeys(_validated(SignUrlsBody, _json_body(request)).paths))
    visible = usecases.visible_paths(api.services, user_id, paths)
    signed = api.signer.sign((p for p in paths if p in visible), degrade=False)  # "not found" must mean it
    body = {
        "urls": signed.urls,
        "notFound": [p for p in paths if p not in signed.urls],  # not theirs, or no object behind it
        "expiresAt": _iso(signed.expires_at),
    }
    return _json(body)


def events_ticket(api: Api, request: Request, params: dict[str, str]) -> Response:
    """A ticket for one job's event stream, to put in the EventSource URL instead of the access token
    (URLs get logged). Valid until a minute after the job's deadline."""
    user_id = _user(api, request)
    job = usecases.get_job(api.services, user_id, _uuid(params["id"], "jobId"))
    expires = max(job.deadline_at, api.services.clock()) + timedelta(seconds=60)
    ticket = api.tickets.issue(job.id, user_id, expires)
    body = {
        "ticket": ticket,
        "url": f"{BASE_PATH}/jobs/{job.id}/events?ticket={ticket}",
        "expiresAt": _iso(expires),
    }
    return _json(body, headers={"Cache-Control": "no-store"})


def public_config(api: Api, _request: Request, _params: dict[str, str]) -> Response:
    s = api.services.settings
    return _json(
        {
            "maxFileBytes": s.max_file_bytes,
            "maxPixels": s.max_pixels,
            "acceptedTypes": list(ACCEPTED),
            "maxVariants": 4,
            "defaultVariants": s.default_variant_count,
            "aspectRatios": list(ASPECT_RATIOS),
            "timeoutSeconds": s.timeout_s,
            "ratePerHour": s.rate_per_hour,
            "maxActivePerProject": s.max_active_per_project,
            "maxPromptChars": s.max_prompt_chars,
            "maxThreadTurns": s.max_thread_turns,
        }
    )


def healthz(api: Api, _request: Request, _params: dict[str, str]) -> Response:
    return _json({"status": "ok"})


def readyz(api: Api, _request: Request, _params: dict[str, str]) -> Response:
    """Each dependency answers, and storage with our own key and bucket: a wrong or anon key or a missing
    bucket is not ready, and `details` says which (e.g. `"storage": "bucket_not_found"`)."""
    checks: dict[str, str] = {}
    problems: dict[str, str] = {}
    svc = api.services
    for name, check in (
        ("database", svc.store.ping),
        ("limits", lambda: svc.limits.active_jobs(uuid.UUID(int=0))),
        ("storage", svc.blobs.check_access),
    ):
        try:
            check()
            checks[name] = "ok"
        except StorageMisconfigured as exc:
            checks[name], problems[name] = exc.cause, exc.message
        except Exception as exc:
            checks[name] = type(exc).__name__
    ready = all(v == "ok" for v in checks.values())
    if not ready:
        log.error("not ready", extra={"event": "not_ready", "checks": checks, "problems": problems})
        details: dict[str, Any] = {**checks, "problems": problems} if problems else checks
        body = {"error": {"code": "unavailable", "message": "a dependency is not ready", "details": details}}
        return _json(body, 503)
    return _json({"status": "ready", "checks": checks})


ROUTES: list[tuple[str, re.Pattern[str], Handler]] = [
    ("GET", re.compile(r"^/healthz$"), healthz),
    ("GET", re.compile(r"^/readyz$"), readyz),
    ("GET", re.compile(r"^/config$"), public_config),
    ("POST", re.compile(r"^/jobs$"), create_job),
    ("GET", re.compile(r"^/jobs$"), list_jobs),
    ("GET", re.compile(r"^/jobs/(?P<id>[^/]+)$"), get_job),
    ("DELETE", re.compile(r"^/jobs/(?P<id>[^/]+)$"), delete_job),
    ("POST", re.compile(r"^/jobs/(?P<id>[^/]+)/cancel$"), cancel_job),
    ("GET", re.compile(r"^/jobs/(?P<id>[^/]+)/messages$"), thread_messages),
    ("GET", re.compile(r"^/jobs/(?P<id>[^/]+)/blocks$"), blocks),
    ("GET", re.compile(r"^/jobs/(?P<id>[^/]+)/events$"), job_events),
    ("POST", re.compile(r"^/jobs/(?P<id>[^/]+)/events-ticket$"), events_ticket),
    ("POST", re.compile(r"^/signed-urls$"), signed_urls),
    ("POST", re.compile(r"^/messages$"), refine),
]


def route(routes: list[tuple[str, re.Pattern[str], Handler]], method: str, path: str) -> tuple[Handler, dict[str, str]]:
    """Find the handler for a path (with or without the /api/nano-banana base)."""
    if path.startswith(BASE_PATH):
        path = path[len(BASE_PATH) :] or "/"
    path = path.rstrip("/") or "/"
    allowed = []
    for verb, pattern, handler in routes:
        match = pattern.match(path)
        if match:
            if verb == method or (verb == "GET" and method == "HEAD"):
                return handler, match.groupdict()
            allowed.append(verb)
    if allowed:
        raise MethodNotAllowed(f"use {' or '.join(allowed)} here", details={"allowed": allowed})
    raise NotFound("no such route", details={"path": path[:200]})


CORS_ALLOW_HEADERS = "Authorization, Content-Type, Idempotency-Key"
# What a cross-origin page may read: when to retry after 429/503, where a created job lives.
CORS_EXPOSE_HEADERS = "Retry-After, Location, RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset, X-Request-Id"


def handle(api: Api, request: Request, routes: list[tuple[str, re.Pattern[str], Handler]] = ROUTES) -> Response:
    """One API request: its log lines carry its id and trace, the answer carries X-Request-Id, and one
    `request` line records the outcome (status, error code, time until the response started)."""
    started = time.perf_counter()
    with logs.request_scope(request.headers.items(), api.services.settings.gcp_project) as fields:
        response = _with_cors(api, request, routes)
        if request.method == "GET" and response.status_code == 200 and response.mimetype == "application/json":
            _revalidated(request, response)
        response.headers["X-Request-Id"] = fields["requestId"]
        outcome: dict[str, Any] = {
            "event": "request",
            "method": request.method,
            "path": request.path[:200],
            "status": response.status_code,
            "durationMs": round((time.perf_counter() - started) * 1000, 1),
        }
        if response.status_code >= 400 and response.mimetype == "application/json":
            code = (response.get_json(silent=True) or {}).get("error", {}).get("code")
            if isinstance(code, str):
                outcome["code"] = code
        log.info("request", extra=outcome)
    return response


def _revalidated(request: Request, response: Response) -> None:
    """GET answers carry an ETag of their body and may be kept by the caller's browser, which asks again
    every time (`private, no-cache`): a poll of an unchanged job is a bodiless 304. Signed URLs are
    stable while young, so an unchanged job renders to the same bytes. Nothing is served without a
    fresh, authorised read: the ETag is computed from this caller's own answer."""
    response.set_etag(hashlib.sha256(response.get_data()).hexdigest()[:32])
    response.headers["Cache-Control"] = "private, no-cache"
    response.make_conditional(request)


def _with_cors(api: Api, request: Request, routes: list[tuple[str, re.Pattern[str], Handler]]) -> Response:
    """Dispatch one request, answering CORS for the builder's origins (NANO_BANANA_CORS_ORIGINS): the
    builder's page lives on another origin than the function, and sends an Authorization header, so every
    call is preflighted."""
    allowed = api.services.settings.cors_origins
    origin = request.headers.get("Origin")
    granted = origin if origin and ("*" in allowed or origin in allowed) else None
    if granted and request.method == "OPTIONS" and request.headers.get("Access-Control-Request-Method"):
        response = Response(status=204)
        response.headers["Access-Control-Allow-Methods"] = "GET, POST, DELETE"
        response.headers["Access-Control-Allow-Headers"] = CORS_ALLOW_HEADERS
        response.headers["Access-Control-Max-Age"] = "600"
    else:
        response = _dispatch(api, request, routes)
        if granted:
            response.headers["Access-Control-Expose-Headers"] = CORS_EXPOSE_HEADERS
    if granted:
        response.headers["Access-Control-Allow-Origin"] = granted
    if allowed:
        response.vary.add("Origin")  # the answer depends on the Origin header: caches must keep them apart
    return response


def _dispatch(api: Api, request: Request, routes: list[tuple[str, re.Pattern[str], Handler]]) -> Response:
    """Route one request; every failure becomes the error envelope, never a stack trace."""
    try:
        handler, params = route(routes, request.method, request.path)
        return handler(api, request, params)
    except NanoBananaError as exc:
        if exc.status >= 500:
            log.warning(exc.message, extra={"event": "request_failed", "code": exc.code, "path": request.path[:200]})
        return error_response(exc)
    except Exception as exc:
        log.error(
            "unhandled error",
            extra={"event": "internal_error", "errorType": type(exc).__name__, "path": request.path[:200]},
        )
        return error_response(NanoBananaError("internal error"))
