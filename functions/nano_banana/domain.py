"""Plain domain objects and lifecycle rules: no I/O here."""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from nano_banana.errors import InvalidTransition


class JobStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    canceled = "canceled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({JobStatus.succeeded, JobStatus.failed, JobStatus.canceled})
ACTIVE = frozenset({JobStatus.queued, JobStatus.running})

# running -> running is a redelivered generate task re-claiming the job (attempt + 1).
TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.queued: frozenset({JobStatus.running, JobStatus.failed, JobStatus.canceled}),
    JobStatus.running: frozenset({JobStatus.running, JobStatus.succeeded, JobStatus.failed, JobStatus.canceled}),
    JobStatus.succeeded: frozenset(),
    JobStatus.failed: frozenset(),
    JobStatus.canceled: frozenset(),
}


def sources_for(target: JobStatus) -> tuple[JobStatus, ...]:
    """Every status from which `target` may be reached: the CAS `status = ANY(...)` list."""
    return tuple(s for s, targets in TRANSITIONS.items() if target in targets)


def check_transition(current: JobStatus, target: JobStatus) -> None:
    """Raise InvalidTransition unless current -> target is in the table."""
    if target not in TRANSITIONS[current]:
        raise InvalidTransition(
            f"job is {current.value}; it cannot become {target.value}",
            details={"status": current.value, "target": target.value},
        )


class ErrorCode(enum.StrEnum):
    """Stable codes stored on failed jobs (errorCode)."""

    timeout = "timeout"
    generation_failed = "generation_failed"
    content_blocked = "content_blocked"
    processor_unavailable = "processor_unavailable"
    input_unavailable = "input_unavailable"
    enqueue_failed = "enqueue_failed"
    canceled = "canceled"


class Role(enum.StrEnum):
    user = "user"
    assistant = "assistant"


def storable_text(value: str) -> bool:
    """Whether a text can be stored and logged: Postgres text rejects NUL, and UTF-8 cannot encode a lone
    surrogate (what JSON's "\\ud800" decodes to)."""
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


ASPECT_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")

MIME_EXT = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp"}


def new_id() -> uuid.UUID:
    return uuid.uuid4()


def input_path(user_id: uuid.UUID, blob_id: uuid.UUID, mime_type: str) -> str:
    return f"inputs/{user_id}/{blob_id}.{MIME_EXT[mime_type]}"


def job_prefix(job_id: uuid.UUID) -> str:
    return f"jobs/{job_id}/"


def reference_path(job_id: uuid.UUID, index: int, mime_type: str) -> str:
    """A reference image sent with the job (multipart `reference`), stored under the job's own prefix."""
    return f"{job_prefix(job_id)}refs/{index}.{MIME_EXT[mime_type]}"


def output_path(job_id: uuid.UUID, attempt: int, index: int, mime_type: str) -> str:
    """Outputs are scoped by attempt so a stale worker only ever deletes its own blobs."""
    return f"{job_prefix(job_id)}{attempt}/{index}.{MIME_EXT[mime_type]}"


# What a completion webhook may announce (`webhookEvents`), and what it announces when not told.
WEBHOOK_EVENTS = ("running", "succeeded", "failed", "canceled")
DEFAULT_WEBHOOK_EVENTS = ("succeeded", "failed", "canceled")


def webhook_id(job_id: uuid.UUID, event: str) -> str:
    """The Standard Webhooks `webhook-id` of a job's event: derived, so every retry (and a second enqueue)
    carries the same one and receivers can deduplicate."""
    return f"msg_{uuid.uuid5(job_id, f'job.{event}').hex}"


@dataclass(frozen=True, slots=True)
class WebhookDelivery:
    """One (job, event) delivery: recorded with the transition, updated by each attempt. `state`: pending,
    delivered, gone (the receiver answered 410), refused (the address is not allowed) or failed (gave up)."""

    event: str
    state: str
    attempts: int
    last_status: int | None
    delivered_at: datetime | None
    reason: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Webhook:
    """Where a job's events are POSTed, which events, and what became of each delivery."""

    url: str
    events: tuple[str, ...]
    deliveries: tuple[WebhookDelivery, ...] = ()


@dataclass(frozen=True, slots=True)
class Variant:
    id: uuid.UUID
    job_id: uuid.UUID
    index: int
    storage_path: str
    mime_type: str
    width: int
    height: int
    bytes: int
    created_at: datetime


def month_of(moment: datetime) -> str:
    """The UTC calendar month a moment falls in: "YYYY-MM" (a project's image budget is per such month)."""
    utc = moment.astimezone(UTC)
    return f"{utc.year:04d}-{utc.month:02d}"


def next_month(moment: datetime) -> datetime:
    """The start of the UTC month after the moment's."""
    utc = moment.astimezone(UTC)
    return datetime(utc.year + utc.month // 12, utc.month % 12 + 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class ModelUsage:
    """What a job's model call(s) used: token counts as the model reports them (`usageMetadata`; None where
    it did not say) and the time spent in the call(s)."""

    prompt_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None
    generation_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Reference:
    """A reference image of a job: sent to the model after the input, before the prompt."""

    path: str
    mime_type: str
    width: int
    height: int
    bytes: int


@dataclass(frozen=True, slots=True)
class Job:
    id: uuid.UUID
    project_id: uuid.UUID
    user_id: uuid.UUID
    thread_id: uuid.UUID
    parent_job_id: uuid.UUID | None
    source_variant_id: uuid.UUID | None
    prompt: str
    input_path: str
    input_mime_type: str
    input_width: int
    input_height: int
    status: JobStatus
    error_code: str | None
    error_message: str | None
    variant_count: int
    aspect_ratio: str | None
    model: str
    attempt: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    deadline_at: datetime
    updated_at: datetime
    # Set when the job succeeded with fewer variants than asked.
    note: str | None = None
    variants: tuple[Variant, ...] = ()
    webhook: Webhook | None = None
    # `1K` | `2K` | `4K`; None: the model's default size.
    resolution: str | None = None
    references: tuple[Reference, ...] = ()
    usage: ModelUsage = ModelUsage()

    @property
    def terminal(self) -> bool:
        return self.status.terminal

    @property
    def reference_paths(self) -> tuple[str, ...]:
        return tuple(r.path for r in self.references)


@dataclass(frozen=True, slots=True)
class Message:
    id: uuid.UUID
    thread_id: uuid.UUID
    job_id: uuid.UUID
    project_id: uuid.UUID
    user_id: uuid.UUID
    role: Role
    content: str
    variant_id: uuid.UUID | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class NewJob:
    """Everything needed to insert a queued job (and its user message) in one transaction."""

    id: uuid.UUID
    project_id: uuid.UUID
    user_id: uuid.UUID
    thread_id: uuid.UUID
    parent_job_id: uuid.UUID | None
    source_variant_id: uuid.UUID | None
    prompt: str
    input_path: str
    input_mime_type: str
    input_width: int
    input_height: int
    variant_count: int
    aspect_ratio: str | None
    model: str
    idempotency_key: str | None
    request_hash: str | None
    deadline_at: datetime
    message_id: uuid.UUID = field(default_factory=new_id)
    webhook_url: str | None = None
    webhook_events: tuple[str, ...] = ()
    resolution: str | None = None
    references: tuple[Reference, ...] = ()
    # The input is an existing object named by inputPath (not this creation's own upload): the insert holds
    # it (an upload through the rows that reference it) and refuses if it is gone.
    input_borrowed: bool = False


@dataclass(frozen=True, slots=True)
class Turn:
    """One earlier exchange of a refinement thread, as the generator sees it."""

    prompt: str
    image: bytes | None = None
    image_mime: str | None = None


@dataclass(frozen=True, slots=True)
class InlineImage:
    data: bytes
    mime_type: str


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    job_id: uuid.UUID
    prompt: str
    image: bytes
    image_mime: str
    variant_count: int
    aspect_ratio: str | None
    # Earlier prompts of the thread, oldest first (empty for a first job).
    history: tuple[Turn, ...] = ()
    # The job's model (None: the generator's own) and size (None: the model's default).
    model: str | None = None
    resolution: str | None = None
    # Sent after the input image, in this order, before the prompt.
    references: tuple[InlineImage, ...] = ()


@dataclass(frozen=True, slots=True)
class GeneratedImage:
    data: bytes
    mime_type: str
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class GenerationResult:
    images: tuple[GeneratedImage, ...]
    # Set when fewer images than asked came back (the job still succeeds).
    note: str | None = None
    usage: ModelUsage = ModelUsage()


@dataclass(frozen=True, slots=True)
class VariantUpload:
    """An output already stored, waiting to be recorded with the final transition."""

    index: int
    storage_path: str
    mime_type: str
    width: int
    height: int
    bytes: int
