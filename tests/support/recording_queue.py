"""A small, real TaskQueue that only records (for tests that drive the handlers themselves)."""

from __future__ import annotations

import threading
import uuid

from nano_banana.ports import Task, TaskKind, task_name


class RecordingQueue:
    def __init__(self) -> None:
        self.tasks: dict[str, Task] = {}
        self.deleted: set[str] = set()
        self.enqueue_calls = 0
        self.fail_next: Exception | None = None
        self._lock = threading.Lock()

    def enqueue(self, task: Task) -> None:
        with self._lock:
            self.enqueue_calls += 1
            if self.fail_next is not None:
                exc, self.fail_next = self.fail_next, None
                raise exc
            self.tasks.setdefault(task_name(task.kind, task.job_id), task)

    def delete(self, kind: TaskKind, job_id: uuid.UUID) -> None:
        with self._lock:
            self.deleted.add(task_name(kind, job_id))

    def pending(self, kind: TaskKind) -> list[Task]:
        with self._lock:
            return [t for n, t in self.tasks.items() if t.kind == kind and n not in self.deleted]
