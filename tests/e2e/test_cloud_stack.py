"""The spine on the production adapters' local twins: Firestore emulator limits and Cloud Tasks (the real
client against the fake CloudTasks server, which dispatches generate/expire over HTTP with OIDC tokens)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from nano_banana.domain import webhook_id
from nano_banana.embedded_pg import stop_if_running
from nano_banana.settings import DEV_WEBHOOK_SECRET
from tests.support.devserver import DevServer, free_port, png_bytes, start_dev_server
from tests.support.fake_cloudtasks import FakeCloudTasks, mint_id_token
from tests.support.firestore import Emulator
from tests.support.webhook_receiver import WebhookReceiver

pytestmark = [pytest.mark.e2e, pytest.mark.firestore, pytest.mark.cloudtasks]

TASKS_SA = "nano-banana-tasks@test-project.iam.gserviceaccount.com"
SCHEDULER_SA = "nano-banana-scheduler@test-project.iam.gserviceaccount.com"


@pytest.fixture
def cloud_server(
    tmp_path: Path, firestore_emulator: Emulator
) -> Iterator[Callable[..., tuple[DevServer, FakeCloudTasks]]]:
    started: list[tuple[DevServer, FakeCloudTasks]] = []

    def start(**env: str) -> tuple[DevServer, FakeCloudTasks]:
        firestore_emulator.wipe()
        fake = FakeCloudTasks().start()
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        server = start_dev_server(
            tmp_path,
            {
                "PORT": str(port),
                "NANO_BANANA_LIMITS": "firestore",
                "NANO_BANANA_QUEUE": "cloudtasks",
                "GOOGLE_CLOUD_PROJECT": "test-project",
                "FIRESTORE_EMULATOR_HOST": firestore_emulator.host,
                "NANO_BANANA_TASKS_ENDPOINT": fake.endpoint,
                "NANO_BANANA_TASK_OIDC_CERTS_URL": fake.certs_url,
                "NANO_BANANA_TASKS_SERVICE_ACCOUNT": TASKS_SA,
                "NANO_BANANA_SCHEDULER_SERVICE_ACCOUNT": SCHEDULER_SA,
                "NANO_BANANA_SWEEP_URL": f"{base}/tasks/sweep",
                "NANO_BANANA_GENERATE_URL": f"{base}/tasks/generate",
                "NANO_BANANA_EXPIRE_URL": f"{base}/tasks/expire",
                **{k: v.replace("{port}", str(port)) for k, v in env.items()},
            },
        )
        started.append((server, fake))
        return server, fake

    yield start
    for server, fake in started:
        server.stop()
        fake.stop()


def test_job_runs_through_cloud_tasks_and_firestore(
    cloud_server: Callable[..., tuple[DevServer, FakeCloudTasks]],
) -> None:
    server, fake = cloud_server()
    s = server.session()
    r = server.create_job(s)
    assert r.status_code == 202, r.text
    job = server.wait_for(s, r.json()["jobId"], {"succeeded"})
    assert len(job["variants"]) == 2
    assert httpx.get(job["variants"][0]["url"]).status_code == 200
    assert fake.wait_for(lambda: any(a.url.endswith("/tasks/generate") for a in fake.attempts), 5)
    generate = [a for a in fake.attempts if a.url.endswith("/tasks/generate")]
    assert len(generate) == 1
    assert generate[0].status == 200
    assert fake.wait_for(lambda: "DeleteTask" in fake.methods(), 5), "the expire task is deleted when the job ends"
    assert fake.methods().count("CreateTask") == 2
    # The generate delivery's log lines name its task and which retry it was.
    lines = [json.loads(line) for line in server.logs().splitlines() if line.startswith("{")]
    (started,) = [e for e in lines if e.get("event") == "job_started" and e.get("jobId") == job["id"]]
    assert started["taskName"] == generate[0].task_name.rsplit("/", 1)[1]
    assert started["taskRetryCount"] == "0"


def test_sweep_accepts_only_the_scheduler(cloud_server: Callable[..., tuple[DevServer, FakeCloudTasks]]) -> None:
    server, _ = cloud_server()
    url = f"{server.url}/tasks/sweep"
    scheduler = mint_id_token(audience=url, email=SCHEDULER_SA)
    assert server.client.post("/tasks/sweep", json={}, headers={"Authorization": f"Bearer {scheduler}"}).json() == {
        "expired": 0
    }
    for token in (
        mint_id_token(audience=url, email=TASKS_SA),
        mint_id_token(audience=f"{server.url}/tasks/generate", email=SCHEDULER_SA),
    ):
        r = server.client.post("/tasks/sweep", json={}, headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 401
    generate = mint_id_token(audience=f"{server.url}/tasks/generate", email=SCHEDULER_SA)
    r = server.client.post(
        "/tasks/generate", json={"jobId": str(uuid.uuid4())}, headers={"Authorization": f"Bearer {generate}"}
    )
    assert r.status_code == 401, "the scheduler cannot run generate tasks"


def test_unauthenticated_task_calls_are_refused(cloud_server: Callable[..., tuple[DevServer, FakeCloudTasks]]) -> None:
    server, _ = cloud_server()
    for headers in ({}, {"Authorization": "Bearer forged"}):
        r = server.client.post("/tasks/generate", json={"jobId": str(uuid.uuid4())}, headers=headers)
        assert r.status_code == 401


def test_expire_task_fails_a_stuck_job_and_frees_the_slot(
    cloud_server: Callable[..., tuple[DevServer, FakeCloudTasks]],
) -> None:
    server, _ = cloud_server(
        NANO_BANANA_TIMEOUT_S="2", NANO_BANANA_PREVIEW_DELAY_MS="6000", NANO_BANANA_MAX_ACTIVE_PER_PROJECT="1"
    )
    s = server.session()
    job_id = server.create_job(s).json()["jobId"]
    assert server.create_job(s).status_code == 429
    job = server.wait_for(s, job_id, {"failed"}, timeout_s=15)
    assert job["errorCode"] == "timeout"
    assert server.create_job(s).status_code == 202, "the slot was released in Firestore"


def test_a_generate_task_delivered_twice_makes_one_set_of_variants(
    cloud_server: Callable[..., tuple[DevServer, FakeCloudTasks]],
) -> None:
    server, fake = cloud_server()
    s = server.session()
    job_id = server.create_job(s).json()["jobId"]
    job = server.wait_for(s, job_id, {"succeeded"})
    first = [v["storagePath"] for v in job["variants"]]
    assert fake.wait_for(lambda: any(a.url.endswith("/tasks/generate") for a in fake.attempts), 5)
    generate = next(a for a in fake.attempts if a.url.endswith("/tasks/generate"))
    again = httpx.post(generate.url, content=generate.body, headers=generate.headers, timeout=30)
    assert again.status_code == 200, again.text
    time.sleep(0.3)
    job = server.job(s, job_id)
    assert [v["storagePath"] for v in job["variants"]] == first
    outputs = [
        p
        for p in (server.data_dir / "blobs" / "jobs" / job_id).rglob("*")
        if p.is_file() and not p.name.startswith(".") and not p.name.endswith(".meta")
    ]
    assert len(outputs) == 2


def test_a_generate_task_without_its_row_is_retried_once_then_acknowledged(
    cloud_server: Callable[..., tuple[DevServer, FakeCloudTasks]],
) -> None:
    """The creation enqueues the generate task beside the insert: a task whose row is missing after
    the 2 s wait answers 503 on its first delivery (Cloud Tasks retries after its backoff, giving a slow
    insert longer) and 200 on a later one (a rolled-back creation, a deleted job: nothing to run)."""
    server, fake = cloud_server()
    s = server.session()
    server.wait_for(s, server.create_job(s).json()["jobId"], {"succeeded"})
    generate = next(a for a in fake.attempts if a.url.endswith("/tasks/generate"))
    body = json.dumps({"jobId": str(uuid.uuid4())})
    first = httpx.post(
        generate.url, content=body, headers={**generate.headers, "X-CloudTasks-TaskRetryCount": "0"}, timeout=30
    )
    assert first.status_code == 503, first.text
    later = httpx.post(
        generate.url, content=body, headers={**generate.headers, "X-CloudTasks-TaskRetryCount": "1"}, timeout=30
    )
    assert later.status_code == 200, later.text
    assert later.json()["status"] == "unchanged"


def test_rate_limit_is_exact_under_parallel_creation(
    cloud_server: Callable[..., tuple[DevServer, FakeCloudTasks]],
) -> None:
    server, _ = cloud_server(NANO_BANANA_MAX_ACTIVE_PER_PROJECT="100", NANO_BANANA_RATE_PER_HOUR="5")
    s = server.session()
    from concurrent.futures import ThreadPoolExecutor

    def create(_: int) -> int:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            files = {"image": ("a.png", png_bytes(), "image/png")}
            data = {"projectId": s.project_id, "prompt": "race"}
            return c.post("/api/nano-banana/jobs", data=data, files=files, headers=s.headers).status_code

    with ThreadPoolExecutor(12) as pool:
        codes = list(pool.map(create, range(12)))
    assert codes.count(202) == 5
    assert codes.count(429) == 7


def test_a_webhook_is_delivered_from_its_own_queue_and_retried_with_the_same_id(
    cloud_server: Callable[..., tuple[DevServer, FakeCloudTasks]],
) -> None:
    """Issue 27 on the production topology's twins: the webhook task goes to the `webhooks` queue (its own
    retry policy), is authenticated with the tasks account's OIDC token, and a 500 from the receiver is
    retried by Cloud Tasks with the same webhook-id until the 200."""
    receiver = WebhookReceiver(statuses=(500,))
    try:
        server, fake = cloud_server(NANO_BANANA_WEBHOOK_URL="http://127.0.0.1:{port}/tasks/webhook")
        s = server.session()
        r = server.client.post(
            "/api/nano-banana/jobs",
            data={
                "projectId": s.project_id,
                "prompt": "p",
                "variantCount": "1",
                "webhookUrl": f"{receiver.base_url}/h",
            },
            files={"image": ("p.png", png_bytes(), "image/png")},
            headers=s.headers,
        )
        assert r.status_code == 202, r.text
        received = receiver.wait_for(2)
        assert {got.headers["webhook-id"] for got in received} == {
            webhook_id(uuid.UUID(r.json()["jobId"]), "succeeded")
        }
        Webhook(DEV_WEBHOOK_SECRET).verify(received[1].body, received[1].headers)
        assert fake.wait_for(lambda: sum(a.url.endswith("/tasks/webhook") for a in fake.attempts) == 2, 10)
        hooks = [a for a in fake.attempts if a.url.endswith("/tasks/webhook")]
        assert [a.status for a in hooks] == [503, 200], "a failed attempt is retried by the queue"
        assert all("/queues/nano-banana-webhooks/tasks/" in a.task_name for a in hooks)
        job = server.job(s, r.json()["jobId"])
        (delivery,) = job["webhook"]["deliveries"]  # recorded before the 200 was answered
        assert (delivery["state"], delivery["attempts"], delivery["lastStatus"]) == ("delivered", 2, 200)
    finally:
        receiver.stop()


def test_a_terminal_event_arrives_after_the_webhook_function_is_killed_mid_delivery(
    cloud_server: Callable[..., tuple[DevServer, FakeCloudTasks]], tmp_path: Path
) -> None:
    """Issue 27: the process delivering a job.succeeded is killed (SIGKILL) while the receiver is still
    answering; Cloud Tasks redelivers the task to a new process on the same database, which sends the same
    event with the same webhook-id, and the delivery ends recorded as delivered."""
    hold = threading.Event()
    receiver = WebhookReceiver(hold_first=hold)
    restarted: DevServer | None = None
    try:
        server, fake = cloud_server(NANO_BANANA_WEBHOOK_URL="http://127.0.0.1:{port}/tasks/webhook")
        fake.max_attempts = 20  # the retries must outlast the restart
        s = server.session()
        r = server.client.post(
            "/api/nano-banana/jobs",
            data={
                "projectId": s.project_id,
                "prompt": "p",
                "variantCount": "1",
                "webhookUrl": f"{receiver.base_url}/h",
            },
            files={"image": ("p.png", png_bytes(), "image/png")},
            headers=s.headers,
        )
        assert r.status_code == 202, r.text
        job_id = r.json()["jobId"]
        receiver.wait_for(1)  # the delivery is in flight: the function dies now
        server.process.kill()
        server.process.wait(10)
        stop_if_running(server.data_dir / "postgres")
        hold.set()
        restarted = start_dev_server(
            tmp_path, {k: v for k, v in server.env.items() if k.startswith(("NANO_", "PORT", "GOOGLE_", "FIRESTORE_"))}
        )
        received = receiver.wait_for(2, timeout_s=60)
        assert {got.headers["webhook-id"] for got in received} == {webhook_id(uuid.UUID(job_id), "succeeded")}
        payload = Webhook(DEV_WEBHOOK_SECRET).verify(received[-1].body, received[-1].headers)
        assert payload["type"] == "job.succeeded"
        deadline = time.monotonic() + 20
        while (delivery := restarted.job(s, job_id)["webhook"]["deliveries"][0])["state"] != "delivered":
            assert time.monotonic() < deadline, delivery
            time.sleep(0.1)
        assert delivery["lastStatus"] == 200
    finally:
        hold.set()
        receiver.stop()
        if restarted is not None:
            restarted.stop()
