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
from nano_banana.ports import Task, task_name
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
    whose lease reads are counted (what the sweep costs in Firestore reads)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.release_failures = 0
        self.lease_reads: list[uuid.UUID] = []

    def release_slot(self, *, project_id: uuid.UUID, job_id: uuid.UUID) -> None:
        if self.release_failures > 0:
            self.release_failures -= 1
            raise Unavailable("the limits store is unavailable")
        super().release_slot(project_id=project_id, job_id=job_id)

    def active_jobs(self, project_id: uuid.UUID) -> list[uuid.UUID]:
        self.lease_reads.append(project_id)
        return super().active_jobs(project_id)


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


def test_slot_reclaim_reads_only_projects_with_a_recently_ended_job(stack: Stack) -> None:
    """Bounded: one lease read per project whose ended job's lease may still live, at most `limit`."""
    old, recent_a, recent_b, active_only = (uuid.uuid4() for _ in range(4))
    _leak_a_slot(stack, old)
    stack.now += timedelta(seconds=stack.svc.settings.timeout_s) + usecases.LEASE_GRACE  # old's lease expired
    leaked = _leak_a_slot(stack, recent_a)
    ended = stack.create(recent_b)
    usecases.cancel_job(stack.svc, USER, ended.id)
    stack.create(active_only)
    stack.limits.lease_reads.clear()
    usecases.sweep(stack.svc)
    assert sorted(stack.limits.lease_reads) == sorted([recent_a, recent_b])
    assert leaked.id not in stack.limits.active_jobs(recent_a)
    stack.limits.lease_reads.clear()
    usecases.sweep(stack.svc, limit=1)
    assert len(stack.limits.lease_reads) == 1


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
