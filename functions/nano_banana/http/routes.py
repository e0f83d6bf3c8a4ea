"""One handler per route: parse, call one use case, render."""

from __future__ import annotations

import contextvars
import json
import logging
import re
import uuid
from collections.abc import Callable, Generator, Iterator
from datetime import timedelta
from typing import Any

from flask import Request, Response

from nano_banana import usecases
from nano_banana.domain import ASPECT_RATIOS
from nano_banana.errors import (
    StorageMisconfigured,
    Unavailable,
    UnsupportedMediaType,
)
from nano_banana.http.api import BASE_PATH, Api
from nano_banana.http.bodies import (
    BlocksQuery,
    ListQuery,
    RefineBody,
    SignUrlsBody,
    create_command,
    idempotency_key,
    json_body,
    parse_uuid,
    validated,
)
from nano_banana.http.rendering import _iso, json_response, render_block, render_jobs
from nano_banana.http.usage import get_usage
from nano_banana.images import ACCEPTED, upload_budget
from nano_banana.models import CAPABILITIES
from nano_banana.uploads import FORM_OVERHEAD_BYTES

log = logging.getLogger("nano_banana")


Handler = Callable[[Api, Request, dict[str, str]], Response]


def _user(api: Api, request: Request) -> uuid.UUID:
    return api.verifier.user_id(request.headers.get("Authorization"))


def create_job(api: Api, request: Request, _: dict[str, str]) -> Response:
    user_id = _user(api, request)
    # A multipart body (the image and its references) stays in memory until the job is stored (plus one
    # copy while it is parsed).
    settings = api.services.settings
    cap = settings.max_file_bytes + settings.max_reference_bytes + FORM_OVERHEAD_BYTES
    held = 2 * min(request.content_length or cap, cap) if request.mimetype == "multipart/form-data" else 0
    with upload_budget().hold(held):
        created = usecases.create_job(api.services, user_id, create_command(api, request))
    body = {"jobId": str(created.job.id), "status": created.job.status.value, "threadId": str(created.job.thread_id)}
    return json_response(
        body, 200 if created.replayed else 202, headers={"Location": f"{BASE_PATH}/jobs/{created.job.id}"}
    )


def list_jobs(api: Api, request: Request, _: dict[str, str]) -> Response:
    user_id = _user(api, request)
    query = validated(ListQuery, request.args.to_dict())
    page = usecases.list_jobs(
        api.services, user_id, query.project_id, status=query.status, limit=query.limit, cursor=query.cursor
    )
    return json_response({"jobs": render_jobs(api, page.jobs), "nextCursor": page.next_cursor})


def get_job(api: Api, request: Request, params: dict[str, str]) -> Response:
    user_id = _user(api, request)
    return json_response(
        render_jobs(api, [usecases.get_job(api.services, user_id, parse_uuid(params["id"], "jobId"))])[0]
    )


def cancel_job(api: Api, request: Request, params: dict[str, str]) -> Response:
    user_id = _user(api, request)
    return json_response(
        render_jobs(api, [usecases.cancel_job(api.services, user_id, parse_uuid(params["id"], "jobId"))])[0]
    )


def delete_job(api: Api, request: Request, params: dict[str, str]) -> Response:
    user_id = _user(api, request)
    deletion = usecases.delete_job(api.services, user_id, parse_uuid(params["id"], "jobId"))
    return json_response({"deleted": [str(job_id) for job_id in deletion.job_ids]})


def refine(api: Api, request: Request, _: dict[str, str]) -> Response:
    user_id = _user(api, request)
    if request.mimetype != "application/json":
        raise UnsupportedMediaType("send application/json", details={"contentType": request.mimetype[:100]})
    body = validated(RefineBody, json_body(request))
    command = usecases.Refine(
        body.job_id,
        body.variant_id,
        body.prompt,
        idempotency_key(request),
        webhook_url=body.webhook_url,
        webhook_events=body.webhook_events,
    )
    created = usecases.refine(api.services, user_id, command)
    result = {
        "jobId": str(created.job.id),
        "messageId": str(created.message_id) if created.message_id else None,
        "status": created.job.status.value,
        "threadId": str(created.job.thread_id),
    }
    return json_response(
        result, 200 if created.replayed else 202, headers={"Location": f"{BASE_PATH}/jobs/{created.job.id}"}
    )


def thread_messages(api: Api, request: Request, params: dict[str, str]) -> Response:
    user_id = _user(api, request)
    thread_id, messages = usecases.thread(api.services, user_id, parse_uuid(params["id"], "jobId"))
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
    return json_response({"threadId": str(thread_id), "messages": rendered})


def blocks(api: Api, request: Request, params: dict[str, str]) -> Response:
    user_id = _user(api, request)
    query = validated(BlocksQuery, request.args.to_dict())
    job = usecases.get_job(api.services, user_id, parse_uuid(params["id"], "jobId"))
    source = job
    if query.type == "image_compare" and query.before == "original" and job.parent_job_id is not None:
        source = usecases.original(api.services, job)
    return json_response(render_block(api, job, query, before_of=source))


def job_events(api: Api, request: Request, params: dict[str, str]) -> Response:
    """Server-sent events: the job now and on every change (Postgres LISTEN/NOTIFY) until it ends. The
    caller authenticates with its Authorization header or, from EventSource, with a stream ticket."""
    job_id = parse_uuid(params["id"], "jobId")
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
    paths = list(dict.fromkeys(validated(SignUrlsBody, json_body(request)).paths))
    visible = usecases.visible_paths(api.services, user_id, paths)
    signed = api.signer.sign((p for p in paths if p in visible), degrade=False)  # "not found" must mean it
    body = {
        "urls": signed.urls,
        "notFound": [p for p in paths if p not in signed.urls],  # not theirs, or no object behind it
        "expiresAt": _iso(signed.expires_at),
    }
    return json_response(body)


def events_ticket(api: Api, request: Request, params: dict[str, str]) -> Response:
    """A ticket for one job's event stream, to put in the EventSource URL instead of the access token
    (URLs get logged). Valid until a minute after the job's deadline."""
    user_id = _user(api, request)
    job = usecases.get_job(api.services, user_id, parse_uuid(params["id"], "jobId"))
    expires = max(job.deadline_at, api.services.clock()) + timedelta(seconds=60)
    ticket = api.tickets.issue(job.id, user_id, expires)
    body = {
        "ticket": ticket,
        "url": f"{BASE_PATH}/jobs/{job.id}/events?ticket={ticket}",
        "expiresAt": _iso(expires),
    }
    return json_response(body, headers={"Cache-Control": "no-store"})


def public_config(api: Api, _request: Request, _params: dict[str, str]) -> Response:
    s = api.services.settings
    return json_response(
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
            # The models a job may name (the first is the default), with what each takes (models.py).
            "models": [
                {"name": m.name, "resolutions": list(m.resolutions), "maxReferences": m.max_references}
                for m in map(CAPABILITIES.__getitem__, s.models)
            ],
            "maxReferenceBytes": s.max_reference_bytes,
        }
    )


def healthz(api: Api, _request: Request, _params: dict[str, str]) -> Response:
    return json_response({"status": "ok"})


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
        return json_response(body, 503)
    return json_response({"status": "ready", "checks": checks})


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
    ("GET", re.compile(r"^/usage$"), get_usage),
]
