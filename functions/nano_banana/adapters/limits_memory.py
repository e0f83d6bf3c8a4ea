"""In-process rate window and project leases: the embedded twin of `limits_firestore`.

`decide` is the one admission algorithm; both adapters call it on their stored maps, so the memory
twin and Firestore behave identically (one contract suite checks both). Idempotency-Key claims live
beside the user's rate window, keyed by `key_claim(key)` (a hash: the key itself is never stored).
A project's monthly images live per UTC month: `reserved {jobId: images}` for jobs still running and
`settled {jobId: images stored}` for jobs that ended; `decide_budget` is the one budget algorithm.
"""

from __future__ import annotations

import functools
import hashlib
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from nano_banana.domain import month_of, next_month
from nano_banana.errors import BudgetExceeded, ConcurrencyLimited, RateLimited
from nano_banana.ports import (
    BudgetUse,
    Clock,
    Holding,
    HoldingKind,
    HoldingsPage,
    KeyClaimed,
    LimitsReading,
    Reservation,
)

WINDOW_S = 3600.0
CONCURRENCY_RETRY_S = 5.0
"""`Retry-After` of `concurrency_limited`: a slot frees the moment any active job ends, which nothing here
can foresee (a preview job ends in milliseconds, a model call in seconds to minutes), so the hint is a
short poll, never the time until the earliest lease expires (deadline + 60 s: up to 6 minutes). That
bound still comes along as `details.slotFreeBySeconds`: by then a slot is free even if no job ends."""

Claims = Mapping[str, tuple[str, float]]
"""A user's Idempotency-Key claims: key hash -> (job id, expires at in epoch seconds)."""


def key_claim(idempotency_key: str) -> str:
    """The name a claim is stored under: a hash of the key (claims live in one document per user)."""
    return hashlib.sha256(b"nano-banana-idempotency-key\x1f" + idempotency_key.encode()).hexdigest()[:40]


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one admission: the maps to store (pruned, with the job's entries)."""

    admits: dict[str, float]
    leases: dict[str, float]
    claims: dict[str, tuple[str, float]]
    at: float
    lease_expires_at: float
    # False when the job already held every entry (an idempotent re-reserve): nothing to write.
    changed: bool
    # The project's month with the job's images (None: no images were asked for).
    budget: BudgetDecision | None = None


def decide(
    admits: Mapping[str, float],
    leases: Mapping[str, float],
    *,
    job_key: str,
    now: float,
    lease_expires_at: float,
    rate_per_hour: int,
    max_active: int,
    claims: Claims | None = None,
    claim: str | None = None,
    budget: Callable[[], BudgetDecision] | None = None,
) -> Decision:
    """Admit `job_key` into a user's window and a project's leases, and give it `claim` (a hashed
    Idempotency-Key), or raise (nothing to write): KeyClaimed first, when another job holds the claim;
    then RateLimited, BudgetExceeded (`budget`: `decide_budget` on the project's month) and
    ConcurrencyLimited, in that order (the most lasting refusal first).

    Times are epoch seconds. Window entries older than an hour, expired leases and expired claims are
    pruned; a claim expires with its job's lease.
    """
    window = {k: t for k, t in admits.items() if t > now - WINDOW_S}
    live = {k: t for k, t in leases.items() if t > now}
    live_claims = {k: (j, t) for k, (j, t) in (claims or {}).items() if t > now}
    if claim is not None and (holder := live_claims.get(claim)) is not None and holder[0] != job_key:
        raise KeyClaimed(uuid.UUID(holder[0]))
    held_at = window.get(job_key)
    held_lease = live.get(job_key)
    # Rate first: a user over their hourly budget learns that, whatever their project's load.
    if held_at is None and len(window) >= rate_per_hour:
        raise RateLimited(
            f"at most {rate_per_hour} jobs per hour",
            retry_after_s=min(window.values()) + WINDOW_S - now,
            limit=rate_per_hour,
            details={"limit": rate_per_hour, "window": "1h"},
        )
    month = budget() if budget is not None else None
    if (
        held_at is not None
        and held_lease is not None
        and (claim is None or claim in live_claims)
        and (month is None or not month.changed)
    ):
        return Decision(window, live, live_claims, held_at, held_lease, changed=False, budget=month)
    if held_lease is None and len(live) >= max_active:
        until_lease_expires = max(1.0, min(live.values()) - now)
        raise ConcurrencyLimited(
            f"at most {max_active} active jobs per project; a slot frees the moment one of them ends",
            retry_after_s=min(CONCURRENCY_RETRY_S, until_lease_expires),
            limit=max_active,
            details={"limit": max_active, "slotFreeBySeconds": int(until_lease_expires + 0.999)},
        )
    at = held_at if held_at is not None else now
    expires = held_lease if held_lease is not None else lease_expires_at
    if claim is not None:
        live_claims[claim] = (job_key, expires)
    return Decision(
        {**window, job_key: at}, {**live, job_key: expires}, live_claims, at, expires, changed=True, budget=month
    )


def check_admission(
    admits: Mapping[str, float],
    leases: Mapping[str, float],
    claims: Claims,
    *,
    claim: str | None,
    now: float,
    rate_per_hour: int,
    max_active: int,
) -> None:
    """What `decide` would say to a new job now, without deciding anything: raises RateLimited /
    ConcurrencyLimited; passes when `claim` is held (that request is answered at the reservation)."""
    try:
        decide(
            admits,
            leases,
            job_key=f"check-{uuid.uuid4()}",
            now=now,
            lease_expires_at=now + 1,
            rate_per_hour=rate_per_hour,
            max_active=max_active,
            claims=claims,
            claim=claim,
        )
    except KeyClaimed:
        return


# A job settles in the month it reserved in; the moment a settlement is given may be minutes off the
# reservation's (another instance's clock, a timeout setting changed since): within this, both months
# around a month's start are looked at.
SETTLE_SKEW = timedelta(minutes=5)


def settle_months(reserved_at: datetime) -> list[str]:
    """The months a job reserved at about `reserved_at` may have reserved in (the likeliest first)."""
    own = month_of(reserved_at)
    return [own, *sorted({month_of(reserved_at - SETTLE_SKEW), month_of(reserved_at + SETTLE_SKEW)} - {own})]


@dataclass(frozen=True, slots=True)
class BudgetDecision:
    """The month's `reserved` map to store (with the job's entry) and what the month counts after it."""

    reserved: dict[str, int]
    use: BudgetUse
    changed: bool


def decide_budget(
    reserved: Mapping[str, int],
    settled: Mapping[str, int],
    *,
    job_key: str,
    images: int,
    limit: int | None,
    month: str,
    now: datetime,
) -> BudgetDecision:
    """Reserve `images` for `job_key` in a project's month, or raise BudgetExceeded (nothing to write) when
    the month's settled and reserved images plus these would pass `limit` (None: no budget). A job that
    already holds an entry (reserved or settled) is not counted twice."""
    use = BudgetUse(month, sum(settled.values()), sum(reserved.values()), limit)
    if job_key in reserved or job_key in settled:
        return BudgetDecision(dict(reserved), use, changed=False)
    if limit is not None and use.counted + images > limit:
        raise BudgetExceeded(
            f"this project may make {limit} images per month; {use.counted} are used or reserved",
            retry_after_s=(next_month(now) - now).total_seconds(),
            limit=limit,
            details={"limit": limit, "used": use.used, "reserved": use.reserved, "month": month},
        )
    return BudgetDecision(
        {**reserved, job_key: images}, BudgetUse(month, use.used, use.reserved + images, limit), changed=True
    )


def to_epoch(moment: datetime) -> float:
    return moment.timestamp()


def from_epoch(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def budget_of(
    reserved: Mapping[str, int],
    settled: Mapping[str, int],
    *,
    job_key: str,
    images: int,
    limit: int | None,
    now: datetime,
) -> Callable[[], BudgetDecision] | None:
    """`decide`'s budget step on a project's month as read (None: the job reserves no images)."""
    if images <= 0:
        return None
    return functools.partial(
        decide_budget, reserved, settled, job_key=job_key, images=images, limit=limit, month=month_of(now), now=now
    )


def reservation_of(
    decision: Decision,
    *,
    user_id: uuid.UUID,
    project_id: uuid.UUID,
    job_id: uuid.UUID,
    claim: str | None,
    images: int,
) -> Reservation:
    return Reservation(
        user_id=user_id,
        project_id=project_id,
        job_id=job_id,
        at=from_epoch(decision.at),
        lease_expires_at=from_epoch(decision.lease_expires_at),
        claim=claim,
        images=images if decision.budget is not None else 0,
        budget=decision.budget.use if decision.budget is not None else None,
    )


def _joined(month: tuple[dict[str, int], dict[str, int]] | None) -> set[str]:
    return set(month[0]) | set(month[1]) if month is not None else set()


class MemoryLimits:
    """`Limits` in one process: per user {jobId: admittedAt}, per project {jobId: leaseExpiresAt}."""

    def __init__(self, rate_per_hour: int, max_active_per_project: int, clock: Clock) -> None:
        self._rate = rate_per_hour
        self._max_active = max_active_per_project
        self._clock = clock
        self._lock = threading.Lock()
        self._admits: dict[uuid.UUID, dict[str, float]] = {}
        self._leases: dict[uuid.UUID, dict[str, float]] = {}
        self._claims: dict[uuid.UUID, dict[str, tuple[str, float]]] = {}
        # (project, "YYYY-MM") -> (reserved {jobId: images}, settled {jobId: images stored})
        self._months: dict[tuple[uuid.UUID, str], tuple[dict[str, int], dict[str, int]]] = {}

    def check(
        self, *, user_id: uuid.UUID, project_id: uuid.UUID, idempotency_key: str | None = None, images: int = 0
    ) -> LimitsReading:
        """Raise RateLimited / ConcurrencyLimited as `reserve` would now; reserves nothing."""
        with self._lock:
            admits = dict(self._admits.get(user_id, {}))
            leases = dict(self._leases.get(project_id, {}))
            claims = dict(self._claims.get(user_id, {}))
        check_admission(
            admits,
            leases,
            claims,
            claim=key_claim(idempotency_key) if idempotency_key is not None else None,
            now=to_epoch(self._clock()),
            rate_per_hour=self._rate,
            max_active=self._max_active,
        )
        return LimitsReading(user_id, project_id)

    def reserve(
        self,
        *,
        user_id: uuid.UUID,
        project_id: uuid.UUID,
        job_id: uuid.UUID,
        lease_expires_at: datetime,
        idempotency_key: str | None = None,
        reading: LimitsReading | None = None,  # one lock, one step: nothing to save
        images: int = 0,
        monthly_images: int | None = None,
    ) -> Reservation:
        """Admit one job, claim its key and reserve its images, or raise KeyClaimed / RateLimited /
        BudgetExceeded / ConcurrencyLimited, reserving nothing."""
        claim = key_claim(idempotency_key) if idempotency_key is not None else None
        now = self._clock()
        month = (project_id, month_of(now))
        with self._lock:
            reserved, settled = self._months.get(month, ({}, {}))
            decision = decide(
                self._admits.get(user_id, {}),
                self._leases.get(project_id, {}),
                job_key=str(job_id),
                now=to_epoch(now),
                lease_expires_at=to_epoch(lease_expires_at),
                rate_per_hour=self._rate,
                max_active=self._max_active,
                claims=self._claims.get(user_id, {}),
                claim=claim,
                budget=budget_of(reserved, settled, job_key=str(job_id), images=images, limit=monthly_images, now=now),
            )
            self._admits[user_id] = decision.admits
            self._leases[project_id] = decision.leases
            self._claims[user_id] = decision.claims
            if decision.budget is not None:
                self._months[month] = (decision.budget.reserved, settled)
        return reservation_of(
            decision, user_id=user_id, project_id=project_id, job_id=job_id, claim=claim, images=images
        )

    def settle_images(self, *, project_id: uuid.UUID, job_id: uuid.UUID, reserved_at: datetime, images: int) -> None:
        """The job's entry in the month it reserved in becomes `images`, settled. Idempotent."""
        key = str(job_id)
        with self._lock:
            months = settle_months(reserved_at)
            month = next((m for m in months if key in _joined(self._months.get((project_id, m)))), months[0])
            reserved, settled = self._months.setdefault((project_id, month), ({}, {}))
            reserved.pop(key, None)
            settled[key] = images

    def month_usage(self, project_id: uuid.UUID, at: datetime) -> BudgetUse:
        month = month_of(at)
        with self._lock:
            reserved, settled = self._months.get((project_id, month), ({}, {}))
            return BudgetUse(month, sum(settled.values()), sum(reserved.values()))

    def give_back(self, reservation: Reservation) -> None:
        """Remove the job's rate entry, lease and key claim (if the job holds it). Idempotent."""
        key = str(reservation.job_id)
        with self._lock:
            self._admits.get(reservation.user_id, {}).pop(key, None)
            self._leases.get(reservation.project_id, {}).pop(key, None)
            claims = self._claims.get(reservation.user_id, {})
            if reservation.claim is not None and claims.get(reservation.claim, ("", 0.0))[0] == key:
                del claims[reservation.claim]
            if reservation.budget is not None:
                self._months.get((reservation.project_id, reservation.budget.month), ({}, {}))[0].pop(key, None)

    def release_slot(self, *, project_id: uuid.UUID, job_id: uuid.UUID) -> None:
        """Remove the job's project lease. Idempotent."""
        with self._lock:
            self._leases.get(project_id, {}).pop(str(job_id), None)

    def release_claim(
        self, *, user_id: uuid.UUID, project_id: uuid.UUID, job_id: uuid.UUID, idempotency_key: str
    ) -> bool:
        """Remove the key's claim if this job holds it. Idempotent."""
        return self._drop_claim(user_id, job_id, key_claim(idempotency_key))

    def _drop_claim(self, user_id: uuid.UUID, job_id: uuid.UUID, claim: str) -> bool:
        with self._lock:
            claims = self._claims.get(user_id, {})
            if claims.get(claim, ("", 0.0))[0] != str(job_id):
                return False
            del claims[claim]
            return True

    def holdings(self, kind: HoldingKind, *, offset: int, limit: int) -> HoldingsPage:
        """Unexpired leases (or claims) of up to `limit` projects (or users), ordered as Firestore's
        query orders them: by the latest expiry a document holds, then by id."""
        now = to_epoch(self._clock())
        with self._lock:
            held: dict[uuid.UUID, list[tuple[str, float, str | None]]]
            if kind == "lease":
                held = {o: [(j, t, None) for j, t in m.items() if t > now] for o, m in self._leases.items()}
            else:
                held = {o: [(j, t, c) for c, (j, t) in m.items() if t > now] for o, m in self._claims.items()}
        documents = sorted(
            ((max(t for _, t, _ in entries), owner, entries) for owner, entries in held.items() if entries),
            key=lambda d: (d[0], str(d[1])),
        )[offset : offset + limit]
        return HoldingsPage(
            [
                Holding(kind, owner, uuid.UUID(job), from_epoch(t), claim)
                for _, owner, entries in documents
                for job, t, claim in sorted(entries, key=lambda e: e[0])
            ],
            len(documents),
        )

    def drop(self, holding: Holding) -> bool:
        """Release the lease, or the claim if the job still holds it."""
        if holding.kind == "claim":
            assert holding.claim is not None
            return self._drop_claim(holding.owner, holding.job_id, holding.claim)
        with self._lock:
            return self._leases.get(holding.owner, {}).pop(str(holding.job_id), None) is not None

    def active_jobs(self, project_id: uuid.UUID) -> list[uuid.UUID]:
        """Job ids holding an unexpired lease in the project."""
        now = to_epoch(self._clock())
        with self._lock:
            leases = self._leases.get(project_id, {})
            return sorted(uuid.UUID(k) for k, expires in leases.items() if expires > now)

    def forget_user(self, user_id: uuid.UUID) -> None:
        """Drop the user's rate window. Idempotent."""
        with self._lock:
            self._admits.pop(user_id, None)
            self._claims.pop(user_id, None)
