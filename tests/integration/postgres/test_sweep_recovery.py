"""What the sweep and the expire task repair after a crash: a slot a terminal job still holds, and a
queued job whose generate task was lost. Real use cases, real Postgres, in-memory limits and a
recording queue, with an injected clock."""

from __future__ import annotations

import io
import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from PIL import Image

from nano_banana import usecases
from nano_banana.adapters.limits_memory import MemoryLimits
from nano_banana.adapters.postgres import PostgresJobStore
from nano_banana.adapters.queue_cloudtasks import CloudTasksQueue
from nano_banana.domain import Job, JobStatus
from nano_banana.errors import Unavailable
from nano_banana.images import inspect_image
from nano_banana.ports import HoldingKind, HoldingsPage, Task, task_name
from nano_banana.settings import Settings
from tests.support.fake_cloudtasks import FakeCloudTasks, TaskReceiver, fake_cloudtasks, task_receiver  # noqa: F401
from tests.support.memory_blobs import MemoryBlobStore
from tests.support.recording_queue import RecordingQueue

pytestmark = pytest.mark.postgres

USER = uuid.UUID(int=51)


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (5, 6, 7)).save(buf, "PNG")
    return buf.getvalue()


class CountingLimits(MemoryLimits):
    """The in-memory limits, whose releases can fail (a Firestore outage, or a crash before the call) and
    whose holdings pages are recorded (what the sweep reads from Firestore)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.release_failures = 0
        self.pages: list[tuple[HoldingKind, int]] = []

    def release_slot(self, *, project_id: uuid.UUID, job_id: uuid.UUID) -> None:
        if self.release_failures > 0:
            self.release_failures -= 1
            raise Unavailable("the limits store is unavailable")
        super().release_slot(project_id=project_id, job_id=job_id)

    def holdings(self, kind: HoldingKind, *, offset: int, limit: int) -> HoldingsPage:
        page = super().holdings(kind, offset=offset, limit=limit)
        self.pages.append((kind, page.documents))
        return page


@dataclass
class Stack:
    store: PostgresJobStore
    now: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __post_init__(self) -> None:
        cfg = Settings(NANO_BANANA_RATE_PER_HOUR=100, NANO_BANANA_MAX_ACTIVE_PER_PROJECT=2)
        self.limits = CountingLimits(cfg.rate_per_hour, cfg.max_active_per_project, self.clock)
        self.queue = RecordingQueue()
        self.svc = usecases.Services(
            settings=cfg,
            store=self.store,
            limits=self.limits,
            queue=self.queue,
            blobs=MemoryBlobStore(),
            generator_factory=None,
            processor_factory=None,
            clock=self.clock,
        )

    def clock(self) -> datetime:
        return self.now

    def create(self, project: uuid.UUID) -> Job:
        self.store.add_member(project, USER)
        data = _png()
        upload = usecases.ImageUpload(data, inspect_image(data, max_bytes=10**6, max_pixels=10**6))
        return usecases.create_job(self.svc, USER, usecases.CreateJob(project, "p", 1, None, upload=upload)).job


@pytest.fixture
def stack(pg_store: PostgresJobStore) -> Stack:
    return Stack(pg_store)


# ---------------------------------------------------------------- slots (issue 13.5)


def _leak_a_slot(stack: Stack, project: uuid.UUID) -> Job:
    """Cancel a job while the release fails: the job is terminal, its lease still held."""
    job = stack.create(project)
    stack.limits.release_failures = 1
    usecases.cancel_job(stack.svc, USER, job.id)
    assert job.id in stack.limits.active_jobs(project)
    return job


def test_the_sweep_gives_back_a_slot_a_terminal_job_still_holds(stack: Stack) -> None:
    project = uuid.uuid4()
    job = _leak_a_slot(stack, project)
    other = stack.create(project)
    stack.now += timedelta(seconds=61)  # one sweep period later, long before the lease would expire
    usecases.sweep(stack.svc)
    assert stack.limits.active_jobs(project) == [other.id], "the leaked slot is back, the live job keeps its own"
    current = stack.store.get_job(job.id)
    assert current is not None
    assert current.status is JobStatus.canceled


def test_the_expire_task_of_a_terminal_job_gives_back_its_slot(stack: Stack) -> None:
    project = uuid.uuid4()
    job = _leak_a_slot(stack, project)
    assert usecases.expire_job(stack.svc, job.id) is None
    assert stack.limits.active_jobs(project) == []


def test_reconciliation_reads_a_bounded_page_per_run_and_resumes(stack: Stack) -> None:
    """Bounded: each run reads `limit` projects' lease documents (and users' claim documents), resuming
    where the last run stopped, so every leaked lease is back within a pass whatever the order."""
    projects = [uuid.uuid4() for _ in range(3)]
    leaked = [_leak_a_slot(stack, p) for p in projects]
    stack.now += timedelta(seconds=61)
    stack.limits.pages.clear()
    for _ in range(len(projects) + 1):
        usecases.sweep(stack.svc, limit=1)
    assert all(documents <= 1 for _kind, documents in stack.limits.pages)
    assert all(job.id not in stack.limits.active_jobs(job.project_id) for job in leaked)


def test_a_reservation_whose_answer_was_lost_is_given_back_after_the_grace(stack: Stack) -> None:
    """Issue 24 finding 6 (safety net): Firestore applied the reservation but the creation never learned
    it (a commit past its timeout), so no row was inserted and nothing gave back the lease or the key
    claim: a same-key retry got 503 idempotency_key_in_use and the project stayed full until the lease
    ran out (6 min). The sweep gives both back once no creation can still insert the row."""
    project = uuid.uuid4()
    stack.store.add_member(project, USER)
    lost = stack.limits.reserve(
        user_id=USER,
        project_id=project,
        job_id=uuid.uuid4(),
        lease_expires_at=stack.now + timedelta(seconds=stack.svc.settings.timeout_s) + usecases.LEASE_GRACE,
        idempotency_key="retry-me",
    )
    stack.now += timedelta(seconds=61)
    usecases.sweep(stack.svc)
    assert stack.limits.active_jobs(project) == [lost.job_id], "within the grace its creation may still insert"
    stack.now += usecases.CREATION_GRACE
    usecases.sweep(stack.svc)
    assert stack.limits.active_jobs(project) == []
    assert stack.limits.holdings("claim", offset=0, limit=10).holdings == []
    data = _png()
    upload = usecases.ImageUpload(data, inspect_image(data, max_bytes=10**6, max_pixels=10**6))
    command = usecases.CreateJob(project, "p", 1, None, upload=upload, idempotency_key="retry-me")
    created = usecases.create_job(stack.svc, USER, command)
    assert not created.replayed, "the key creates the job now"


def test_the_sweep_gives_back_the_slot_of_a_deleted_job_whose_release_failed(stack: Stack) -> None:
    """Issue 24 finding 4: DELETE /jobs/{id} canceled the job, its slot release failed (one Firestore
    error), the row went; the sweep only looked at ended rows and the expire task finds no row, so the
    project answered concurrency_limited until the lease ran out (over 6 minutes)."""
    project = uuid.uuid4()
    job = stack.create(project)
    stack.limits.release_failures = 1
    usecases.delete_job(stack.svc, USER, job.id)
    assert stack.store.get_job(job.id) is None
    assert stack.limits.active_jobs(project) == [job.id]
    stack.now += usecases.CREATION_GRACE + timedelta(seconds=1)  # two sweep periods, not the lease's 6 min
    assert usecases.expire_job(stack.svc, job.id) is None
    usecases.sweep(stack.svc)
    assert stack.limits.active_jobs(project) == []


# ---------------------------------------------------------------- lost generate tasks (issue 13.6)


def _lose_generate_task(stack: Stack, job: Job) -> None:
    """As if the process died between inserting the job and enqueueing its generate task."""
    del stack.queue.tasks[task_name("generate", job.id)]


def test_the_sweep_requeues_a_queued_job_whose_generate_task_was_lost(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    job = stack.create(uuid.uuid4())
    _lose_generate_task(stack, job)
    stack.now += timedelta(seconds=20)
    usecases.sweep(stack.svc)
    assert stack.queue.pending("generate") == [], "within the grace nothing is requeued"
    stack.now += timedelta(seconds=stack.svc.settings.requeue_grace_s)
    with caplog.at_level(logging.INFO, logger="nano_banana"):
        usecases.sweep(stack.svc)
    (task,) = stack.queue.pending("generate")
    assert (task.job_id, task.replacement) == (job.id, None), "the lost task is created under its own name"
    assert task.dispatch_deadline_s is not None
    assert task.dispatch_deadline_s >= 15
    events = [r for r in caplog.records if getattr(r, "event", None) == "generate_requeued"]
    assert [getattr(r, "jobId", None) for r in events] == [str(job.id)]
    calls = stack.queue.enqueue_calls
    usecases.sweep(stack.svc)
    assert stack.queue.enqueue_calls == calls, "a pending task is left alone"


def test_a_used_up_task_name_is_replaced_under_a_round_name(stack: Stack) -> None:
    """The generate task ran (or failed for good) without claiming the job: Cloud Tasks refuses its name for
    an hour, so the replacement gets a deterministic round name; one per round."""
    job = stack.create(uuid.uuid4())
    stack.queue.mark_ran(Task(kind="generate", job_id=job.id))
    stack.now += timedelta(seconds=stack.svc.settings.requeue_grace_s + 1)
    usecases.sweep(stack.svc)
    (task,) = stack.queue.pending("generate")
    assert task.replacement == int(stack.now.timestamp()) // usecases.REQUEUE_ROUND_S
    usecases.sweep(stack.svc)
    assert len(stack.queue.pending("generate")) == 1


def test_a_queued_job_with_its_task_waiting_or_a_started_job_is_not_requeued(stack: Stack) -> None:
    waiting = stack.create(uuid.uuid4())
    started = stack.create(uuid.uuid4())
    stack.queue.mark_ran(Task(kind="generate", job_id=started.id))
    assert stack.store.claim_for_generation(started.id, stack.now) is not None
    stack.now += timedelta(seconds=stack.svc.settings.requeue_grace_s + 1)
    calls = stack.queue.enqueue_calls
    usecases.sweep(stack.svc)
    assert stack.queue.enqueue_calls == calls
    assert [t.job_id for t in stack.queue.pending("generate")] == [waiting.id]


@pytest.mark.cloudtasks
def test_a_lost_task_is_replaced_in_cloud_tasks_despite_its_used_name(
    pg_store: PostgresJobStore,
    fake_cloudtasks: FakeCloudTasks,  # noqa: F811
    task_receiver: TaskReceiver,  # noqa: F811
) -> None:
    """The generate task ran without claiming the job (it answered 2xx but the claim never happened, e.g. a
    task the queue dropped after its retries): its name is refused for an hour, the replacement's is not."""
    stack = Stack(pg_store)
    queue = CloudTasksQueue(
        fake_cloudtasks.client(),
        "projects/p/locations/l/queues/q",
        task_receiver.url("/generate"),
        task_receiver.url("/expire"),
        None,
        None,
        stack.clock,
    )
    stack.svc.queue = queue
    job = stack.create(uuid.uuid4())
    original = Task(kind="generate", job_id=job.id)
    assert fake_cloudtasks.wait_for(lambda: len(task_receiver.snapshot()) == 1 and not queue.is_pending(original))
    stack.now += timedelta(seconds=stack.svc.settings.requeue_grace_s + 1)
    usecases.sweep(stack.svc)
    assert fake_cloudtasks.wait_for(lambda: len(task_receiver.snapshot()) == 2)
    round_ = int(stack.now.timestamp()) // usecases.REQUEUE_ROUND_S
    assert [r.headers["X-CloudTasks-TaskName"] for r in task_receiver.snapshot()] == [
        task_name("generate", job.id),
        task_name("generate", job.id, round_),
    ]


# ---------------------------------------------------------------- a row that commits as the wait ends


def test_a_row_committing_as_the_task_s_wait_ends_is_claimed_not_acknowledged(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 24 suspicion (proven): the generate task's claim found no row, its re-read found the row
    queued (its insert committed in between), but ROW_WAIT_S had just ended, so a first delivery was
    acknowledged without claiming: the job sat queued until the sweep requeued it (requeue grace + a sweep
    period, 30 s+). Interleaving: claim (no row) -> insert commits -> the wait ends -> get_job (queued)."""
    from nano_banana.usecases import generating

    job = stack.create(uuid.uuid4())
    monkeypatch.setattr(generating, "ROW_WAIT_S", 0.0)  # the wait is over by the time the row is seen
    claim = stack.store.claim_for_generation
    calls: list[uuid.UUID] = []

    def claim_before_the_commit(job_id: uuid.UUID, now: datetime) -> Job | None:
        calls.append(job_id)
        return None if len(calls) == 1 else claim(job_id, now)

    monkeypatch.setattr(stack.store, "claim_for_generation", claim_before_the_commit)
    try:
        claimed = generating._claim(stack.svc, job.id, retry_if_missing=True)
    except Exception as exc:  # a redelivery would also do: the queue tries again
        pytest.fail(f"neither claimed nor redelivered: {exc!r}")
    assert claimed is not None, "acknowledged without claiming a queued job"
    assert claimed.status is JobStatus.running
