"""The Cloud Tasks adapter against a Cloud Tasks implementation that is not ours: PyPI's
gcloud-tasks-emulator 0.6.2 accepts the tasks the service creates (the real client, the real protos) and
dispatches them over HTTP to the dev server's task handlers, which run the jobs. It sends no OIDC token,
so the handlers' token check is off here (tests/e2e/test_cloud_stack.py checks it against the fake)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator

import pytest

from tests.support.devserver import DevServer, free_port
from tests.support.fake_n8n import FakeN8n
from tests.support.tasks_emulator import TasksEmulator

pytestmark = [pytest.mark.e2e, pytest.mark.cloudtasks]

QUEUE = "projects/emulated-project/locations/us-central1/queues/nano-banana"
Start = Callable[..., tuple[DevServer, TasksEmulator]]


@pytest.fixture
def emulated(dev_server_factory: Callable[..., DevServer]) -> Iterator[Start]:
    emulators: list[TasksEmulator] = []

    def start(**env: str) -> tuple[DevServer, TasksEmulator]:
        emulator = TasksEmulator(QUEUE)
        emulators.append(emulator)
        port = free_port()
        server = dev_server_factory(
            PORT=str(port),
            NANO_BANANA_QUEUE="cloudtasks",
            GOOGLE_CLOUD_PROJECT="emulated-project",
            NANO_BANANA_LOCATION="us-central1",
            NANO_BANANA_TASKS_QUEUE="nano-banana",
            NANO_BANANA_TASKS_ENDPOINT=emulator.endpoint,
            NANO_BANANA_VERIFY_TASK_OIDC="false",
            NANO_BANANA_GENERATE_URL=f"http://127.0.0.1:{port}/tasks/generate",
            NANO_BANANA_EXPIRE_URL=f"http://127.0.0.1:{port}/tasks/expire",
            **env,
        )
        return server, emulator

    yield start
    for emulator in emulators:
        emulator.stop()


def test_jobs_run_when_a_third_party_emulator_dispatches_their_tasks(emulated: Start) -> None:
    server, emulator = emulated(NANO_BANANA_MAX_ACTIVE_PER_PROJECT="10")
    s = server.session()
    ids = [server.create_job(s).json()["jobId"] for _ in range(3)]
    for job_id in ids:
        job = server.wait_for(s, job_id, {"succeeded"}, timeout_s=30)
        assert len(job["variants"]) == 2
    dispatched = re.findall(r"Requesting POST (\S+)", emulator.log())
    assert sum(url.endswith("/tasks/generate") for url in dispatched) >= 3, emulator.log()[-2000:]
    assert not any(url.endswith("/tasks/expire") for url in dispatched), "expire tasks wait for the deadline"


def test_the_expire_task_fails_a_stuck_job_at_its_deadline(emulated: Start) -> None:
    """The processor never calls back: the job is `running` until the emulator dispatches its expire
    task, scheduled at the deadline, and the handler fails it with `timeout` and frees the slot."""
    fake = FakeN8n("emulator-test-secret", mode="never")
    try:
        server, emulator = emulated(
            NANO_BANANA_GENERATOR="n8n",
            N8N_WEBHOOK_NANO_BANANA_PROCESSOR=fake.url,
            N8N_NANO_BANANA_SECRET="emulator-test-secret",
            NANO_BANANA_TIMEOUT_S="4",
            NANO_BANANA_MAX_ACTIVE_PER_PROJECT="1",
        )
        s = server.session()
        started = time.monotonic()
        job_id = server.create_job(s).json()["jobId"]
        server.wait_for(s, job_id, {"running"}, timeout_s=10)
        assert server.create_job(s).status_code == 429
        job = server.wait_for(s, job_id, {"failed"}, timeout_s=20)
        assert job["errorCode"] == "timeout"
        assert time.monotonic() - started >= 3.5, "not before the deadline"
        assert any(u.endswith("/tasks/expire") for u in re.findall(r"Requesting POST (\S+)", emulator.log()))
        assert server.create_job(s).status_code == 202, "the slot was released"
    finally:
        fake.stop()
