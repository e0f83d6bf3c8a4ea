"""Random interleavings of create / claim / finish / cancel / expire / sweep / time passing never
break an invariant. Real use cases, real Postgres, in-memory limits with an injected clock."""

from __future__ import annotations

import io
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from PIL import Image

from nano_banana import usecases
from nano_banana.adapters.limits_memory import MemoryLimits
from nano_banana.adapters.postgres import PostgresJobStore
from nano_banana.domain import ACTIVE, JobStatus, VariantUpload, output_path
from nano_banana.errors import BudgetExceeded, ConcurrencyLimited, NanoBananaError, RateLimited, TransientError
from nano_banana.images import inspect_image
from nano_banana.settings import Settings
from tests.support.memory_blobs import MemoryBlobStore
from tests.support.recording_queue import RecordingQueue

pytestmark = pytest.mark.postgres

PROJECTS = [uuid.UUID(int=1), uuid.UUID(int=2)]
BUDGET = 3  # images per project per month: small enough that interleavings run into it
USERS = [uuid.UUID(int=11), uuid.UUID(int=12)]


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (9, 9, 9)).save(buf, "PNG")
    return buf.getvalue()


PNG = _png()


class Lifecycle(RuleBasedStateMachine):
    store: PostgresJobStore

    jobs = Bundle("jobs")

    def __init__(self) -> None:
        super().__init__()
        self.now = datetime(2026, 1, 1, tzinfo=UTC)
        cfg = Settings(
            NANO_BANANA_RATE_PER_HOUR=6,
            NANO_BANANA_MAX_ACTIVE_PER_PROJECT=2,
            NANO_BANANA_TIMEOUT_S=60,
            NANO_BANANA_PROJECT_MONTHLY_IMAGES=BUDGET,
        )
        self.blobs = MemoryBlobStore()
        self.limits = MemoryLimits(cfg.rate_per_hour, cfg.max_active_per_project, self.clock)
        self.svc = usecases.Services(
            settings=cfg,
            store=self.store,
            limits=self.limits,
            queue=RecordingQueue(),
            blobs=self.blobs,
            generator_factory=None,
            processor_factory=None,
            clock=self.clock,
        )
        for p in PROJECTS:
            for u in USERS:
                self.store.add_member(p, u)
        self.terminal_seen: dict[uuid.UUID, JobStatus] = {}
        self.created: list[uuid.UUID] = []

    def clock(self) -> datetime:
        return self.now

    @rule(target=jobs, project=st.sampled_from(PROJECTS), user=st.sampled_from(USERS))
    def create(self, project: uuid.UUID, user: uuid.UUID) -> uuid.UUID:
        info = inspect_image(PNG, max_bytes=10**6, max_pixels=10**6)
        cmd = usecases.CreateJob(project, "p", 1, None, upload=usecases.ImageUpload(PNG, info))
        before_inputs = len(self.blobs.list("inputs/"))
        try:
            created = usecases.create_job(self.svc, user, cmd)
        except (RateLimited, ConcurrencyLimited, BudgetExceeded):
            assert len(self.blobs.list("inputs/")) == before_inputs, "a rejected request stores nothing"
            return uuid.UUID(int=0)
        self.created.append(created.job.id)
        return created.job.id

    @rule(job_id=jobs)
    def claim_and_finish(self, job_id: uuid.UUID) -> None:
        job = self.store.claim_for_generation(job_id, self.now)
        if job is None:
            return
        uploads = [VariantUpload(0, output_path(job.id, job.attempt, 0, "image/png"), "image/png", 16, 16, len(PNG))]
        self.blobs.put(uploads[0].storage_path, PNG, "image/png")
        usecases.complete_job(self.svc, job, job.attempt, uploads, None)

    @rule(job_id=jobs)
    def claim_only(self, job_id: uuid.UUID) -> None:
        """A worker that claims and then dies (its task would be redelivered)."""
        job = self.store.claim_for_generation(job_id, self.now)
        if job is not None:
            self.blobs.put(output_path(job.id, job.attempt, 0, "image/png"), PNG, "image/png")

    @rule(job_id=jobs, user=st.sampled_from(USERS))
    def cancel(self, job_id: uuid.UUID, user: uuid.UUID) -> None:
        try:
            usecases.cancel_job(self.svc, user, job_id)
        except NanoBananaError as exc:
            assert exc.code in {"invalid_transition", "not_found"}

    @rule(job_id=jobs)
    def expire(self, job_id: uuid.UUID) -> None:
        try:
            usecases.expire_job(self.svc, job_id)
        except TransientError:
            job = self.store.get_job(job_id)
            assert job is not None
            assert job.deadline_at > self.now

    @rule()
    def sweep(self) -> None:
        usecases.sweep(self.svc)

    @rule(seconds=st.sampled_from([1, 30, 61, 700, 3601]))
    def time_passes(self, seconds: int) -> None:
        self.now += timedelta(seconds=seconds)

    @invariant()
    def invariants(self) -> None:
        if not self.created:
            return
        jobs = [self.store.get_job(j) for j in self.created]
        for job in jobs:
            assert job is not None
            if job.id in self.terminal_seen:
                assert job.status is self.terminal_seen[job.id], "terminal states never change"
            if job.terminal:
                self.terminal_seen[job.id] = job.status
                assert job.finished_at is not None
            assert (len(job.variants) > 0) == (job.status is JobStatus.succeeded)
            if job.status is JobStatus.failed:
                assert job.error_code in {"timeout"}
            roles = [m.role.value for m, j in self.store.messages(job.thread_id) if j.id == job.id]
            assert roles == (["user", "assistant"] if job.terminal else ["user"])
            outputs = self.blobs.list(f"jobs/{job.id}/")
            if job.terminal and job.status is not JobStatus.succeeded:
                assert outputs == [], "a canceled or failed job leaves no output blobs"
            if job.status is JobStatus.succeeded:
                assert sorted(outputs) == sorted(v.storage_path for v in job.variants), "no orphans beside the variants"
        for project in PROJECTS:
            leased = set(self.limits.active_jobs(project))
            active = {j.id for j in jobs if j is not None and j.project_id == project and j.status in ACTIVE}
            assert leased <= active, "a slot is never held by a finished job"
            fresh = {
                j.id
                for j in jobs
                if j is not None and j.id in active and j.deadline_at + usecases.LEASE_GRACE > self.now
            }
            assert fresh <= leased, "every active job within its deadline holds its slot"
            assert len(leased) <= 2, "the concurrency cap is never exceeded"
            # The budget: the month counts each job as asked while it runs, as stored once it ended, and
            # never holds more than the budget (a job whose deadline passed still counts until it ends).
            month = self.limits.month_usage(project, self.now)
            mine = [j for j in jobs if j is not None and j.project_id == project]
            assert month.reserved == sum(j.variant_count for j in mine if not j.terminal)
            # A deleted job's images were made and stay counted (deletion frees storage, not the month).
            deleted = getattr(self, "images_of_deleted", {}).get(project, 0)
            assert month.used == sum(len(j.variants) for j in mine if j.terminal) + deleted
            assert month.counted <= BUDGET, "a month never holds one image more than its budget"


def test_lifecycle_invariants_hold_under_random_interleavings(pg_store: PostgresJobStore) -> None:
    Lifecycle.store = pg_store
    run_state_machine_as_test(
        Lifecycle,
        settings=settings(
            max_examples=40, stateful_step_count=30, deadline=None, suppress_health_check=list(HealthCheck)
        ),
    )
