"""The job store port: the Postgres rows that are the source of truth."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Literal, Protocol

from nano_banana.domain import (
    Job,
    JobStatus,
    Message,
    ModelUsage,
    NewJob,
    Variant,
    VariantUpload,
)

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
