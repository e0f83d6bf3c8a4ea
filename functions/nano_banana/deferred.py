"""The Limits and TaskQueue ports, built on first use: a cold `api` instance answering GETs never imports
Firestore or Cloud Tasks (their clients and google-cloud's gRPC stack are about half of its imports).

bootstrap wraps the production adapters in these; `prepare()` builds the real one ahead of need (the
warm-up thread calls it when a write begins or after the first answer), and callers see the ports,
unchanged.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Generic, TypeVar

from nano_banana.ports import (
    BudgetUse,
    Holding,
    HoldingKind,
    HoldingsPage,
    Limits,
    LimitsReading,
    Reservation,
    Task,
    TaskKind,
    TaskQueue,
)

T = TypeVar("T")


class Once(Generic[T]):
    """A value built by `factory` on first `get()`, once, thread-safely; a failed build is tried again."""

    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        self._value: T | None = None
        self._lock = threading.Lock()

    def get(self) -> T:
        if self._value is None:
            with self._lock:
                if self._value is None:
                    self._value = self._factory()
        return self._value

    @property
    def built(self) -> bool:
        return self._value is not None


class DeferredLimits:
    """`Limits` whose adapter (and its client library) is built on first use."""

    def __init__(self, factory: Callable[[], Limits]) -> None:
        self._limits = Once(factory)

    def prepare(self) -> Limits:
        """Build the adapter now (idempotent) and return it."""
        return self._limits.get()

    @property
    def built(self) -> bool:
        return self._limits.built

    def check(
        self, *, user_id: uuid.UUID, project_id: uuid.UUID, idempotency_key: str | None = None, images: int = 0
    ) -> LimitsReading:
        return self._limits.get().check(
            user_id=user_id, project_id=project_id, idempotency_key=idempotency_key, images=images
        )

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
        return self._limits.get().reserve(
            user_id=user_id,
            project_id=project_id,
            job_id=job_id,
            lease_expires_at=lease_expires_at,
            idempotency_key=idempotency_key,
            reading=reading,
            images=images,
            monthly_images=monthly_images,
        )

    def give_back(self, reservation: Reservation) -> None:
        self._limits.get().give_back(reservation)

    def release_slot(self, *, project_id: uuid.UUID, job_id: uuid.UUID) -> None:
        self._limits.get().release_slot(project_id=project_id, job_id=job_id)

    def settle_images(self, *, project_id: uuid.UUID, job_id: uuid.UUID, reserved_at: datetime, images: int) -> None:
        self._limits.get().settle_images(project_id=project_id, job_id=job_id, reserved_at=reserved_at, images=images)

    def month_usage(self, project_id: uuid.UUID, at: datetime) -> BudgetUse:
        return self._limits.get().month_usage(project_id, at)

    def release_claim(
        self, *, user_id: uuid.UUID, project_id: uuid.UUID, job_id: uuid.UUID, idempotency_key: str
    ) -> bool:
        return self._limits.get().release_claim(
            user_id=user_id, project_id=project_id, job_id=job_id, idempotency_key=idempotency_key
        )

    def active_jobs(self, project_id: uuid.UUID) -> list[uuid.UUID]:
        return self._limits.get().active_jobs(project_id)

    def forget_user(self, user_id: uuid.UUID) -> None:
        self._limits.get().forget_user(user_id)

    def holdings(self, kind: HoldingKind, *, offset: int, limit: int) -> HoldingsPage:
        return self._limits.get().holdings(kind, offset=offset, limit=limit)

    def drop(self, holding: Holding) -> bool:
        return self._limits.get().drop(holding)


class DeferredQueue:
    """`TaskQueue` whose adapter (and its client library) is built on first use."""

    def __init__(self, factory: Callable[[], TaskQueue]) -> None:
        self._queue = Once(factory)

    def prepare(self) -> TaskQueue:
        """Build the adapter now (idempotent) and return it."""
        return self._queue.get()

    @property
    def built(self) -> bool:
        return self._queue.built

    def enqueue(self, task: Task) -> bool:
        return self._queue.get().enqueue(task)

    def is_pending(self, task: Task) -> bool:
        return self._queue.get().is_pending(task)

    def delete(self, kind: TaskKind, job_id: uuid.UUID) -> None:
        self._queue.get().delete(kind, job_id)
