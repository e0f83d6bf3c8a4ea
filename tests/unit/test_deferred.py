"""The deferred Limits / TaskQueue ports: built once, on first use or when warmed, and never by build()."""

from __future__ import annotations

import logging
import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from nano_banana import bootstrap
from nano_banana.adapters.limits_memory import MemoryLimits
from nano_banana.deferred import DeferredLimits, DeferredQueue
from nano_banana.errors import RateLimited
from nano_banana.ports import Task, TaskKind

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


class _RecordingQueue:
    def __init__(self) -> None:
        self.enqueued: list[Task] = []
        self.deleted: list[tuple[TaskKind, uuid.UUID]] = []
        self.warmed = 0

    def enqueue(self, task: Task) -> bool:
        self.enqueued.append(task)
        return True

    def is_pending(self, task: Task) -> bool:
        return task in self.enqueued

    def delete(self, kind: TaskKind, job_id: uuid.UUID) -> None:
        self.deleted.append((kind, job_id))

    def warm_up(self) -> None:
        self.warmed += 1


def test_limits_are_built_on_first_use_once_even_from_many_threads() -> None:
    builds: list[MemoryLimits] = []
    barrier = threading.Barrier(8)

    def build() -> MemoryLimits:
        builds.append(MemoryLimits(1, 5, lambda: NOW))
        return builds[-1]

    limits = DeferredLimits(build)
    assert not limits.built
    assert builds == []
    user = uuid.uuid4()
    outcomes: list[str] = []

    def reserve() -> None:
        barrier.wait()
        try:
            limits.reserve(
                user_id=user, project_id=uuid.uuid4(), job_id=uuid.uuid4(), lease_expires_at=NOW + timedelta(minutes=5)
            )
            outcomes.append("admitted")
        except RateLimited:
            outcomes.append("rate_limited")

    threads = [threading.Thread(target=reserve) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(builds) == 1, "one adapter, shared by every caller"
    assert sorted(outcomes) == ["admitted"] + ["rate_limited"] * 7, "the one adapter enforces the limits"
    assert limits.built
    assert limits.prepare() is builds[0]


def test_a_failed_build_is_tried_again_by_the_next_call() -> None:
    attempts: list[int] = []

    def build() -> _RecordingQueue:
        attempts.append(1)
        if len(attempts) == 1:
            raise OSError("no credentials yet")
        return _RecordingQueue()

    queue = DeferredQueue(build)
    task = Task(kind="generate", job_id=uuid.uuid4())
    with pytest.raises(OSError, match="no credentials"):
        queue.enqueue(task)
    assert queue.enqueue(task) is True
    assert queue.is_pending(task)
    queue.delete("expire", task.job_id)
    assert len(attempts) == 2


def test_warm_up_clients_builds_and_warms_and_reports_failures(caplog: pytest.LogCaptureFixture) -> None:
    built = _RecordingQueue()
    queue = DeferredQueue(lambda: built)
    with caplog.at_level(logging.INFO, logger="nano_banana"):
        assert bootstrap.warm_up_clients(queue) == []
    assert queue.built
    assert built.warmed == 1

    def broken() -> _RecordingQueue:
        raise OSError("unreachable")

    with caplog.at_level(logging.INFO, logger="nano_banana"):
        assert bootstrap.warm_up_clients(DeferredQueue(broken)) == [], "a failed build raises nothing"
    events = [getattr(r, "event", None) for r in caplog.records]
    assert events.count("write_clients_built") == 1
    (failed,) = [r for r in caplog.records if getattr(r, "event", None) == "write_clients_build_failed"]
    assert failed.errorType == "OSError"
