"""One contract for every `TaskQueue`: Cloud Tasks (real client, fake server, HTTP dispatch) and inline.

The Cloud Tasks half also checks what only it has: the HTTP task's shape, its OIDC token (verified by
`task_auth` against the fake's signing certs), dispatch-deadline clamping and an unreachable queue.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.cloud import tasks_v2
from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport

from nano_banana.adapters.queue_cloudtasks import CloudTasksQueue
from nano_banana.adapters.queue_inline import InlineQueue
from nano_banana.errors import Unauthenticated, Unavailable
from nano_banana.ports import Task, TaskKind, TaskQueue, task_name
from nano_banana.task_auth import verify_task_request
from tests.support.fake_cloudtasks import FakeCloudTasks, TaskReceiver, fake_cloudtasks, task_receiver  # noqa: F401

QUEUE_PATH = "projects/demo-nano-banana/locations/us-central1/queues/nano-banana"
SERVICE_ACCOUNT = "tasks-invoker@demo-nano-banana.iam.gserviceaccount.com"


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Delivery:
    kind: TaskKind
    job_id: uuid.UUID
    at: float


@dataclass
class Harness:
    queue: TaskQueue
    deliveries: Callable[[], list[Delivery]]
    # fail(n): the next n deliveries answer with a failure, so the queue must redeliver.
    fail: Callable[[int], None]

    def wait_for(self, count: int, timeout_s: float = 5.0) -> list[Delivery]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and len(self.deliveries()) < count:
            time.sleep(0.02)
        return self.deliveries()


def _cloudtasks_harness(fake: FakeCloudTasks, receiver: TaskReceiver) -> Harness:
    queue = CloudTasksQueue(
        fake.client(), QUEUE_PATH, receiver.url("/generate"), receiver.url("/expire"), SERVICE_ACCOUNT, None, _now
    )
    failures = [0]
    lock = threading.Lock()

    def status_for(path: str, n: int) -> int:
        with lock:
            if failures[0] > 0:
                failures[0] -= 1
                return 503
        return 200

    receiver.status_for = status_for

    def deliveries() -> list[Delivery]:
        return [
            Delivery(r.path.strip("/"), uuid.UUID(json.loads(r.body)["jobId"]), r.at)  # type: ignore[arg-type]
            for r in receiver.snapshot()
        ]

    def fail(n: int) -> None:
        with lock:
            failures[0] = n

    return Harness(queue, deliveries, fail)


@pytest.fixture(
    params=[
        pytest.param("cloudtasks", marks=pytest.mark.cloudtasks),
        pytest.param("inline", marks=pytest.mark.unit),
    ]
)
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    if request.param == "cloudtasks":
        fake: FakeCloudTasks = request.getfixturevalue("fake_cloudtasks")
        receiver: TaskReceiver = request.getfixturevalue("task_receiver")
        fake.min_backoff_s = 0.05
        yield _cloudtasks_harness(fake, receiver)
        return
    received: list[Delivery] = []
    failures = [0]
    lock = threading.Lock()

    def handler(task: Task, retries: int) -> None:
        with lock:
            received.append(Delivery(task.kind, task.job_id, time.time()))
            if failures[0] > 0:
                failures[0] -= 1
                raise RuntimeError("the handler failed (on purpose)")

    def fail(n: int) -> None:
        with lock:
            failures[0] = n

    queue = InlineQueue(handler, _now, backoff_s=0.05)
    try:
        yield Harness(queue, lambda: list(received), fail)
    finally:
        queue.close()


# ---------------------------------------------------------------- the contract


def test_enqueue_delivers_the_task(harness: Harness) -> None:
    job = uuid.uuid4()
    harness.queue.enqueue(Task(kind="generate", job_id=job))
    (delivery,) = harness.wait_for(1)
    assert (delivery.kind, delivery.job_id) == ("generate", job)


def test_a_scheduled_task_waits_for_its_time(harness: Harness) -> None:
    job = uuid.uuid4()
    enqueued = time.time()
    harness.queue.enqueue(Task(kind="expire", job_id=job, schedule_at=_now() + timedelta(seconds=1)))
    time.sleep(0.6)
    assert harness.deliveries() == []
    (delivery,) = harness.wait_for(1)
    assert (delivery.kind, delivery.job_id) == ("expire", job)
    assert delivery.at - enqueued >= 0.95


def test_a_duplicate_enqueue_is_harmless(harness: Harness) -> None:
    job = uuid.uuid4()
    for _ in range(3):
        harness.queue.enqueue(Task(kind="generate", job_id=job))
    harness.wait_for(1)
    time.sleep(0.4)
    assert [(d.kind, d.job_id) for d in harness.deliveries()] == [("generate", job)]


def test_delete_removes_a_pending_task(harness: Harness) -> None:
    ended, running = uuid.uuid4(), uuid.uuid4()
    harness.queue.enqueue(Task(kind="expire", job_id=ended, schedule_at=_now() + timedelta(seconds=0.6)))
    harness.queue.enqueue(Task(kind="expire", job_id=running, schedule_at=_now() + timedelta(seconds=0.6)))
    harness.queue.delete("expire", ended)
    harness.queue.delete("expire", uuid.uuid4())  # never enqueued: fine
    harness.wait_for(1)
    time.sleep(0.4)
    assert [(d.kind, d.job_id) for d in harness.deliveries()] == [("expire", running)]


def test_a_failed_delivery_is_retried(harness: Harness) -> None:
    harness.fail(2)
    job = uuid.uuid4()
    harness.queue.enqueue(Task(kind="generate", job_id=job))
    deliveries = harness.wait_for(3)
    assert [(d.kind, d.job_id) for d in deliveries] == [("generate", job)] * 3
    time.sleep(0.3)
    assert len(harness.deliveries()) == 3  # the third succeeded: no more


@pytest.mark.unit
def test_inline_tells_the_handler_its_retry_count_and_stays_pending_between_deliveries() -> None:
    """Like Cloud Tasks' X-CloudTasks-TaskRetryCount: 0 on the first delivery, then 1, 2…; and like GetTask,
    a task waiting for its redelivery is pending (issue 24: `make dev` lost a generate task here)."""
    counts: list[int] = []

    def handler(task: Task, retries: int) -> None:
        counts.append(retries)
        if retries < 2:
            raise RuntimeError("not yet")

    queue = InlineQueue(handler, _now, backoff_s=0.3)
    try:
        task = Task(kind="generate", job_id=uuid.uuid4())
        queue.enqueue(task)
        deadline = time.monotonic() + 5
        while not counts and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)
        assert counts == [0]
        assert queue.is_pending(task), "waiting for its redelivery"
        while len(counts) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert counts == [0, 1, 2]
        time.sleep(0.1)
        assert not queue.is_pending(task), "answered: done"
    finally:
        queue.close()


# ---------------------------------------------------------------- Cloud Tasks only


def _queue(
    fake: FakeCloudTasks, receiver: TaskReceiver, *, audience: str | None = None, sa: str | None = SERVICE_ACCOUNT
) -> CloudTasksQueue:
    return CloudTasksQueue(
        fake.client(), QUEUE_PATH, receiver.url("/generate"), receiver.url("/expire"), sa, audience, _now
    )


def _settled(harness: Harness, task: Task) -> bool:
    """Wait until the task is no longer pending (it ran or was deleted)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and harness.queue.is_pending(task):
        time.sleep(0.02)
    return not harness.queue.is_pending(task)


def test_enqueue_says_whether_it_created_and_is_pending_follows_the_task(harness: Harness) -> None:
    job = uuid.uuid4()
    later = Task(kind="expire", job_id=job, schedule_at=_now() + timedelta(hours=1))
    assert harness.queue.enqueue(later) is True
    assert harness.queue.enqueue(later) is False
    assert harness.queue.is_pending(later) is True
    harness.queue.delete("expire", job)
    assert _settled(harness, later)
    assert harness.queue.enqueue(later) is False, "a deleted task's name stays used"
    now = Task(kind="generate", job_id=job)
    assert harness.queue.enqueue(now) is True
    assert len(harness.wait_for(1)) == 1
    assert _settled(harness, now)
    assert harness.queue.enqueue(now) is False, "an executed task's name stays used"
    replacement = Task(kind="generate", job_id=job, replacement=7)
    assert harness.queue.is_pending(replacement) is False
    assert harness.queue.enqueue(replacement) is True
    assert [d.job_id for d in harness.wait_for(2)] == [job, job]


@pytest.mark.cloudtasks
def test_a_used_name_is_free_again_after_the_tombstone(
    fake_cloudtasks: FakeCloudTasks,  # noqa: F811
    task_receiver: TaskReceiver,  # noqa: F811
) -> None:
    """Cloud Tasks refuses an executed task's name for ~1 h (the fake: `tombstone_s`), then accepts it."""
    fake_cloudtasks.tombstone_s = 0.5
    queue = _queue(fake_cloudtasks, task_receiver)
    task = Task(kind="generate", job_id=uuid.uuid4())
    assert queue.enqueue(task) is True
    assert fake_cloudtasks.wait_for(lambda: len(task_receiver.snapshot()) == 1 and not queue.is_pending(task))
    assert queue.enqueue(task) is False
    assert fake_cloudtasks.wait_for(lambda: queue.enqueue(task), timeout_s=5)
    assert fake_cloudtasks.wait_for(lambda: len(task_receiver.snapshot()) == 2)
    name = task_name("generate", task.job_id)
    assert [r.headers["X-CloudTasks-TaskName"] for r in task_receiver.snapshot()] == [name, name]


@pytest.mark.cloudtasks
def test_http_task_shape_and_oidc_token(fake_cloudtasks: FakeCloudTasks, task_receiver: TaskReceiver) -> None:  # noqa: F811
    queue = _queue(fake_cloudtasks, task_receiver)
    job = uuid.uuid4()
    queue.enqueue(Task(kind="generate", job_id=job, dispatch_deadline_s=330))
    assert fake_cloudtasks.wait_for(lambda: len(task_receiver.snapshot()) == 1)
    (create,) = [req for method, req in fake_cloudtasks.calls if method == "CreateTask"]
    assert create.parent == QUEUE_PATH
    assert create.task.name == f"{QUEUE_PATH}/tasks/{task_name('generate', job)}"
    assert create.task.http_request.http_method == tasks_v2.HttpMethod.POST
    assert create.task.dispatch_deadline == timedelta(seconds=330)
    (got,) = task_receiver.snapshot()
    assert got.path == "/generate"
    assert json.loads(got.body) == {"jobId": str(job)}
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["X-CloudTasks-TaskName"] == task_name("generate", job)
    verify_task_request(
        got.headers["Authorization"],
        audience=task_receiver.url("/generate"),
        service_account=SERVICE_ACCOUNT,
        certs_url=fake_cloudtasks.certs_url,
    )
    with pytest.raises(Unauthenticated):
        verify_task_request(
            got.headers["Authorization"],
            audience=task_receiver.url("/expire"),  # a token for one endpoint does not open another
            service_account=SERVICE_ACCOUNT,
            certs_url=fake_cloudtasks.certs_url,
        )


@pytest.mark.cloudtasks
def test_explicit_oidc_audience(fake_cloudtasks: FakeCloudTasks, task_receiver: TaskReceiver) -> None:  # noqa: F811
    queue = _queue(fake_cloudtasks, task_receiver, audience="https://nano-banana.example/tasks")
    queue.enqueue(Task(kind="expire", job_id=uuid.uuid4()))
    assert fake_cloudtasks.wait_for(lambda: len(task_receiver.snapshot()) == 1)
    verify_task_request(
        task_receiver.snapshot()[0].headers["Authorization"],
        audience="https://nano-banana.example/tasks",
        service_account=SERVICE_ACCOUNT,
        certs_url=fake_cloudtasks.certs_url,
    )


@pytest.mark.cloudtasks
def test_no_service_account_no_token(fake_cloudtasks: FakeCloudTasks, task_receiver: TaskReceiver) -> None:  # noqa: F811
    _queue(fake_cloudtasks, task_receiver, sa=None).enqueue(Task(kind="generate", job_id=uuid.uuid4()))
    assert fake_cloudtasks.wait_for(lambda: len(task_receiver.snapshot()) == 1)
    assert "Authorization" not in task_receiver.snapshot()[0].headers


@pytest.mark.cloudtasks
@pytest.mark.parametrize(("asked", "sent"), [(1, 15), (14.6, 15), (60, 60), (330.4, 330), (3600, 1800)])
def test_dispatch_deadline_is_clamped(
    fake_cloudtasks: FakeCloudTasks,  # noqa: F811
    task_receiver: TaskReceiver,  # noqa: F811
    asked: float,
    sent: int,
) -> None:
    job = uuid.uuid4()
    _queue(fake_cloudtasks, task_receiver).enqueue(
        Task(kind="expire", job_id=job, schedule_at=_now() + timedelta(hours=1), dispatch_deadline_s=asked)
    )
    stored = fake_cloudtasks.task(f"{QUEUE_PATH}/tasks/{task_name('expire', job)}")
    assert stored.dispatch_deadline == timedelta(seconds=sent)


@pytest.mark.cloudtasks
def test_calls_per_job(fake_cloudtasks: FakeCloudTasks, task_receiver: TaskReceiver) -> None:  # noqa: F811
    """What one job costs in Cloud Tasks calls: create generate, create expire, delete expire."""
    queue = _queue(fake_cloudtasks, task_receiver)
    job = uuid.uuid4()
    queue.enqueue(Task(kind="generate", job_id=job, dispatch_deadline_s=330))
    queue.enqueue(Task(kind="expire", job_id=job, schedule_at=_now() + timedelta(minutes=5), dispatch_deadline_s=60))
    assert fake_cloudtasks.wait_for(lambda: len(task_receiver.snapshot()) == 1)
    queue.delete("expire", job)
    print(f"\n[cloudtasks] calls for one job: {fake_cloudtasks.methods()}")
    assert fake_cloudtasks.methods() == ["CreateTask", "CreateTask", "DeleteTask"]
    assert fake_cloudtasks.pending() == []


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.cloudtasks
def test_unreachable_cloud_tasks_is_unavailable() -> None:
    channel = grpc.insecure_channel(f"127.0.0.1:{_closed_port()}")
    client = tasks_v2.CloudTasksClient(transport=CloudTasksGrpcTransport(channel=channel))
    queue = CloudTasksQueue(client, QUEUE_PATH, "http://127.0.0.1:1/g", "http://127.0.0.1:1/e", None, None, _now)
    started = time.monotonic()
    with pytest.raises(Unavailable):
        queue.enqueue(Task(kind="generate", job_id=uuid.uuid4()))
    queue.delete("expire", uuid.uuid4())  # best effort: logged, not raised
    elapsed = time.monotonic() - started
    channel.close()
    assert elapsed < 8
