"""Completion webhooks (docs/webhooks.md): what a creation asked for, the delivery task handed to the queue
after a transition recorded its delivery (adapters/queries.sql `record_webhook`), the delivery itself, and
the sweep's step for deliveries whose task never got to run."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from standardwebhooks.webhooks import Webhook as StandardWebhook

from nano_banana.domain import Job, WebhookDelivery, webhook_id
from nano_banana.errors import TransientError, WebhookUrlInvalid
from nano_banana.outbound import WebhookPolicy, check_events, check_url
from nano_banana.ports import Task, WebhookAnswer
from nano_banana.settings import Settings
from nano_banana.usecases.services import Services

log = logging.getLogger("nano_banana")

# The webhooks queue's retry window (terraform/tasks.tf max_retry_duration is a little longer): an attempt
# failing after this long gives the delivery up instead of asking for another retry.
RETRY_WINDOW = timedelta(hours=24)
# The sweep hands over deliveries no attempt reached after this long (their task was lost), a batch a run.
UNSENT_GRACE = timedelta(seconds=60)
UNSENT_BATCH = 50

JobRenderer = Callable[[Job], dict[str, Any]]
"""The job as GET /jobs/{id} renders it (signed URLs included): the `data` of a delivery."""


def policy(settings: Settings) -> WebhookPolicy:
    return WebhookPolicy(
        http_hosts=settings.webhook_http_hosts,
        allowed_hosts=settings.webhook_allowed_hosts,
        ports=settings.webhook_ports,
    )


def webhook_request(
    settings: Settings, url: str | None, events: Sequence[str] | None
) -> tuple[str | None, tuple[str, ...]]:
    """A creation's `webhookUrl` and `webhookEvents`, checked (422 `webhook_url_invalid` otherwise)."""
    if url is None:
        if events is not None:
            raise WebhookUrlInvalid(
                "webhookEvents needs a webhookUrl", details={"field": "webhookEvents", "reason": "no_url"}
            )
        return None, ()
    if not settings.webhooks_configured:
        raise WebhookUrlInvalid(
            "this deployment sends no webhooks (see docs/webhooks.md: NANO_BANANA_WEBHOOK_SIGNING_SECRETS)",
            details={"field": "webhookUrl", "reason": "not_configured"},
        )
    check_url(url, policy(settings))
    return url, check_events(events)


def webhook_fingerprint(url: str | None, events: Sequence[str]) -> tuple[str, ...]:
    """The webhook's part of an Idempotency-Key fingerprint: nothing without one (earlier fingerprints of
    jobs without a webhook stay valid), else the URL and the events."""
    return () if url is None else ("webhook", url, ",".join(events))


def webhook_task(job_id: uuid.UUID, event: str) -> Task:
    return Task(kind="webhook", job_id=job_id, event=event, dispatch_deadline_s=30)


def hand_over(svc: Services, job: Job, event: str) -> None:
    """After a won transition that recorded a delivery: enqueue its task (named after (job, event): a
    second enqueue is harmless). A failure is logged, never raised: the sweep hands the delivery over."""
    if job.webhook is None or event not in job.webhook.events:
        return
    try:
        svc.queue.enqueue(webhook_task(job.id, event))
    except Exception as exc:
        log.warning(
            "could not enqueue a webhook delivery; the sweep will",
            extra={"event": "webhook_enqueue_failed", "jobId": str(job.id), "errorType": type(exc).__name__},
        )


def signed_headers(secrets: Sequence[str], msg_id: str, at: datetime, body: bytes) -> dict[str, str]:
    """Standard Webhooks headers; every secret signs (space-separated `v1,…`), so rotation needs no downtime."""
    text = body.decode()
    return {
        "Content-Type": "application/json",
        "User-Agent": "nano-banana-webhooks/1",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": " ".join(StandardWebhook(secret).sign(msg_id, at, text) for secret in secrets),
    }


def deliver_webhook(svc: Services, job_id: uuid.UUID, event: str, *, render: JobRenderer) -> None:
    """The webhook task: POST the job's event, signed, and record the attempt. Raises TransientError (the
    queue retries, with the same webhook-id) on a non-2xx answer, a timeout or a connection error within
    RETRY_WINDOW; a 410, a refused address or a delivery already settled (or deleted) ends it."""
    job = svc.store.get_job(job_id)
    delivery = _delivery(job, event)
    if job is None or job.webhook is None or delivery is None or delivery.state != "pending":
        log.info("no webhook delivery owed", extra={"event": "webhook_not_owed", "jobId": str(job_id), "on": event})
        return
    if svc.webhooks is None or not svc.settings.webhook_signing_secrets:
        raise TransientError("this process cannot send webhooks (no sender or no signing secrets)")
    now = svc.clock()
    msg_id = webhook_id(job.id, event)
    body = json.dumps(
        {"type": f"job.{event}", "timestamp": now.isoformat().replace("+00:00", "Z"), "data": render(job)},
        separators=(",", ":"),
    ).encode()
    headers = signed_headers(svc.settings.webhook_signing_secrets, msg_id, now, body)
    answer = svc.webhooks.post(job.webhook.url, body, headers)
    _settle(svc, job, delivery, answer, now)


def _delivery(job: Job | None, event: str) -> WebhookDelivery | None:
    if job is None or job.webhook is None:
        return None
    return next((d for d in job.webhook.deliveries if d.event == event), None)


def _settle(svc: Services, job: Job, delivery: WebhookDelivery, answer: WebhookAnswer, now: datetime) -> None:
    """Record the attempt and log it; raise TransientError when the queue should try again."""

    def record(state: str, reason: str | None) -> None:
        svc.store.record_webhook_attempt(
            job.id, delivery.event, state=state, status=answer.status, reason=reason, now=now
        )

    failure = answer.error or f"HTTP {answer.status}"
    if answer.status is not None and 200 <= answer.status < 300:
        record("delivered", None)
        _log_attempt("webhook_delivered", logging.INFO, job, delivery, answer, None)
    elif answer.status == 410:
        record("gone", "the receiver answered 410 Gone")
        _log_attempt("webhook_gone", logging.INFO, job, delivery, answer, "410 Gone")
    elif answer.refused is not None:
        record("refused", f"refused: {answer.refused}")
        _log_attempt("webhook_refused", logging.WARNING, job, delivery, answer, answer.refused)
    elif now - delivery.created_at >= RETRY_WINDOW:
        record("failed", failure)
        _log_attempt("webhook_abandoned", logging.ERROR, job, delivery, answer, failure)
    else:
        record("pending", failure)
        _log_attempt("webhook_attempt_failed", logging.WARNING, job, delivery, answer, failure)
        raise TransientError(f"webhook delivery failed ({failure}); the queue retries it")


def _log_attempt(  # noqa: PLR0917 (one line's fields)
    event: str, level: int, job: Job, delivery: WebhookDelivery, answer: WebhookAnswer, reason: str | None
) -> None:
    fields = {
        "event": event,
        "jobId": str(job.id),
        "projectId": str(job.project_id),
        "on": delivery.event,
        "attempt": delivery.attempts + 1,
        "httpStatus": answer.status,
        "reason": reason,
    }
    log.log(level, event, extra=fields)


def hand_over_unsent(svc: Services) -> int:
    """Sweep step: enqueue the deliveries recorded at least UNSENT_GRACE ago that no attempt reached (a
    transition whose enqueue failed or never ran); a task of that name that exists makes it a no-op."""
    now = svc.clock()
    unsent = svc.store.unsent_webhooks(before=now - UNSENT_GRACE, after=now - RETRY_WINDOW, limit=UNSENT_BATCH)
    handed = 0
    for job_id, event in unsent:
        if svc.queue.enqueue(webhook_task(job_id, event)):
            handed += 1
            log.info(
                "webhook delivery handed over by the sweep",
                extra={"event": "webhook_requeued", "jobId": str(job_id), "on": event},
            )
    return handed
