"""The simulation's stand-ins for Cloud Tasks, Storage and the processor (n8n), in virtual time."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from nano_banana.ports import Clock, ProcessorJob, Task, TaskKind, task_name
from tests.support.memory_blobs import MemoryBlobStore

State = Literal["waiting", "running", "done", "deleted"]
MAX_DELIVERIES = 6


@dataclass
class Queued:
    name: str
    task: Task
    due: datetime
    state: State = "waiting"
    deliveries: int = 0


class SimQueue:
    """Cloud Tasks as the use cases see it: named tasks (a used name is refused, ALREADY_EXISTS, for as
    long as the run lasts: its tombstone outlives any simulated hour), schedule times, GetTask
    (`is_pending`: waiting or being dispatched), DeleteTask, and at-least-once delivery: a failed
    delivery is retried after a backoff, and the world may deliver any task again (a duplicate)."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self.tasks: dict[str, Queued] = {}

    def enqueue(self, task: Task) -> bool:
        name = task_name(task.kind, task.job_id, task.replacement)
        if name in self.tasks:
            return False
        self.tasks[name] = Queued(name, task, task.schedule_at or self._clock())
        return True

    def is_pending(self, task: Task) -> bool:
        found = self.tasks.get(task_name(task.kind, task.job_id, task.replacement))
        return found is not None and found.state in ("waiting", "running")

    def delete(self, kind: TaskKind, job_id: uuid.UUID) -> None:
        found = self.tasks.get(task_name(kind, job_id))
        if found is not None and found.state in ("waiting", "running"):
            found.state = "deleted"

    # ------------------------------------------------------------ the platform's side

    def due(self) -> list[Queued]:
        now = self._clock()
        return [q for q in self.tasks.values() if q.state == "waiting" and q.due <= now]

    def start(self, queued: Queued) -> int:
        """A delivery begins; returns its X-CloudTasks-TaskRetryCount."""
        if queued.state == "waiting":
            queued.state = "running"
        queued.deliveries += 1
        return queued.deliveries - 1

    def finish(self, queued: Queued, ok: bool) -> None:
        if queued.state != "running":
            return  # deleted meanwhile, or a duplicate of a delivery that already ended
        if ok or queued.deliveries >= MAX_DELIVERIES:
            queued.state = "done"
        else:
            queued.state = "waiting"
            queued.due = self._clock() + timedelta(seconds=min(60.0, 2.0**queued.deliveries))


class SimBlobs(MemoryBlobStore):
    """MemoryBlobStore with write times in virtual time (the orphan sweep compares them)."""

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self._clock = clock
        self.deleted_by: dict[str, str] = {}  # path -> who deleted it last (the world's note)
        self.note: Callable[[], str] = lambda: "?"

    def delete(self, paths: Sequence[str]) -> None:
        super().delete(paths)
        for path in paths:
            self.deleted_by[path] = self.note()

    def put(self, path: str, data: bytes, content_type: str) -> None:
        super().put(path, data, content_type)
        self.written[path] = self._clock()

    def signed_upload_urls(self, paths: Sequence[str], *, ttl_s: int) -> tuple[tuple[str, ...], datetime]:
        urls = tuple(self.signed_upload_url(p, ttl_s=ttl_s) for p in paths)
        return urls, self._clock() + timedelta(seconds=ttl_s)


class SimProcessor:
    """The processor (n8n) hand-off: `submit` records the work; the world's processor moves carry it out
    (upload outputs, report by signed callback), once, twice, late or never."""

    def __init__(self) -> None:
        self.inbox: list[ProcessorJob] = []
        self.handed: list[ProcessorJob] = []

    def submit(self, work: ProcessorJob, *, deadline: datetime) -> None:
        self.inbox.append(work)
        self.handed.append(work)
