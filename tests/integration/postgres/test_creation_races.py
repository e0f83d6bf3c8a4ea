"""Issue 24, the creation side: where a creation meets a same-key retry, a deletion, or a fault whose
outcome is unknown. Each test failed on the code before its fix. Real use cases on real Postgres, the
in-memory limits, a recording queue and an in-memory blob store (the `stack` of test_creation)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from PIL import Image

from nano_banana import bootstrap, usecases
from nano_banana.adapters.generator_preview import PreviewGenerator
from nano_banana.adapters.postgres import PostgresJobStore, queries
from nano_banana.adapters.queue_inline import InlineQueue
from nano_banana.domain import JobStatus
from nano_banana.errors import InvalidRequest, NotFound, Unavailable
from nano_banana.ports import Reservation, Task
from nano_banana.settings import Settings
from nano_banana.usecases import generating, idempotency
from tests.integration.postgres.test_creation import Stack, _png, make_stack
from tests.support.new_jobs import new_job

pytestmark = pytest.mark.postgres


@pytest.fixture
def stack(pg_store: PostgresJobStore) -> Iterator[Stack]:
    made = make_stack(pg_store)
    yield made
    made.limits.release.set()
    made.blobs.release_puts.set()


def _retry_in_background(made: Stack, key: str) -> Future[usecases.Created]:
    pool = ThreadPoolExecutor(1)
    future = pool.submit(made.create, key)
    pool.shutdown(wait=False)
    return future


def _tasks_besides(made: Stack, job_id: uuid.UUID) -> list[Task]:
    """Pending tasks of jobs other than `job_id`."""
    return [t for t in made.queue.pending("generate") + made.queue.pending("expire") if t.job_id != job_id]


def _wait_until(predicate: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


# ---------------------------------------------------------------- finding 3: a replay is never discarded


def test_a_retry_answered_with_a_row_keeps_it_when_the_insert_answer_was_lost(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 24 #3: the first attempt's insert committed and its answer was lost; the same-key retry saw
    the row with both tasks scheduled and answered 200 with it. Before: the first attempt then discarded
    that row (`_committed_anyway`), so the retry's job was gone. Now the retry marks the row replayed, the
    discard spares it, and the first attempt answers with the same job."""
    real_insert = stack.store.create_job
    retries: list[usecases.Created] = []

    def committed_then_lost(new: Any) -> None:
        assert real_insert(new) is not None
        _wait_until(lambda: len(stack.queue.tasks) == 2)  # both tasks scheduled beside the insert
        retries.append(_retry_in_background(stack, "k-24-3").result(timeout=20))
        raise Unavailable("server closed the connection unexpectedly")

    monkeypatch.setattr(stack.store, "create_job", committed_then_lost)
    first = stack.create(key="k-24-3")
    (retry,) = retries
    assert retry.replayed
    assert stack.store.get_job(retry.job.id) is not None, "the job the retry was answered with exists"
    assert (first.replayed, first.job.id) == (False, retry.job.id)
    assert stack.limits.active_jobs(stack.project) == [retry.job.id]
    assert [t.job_id for t in stack.queue.pending("generate")] == [retry.job.id]
    assert stack.inputs() == [retry.job.input_path]


def test_a_retry_answered_with_a_row_keeps_it_when_an_enqueue_failed_after_creating_its_task(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 24 #3, second hole: Cloud Tasks created the generate task and the answer was lost (the enqueue
    raised). The retry saw the row and both tasks and answered with the job; before, the creation then
    rolled back (enqueue_failed) and deleted it."""
    real_enqueue = stack.queue.enqueue
    retries: list[usecases.Created] = []

    def created_then_lost(task: Task) -> bool:
        real_enqueue(task)
        if task.kind != "generate":
            return True
        _wait_until(lambda: len(stack.queue.tasks) == 2 and stack.store.user_jobs(stack.user) != [])
        retries.append(_retry_in_background(stack, "k-24-3b").result(timeout=20))
        raise Unavailable("deadline exceeded")

    monkeypatch.setattr(stack.queue, "enqueue", created_then_lost)
    first = stack.create(key="k-24-3b")
    (retry,) = retries
    assert retry.replayed
    assert stack.store.get_job(retry.job.id) is not None, "the job the retry was answered with exists"
    assert (first.replayed, first.job.id) == (False, retry.job.id)
    assert stack.limits.active_jobs(stack.project) == [retry.job.id]


def test_a_creation_that_discards_first_leaves_the_retry_to_create_the_job(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other order: the creation's discard commits before the retry marks the row, so the mark finds
    nothing and the retry, instead of a dead job, gets a job of its own."""
    real_insert = stack.store.create_job
    lost = threading.Event()

    def committed_then_lost(new: Any) -> None:
        if lost.is_set():
            return real_insert(new)  # type: ignore[no-any-return]
        lost.set()
        assert real_insert(new) is not None
        raise Unavailable("server closed the connection unexpectedly")

    found = stack.store.find_by_idempotency_key
    seen = threading.Event()
    discarded = threading.Event()

    def find(user: uuid.UUID, key: str) -> Any:
        got = found(user, key)
        if got is not None and not seen.is_set():
            seen.set()
            assert discarded.wait(10)  # the creation discards between this read and the mark
        return got

    real_discard = stack.store.discard_queued

    def discard(job_id: uuid.UUID) -> bool:
        assert seen.wait(10)
        try:
            return real_discard(job_id)
        finally:
            discarded.set()

    monkeypatch.setattr(stack.store, "create_job", committed_then_lost)
    monkeypatch.setattr(stack.store, "find_by_idempotency_key", find)
    monkeypatch.setattr(stack.store, "discard_queued", discard)
    monkeypatch.setattr(idempotency, "_settled", lambda svc, job: True)
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(stack.create, "k-24-3c")
        _wait_until(lost.is_set)
        _wait_until(lambda: stack.store.user_jobs(stack.user) != [])
        retry = stack.create(key="k-24-3c")
        with pytest.raises(Unavailable):
            first.result(timeout=20)
    assert not retry.replayed
    assert stack.store.user_jobs(stack.user) == [retry.job.id]
    assert stack.store.get_job(retry.job.id) is not None


# ---------------------------------------------------------------- finding 5: a definite refusal is 4xx


def test_refining_a_job_deleted_mid_request_is_404_and_keeps_nothing(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 24 #5: the parent is deleted between the refinement's read of it and its insert. Before: the
    foreign-key violation counted as an insert of unknown outcome, 503."""
    parent, variant = stack.succeeded_job()
    real = stack.store.create_refinement

    def deleted_first(new: Any, *, max_turns: int) -> Any:
        usecases.delete_job(stack.svc, stack.user, parent)
        return real(new, max_turns=max_turns)

    monkeypatch.setattr(stack.store, "create_refinement", deleted_first)
    with pytest.raises(NotFound) as refused:
        stack.refine(parent, variant, "r-24-5")
    assert refused.value.status == 404
    assert refused.value.details == {"jobId": str(parent)}
    assert stack.store.user_jobs(stack.user) == []
    assert stack.limits.active_jobs(stack.project) == []
    assert _tasks_besides(stack, parent) == []
    monkeypatch.undo()
    with pytest.raises(NotFound):
        stack.refine(parent, variant, "r-24-5")


def test_the_store_classifies_constraint_refusals_as_definite(pg_store: PostgresJobStore) -> None:
    """A foreign-key violation is NotFound and a check violation InvalidRequest, never a raw database
    error (which the creation would treat as an outcome unknown, 503)."""
    project, user = uuid.uuid4(), uuid.uuid4()
    orphan = new_job(project, user, parent_job_id=uuid.uuid4())
    with pytest.raises(NotFound) as gone:
        pg_store.create_job(orphan)
    assert gone.value.details == {"jobId": str(orphan.parent_job_id)}
    with pytest.raises(NotFound):
        pg_store.create_refinement(orphan, max_turns=10)
    with pytest.raises(InvalidRequest) as bad:
        pg_store.create_job(new_job(project, user, input_path=f"inputs/{user}/a b.png"))
    assert bad.value.details == {"constraint": "pip_ai_image_jobs_input_path_check"}
    assert pg_store.user_jobs(user) == []


# ---------------------------------------------------------------- finding 6: a reservation of unknown outcome


class LostAnswerLimits:
    """Makes the next reservation commit and then lose its answer (a Firestore commit past its timeout)."""

    def __init__(self, made: Stack) -> None:
        self.real = made.limits.reserve
        self.armed = True

    def reserve(self, **kwargs: Any) -> Reservation:
        reservation = self.real(**kwargs)
        if self.armed:
            self.armed = False
            raise Unavailable("the limits store is unavailable; retry shortly")
        return reservation


def test_a_reservation_whose_answer_was_lost_is_given_back(
    pg_store: PostgresJobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 24 #6: the commit applied, its answer was lost. Before: nothing was given back, so the retry
    with the same key waited for a row that never comes (503 idempotency_key_in_use for ~6 minutes) and
    the slot and the rate unit stayed taken."""
    stack = make_stack(pg_store, rate_per_hour=1, max_active=1)
    monkeypatch.setattr(idempotency, "KEY_WAIT_S", 0.5)
    monkeypatch.setattr(stack.limits, "reserve", LostAnswerLimits(stack).reserve)
    with pytest.raises(Unavailable):
        stack.create(key="k-24-6")
    assert stack.limits.active_jobs(stack.project) == [], "the slot is given back"
    assert stack.inputs() == []
    retry = stack.create(key="k-24-6")  # the key is free, and so are the one rate unit and the one slot
    assert not retry.replayed
    assert stack.limits.active_jobs(stack.project) == [retry.job.id]


def test_giving_back_a_reservation_that_never_committed_leaves_the_keys_holder_alone(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reservation failed before it applied while another job holds the key: the give-back by job id
    must not free that job's claim (nor its lease)."""
    holder = stack.limits.reserve(
        user_id=stack.user,
        project_id=stack.project,
        job_id=uuid.uuid4(),
        lease_expires_at=datetime.now(UTC).replace(year=2100),
        idempotency_key="k-24-6b",
    )

    def down(**kwargs: Any) -> Reservation:
        raise Unavailable("the limits store is unavailable; retry shortly")

    monkeypatch.setattr(stack.limits, "reserve", down)
    with pytest.raises(Unavailable):
        stack.create(key="k-other")
    monkeypatch.undo()
    assert stack.limits.active_jobs(stack.project) == [holder.job_id]
    assert not stack.limits.release_claim(
        user_id=stack.user, project_id=stack.project, job_id=uuid.uuid4(), idempotency_key="k-24-6b"
    )
    assert stack.limits.release_claim(
        user_id=stack.user, project_id=stack.project, job_id=holder.job_id, idempotency_key="k-24-6b"
    ), "the holder's claim is still there"


# ---------------------------------------------------------------- suspicion: _roll_back when the discard fails


def test_a_rollback_whose_discard_fails_does_not_claim_nothing_was_kept(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Proven: the generate enqueue failed and discarding the row failed too. Before: 503 enqueue_failed,
    "nothing was kept", while the queued row stayed and the sweep later ran it (a retry without a key made
    a duplicate). Now: 503 outcome_unknown naming the job, and nothing is undone (the job may run)."""
    real_enqueue = stack.queue.enqueue

    def generate_fails(task: Task) -> bool:
        if task.kind == "generate":
            raise Unavailable("the queue is down")
        return real_enqueue(task)

    def down(job_id: uuid.UUID) -> bool:
        raise Unavailable("the database is down")

    monkeypatch.setattr(stack.queue, "enqueue", generate_fails)
    monkeypatch.setattr(stack.store, "discard_queued", down)
    with pytest.raises(Unavailable) as failed:
        stack.create(key="k-rollback")
    (job_id,) = stack.store.user_jobs(stack.user)
    assert "nothing was kept" not in failed.value.message
    assert failed.value.details == {"reason": "outcome_unknown", "jobId": str(job_id)}
    assert stack.limits.active_jobs(stack.project) == [job_id], "the job may run: its slot stays"
    assert len(stack.inputs()) == 1, "and so does its input"
    assert [t.job_id for t in stack.queue.pending("expire")] == [job_id]
    monkeypatch.undo()
    stack.svc.settings = Settings(NANO_BANANA_REQUEUE_GRACE_S=1)
    time.sleep(1.1)  # past the grace the sweep schedules the job, and a retry with the key is answered with it
    again = stack.create(key="k-rollback")
    assert (again.replayed, again.job.id) == (True, job_id)


# ---------------------------------------------------------------- suspicion: an inputPath whose variant is deleted


def test_an_input_path_whose_variant_is_deleted_before_the_insert_is_refused(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Proven: the variant passed validation, then its job was deleted (and its blob purged) before the
    insert. Before: the job was created (202) with its input gone and failed input_unavailable. Now the
    insert refuses (404), and nothing is kept."""
    parent, _ = stack.succeeded_job()
    job = stack.store.get_job(parent)
    assert job is not None
    path = job.variants[0].storage_path
    real_insert = stack.store.create_job

    def deleted_first(new: Any) -> Any:
        usecases.delete_job(stack.svc, stack.user, parent)
        assert path not in stack.blobs.objects, "the deletion purged the variant"
        return real_insert(new)

    monkeypatch.setattr(stack.store, "create_job", deleted_first)
    with pytest.raises(NotFound) as refused:
        stack.create_from(path)
    assert refused.value.details == {"field": "inputPath"}
    assert stack.store.user_jobs(stack.user) == []
    assert stack.limits.active_jobs(stack.project) == []
    assert _tasks_besides(stack, parent) == []


def test_a_deletion_racing_an_insert_that_uses_its_variant_is_ordered_by_the_variant_row(
    stack: Stack, embedded_pg: Any
) -> None:
    """The insert holds the variant row (FOR KEY SHARE) until it commits. A deletion that holds it first
    makes the insert wait and then refuse; an insert that holds it first makes the deletion wait, and the
    deletion's purge then sees the new job's reference and keeps the blob."""
    parent, _ = stack.succeeded_job()
    job = stack.store.get_job(parent)
    assert job is not None
    path = job.variants[0].storage_path
    with psycopg.connect(embedded_pg.uri) as conn, ThreadPoolExecutor(1) as pool:
        conn.execute("delete from pip_ai_image_jobs where id = %s", (parent,))  # uncommitted
        insert = pool.submit(stack.store.create_job, new_job(stack.project, stack.user, input_path=path))
        time.sleep(0.3)
        assert not insert.done(), "the insert waits for the deletion"
        conn.rollback()  # this deletion changes its mind: the insert goes ahead
        made = insert.result(timeout=10)
        assert made is not None
        conn.execute("delete from pip_ai_image_jobs where id = %s", (parent,))
        conn.commit()
        with pytest.raises(NotFound):
            stack.store.create_job(new_job(stack.project, stack.user, input_path=path))

    later, _ = stack.succeeded_job()
    job = stack.store.get_job(later)
    assert job is not None
    path = job.variants[0].storage_path
    user_of_new = new_job(stack.project, stack.user, input_path=path)
    with psycopg.connect(embedded_pg.uri) as conn, ThreadPoolExecutor(1) as pool:
        conn.execute(queries()["create_job"], stack.store._new_job_params(user_of_new))  # uncommitted
        deletion = pool.submit(usecases.delete_job, stack.svc, stack.user, later)
        time.sleep(0.3)
        assert not deletion.done(), "the deletion waits for the insert"
        conn.commit()
        deleted = deletion.result(timeout=10)
    assert later in deleted.job_ids
    assert path not in deleted.blobs
    assert path in stack.blobs.objects, "the blob the new job's input is stays"
    assert stack.store.get_job(user_of_new.id) is not None


# ---------------------------------------------------------------- suspicion: the in-process queue on `make dev`


@pytest.fixture
def inline(pg_store: PostgresJobStore) -> Iterator[tuple[Stack, InlineQueue]]:
    made = Stack(pg_store)
    queue = InlineQueue(None, lambda: datetime.now(UTC), backoff_s=0.5)
    made.svc.queue = queue
    made.svc.generator_factory = lambda: PreviewGenerator(0, made.svc.settings.max_pixels)
    queue.bind(bootstrap.task_handler(made.svc))
    pixel_cap = Image.MAX_IMAGE_PIXELS  # the preview generator sets PIL's global cap: other tests rely on it
    try:
        yield made, queue
    finally:
        queue.close(grace_s=1)
        Image.MAX_IMAGE_PIXELS = pixel_cap


def test_the_inline_queue_keeps_a_generate_task_pending_between_deliveries(
    inline: tuple[Stack, InlineQueue], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Proven: on `make dev` a generate task whose row was not there yet was acknowledged on its first
    delivery (dispatch never said it was the first), so `is_pending` lost it: a same-key retry waited the
    full 15 s for a row that had appeared, and the job waited for the sweep. Cloud Tasks answers such a
    first delivery 503 and delivers again, and GetTask finds the task meanwhile; now the stand-in does too."""
    stack, queue = inline
    monkeypatch.setattr(generating, "ROW_WAIT_S", 0.3)
    new = new_job(stack.project, stack.user)
    stack.blobs.put(new.input_path, _png(), "image/png")
    task = Task(kind="generate", job_id=new.id)
    assert queue.enqueue(task)
    time.sleep(0.45)  # the first delivery gave up on the row
    assert queue.is_pending(task), "between its deliveries the task is still pending, as with GetTask"
    assert stack.store.create_job(new) is not None
    _wait_until(lambda: (job := stack.store.get_job(new.id)) is not None and job.status is JobStatus.succeeded)
    _wait_until(lambda: not queue.is_pending(task))


def test_on_the_inline_queue_a_same_key_retry_gets_the_job_once_its_slow_insert_lands(
    inline: tuple[Stack, InlineQueue], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The symptom on `make dev`: the first request's insert is held up past the generate task's first
    wait; the same-key retry must be answered with the job once the row lands, not wait KEY_WAIT_S and
    answer 503 idempotency_key_in_use (before: the task was acknowledged, so the row never looked settled)."""
    stack, _ = inline
    monkeypatch.setattr(generating, "ROW_WAIT_S", 1.0)  # a delivery gives up 0.6-1 s after it starts
    monkeypatch.setattr(idempotency, "KEY_WAIT_S", 3.0)
    real_insert = stack.store.create_job

    def slow_insert(new: Any) -> Any:
        time.sleep(1.2)  # past the first delivery's wait (over by 1 s), within the second's (from 1.4 s)
        return real_insert(new)

    monkeypatch.setattr(stack.store, "create_job", slow_insert)
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(stack.create, "k-dev")
        time.sleep(0.2)
        started = time.monotonic()
        retry = stack.create(key="k-dev")
        waited = time.monotonic() - started
        created = first.result(timeout=10)
    assert (retry.replayed, retry.job.id) == (True, created.job.id)
    assert waited < 2.8, "answered once the row landed, not after KEY_WAIT_S"
