"""Creating a job under failure and concurrency: a failed creation leaves nothing (its Idempotency-Key
included), a retry racing its own first attempt gets that attempt's job, an `inputPath` is read only
after the limits admit it, and the log says what really happened. Real use cases on real Postgres, the
in-memory limits, a recording queue and an in-memory blob store."""

from __future__ import annotations

import io
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from PIL import Image

from nano_banana import usecases
from nano_banana.adapters.limits_memory import MemoryLimits
from nano_banana.adapters.postgres import PostgresJobStore
from nano_banana.domain import JobStatus, VariantUpload
from nano_banana.errors import (
    ConcurrencyLimited,
    IdempotencyConflict,
    IdempotencyKeyInUse,
    InvalidRequest,
    NanoBananaError,
    RateLimited,
    Unavailable,
)
from nano_banana.images import inspect_image, upload_budget
from nano_banana.ports import LimitsReading, Reservation, Task
from nano_banana.settings import Settings
from nano_banana.usecases import generating, idempotency
from tests.support.memory_blobs import MemoryBlobStore
from tests.support.new_jobs import new_job
from tests.support.recording_queue import RecordingQueue

pytestmark = pytest.mark.postgres


def _png(color: tuple[int, int, int] = (5, 6, 7)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buf, "PNG")
    return buf.getvalue()


class SlowLimits(MemoryLimits):
    """The in-memory limits whose reservation can be held up after it committed (a slow network answer):
    the claim is taken, the caller has not heard back yet."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hold_next = threading.Event()
        self.holding = threading.Event()
        self.release = threading.Event()

    def reserve(self, **kwargs: Any) -> Reservation:
        reservation = super().reserve(**kwargs)
        if self.hold_next.is_set():
            self.hold_next.clear()
            self.holding.set()
            assert self.release.wait(30)
        return reservation


class CountingBlobs(MemoryBlobStore):
    """Records each read, the upload memory budget in use during it, and can hold an upload up."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []
        self.budget_during_read: list[int] = []
        self.hold_puts = threading.Event()
        self.putting = threading.Event()
        self.release_puts = threading.Event()

    def get(self, path: str, *, max_bytes: int) -> bytes:
        self.reads.append(path)
        self.budget_during_read.append(upload_budget().in_use)
        return super().get(path, max_bytes=max_bytes)

    def put(self, path: str, data: bytes, content_type: str) -> None:
        if self.hold_puts.is_set():
            self.putting.set()
            assert self.release_puts.wait(30)
        super().put(path, data, content_type)


@dataclass
class Stack:
    store: PostgresJobStore
    rate_per_hour: int = 100
    max_active: int = 10
    user: uuid.UUID = field(default_factory=uuid.uuid4)
    project: uuid.UUID = field(default_factory=uuid.uuid4)

    def __post_init__(self) -> None:
        self.limits = SlowLimits(self.rate_per_hour, self.max_active, lambda: datetime.now(UTC))
        self.queue = RecordingQueue()
        self.blobs = CountingBlobs()
        self.svc = usecases.Services(
            settings=Settings(),
            store=self.store,
            limits=self.limits,
            queue=self.queue,
            blobs=self.blobs,
            generator_factory=None,
            processor_factory=None,
            clock=lambda: datetime.now(UTC),
        )
        self.store.add_member(self.project, self.user)

    def create(self, key: str | None = None, prompt: str = "golden hour", **kwargs: Any) -> usecases.Created:
        data = _png()
        upload = usecases.ImageUpload(data, inspect_image(data, max_bytes=10**6, max_pixels=10**6))
        command = usecases.CreateJob(self.project, prompt, 2, None, upload=upload, idempotency_key=key, **kwargs)
        return usecases.create_job(self.svc, self.user, command)

    def create_from(self, path: str) -> usecases.Created:
        command = usecases.CreateJob(self.project, "again", 1, None, input_path=path)
        return usecases.create_job(self.svc, self.user, command)

    def succeeded_job(self) -> tuple[uuid.UUID, uuid.UUID]:
        """A job that succeeded with one variant: (job id, variant id)."""
        job = self.create().job
        claimed = self.store.claim_for_generation(job.id, datetime.now(UTC))
        assert claimed is not None
        path = f"jobs/{job.id}/1/0.png"
        self.blobs.put(path, _png((1, 2, 3)), "image/png")
        done = self.store.complete(
            job.id, claimed.attempt, [VariantUpload(0, path, "image/png", 8, 8, 10)], None, now=datetime.now(UTC)
        )
        assert done is not None
        self.svc.limits.release_slot(project_id=self.project, job_id=job.id)
        return job.id, done.variants[0].id

    def refine(self, parent: uuid.UUID, variant: uuid.UUID, key: str | None, prompt: str = "birds") -> usecases.Created:
        return usecases.refine(self.svc, self.user, usecases.Refine(parent, variant, prompt, key))

    def inputs(self) -> list[str]:
        return [p for p in self.blobs.objects if p.startswith("inputs/")]


@pytest.fixture
def stack(pg_store: PostgresJobStore) -> Iterator[Stack]:
    made = Stack(pg_store)
    yield made
    made.limits.release.set()
    made.blobs.release_puts.set()


def make_stack(pg_store: PostgresJobStore, **limits: int) -> Stack:
    return Stack(pg_store, **limits)


# ---------------------------------------------------------------- a failed creation leaves nothing


def test_a_failed_enqueue_leaves_nothing_and_the_retry_with_its_key_creates_the_job(stack: Stack) -> None:
    """Issue 13 #3: the 503 said "retry"; the retry with the same key must create the job, not replay a
    dead one."""
    stack.queue.fail_next = Unavailable("the queue is down")
    with pytest.raises(Unavailable) as failed:
        stack.create(key="k-1")
    assert failed.value.status == 503
    assert stack.store.user_jobs(stack.user) == [], "the row of a job never scheduled is gone"
    assert stack.limits.active_jobs(stack.project) == [], "the reservation is given back"
    assert stack.inputs() == [], "the stored input is deleted"

    retry = stack.create(key="k-1")
    assert not retry.replayed
    assert retry.job.status is JobStatus.queued
    assert stack.store.user_jobs(stack.user) == [retry.job.id]
    assert stack.queue.pending("generate")[0].job_id == retry.job.id
    again = stack.create(key="k-1")
    assert (again.replayed, again.job.id) == (True, retry.job.id)


def test_a_failed_enqueue_of_a_refinement_leaves_no_message_and_frees_its_key(stack: Stack) -> None:
    parent, variant = stack.succeeded_job()
    thread_before = [m.id for m, _ in stack.store.messages(parent)]
    stack.queue.fail_next = Unavailable("the queue is down")
    with pytest.raises(Unavailable):
        stack.refine(parent, variant, "r-1")
    assert [m.id for m, _ in stack.store.messages(parent)] == thread_before, "no user message is left"
    assert stack.limits.active_jobs(stack.project) == []

    retry = stack.refine(parent, variant, "r-1")
    assert not retry.replayed
    assert retry.message_id is not None
    assert retry.job.parent_job_id == parent
    assert len(stack.store.messages(parent)) == len(thread_before) + 1


def test_a_failed_upload_beside_the_reservation_gives_it_back(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """The input upload and the reservation commit run at once: whichever fails, neither outlives the
    request, and nothing is inserted or enqueued."""

    def broken_put(path: str, data: bytes, content_type: str) -> None:
        raise Unavailable("storage is down")

    monkeypatch.setattr(stack.blobs, "put", broken_put)
    with pytest.raises(Unavailable):
        stack.create(key="k-2")
    assert stack.store.user_jobs(stack.user) == []
    assert stack.limits.active_jobs(stack.project) == []
    assert stack.queue.tasks == {}
    monkeypatch.undo()
    assert not stack.create(key="k-2").replayed


def test_a_job_a_task_claimed_before_the_other_enqueue_failed_lives(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The generate task may run (waiting for the row the insert beside it commits) before the expire
    enqueue fails: that job is live (the sweep stands in for its expire task), so it keeps its row, input
    and slot, and the answer is the job."""
    real_enqueue = stack.queue.enqueue
    claimed = threading.Event()

    def enqueue(task: Task) -> bool:
        if task.kind == "expire":
            assert claimed.wait(10)  # after the generate task has claimed the job
            raise Unavailable("the queue is down")
        created = real_enqueue(task)
        assert generating._claim(stack.svc, task.job_id) is not None
        claimed.set()
        return created

    monkeypatch.setattr(stack.queue, "enqueue", enqueue)
    created = stack.create(key="k-live")
    assert not created.replayed
    job = stack.store.get_job(created.job.id)
    assert job is not None
    assert job.status is JobStatus.running
    assert stack.limits.active_jobs(stack.project) == [job.id]
    assert stack.inputs() == [job.input_path]


# ---------------------------------------------------------------- a retry racing its first attempt


@pytest.mark.parametrize("slow_at", ["reservation", "upload"])
def test_a_retry_during_its_first_attempt_gets_that_job_not_a_429(pg_store: PostgresJobStore, slow_at: str) -> None:
    """Issue 13 #4: one rate unit left, the client's first request is still in flight (its answer held
    up after the reservation, or its upload slow) and it retries with the same key: both answers name
    one job, one 202 and one replay, never a 429."""
    stack = make_stack(pg_store, rate_per_hour=1)
    gate, started, release = (
        (stack.limits.hold_next, stack.limits.holding, stack.limits.release)
        if slow_at == "reservation"
        else (stack.blobs.hold_puts, stack.blobs.putting, stack.blobs.release_puts)
    )
    gate.set()
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(stack.create, "k-3")
        assert started.wait(10)
        if slow_at == "upload":
            stack.blobs.hold_puts.clear()
        second = pool.submit(stack.create, "k-3")
        time.sleep(0.3)  # the retry is waiting for the first request's job, not answered
        assert not second.done()
        release.set()
        a, b = first.result(timeout=20), second.result(timeout=20)
    assert (a.replayed, b.replayed) == (False, True)
    assert a.job.id == b.job.id
    assert stack.store.user_jobs(stack.user) == [a.job.id]
    with pytest.raises(RateLimited):
        stack.create(key="k-other")  # the one unit is used by that one job


def test_a_retry_whose_first_attempt_fails_creates_the_job(pg_store: PostgresJobStore) -> None:
    stack = make_stack(pg_store, rate_per_hour=1)
    stack.limits.hold_next.set()
    stack.queue.fail_next = Unavailable("the queue is down")
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(stack.create, "k-4")
        assert stack.limits.holding.wait(10)
        second = pool.submit(stack.create, "k-4")
        time.sleep(0.3)
        stack.limits.release.set()
        with pytest.raises(Unavailable):
            first.result(timeout=20)
        created = second.result(timeout=20)
    assert not created.replayed
    assert stack.store.user_jobs(stack.user) == [created.job.id]
    assert stack.limits.active_jobs(stack.project) == [created.job.id]


def test_a_different_body_with_a_key_in_use_is_409_once_the_job_exists(stack: Stack) -> None:
    stack.limits.hold_next.set()
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(stack.create, "k-5")
        assert stack.limits.holding.wait(10)
        other: Future[usecases.Created] = pool.submit(stack.create, "k-5", "another prompt")
        time.sleep(0.2)
        stack.limits.release.set()
        with pytest.raises(IdempotencyConflict):
            other.result(timeout=20)
        assert not first.result(timeout=20).replayed


def test_a_key_held_past_the_wait_is_503_idempotency_key_in_use(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(idempotency, "KEY_WAIT_S", 0.4)
    stack.limits.hold_next.set()
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(stack.create, "k-6")
        assert stack.limits.holding.wait(10)
        with pytest.raises(IdempotencyKeyInUse) as in_use:
            stack.create(key="k-6")
        stack.limits.release.set()
        assert not first.result(timeout=20).replayed
    assert in_use.value.status == 503
    assert in_use.value.details == {"reason": "idempotency_key_in_use"}
    assert in_use.value.headers["Retry-After"] == "2"
    assert stack.create(key="k-6").replayed, "once the job exists, the key replays it"


# ---------------------------------------------------------------- inputPath: limits first, within the budget


def test_an_input_path_into_a_full_project_is_429_without_reading_the_input(pg_store: PostgresJobStore) -> None:
    """Issue 13 #7: the limits are checked before the input is downloaded (and decoded)."""
    stack = make_stack(pg_store, max_active=1)
    path = f"inputs/{stack.user}/{uuid.uuid4()}.png"
    stack.blobs.put(path, _png(), "image/png")
    stack.create()
    with pytest.raises(ConcurrencyLimited):
        stack.create_from(path)
    assert stack.blobs.reads == []


def test_an_input_path_is_read_within_the_upload_memory_budget(stack: Stack) -> None:
    path = stack.create().job.input_path  # an upload exists only as some job's input
    held_before = upload_budget().in_use
    created = stack.create_from(path)
    assert created.job.input_path == path
    assert stack.blobs.reads == [path]
    assert stack.blobs.budget_during_read[0] - held_before >= stack.svc.settings.max_file_bytes
    assert upload_budget().in_use == held_before, "given back once the bytes are dropped"


def test_the_read_only_check_reserves_nothing_and_hands_its_reading_to_the_reservation(stack: Stack) -> None:
    reading = stack.limits.check(user_id=stack.user, project_id=stack.project)
    assert isinstance(reading, LimitsReading)
    assert stack.limits.active_jobs(stack.project) == []


# ---------------------------------------------------------------- what the log says


class _Events(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.events: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if (event := getattr(record, "event", None)) in {"job_created", "job_replayed", "job_rejected"}:
            self.events.append({"event": event, **{k: v for k, v in vars(record).items() if k[0].islower()}})


@pytest.fixture
def events() -> Iterator[list[dict[str, Any]]]:
    handler = _Events()
    logger = logging.getLogger("nano_banana")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield handler.events
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_job_created_is_logged_only_for_created_jobs(pg_store: PostgresJobStore, events: list[dict[str, Any]]) -> None:
    """Issue 13 #12: a rejection is `job_rejected` with its code and HTTP status and no job id; a replay
    is `job_replayed`."""
    stack = make_stack(pg_store, max_active=1)
    created = stack.create(key="k-7")
    replayed = stack.create(key="k-7")
    with pytest.raises(ConcurrencyLimited):
        stack.create(key="k-8")
    stack.queue.fail_next = Unavailable("the queue is down")
    stack.limits.release_slot(project_id=stack.project, job_id=created.job.id)
    with pytest.raises(Unavailable):
        stack.create(key="k-9")
    assert [e["event"] for e in events] == ["job_created", "job_replayed", "job_rejected", "job_rejected"]
    made, replay, limited, failed = events
    assert made["jobId"] == str(created.job.id)
    assert (made["projectId"], made["status"]) == (str(stack.project), "queued")
    assert isinstance(made["durationMs"], float)
    assert (replay["jobId"], replay["projectId"]) == (str(replayed.job.id), str(stack.project))
    assert (limited["code"], limited["status"], limited["projectId"]) == (
        "concurrency_limited",
        429,
        str(stack.project),
    )
    assert (failed["code"], failed["status"]) == ("unavailable", 503)
    assert "jobId" not in limited
    assert "jobId" not in failed


# ---------------------------------------------------------------- round trips on the critical path

ROUND_TRIP_S = 0.04  # each port call takes at least this long: calls made side by side really overlap


class Recorder:
    """Every round trip a use case makes through its ports, as (port.method, start, end)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, float, float]] = []
        self._lock = threading.Lock()

    def wrap(self, target: Any, port: str, methods: set[str]) -> Any:
        recorder = self

        class Recorded:
            def __getattr__(self, name: str) -> Any:
                attr = getattr(target, name)
                if name not in methods:
                    return attr

                def call(*args: Any, **kwargs: Any) -> Any:
                    started = time.perf_counter()
                    time.sleep(ROUND_TRIP_S)
                    try:
                        return attr(*args, **kwargs)
                    finally:
                        with recorder._lock:
                            recorder.calls.append((f"{port}.{name}", started, time.perf_counter()))

                return call

        return Recorded()

    def waves(self) -> list[list[str]]:
        """The calls grouped into sequential waves: a wave is a maximal run of overlapping calls."""
        grouped: list[list[str]] = []
        end = float("-inf")
        for name, started, ended in sorted(self.calls, key=lambda c: c[1]):
            if started >= end:
                grouped.append([])
            grouped[-1].append(name)
            end = max(end, ended) if started < end else ended
        return grouped


def _recorded(stack: Stack) -> Recorder:
    recorder = Recorder()
    stack.svc = usecases.Services(
        settings=stack.svc.settings,
        store=recorder.wrap(
            stack.store,
            "store",
            {"can_access", "find_by_idempotency_key", "variant_in_project", "get_job", "create_job"}
            | {"create_refinement", "discard_queued"},
        ),
        limits=recorder.wrap(stack.limits, "limits", {"check", "reserve", "give_back"}),
        queue=recorder.wrap(stack.queue, "queue", {"enqueue", "is_pending"}),
        blobs=recorder.wrap(stack.blobs, "blobs", {"put", "get", "delete"}),
        generator_factory=None,
        processor_factory=None,
        clock=stack.svc.clock,
    )
    return recorder


def test_a_creation_makes_three_sequential_round_trips(stack: Stack) -> None:
    """Issue 18: membership ‖ limits read ‖ key lookup; the limits commit ‖ upload; insert ‖ both enqueues
    (it was 7 one after the other). Structure, not time: each fake call sleeps, so side by side is real."""
    recorder = _recorded(stack)
    stack.create(key="k-waves")
    waves = recorder.waves()
    print(f"\nPOST /jobs (multipart, Idempotency-Key): {len(waves)} sequential round trips: {waves}")
    assert [sorted(w) for w in waves] == [
        ["limits.check", "store.can_access", "store.find_by_idempotency_key"],
        ["blobs.put", "limits.reserve"],
        ["queue.enqueue", "queue.enqueue", "store.create_job"],
    ]


def test_a_refinement_and_an_input_path_creation_stay_short(stack: Stack) -> None:
    parent, variant = stack.succeeded_job()
    path = stack.create().job.input_path  # an upload exists only as some job's input
    recorder = _recorded(stack)
    stack.refine(parent, variant, "r-waves")
    refinement = recorder.waves()
    recorder.calls.clear()
    stack.create_from(path)
    from_path = recorder.waves()
    print(f"\nPOST /messages: {len(refinement)} waves {refinement}\nPOST /jobs (inputPath): {len(from_path)} waves")
    assert [sorted(w) for w in refinement] == [
        ["store.find_by_idempotency_key", "store.get_job"],
        ["limits.reserve"],  # its read and commit: the project is known once the parent is read
        ["queue.enqueue", "queue.enqueue", "store.create_refinement"],
    ]
    assert [sorted(w) for w in from_path] == [
        ["limits.check", "store.can_access"],
        ["blobs.get", "limits.reserve"],  # the download only once the limits admitted the request
        ["queue.enqueue", "queue.enqueue", "store.create_job"],
    ]


# ---------------------------------------------------------------- the insert beside the enqueues


def test_a_failed_insert_deletes_the_tasks_enqueued_beside_it(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """The tasks are enqueued while the row is inserted: when the insert fails, both tasks are deleted,
    and the input and the reservation go as for any failed creation."""

    def broken_insert(new: Any) -> None:
        raise Unavailable("the database is down")

    monkeypatch.setattr(stack.store, "create_job", broken_insert)
    with pytest.raises(Unavailable):
        stack.create(key="k-insert")
    assert len(stack.queue.tasks) == 2, "both tasks were enqueued beside the insert"
    assert stack.queue.pending("generate") == stack.queue.pending("expire") == []
    assert stack.limits.active_jobs(stack.project) == []
    assert stack.inputs() == []
    monkeypatch.undo()
    assert not stack.create(key="k-insert").replayed


def test_an_insert_that_committed_before_its_connection_failed_leaves_no_row(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection breaks after COMMIT: the answer is 503, so the row must not outlive it (before:
    it stayed queued with its input deleted, and the sweep later failed it with input_unavailable)."""
    real_insert = stack.store.create_job

    def committed_then_lost(new: Any) -> None:
        assert real_insert(new) is not None
        raise Unavailable("server closed the connection unexpectedly")

    monkeypatch.setattr(stack.store, "create_job", committed_then_lost)
    with pytest.raises(Unavailable):
        stack.create(key="k-lost")
    assert stack.store.user_jobs(stack.user) == []
    assert stack.inputs() == []
    assert stack.limits.active_jobs(stack.project) == []
    assert stack.queue.pending("generate") == stack.queue.pending("expire") == []
    monkeypatch.undo()
    assert not stack.create(key="k-lost").replayed


def test_an_insert_that_committed_and_was_claimed_is_answered_202(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The generate task enqueued beside the insert claimed the row before the insert's answer was lost:
    the job is live, so the creation answers with it."""
    real_insert = stack.store.create_job

    def committed_claimed_then_lost(new: Any) -> None:
        assert real_insert(new) is not None
        assert stack.store.claim_for_generation(new.id, datetime.now(UTC)) is not None
        raise Unavailable("server closed the connection unexpectedly")

    monkeypatch.setattr(stack.store, "create_job", committed_claimed_then_lost)
    created = stack.create(key="k-claimed")
    assert not created.replayed
    assert created.job.status is JobStatus.running
    assert stack.limits.active_jobs(stack.project) == [created.job.id]
    assert stack.inputs() == [created.job.input_path]


def test_when_the_database_cannot_say_whether_the_insert_committed_nothing_is_undone(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_insert = stack.store.create_job

    def committed_then_lost(new: Any) -> None:
        assert real_insert(new) is not None
        raise Unavailable("server closed the connection unexpectedly")

    def down(job_id: uuid.UUID) -> bool:
        raise Unavailable("the database is down")

    monkeypatch.setattr(stack.store, "create_job", committed_then_lost)
    monkeypatch.setattr(stack.store, "discard_queued", down)
    with pytest.raises(Unavailable):
        stack.create(key="k-unknown")
    (job_id,) = stack.store.user_jobs(stack.user)
    assert stack.limits.active_jobs(stack.project) == [job_id], "the job may run: its slot stays"
    assert len(stack.inputs()) == 1, "and so does its input"
    assert [t.job_id for t in stack.queue.pending("generate")] == [job_id]
    monkeypatch.undo()
    again = stack.create(key="k-unknown")
    assert (again.replayed, again.job.id) == (True, job_id), "the retry with the key learns it exists"


def test_a_refinement_over_the_turn_limit_deletes_its_tasks(pg_store: PostgresJobStore) -> None:
    stack = make_stack(pg_store)
    stack.svc.settings = Settings(NANO_BANANA_MAX_THREAD_TURNS=1)
    parent, variant = stack.succeeded_job()
    with pytest.raises(InvalidRequest) as refused:
        stack.refine(parent, variant, "r-over")
    assert refused.value.details == {"maxTurns": 1}
    refinement_tasks = [t for t in stack.queue.tasks.values() if t.job_id != parent]
    assert len(refinement_tasks) == 2, "both were enqueued beside the insert"
    assert [t for t in stack.queue.pending("generate") + stack.queue.pending("expire") if t.job_id != parent] == []
    assert stack.limits.active_jobs(stack.project) == []


def test_a_reservation_refused_beside_the_upload_deletes_the_input(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A concurrent request took the last unit between the check and the commit: 429, and the input
    uploaded beside the refused commit is deleted."""

    def refuse(**kwargs: Any) -> Reservation:
        raise RateLimited("rate limit reached", retry_after_s=60, limit=1)

    puts: list[str] = []
    real_put = stack.blobs.put

    def put(path: str, data: bytes, content_type: str) -> None:
        puts.append(path)
        real_put(path, data, content_type)

    monkeypatch.setattr(stack.limits, "reserve", refuse)
    monkeypatch.setattr(stack.blobs, "put", put)
    with pytest.raises(RateLimited):
        stack.create(key="k-refused")
    assert len(puts) == 1
    assert stack.inputs() == [], "the upload ran, and was deleted"
    assert stack.store.user_jobs(stack.user) == []
    assert stack.queue.tasks == {}


def test_an_unreadable_input_path_gives_back_the_reservation_made_beside_it(stack: Stack) -> None:
    path = f"inputs/{stack.user}/{uuid.uuid4()}.png"
    stack.blobs.put(path, b"not an image at all", "image/png")
    with pytest.raises(NanoBananaError) as refused:
        stack.create_from(path)
    assert refused.value.status == 415
    assert stack.limits.active_jobs(stack.project) == []
    assert stack.store.user_jobs(stack.user) == []
    assert stack.queue.tasks == {}


def test_a_generate_task_ahead_of_its_row_waits_for_it(stack: Stack) -> None:
    """Cloud Tasks may deliver the generate task before the insert beside its enqueue commits."""
    new = new_job(stack.project, stack.user)
    job_id = new.id
    with ThreadPoolExecutor(1) as pool:
        claim = pool.submit(generating._claim, stack.svc, job_id)
        time.sleep(0.3)
        assert not claim.done(), "still waiting for the row"
        assert stack.store.create_job(new) is not None
        job = claim.result(timeout=5)
    assert job is not None
    assert (job.id, job.status) == (job_id, JobStatus.running)


def test_a_row_committed_between_the_claim_and_the_read_is_claimed(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The claim misses the row, the insert commits, the read then finds it queued: claim it (this
    race left jobs queued in bench/overhead.py until the read was followed by a second claim)."""
    new = new_job(stack.project, stack.user)
    real_claim = stack.store.claim_for_generation
    claims: list[object] = []

    def claim(job_id: uuid.UUID, now: datetime) -> object:
        got = real_claim(job_id, now)
        if not claims:
            assert stack.store.create_job(new) is not None  # commits right after the claim missed it
        claims.append(got)
        return got

    monkeypatch.setattr(stack.store, "claim_for_generation", claim)
    job = generating._claim(stack.svc, new.id)
    assert job is not None
    assert job.status is JobStatus.running
    assert claims[0] is None
    assert len(claims) == 2


def test_a_generate_task_without_a_row_is_acknowledged_after_the_wait(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(generating, "ROW_WAIT_S", 0.2)
    started = time.monotonic()
    with caplog.at_level(logging.INFO, logger="nano_banana"):
        assert usecases.run_generation(stack.svc, uuid.uuid4()) is None
    assert 0.15 <= time.monotonic() - started < 2
    assert [r.__dict__.get("event") for r in caplog.records] == ["task_without_job"]
