"""The ports: what the use cases need from the outside world, as Protocols.

Each has a production adapter and an embedded twin in `nano_banana/adapters/`; `bootstrap.py`
picks one from settings. Contract suites in `tests/contract/` run against every implementation.
Adapters are called from several threads at once (a request's independent round trips run side by side,
`nano_banana.together`): each must be thread-safe (the Postgres pool, httpx under storage3, the gRPC
clients of Firestore and Cloud Tasks are; the in-process twins hold a lock).
"""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Literal, Protocol

from nano_banana.domain import (
    GenerationRequest,
    GenerationResult,
    Job,
    JobStatus,
    Message,
    ModelUsage,
    NewJob,
    Variant,
    VariantUpload,
)

Clock = Callable[[], datetime]
"""Returns the current time, timezone-aware UTC. Injected so tests can move time."""


# ---------------------------------------------------------------- limits


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


# ---------------------------------------------------------------- task queue

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


# ---------------------------------------------------------------- outbound webhooks


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


# ---------------------------------------------------------------- blobs


@dataclass(frozen=True, slots=True)
class BlobInfo:
    path: str
    size: int
    content_type: str | None


@dataclass(frozen=True, slots=True)
class FolderEntry:
    """One name in one level of a folder: an object (with its last write) or a sub-folder."""

    name: str
    folder: bool
    updated_at: datetime | None


class BlobStore(Protocol):
    """One private bucket. Paths are keys like `inputs/{user}/{id}.png`, never URLs."""

    def put(self, path: str, data: bytes, content_type: str) -> None:
        """Write (overwriting: a redelivered task rewrites its own outputs)."""
        ...

    def get(self, path: str, *, max_bytes: int) -> bytes:
        """Read; NotFound if absent; FileTooLarge if larger than max_bytes (never buffers past it)."""
        ...

    def stat(self, path: str) -> BlobInfo | None:
        """None only if there is no such object; a store that cannot tell raises."""
        ...

    def check_access(self) -> None:
        """Readiness: our credentials can read our bucket. Raises StorageMisconfigured naming what is
        wrong (the key or the bucket), Unavailable when the store cannot be reached."""
        ...

    def list(self, prefix: str) -> list[str]:
        """Paths under a prefix (recursive)."""
        ...

    def delete(self, paths: Sequence[str]) -> None:
        """Idempotent: absent paths are fine."""
        ...

    def list_folder(self, folder: str, *, offset: int, limit: int) -> builtins.list[FolderEntry]:
        """One level of a folder (no trailing slash), sorted by name, a page at a time: how Storage lists."""
        ...

    def signed_url(self, path: str, *, ttl_s: int) -> str:
        """A URL anyone holding it may GET until it expires."""
        ...

    def signed_urls(self, paths: Sequence[str], *, ttl_s: int) -> dict[str, str]:
        """Signed GET URLs for many paths at once (one round trip where the store allows it); a path
        with no object behind it is left out."""
        ...

    def signed_upload_url(self, path: str, *, ttl_s: int) -> str:
        """A URL an external processor may upload one object to (PUT/POST as the store documents)."""
        ...

    def signed_upload_urls(self, paths: Sequence[str], *, ttl_s: int) -> tuple[tuple[str, ...], datetime]:
        """Upload URLs for each path, and when the first of them expires (the store may cap ttl_s)."""
        ...


# ---------------------------------------------------------------- generation


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


# ---------------------------------------------------------------- job store

ReceiptClaim = Literal["claimed", "processing", "applied"]


@dataclass(frozen=True, slots=True)
class UsageBucket:
    """A project's jobs created on one UTC day (`day` None: over the whole range asked)."""

    day: date | None
    jobs: int
    by_status: dict[str, int]
    images: int
    prompt_tokens: int
    output_tokens: int
    total_tokens: int
    p50_ms: float | None  # totalMs percentiles over the jobs that ended (None: none ended)
    p95_ms: float | None


@dataclass(frozen=True, slots=True)
class JobPage:
    jobs: list[Job]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class DeletedJob:
    """A job row a deletion removed, with what its blobs and slot need to know."""

    id: uuid.UUID
    project_id: uuid.UUID
    user_id: uuid.UUID
    status: JobStatus
    input_path: str
    deadline_at: datetime
    idempotency_key: str | None = None


class JobStore(Protocol):
    """Jobs, variants, messages and webhook receipts. Every status change is a compare-and-set."""

    def can_access(self, project_id: uuid.UUID, user_id: uuid.UUID) -> bool: ...

    def add_member(self, project_id: uuid.UUID, user_id: uuid.UUID) -> None: ...

    def usage_days(self, project_id: uuid.UUID, start: datetime, end: datetime) -> list[UsageBucket]:
        """The project's jobs created in [start, end) by UTC day (days without jobs left out), then one
        bucket over the whole range (day None). One query."""
        ...

    def project_budget(self, project_id: uuid.UUID) -> int | None:
        """The project's monthly image budget from pip_ai_project_budgets (0: none for this project);
        None when the project has no row (the default applies)."""
        ...

    def create_job(self, new: NewJob) -> Job | None:
        """Insert a queued job and its user message in one transaction.
        Returns None when (user_id, idempotency_key) already exists. A definite refusal raises, never
        Unavailable: NotFound when the job or variant it is made from is gone (a job whose input is a
        variant is inserted only while that variant exists, and holds it until it commits: a deletion's
        purge then sees the reference), InvalidRequest when a row breaks a constraint."""
        ...

    def discard_queued(self, job_id: uuid.UUID) -> bool:
        """Delete a job (with its user message) that is still `queued`: a creation rolled back before its
        tasks were scheduled. False if it is no longer queued (a task claimed it), was handed out by
        `mark_replayed`, or is gone. A CAS."""
        ...

    def mark_replayed(self, job_id: uuid.UUID) -> Job | None:
        """Hand the job out to an Idempotency-Key replay: from now on `discard_queued` spares it. None if it
        is gone (its creation discarded it first). A CAS against `discard_queued`."""
        ...

    def create_refinement(self, new: NewJob, *, max_turns: int) -> Job | int | None:
        """Like create_job for a refinement, serialised per thread: returns the thread's turn count
        instead of inserting when it already has max_turns jobs."""
        ...

    def variant_in_project(self, storage_path: str, project_id: uuid.UUID) -> Variant | None:
        """The variant stored at that path, if it belongs to a job of the project."""
        ...

    def visible_paths(self, user_id: uuid.UUID, paths: Sequence[tuple[str, uuid.UUID | None]]) -> set[str]:
        """Which (path, job id in the path) pairs name a variant or an input of a job the user may see."""
        ...

    def find_by_idempotency_key(self, user_id: uuid.UUID, key: str) -> tuple[Job, str | None] | None:
        """The job created with that key, and the hash of the request that created it."""
        ...

    def get_job(self, job_id: uuid.UUID, *, user_id: uuid.UUID | None = None) -> Job | None:
        """With user_id: only if that user may access the job's project (else None: no leak)."""
        ...

    def list_jobs(
        self, project_id: uuid.UUID, *, status: JobStatus | None, limit: int, cursor: str | None
    ) -> JobPage: ...

    def claim_for_generation(self, job_id: uuid.UUID, now: datetime) -> Job | None:
        """queued|running -> running, attempt + 1, if before the deadline. None if not claimable."""
        ...

    def thread_history(self, job: Job) -> list[Job]:
        """The jobs of the job's thread before it, oldest first (the ancestors chain)."""
        ...

    def complete(
        self,
        job_id: uuid.UUID,
        attempt: int,
        uploads: Sequence[VariantUpload],
        note: str | None,
        *,
        now: datetime,
        receipt: str | None = None,
        usage: ModelUsage | None = None,
    ) -> Job | None:
        """running(attempt) -> succeeded with its variants and assistant message, one transaction, if the
        deadline has not passed. None if the CAS lost (canceled, timed out or superseded meanwhile).
        With `receipt`, that webhook receipt becomes applied in the same transaction. The row records
        `usage` and the images stored."""
        ...

    def fail(
        self,
        job_id: uuid.UUID,
        *,
        code: str,
        message: str,
        from_statuses: Sequence[JobStatus],
        attempt: int | None = None,
        now: datetime | None = None,
        only_if_past_deadline: bool = False,
        receipt: str | None = None,
        usage: ModelUsage | None = None,
    ) -> Job | None:
        """-> failed (with assistant message) if the status is in from_statuses (and attempt matches,
        and, when asked, the deadline has passed). None if the CAS lost. With `receipt`, that webhook
        receipt becomes applied in the same transaction. The row records `usage` (what it says) and 0 images."""
        ...

    def cancel(self, job_id: uuid.UUID) -> Job | None:
        """queued|running -> canceled. None if the CAS lost."""
        ...

    def overdue_jobs(self, now: datetime, limit: int) -> list[uuid.UUID]:
        """Active jobs whose deadline has passed (for the sweep)."""
        ...

    def stale_queued_jobs(self, now: datetime, deadline_before: datetime, limit: int) -> list[Job]:
        """Queued jobs whose deadline lies in (now, deadline_before]: not started within the grace."""
        ...

    def job_statuses(self, job_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, JobStatus]:
        """The state of each of the ids that still has a row (a deleted or never inserted job is absent)."""
        ...

    def messages(self, thread_id: uuid.UUID) -> list[tuple[Message, Job]]:
        """A thread's messages oldest first, each with its job (and the job's variants)."""
        ...

    def claim_webhook(self, webhook_id: str, *, now: datetime, stale_before: datetime) -> ReceiptClaim:
        """Claim a delivery: 'claimed' for a new webhook id (or a `processing` claim made before
        stale_before: its delivery died); else 'processing' (in flight) or 'applied' (a replay)."""
        ...

    def settle_webhook(self, webhook_id: str) -> None:
        """Mark a claimed receipt applied when the delivery was answered as done without a transition."""
        ...

    def release_webhook(self, webhook_id: str, *, claimed_at: datetime) -> None:
        """Drop the claim made at claimed_at (`now` of claim_webhook) whose delivery failed before any
        transition committed, so the retry may apply; an applied or taken-over receipt stays."""
        ...

    def prune_webhooks(self, before: datetime) -> None:
        """Forget webhook ids older than the replay window."""
        ...

    def record_webhook_attempt(
        self, job_id: uuid.UUID, event: str, *, state: str, status: int | None, reason: str | None, now: datetime
    ) -> bool:
        """One outbound delivery attempt's outcome (attempts + 1; `state` pending to retry, else delivered,
        gone, refused or failed), if the delivery is still pending. False if it is settled or gone."""
        ...

    def unsent_webhooks(self, *, before: datetime, after: datetime, limit: int) -> list[tuple[uuid.UUID, str]]:
        """(job id, event) of pending deliveries recorded in (after, before) that no attempt reached."""
        ...

    def job_subtree(self, job_ids: Sequence[uuid.UUID], *, by_input: bool = False) -> list[Job]:
        """The jobs and every refinement made from them (children by parent_job_id, recursively); with
        by_input also every job whose input is one of their variants (by path, in any thread)."""
        ...

    def delete_jobs(
        self,
        job_ids: Sequence[uuid.UUID],
        *,
        now: datetime,
        by_input: bool = False,
        late_uploads_s: float,
        extra_purges: Sequence[str] = (),
        expired_before: datetime | None = None,
    ) -> list[DeletedJob]:
        """Delete the jobs of `job_subtree` with their variants and messages in one transaction, which
        also records their blobs to purge (each job's output prefix, its input, `extra_purges`; due now,
        and again `late_uploads_s` after the deadline of a job whose worker may still be alive). Serialised
        with refinements in every thread the subtree reaches. With `expired_before` (retention), only
        the roots whose thread, read under those locks, has no active job and none finished since."""
        ...

    def referenced_paths(self, paths: Sequence[str], *, excluding: Sequence[uuid.UUID] = ()) -> set[str]:
        """The paths some job (other than `excluding`) uses as its input or stores as a variant."""
        ...

    def due_purges(self, now: datetime, limit: int) -> list[str]:
        """Recorded blob paths and prefixes whose purge is due."""
        ...

    def finish_purges(self, paths: Sequence[str], now: datetime) -> None:
        """Forget purges done (entries due later, a deleted active job's second pass, stay)."""
        ...

    def expired_threads(self, before: datetime, limit: int) -> list[uuid.UUID]:
        """Root jobs of threads whose every job finished before `before`, oldest first, as many whole
        threads as hold at most `limit` jobs together (at least one)."""
        ...

    def user_jobs(self, user_id: uuid.UUID) -> list[uuid.UUID]:
        """Every job the user created."""
        ...

    def sweep_cursor(self, name: str) -> tuple[int, datetime | None]:
        """Where a bounded sweep step resumes, and when it was saved ((0, None) when never run)."""
        ...

    def set_sweep_cursor(self, name: str, position: int, at: datetime) -> None: ...

    def wait_for_change(self, job_id: uuid.UUID, timeout_s: float, heartbeat_s: float = 15.0) -> Iterator[bool]:
        """Yields True once listening has begun (re-read then: a change may precede it), True each time
        the job's row changes (LISTEN/NOTIFY), False after heartbeat_s of silence, until timeout_s
        passes."""
        ...

    def ping(self) -> None: ...
