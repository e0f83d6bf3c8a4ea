"""In-process TaskQueue: runs tasks in worker threads at their schedule time, with retries.

Behaves like Cloud Tasks where it matters to the use cases: named (deduplicated) tasks, schedule
times, deletion of pending tasks, and redelivery with backoff when a handler raises.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from nano_banana.ports import Clock, Task, TaskHandler, TaskKind, task_name

log = logging.getLogger("nano_banana")


class InlineQueue:
    def __init__(
        self,
        handler: TaskHandler | None,
        clock: Clock,
        *,
        workers: int = 4,
        max_attempts: int = 5,
        backoff_s: float = 0.5,
    ) -> None:
        self._handler = handler
        self._clock = clock
        self._max_attempts = max_attempts
        self._backoff_s = backoff_s
        self._heap: list[tuple[float, int, str, Task, int]] = []
        self._names: set[str] = set()
        self._deleted: set[str] = set()
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="inline-task")
        self._closed = False
        self._busy = 0
        self._running: set[str] = set()
        self._thread = threading.Thread(target=self._loop, name="inline-queue", daemon=True)
        self._thread.start()

    def bind(self, handler: TaskHandler) -> None:
        """Set the handler after construction (bootstrap builds the queue before the use cases)."""
        self._handler = handler

    def enqueue(self, task: Task) -> bool:
        name = task_name(task.kind, task.job_id, task.replacement)
        with self._cond:
            if name in self._names:
                return False  # like Cloud Tasks' ALREADY_EXISTS: a duplicate enqueue is harmless
            self._names.add(name)
            self._push(task, name, attempt=1)
            return True

    def is_pending(self, task: Task) -> bool:
        """Waiting (not deleted) or running, including between a failed delivery and its redelivery, like
        Cloud Tasks' GetTask; a name used up is remembered for the process's life."""
        name = task_name(task.kind, task.job_id, task.replacement)
        with self._cond:
            return name in self._running or any(e[2] == name and name not in self._deleted for e in self._heap)

    def delete(self, kind: TaskKind, job_id: uuid.UUID) -> None:
        with self._cond:
            self._deleted.add(task_name(kind, job_id))
            self._cond.notify()

    def pending(self) -> int:
        """Tasks waiting or running (for tests and the dev server's readiness)."""
        with self._cond:
            return len([e for e in self._heap if e[2] not in self._deleted]) + self._busy

    def close(self, grace_s: float = 5.0) -> None:
        """Stop taking tasks; give the running ones `grace_s` to end. One still running then (a generate
        step waiting on an unreachable processor) is left to its thread: Ctrl-C must not wait for it, and
        its job's deadline settles it after a restart, as it would after a crash."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=5)
        deadline = time.monotonic() + grace_s
        with self._cond:
            while self._busy and (left := deadline - time.monotonic()) > 0:
                self._cond.wait(timeout=left)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _push(self, task: Task, name: str, attempt: int, delay_s: float = 0.0) -> None:
        due = time.monotonic() + delay_s
        if task.schedule_at is not None and attempt == 1:
            due = time.monotonic() + max(0.0, (task.schedule_at - self._clock()).total_seconds())
        heapq.heappush(self._heap, (due, next(self._seq), name, task, attempt))
        self._cond.notify()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (not self._heap or self._heap[0][0] > time.monotonic()):
                    timeout = (self._heap[0][0] - time.monotonic()) if self._heap else None
                    self._cond.wait(timeout=timeout)
                if self._closed:
                    return
                _, _, name, task, attempt = heapq.heappop(self._heap)
                if name in self._deleted:
                    continue
                self._busy += 1
                self._running.add(name)
            self._pool.submit(self._run, name, task, attempt)

    def _run(self, name: str, task: Task, attempt: int) -> None:
        try:
            if self._handler is None:
                raise RuntimeError("InlineQueue has no handler bound")
            self._handler(task, attempt - 1)
        except Exception as exc:
            retry = attempt < self._max_attempts
            log.warning(
                "task failed",
                extra={
                    "event": "task_failed",
                    "task": name,
                    "attempt": attempt,
                    "retry": retry,
                    "errorType": type(exc).__name__,
                },
            )
            if retry:
                with self._cond:
                    if not self._closed:
                        self._push(task, name, attempt + 1, delay_s=self._backoff_s * 2 ** (attempt - 1))
        finally:
            with self._cond:
                self._busy -= 1
                self._running.discard(name)
                self._cond.notify_all()
