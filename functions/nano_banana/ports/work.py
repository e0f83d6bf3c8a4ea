"""The ports that do work: the task queue, the image generator, the optional processor, the webhook sender."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from nano_banana.domain import (
    GenerationRequest,
    GenerationResult,
    Job,
)

TaskKind = Literal["generate", "expire", "webhook"]


@dataclass(frozen=True, slots=True)
class Task:
    kind: TaskKind
    job_id: uuid.UUID
    # When the task should run; None = now.
    schedule_at: datetime | None = None
    # How long the platform waits for the handler before it counts the attempt failed.
    dispatch_deadline_s: float | None = None
    # Set when the sweep replaces a lost task whose name is used up: a new deterministic name per round.
    replacement: int | None = None
    # A webhook task's event (running, succeeded, failed, canceled): one task per (job, event).
    event: str | None = None

    @property
    def name(self) -> str:
        return task_name(self.kind, self.job_id, self.replacement, event=self.event)


def task_name(kind: TaskKind, job_id: uuid.UUID, replacement: int | None = None, *, event: str | None = None) -> str:
    """Deterministic task id, so a duplicate enqueue is ALREADY_EXISTS (hashed prefix spreads names). A
    webhook task's name carries its event: derived from (job, event) like the delivery's webhook-id."""
    import hashlib

    prefix = hashlib.sha256(job_id.bytes).hexdigest()[:8]
    suffix = (f"-{event}" if event is not None else "") + (f"-r{replacement}" if replacement is not None else "")
    return f"{prefix}-{kind}-{job_id}{suffix}"


class TaskQueue(Protocol):
    def enqueue(self, task: Task) -> bool:
        """Enqueue once: True if created; False (silently) when a task of that name exists or ran or was
        deleted recently (Cloud Tasks keeps used names ~1 h). Raises Unavailable when unreachable."""
        ...

    def is_pending(self, task: Task) -> bool:
        """Whether the task of that name is waiting or running (not ran, failed for good or deleted).
        Raises Unavailable when the queue cannot be reached."""
        ...

    def delete(self, kind: TaskKind, job_id: uuid.UUID) -> None:
        """Best effort: remove a pending task (e.g. the expire task of a job that ended)."""
        ...


TaskHandler = Callable[[Task, int], None]
"""What an in-process queue delivers to (it calls the use case directly): the task, and how many times it was
delivered before (0: the first delivery), as Cloud Tasks' X-CloudTasks-TaskRetryCount header says."""


@dataclass(frozen=True, slots=True)
class WebhookAnswer:
    """What one delivery attempt came to: the receiver's status, or why no request was sent (`refused`:
    the outbound policy forbids the target, for good; `error`: a timeout or connection failure, retried)."""

    status: int | None = None
    refused: str | None = None
    error: str | None = None


class WebhookPoster(Protocol):
    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> WebhookAnswer:
        """One POST under the outbound policy (nano_banana.outbound): never raises for the receiver's sake."""
        ...


class ImageGenerator(Protocol):
    def generate(self, request: GenerationRequest, *, deadline: datetime) -> GenerationResult:
        """Make request.variant_count images (at least one) before the deadline.
        Raises ContentBlocked, GenerationFailed (after retries within the deadline)."""
        ...


@dataclass(frozen=True, slots=True)
class ProcessorJob:
    """What an external processor (n8n) is handed; it reports back through /callback."""

    job: Job
    request: GenerationRequest
    input_url: str
    output_prefix: str
    upload_urls: tuple[str, ...]
    callback_url: str
    # Signed URLs of the reference images, in order (each within the model's inline limit).
    reference_urls: tuple[str, ...] = ()


class Processor(Protocol):
    def submit(self, work: ProcessorJob, *, deadline: datetime) -> None:
        """Hand the job over; raises ProcessorUnavailable after retries within the deadline."""
        ...
