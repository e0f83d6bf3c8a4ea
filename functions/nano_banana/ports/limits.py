"""The limits port: rate, concurrency and monthly image budgets, reserved in one commit; leases and key claims."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

Clock = Callable[[], datetime]
"""Returns the current time, timezone-aware UTC. Injected so tests can move time."""


@dataclass(frozen=True, slots=True)
class BudgetUse:
    """A project's images in one UTC month: `used` by jobs that ended (settled to the images they stored),
    `reserved` by jobs still running; `limit` None = no budget (still counted)."""

    month: str  # "YYYY-MM"
    used: int
    reserved: int
    limit: int | None = None

    @property
    def counted(self) -> int:
        return self.used + self.reserved


@dataclass(frozen=True, slots=True)
class Reservation:
    """What one admitted job holds: one entry in the user's rate window, one project lease, and its
    images in the project's month (when reserved with `images`)."""

    user_id: uuid.UUID
    project_id: uuid.UUID
    job_id: uuid.UUID
    at: datetime
    lease_expires_at: datetime
    # The hashed Idempotency-Key this job claimed in the same commit (None: the request had no key).
    claim: str | None = None
    # The images reserved in the project's month, and that month after the reservation (None: none reserved).
    images: int = 0
    budget: BudgetUse | None = None


@dataclass(frozen=True, slots=True)
class LimitsReading:
    """What `Limits.check` read. `reserve` may commit on it instead of reading again (one round trip
    fewer); a reading that went stale costs the reservation only a fresh read (the commit is conditional)."""

    user_id: uuid.UUID
    project_id: uuid.UUID
    documents: object = None  # the adapter's own


class KeyClaimed(Exception):
    """Limits.reserve: the Idempotency-Key is claimed by another job still being created (nothing was
    reserved). The creation waits for that job's row instead of competing for a limit unit."""

    def __init__(self, holder: uuid.UUID) -> None:
        super().__init__(f"the Idempotency-Key is claimed by job {holder}")
        self.holder = holder


HoldingKind = Literal["lease", "claim"]


@dataclass(frozen=True, slots=True)
class Holding:
    """One unexpired project lease or Idempotency-Key claim, named by its job: derived state the sweep
    reconciles against the job rows (`Limits.holdings`)."""

    kind: HoldingKind
    owner: uuid.UUID  # the project (a lease) or the user (a claim)
    job_id: uuid.UUID
    expires_at: datetime
    claim: str | None = None  # a claim's hashed key


@dataclass(frozen=True, slots=True)
class HoldingsPage:
    holdings: list[Holding]
    # Documents (projects or users) the page read: the next page starts this many further on.
    documents: int


class Limits(Protocol):
    """Rate window per user and concurrency leases per project, checked and reserved atomically, and
    the user's Idempotency-Key claims (stored hashed, never as sent), taken in the same commit; with
    `images`, the project's monthly image budget too (one entry per job in the project's UTC month)."""

    def check(
        self, *, user_id: uuid.UUID, project_id: uuid.UUID, idempotency_key: str | None = None, images: int = 0
    ) -> LimitsReading:
        """Read-only: raise RateLimited / ConcurrencyLimited exactly as `reserve` would now, reserving
        nothing (one read). Passes when `idempotency_key` is claimed: that request decides at `reserve`
        (a retry of a job being created is answered with that job, never with 429). Returns what it read,
        for `reserve` (with `images`, the project's month too; the budget itself is decided by `reserve`)."""
        ...

    def reserve(
        self,
        *,
        user_id: uuid.UUID,
        project_id: uuid.UUID,
        job_id: uuid.UUID,
        lease_expires_at: datetime,
        idempotency_key: str | None = None,
        reading: LimitsReading | None = None,
        images: int = 0,
        monthly_images: int | None = None,
    ) -> Reservation:
        """Admit one job and claim its Idempotency-Key (if any) in one commit, or raise KeyClaimed (the
        key is claimed by another unexpired job: checked first), RateLimited / BudgetExceeded /
        ConcurrencyLimited, or Unavailable (after bounded jittered retries on contention); any of them
        reserves nothing. With `images` > 0 the job also reserves that many images in the project's UTC
        month, in the same commit; BudgetExceeded when they would take the month past `monthly_images`
        (None: no budget, the images are still counted). Reserving again for the same job_id is
        idempotent and returns the same reservation. A claim expires with the lease. With `reading`
        (from `check`), the first attempt decides on it and only commits."""
        ...

    def give_back(self, reservation: Reservation) -> None:
        """Undo a reservation whose job was never created: removes the rate entry, the lease, the key
        claim (so a retry with that key may create the job) and the month's images. Idempotent."""
        ...

    def settle_images(self, *, project_id: uuid.UUID, job_id: uuid.UUID, reserved_at: datetime, images: int) -> None:
        """The job ended having stored `images`: its month's entry becomes that count (reserved -> settled;
        a failed job settles to 0). The month is the one the job reserved in: `reserved_at` is when, within
        minutes, by the clock the reservation used. Idempotent: settling again writes the same count."""
        ...

    def month_usage(self, project_id: uuid.UUID, at: datetime) -> BudgetUse:
        """The project's images in the UTC month of `at` (one read; `limit` is left None)."""
        ...

    def release_slot(self, *, project_id: uuid.UUID, job_id: uuid.UUID) -> None:
        """Remove the job's project lease (the job ended). Idempotent."""
        ...

    def release_claim(
        self, *, user_id: uuid.UUID, project_id: uuid.UUID, job_id: uuid.UUID, idempotency_key: str
    ) -> bool:
        """Remove the key's claim if `job_id` still holds it (the job was deleted: its key may be used
        again at once). A claim another job holds is left alone. Idempotent; True if it removed one."""
        ...

    def active_jobs(self, project_id: uuid.UUID) -> list[uuid.UUID]:
        """Job ids holding an unexpired lease in the project (one read; the sweep uses it to find leases
        still held by ended jobs)."""
        ...

    def forget_user(self, user_id: uuid.UUID) -> None:
        """Erase the user's rate window (their document of admission times). Idempotent."""
        ...

    def holdings(self, kind: HoldingKind, *, offset: int, limit: int) -> HoldingsPage:
        """The unexpired leases (or key claims) of at most `limit` projects (or users) holding any, from
        `offset` in the adapter's order: one bounded read. The sweep pages through them to give back
        what no live job row holds."""
        ...

    def drop(self, holding: Holding) -> bool:
        """Give back one holding if its job still holds it (a claim another job took meanwhile stays).
        Idempotent; True if it removed one."""
        ...
