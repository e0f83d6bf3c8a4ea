"""The task entry points' edge: authenticate the platform's call, run one use case, answer so that
Cloud Tasks retries only when a retry can help (at-least-once delivery)."""

from __future__ import annotations

import json
import logging
import re
import uuid

from flask import Request, Response

from nano_banana import log as log_context
from nano_banana import usecases
from nano_banana.domain import WEBHOOK_EVENTS
from nano_banana.errors import NanoBananaError, TransientError, Unauthenticated, Unavailable
from nano_banana.http import error_response
from nano_banana.settings import Settings

log = logging.getLogger("nano_banana")


def _answer(body: dict[str, object], status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, mimetype="application/json")


def authenticate(settings: Settings, request: Request, kind: str) -> None:
    """Production calls carry a Google-signed OIDC token: Cloud Tasks' account for generate/expire, Cloud
    Scheduler's for sweep. Only explicit configuration turns the check off."""
    if settings.queue != "cloudtasks" or not settings.verify_task_oidc:
        return
    from nano_banana.task_auth import verify_task_request

    if kind == "sweep":
        account, audience = settings.scheduler_service_account, settings.sweep_url
    else:
        account = settings.tasks_service_account
        targets = {
            "generate": settings.generate_url,
            "expire": settings.expire_url,
            "webhook": settings.webhook_target_url,
        }
        audience = settings.task_oidc_audience or targets.get(kind)
    if not account:
        raise Unauthenticated("task authentication is not configured")
    verify_task_request(
        request.headers.get("Authorization"),
        audience=audience or request.base_url,
        service_account=account,
        certs_url=settings.task_oidc_certs_url,
    )


def _task_body(request: Request) -> tuple[uuid.UUID | None, str | None]:
    """The task's job id (None: malformed) and, for a webhook task, its event."""
    try:
        body = json.loads(request.get_data(cache=False)[:4096])
        event = body.get("webhookEvent")
        return uuid.UUID(str(body["jobId"])), event if event in WEBHOOK_EVENTS else None
    except (ValueError, KeyError, TypeError, AttributeError):
        return None, None


_TASK_NAME = re.compile(r"^[A-Za-z0-9_-]{1,500}$")


def handle_task(services: usecases.Services, request: Request, kind: str) -> Response:
    """One task delivery; its log lines also name the Cloud Tasks task and which retry this is."""
    with log_context.request_scope(request.headers.items(), services.settings.gcp_project) as fields:
        name = request.headers.get("X-CloudTasks-TaskName", "")
        retries = request.headers.get("X-CloudTasks-TaskRetryCount", "")
        if _TASK_NAME.match(name):
            fields["taskName"] = name
        if retries.isdigit() and len(retries) < 10:
            fields["taskRetryCount"] = retries
        return _handle_task(services, request, kind, first_delivery=retries == "0")


def _handle_task(services: usecases.Services, request: Request, kind: str, *, first_delivery: bool) -> Response:
    try:
        authenticate(services.settings, request, kind)
        if kind == "sweep":
            return _answer({"expired": usecases.sweep(services)})
        job_id, event = _task_body(request)
        if job_id is None or (kind == "webhook" and event is None):  # a retry cannot fix a malformed task
            log.warning("malformed task ignored", extra={"event": "task_ignored", "task": kind})
            return _answer({"ignored": 'body must be {"jobId": "<uuid>"} (and a webhook task\'s "webhookEvent")'})
        if kind == "webhook":
            from nano_banana.http import job_renderer

            assert event is not None
            usecases.deliver_webhook(services, job_id, event, render=job_renderer(services))
            return _answer({"jobId": str(job_id), "webhookEvent": event})
        if kind == "generate":
            job = usecases.run_generation(services, job_id, retry_if_missing=first_delivery)
        else:
            job = usecases.expire_job(services, job_id)
        return _answer({"jobId": str(job_id), "status": job.status.value if job else "unchanged"})
    except (TransientError, Unavailable) as exc:
        log.warning("task will be retried", extra={"event": "task_retry", "task": kind, "reason": str(exc)[:200]})
        return _answer({"retry": True}, 503)
    except NanoBananaError as exc:
        return error_response(exc)
    except Exception as exc:
        log.error("task failed", extra={"event": "task_error", "task": kind, "errorType": type(exc).__name__})
        return _answer({"retry": True}, 500)
