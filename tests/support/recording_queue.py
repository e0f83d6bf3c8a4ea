"""A small, real TaskQueue that only records (for tests that drive the handlers themselves)."""

from __future__ import annotations

import threading
import uuid

from nano_banana.ports import Task, TaskKind, task_name


class RecordingQueue:
    def __init__(self) -> None:
        self.tasks: dict[str, Task] = {}
        self.deleted: set[str] = set()
        self.ran: set[str] = set()
        self.enqueue_calls = 0
        self.fail_next: Exception | None = None
        self._lock = threading.Lock()

    def enqueue(self, task: Task) -> bool:
        with self._lock:
            self.enqueue_calls += 1
            if self.fail_next is not None:
                exc, self.fail_next = self.fail_next, None
                raise exc
            name = task.name
            if name in self.tasks:
                return False
            self.tasks[name] = task
            return True

    def is_pending(self, task: Task) -> bool:
        """Recorded, not deleted and not marked done (`ran`): nothing here runs tasks by itself."""
        name = task.name
        with self._lock:
            return name in self.tasks and name not in self.deleted and name not in self.ran

    def mark_ran(self, task: Task) -> None:
        """A test delivered this task: its name stays used up, like Cloud Tasks' executed names."""
        with self._lock:
            self.ran.add(task.name)

    def delete(self, kind: TaskKind, job_id: uuid.UUID) -> None:
        with self._lock:
            self.deleted.add(task_name(kind, job_id))

    def pending(self, kind: TaskKind) -> list[Task]:
        with self._lock:
            return [t for n, t in self.tasks.items() if t.kind == kind and n not in self.deleted | self.ran]
