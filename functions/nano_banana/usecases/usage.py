"""What a project spends: its monthly image budget (read, cached, reported as it crosses 80 % and 100 %),
the settlement of a job's reservation to the images it stored, what each job used, and GET /usage."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as midnight

from nano_banana.domain import Job, JobStatus, next_month
from nano_banana.errors import InvalidRequest
from nano_banana.ports import BudgetUse, Reservation, UsageBucket
from nano_banana.together import settle as side_by_side
from nano_banana.usecases.services import Services, require_access

log = logging.getLogger("nano_banana")

BUDGET_TTL_S = 30.0
"""How long an instance trusts a project's budget it read: an edit of pip_ai_project_budgets applies
within this time (docs/operations.md)."""

THRESHOLDS = (80, 100)
"""Percentages of a project's month at which `budget_threshold` is logged (once each, by the creation
that crosses it)."""


@dataclass
class _Budgets:
    """Per instance: project -> (its budget or None, when read)."""

    read: dict[uuid.UUID, tuple[int | None, float]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def monthly_limit(svc: Services, project_id: uuid.UUID) -> int | None:
    """The project's monthly image budget (None: none): its row in pip_ai_project_budgets, else
    NANO_BANANA_PROJECT_MONTHLY_IMAGES; 0 means none. One short query per project per BUDGET_TTL_S."""
    budgets = svc.extras.setdefault("budgets", _Budgets())
    assert isinstance(budgets, _Budgets)
    now = time.monotonic()
    with budgets.lock:
        cached = budgets.read.get(project_id)
    if cached is not None and now - cached[1] < BUDGET_TTL_S:
        return cached[0]
    override = svc.store.project_budget(project_id)
    value = override if override is not None else svc.settings.project_monthly_images
    limit = value or None
    with budgets.lock:
        if len(budgets.read) > 10_000:
            budgets.read.clear()
        budgets.read[project_id] = (limit, now)
    return limit


def note_budget(reservation: Reservation) -> None:
    """Log `budget_threshold` when this reservation took the project's month across 80 % or 100 % of its
    budget (the alert in monitoring.tf counts them)."""
    use = reservation.budget
    if use is None or use.limit is None or reservation.images <= 0:
        return
    before, after = use.counted - reservation.images, use.counted
    for percent in THRESHOLDS:
        mark = use.limit * percent / 100
        if before < mark <= after:
            log.warning(
                "budget_threshold",
                extra={
                    "event": "budget_threshold",
                    "projectId": str(reservation.project_id),
                    "jobId": str(reservation.job_id),
                    "month": use.month,
                    "percent": percent,
                    "limit": use.limit,
                    "used": use.used,
                    "reserved": use.reserved,
                },
            )


def _ms(start: datetime | None, end: datetime | None) -> int | None:
    return round((end - start).total_seconds() * 1000) if start is not None and end is not None else None


def timings(job: Job) -> dict[str, int | None]:
    """queuedMs (created -> started), generationMs (the model call(s)), totalMs (created -> ended); None
    where the job has not got there (or the model was never called)."""
    return {
        "queuedMs": _ms(job.created_at, job.started_at),
        "generationMs": job.usage.generation_ms,
        "totalMs": _ms(job.created_at, job.finished_at),
    }


def usage(job: Job) -> dict[str, object]:
    """What the job used: its model, the images it stored and the model's token counts (None where the
    model did not report them)."""
    return {
        "model": job.model,
        "images": len(job.variants),
        "promptTokens": job.usage.prompt_tokens,
        "outputTokens": job.usage.output_tokens,
        "totalTokens": job.usage.total_tokens,
    }


def usage_fields(job: Job) -> dict[str, object]:
    """`usage` and `timings` flattened for a log line (the metrics count images and tokens by model)."""
    return usage(job) | timings(job)


def stored_images(job: Job) -> int:
    """What a job that ended counts against its month: the images it stored (a failed, canceled or expired
    job stored none)."""
    return len(job.variants) if job.status is JobStatus.succeeded else 0


def settle(svc: Services, job: Job) -> bool:
    """Settle the job's month entry to the images it stored (idempotent). A failure is logged, never raised:
    the entry stays reserved (the month counts the images asked for: never too few) until settled again."""
    return settle_to(svc, job.project_id, job.id, job.deadline_at, stored_images(job))


def settle_to(svc: Services, project_id: uuid.UUID, job_id: uuid.UUID, deadline_at: datetime, images: int) -> bool:
    """`settle` for a job known by its ids and deadline (a deleted row: 0 images). The month is found from
    the deadline less the timeout: the creation's clock, the one its reservation used (the row's
    created_at is the database's)."""
    reserved_at = deadline_at - timedelta(seconds=svc.settings.timeout_s)
    try:
        svc.limits.settle_images(project_id=project_id, job_id=job_id, reserved_at=reserved_at, images=images)
    except Exception:
        log.exception(
            "could not settle a job's images",
            extra={"event": "settle_failed", "jobId": str(job_id), "projectId": str(project_id)},
        )
        return False
    return True


MAX_DAYS = 92
"""The longest range GET /usage answers (a quarter)."""

EARLIEST, LATEST = date(2000, 1, 1), date(9000, 12, 31)
"""The days GET /usage accepts (no job lies outside; the arithmetic on them never overflows)."""


@dataclass(frozen=True, slots=True)
class ProjectUsage:
    """GET /usage: every UTC day of [first, last] (days without jobs as zeros), the totals over the range,
    and the project's current month against its budget."""

    project_id: uuid.UUID
    first: date
    last: date
    days: list[UsageBucket]
    totals: UsageBucket
    budget: BudgetUse
    resets_at: datetime


def _empty(day: date | None) -> UsageBucket:
    return UsageBucket(day, 0, {s.value: 0 for s in JobStatus}, 0, 0, 0, 0, None, None)


def project_usage(
    svc: Services, user_id: uuid.UUID, project_id: uuid.UUID, first: date | None, last: date | None
) -> ProjectUsage:
    """A member's view of the project's usage over UTC days `first`..`last` (default: this month so far),
    at most MAX_DAYS. One round trip: membership ‖ the usage query ‖ the month's budget state."""
    now = svc.clock().astimezone(UTC)
    last = last or now.date()
    first = first or last.replace(day=1)
    for name, day in (("from", first), ("to", last)):
        if not EARLIEST <= day <= LATEST:
            raise InvalidRequest(f"`{name}` must lie between {EARLIEST} and {LATEST}", details={"field": name})
    if first > last:
        raise InvalidRequest("`from` must not be after `to`", details={"field": "from"})
    if (last - first).days + 1 > MAX_DAYS:
        raise InvalidRequest(f"a usage range is at most {MAX_DAYS} days", details={"field": "to", "maxDays": MAX_DAYS})
    start = datetime.combine(first, midnight.min, UTC)
    end = datetime.combine(last + timedelta(days=1), midnight.min, UTC)
    access, rows, month, limit = side_by_side(
        svc.fanout,
        lambda: require_access(svc, project_id, user_id),
        lambda: svc.store.usage_days(project_id, start, end),
        lambda: svc.limits.month_usage(project_id, now),
        lambda: monthly_limit(svc, project_id),
    )
    access.get()
    found = {bucket.day: bucket for bucket in rows.get()}
    days = [
        found.get(first + timedelta(days=i)) or _empty(first + timedelta(days=i))
        for i in range((last - first).days + 1)
    ]
    used = month.get()
    return ProjectUsage(
        project_id=project_id,
        first=first,
        last=last,
        days=days,
        totals=found.get(None) or _empty(None),
        budget=BudgetUse(used.month, used.used, used.reserved, limit.get()),
        resets_at=next_month(now),
    )
