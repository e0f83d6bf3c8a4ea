"""TaskQueue on Cloud Tasks: HTTP tasks to the generate/expire functions, authenticated with OIDC tokens.

Task names are derived from (kind, job id), so a repeated enqueue is ALREADY_EXISTS: a silent success.
Cloud Tasks refuses a deleted or executed task's name for about an hour (ALREADY_EXISTS, per the
CreateTask reference); when the sweep must replace a lost generate task whose name is used up, the
replacement carries a round number in its name (`Task.replacement`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import uuid
from datetime import UTC, timedelta
from typing import Any, NoReturn

import grpc
from google.api_core import exceptions as gexc
from google.api_core import retry as gretry
from google.cloud import tasks_v2

from nano_banana.errors import Unavailable
from nano_banana.log import warming
from nano_banana.ports import Clock, Task, TaskKind, task_name

_log = logging.getLogger("nano_banana")

# Cloud Tasks accepts HTTP-task dispatch deadlines between 15 seconds and 30 minutes.
MIN_DISPATCH_DEADLINE_S = 15
MAX_DISPATCH_DEADLINE_S = 1800

# Names are deterministic, so retrying a create whose answer got lost is safe (ALREADY_EXISTS = done).
_CREATE_RETRY = gretry.Retry(
    initial=0.1,
    maximum=1.0,
    multiplier=2.0,
    predicate=gretry.if_exception_type(gexc.ServiceUnavailable, gexc.DeadlineExceeded, gexc.InternalServerError),
    timeout=2.0,
)


def clamp_dispatch_deadline(seconds: float) -> int:
    """The nearest dispatch deadline Cloud Tasks accepts, in whole seconds."""
    return int(min(MAX_DISPATCH_DEADLINE_S, max(MIN_DISPATCH_DEADLINE_S, round(seconds))))


class CloudTasksQueue:
    """`TaskQueue` on one Cloud Tasks queue (`projects/p/locations/l/queues/q`)."""

    def __init__(  # noqa: PLR0917 (the positional order is the agreed constructor contract)
        self,
        client: tasks_v2.CloudTasksClient,
        queue_path: str,
        generate_url: str,
        expire_url: str,
        service_account_email: str | None,
        audience: str | None,
        clock: Clock,
        *,
        call_timeout_s: float = 5.0,
        webhook_url: str | None = None,
        webhook_queue_path: str | None = None,
    ) -> None:
        self._client = client
        self._queue_path = queue_path
        self._urls: dict[TaskKind, str] = {"generate": generate_url, "expire": expire_url}
        if webhook_url:
            self._urls["webhook"] = webhook_url
        # Webhook deliveries have their own queue (its own retry policy; a slow receiver delays no generation).
        self._queue_paths: dict[TaskKind, str] = {"webhook": webhook_queue_path or queue_path}
        self._service_account = service_account_email
        self._audience = audience
        self._clock = clock
        self._timeout_s = call_timeout_s

    def enqueue(self, task: Task) -> bool:
        """Create the HTTP task once: True if created, False for a name in use (a no-op).
        Raises Unavailable if Cloud Tasks is unreachable."""
        request = {"parent": self._queue_paths.get(task.kind, self._queue_path), "task": self._task_message(task)}
        try:
            self._client.create_task(request=request, retry=_CREATE_RETRY, timeout=self._timeout_s)
        except gexc.AlreadyExists:
            _log.info(
                "task already enqueued", extra={"event": "task_duplicate", "jobId": str(task.job_id), "kind": task.kind}
            )
            return False
        except (gexc.GoogleAPICallError, gexc.RetryError, grpc.RpcError) as exc:
            self._unreachable("task_enqueue_failed", task.job_id, task.kind, exc)
        _log.info("task enqueued", extra={"event": "task_enqueued", "jobId": str(task.job_id), "kind": task.kind})
        return True

    def is_pending(self, task: Task) -> bool:
        """GetTask: a task that ran, failed for good or was deleted is NOT_FOUND."""
        name = self._task_path(task)
        try:
            self._client.get_task(name=name, retry=_CREATE_RETRY, timeout=self._timeout_s)
        except gexc.NotFound:
            return False
        except (gexc.GoogleAPICallError, gexc.RetryError, grpc.RpcError) as exc:
            self._unreachable("task_lookup_failed", task.job_id, task.kind, exc)
        return True

    def warm_up(self) -> None:
        """Open the channel (and, on Google, fetch a token) with one GetTask of a name never used: NOT_FOUND
        is the expected answer. Logged, never raised: the first real call simply warms up."""
        with (
            warming(
                "queue_warmed_up",
                "queue_warm_up_failed",
                done="task queue warmed up",
                failed="task queue warm-up failed",
            ),
            contextlib.suppress(gexc.NotFound),
        ):  # the expected answer: no such task
            self._client.get_task(name=f"{self._queue_path}/tasks/warm-up", retry=None, timeout=self._timeout_s)

    @staticmethod
    def _unreachable(event: str, job_id: uuid.UUID, kind: TaskKind, exc: BaseException) -> NoReturn:
        _log.warning(
            "cannot reach the task queue",
            extra={"event": event, "jobId": str(job_id), "kind": kind, "errorType": type(exc).__name__},
        )
        raise Unavailable("the task queue is unavailable; retry shortly") from exc

    def delete(self, kind: TaskKind, job_id: uuid.UUID) -> None:
        """Best effort: a task already run or deleted is fine, other failures are logged, never raised."""
        try:
            self._client.delete_task(name=self._name(kind, job_id), retry=None, timeout=self._timeout_s)
        except gexc.NotFound:
            return
        except (gexc.GoogleAPICallError, gexc.RetryError, grpc.RpcError) as exc:
            _log.warning(
                "cannot delete task",
                extra={
                    "event": "task_delete_failed",
                    "jobId": str(job_id),
                    "kind": kind,
                    "errorType": type(exc).__name__,
                },
            )
            return
        _log.info("task deleted", extra={"event": "task_deleted", "jobId": str(job_id), "kind": kind})

    def _name(self, kind: TaskKind, job_id: uuid.UUID, replacement: int | None = None) -> str:
        return f"{self._queue_paths.get(kind, self._queue_path)}/tasks/{task_name(kind, job_id, replacement)}"

    def _task_path(self, task: Task) -> str:
        return f"{self._queue_paths.get(task.kind, self._queue_path)}/tasks/{task.name}"

    def _task_message(self, task: Task) -> dict[str, Any]:
        url = self._urls.get(task.kind)
        if url is None:
            raise Unavailable(f"no target URL is configured for {task.kind} tasks")
        body: dict[str, str] = {"jobId": str(task.job_id)}
        if task.event is not None:
            body["webhookEvent"] = task.event
        http_request: dict[str, Any] = {
            "url": url,
            "http_method": tasks_v2.HttpMethod.POST,
            "headers": {"Content-Type": "application/json"},
            "body": json.dumps(body).encode(),
        }
        if self._service_account:
            # Without an explicit audience Cloud Tasks uses the target URL, which is what we verify.
            oidc: dict[str, str] = {"service_account_email": self._service_account}
            if self._audience:
                oidc["audience"] = self._audience
            http_request["oidc_token"] = oidc
        message: dict[str, Any] = {
            "name": self._task_path(task),
            "http_request": http_request,
        }
        if task.schedule_at is not None:
            message["schedule_time"] = task.schedule_at.astimezone(UTC)
        if task.dispatch_deadline_s is not None:
            message["dispatch_deadline"] = timedelta(seconds=clamp_dispatch_deadline(task.dispatch_deadline_s))
        return message
