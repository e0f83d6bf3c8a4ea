"""The JSON log lines of a real run, for checking the log-based metrics (tests/infra/test_monitoring.py).

Two parts, both the service's own code writing its own lines:
- the dev server (`nano-banana dev` as a subprocess, HTTP only): jobs that succeed, one canceled, a 429
  for the project's concurrency and one for the user's hourly rate, a 404, a callback with a bad
  signature, and 503s once its Postgres has been stopped under it;
- the use cases in this process against the session's embedded Postgres, with the real Vertex client
  against the local generateContent server: a Vertex 429 that is retried, a safety block
  (content_blocked), a 400 (generation_failed), an enqueue that fails (the creation rolls back: job_rejected, reason enqueue_failed), a job the sweep
  expires and one its expire task does, a slot release that fails, the event streams' LISTEN
  connection killed and re-established, and a webhook delivery answered 500 once, then delivered.
"""

from __future__ import annotations

import io
import json
import logging
import random
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from google import genai
from google.genai import types
from google.oauth2.credentials import Credentials
from PIL import Image

from nano_banana import log as logs
from nano_banana import usecases
from nano_banana.adapters.generator_vertex import VertexGenerator
from nano_banana.adapters.limits_memory import MemoryLimits
from nano_banana.adapters.postgres import PostgresJobStore
from nano_banana.adapters.webhook_sender import WebhookSender
from nano_banana.embedded_pg import stop_if_running
from nano_banana.errors import TransientError, Unavailable
from nano_banana.http import job_renderer
from nano_banana.images import inspect_image
from nano_banana.retry import Backoff
from nano_banana.settings import Settings
from nano_banana.usecases import notifying
from tests.support import vertex_server as vs
from tests.support.devserver import start_dev_server
from tests.support.memory_blobs import MemoryBlobStore
from tests.support.recording_queue import RecordingQueue
from tests.support.webhook_receiver import WebhookReceiver

Line = dict[str, Any]
CALLBACK_SECRET = "monitoring-test-secret"  # a test key, never deployed


# ------------------------------------------------------------------------------------------ dev server


def dev_server_lines(tmp: Path) -> list[Line]:
    server = start_dev_server(
        tmp,
        {
            "NANO_BANANA_MAX_ACTIVE_PER_PROJECT": "1",
            "NANO_BANANA_RATE_PER_HOUR": "3",
            "NANO_BANANA_PREVIEW_DELAY_MS": "800",
            "NANO_BANANA_DB_CONNECT_TIMEOUT_S": "1",
            "N8N_NANO_BANANA_SECRET": CALLBACK_SECRET,
        },
    )
    try:
        s = server.session()
        first = server.create_job(s)
        assert first.status_code == 202, first.text
        busy = server.create_job(s)
        assert (busy.status_code, busy.json()["error"]["code"]) == (429, "concurrency_limited"), busy.text
        canceled = server.client.post(f"/api/nano-banana/jobs/{first.json()['jobId']}/cancel", headers=s.headers)
        assert canceled.status_code == 200, canceled.text
        for _ in range(2):
            created = server.create_job(s)
            assert created.status_code == 202, created.text
            server.wait_for(s, created.json()["jobId"], {"succeeded"})
        limited = server.create_job(s)
        assert (limited.status_code, limited.json()["error"]["code"]) == (429, "rate_limited"), limited.text
        missing = server.client.get(f"/api/nano-banana/jobs/{uuid.uuid4()}", headers=s.headers)
        assert missing.status_code == 404
        body = json.dumps({"jobId": str(uuid.uuid4()), "status": "failed"}).encode()
        forged = server.client.post(
            "/api/nano-banana/callback",
            content=body,
            headers={
                "content-type": "application/json",
                "webhook-id": "msg_forged",
                "webhook-timestamp": str(int(time.time())),
                "webhook-signature": "v1,bm90IHRoZSByaWdodCBzaWduYXR1cmU=",
            },
        )
        assert (forged.status_code, forged.json()["error"]["code"]) == (401, "invalid_signature"), forged.text
        stop_if_running(server.data_dir / "postgres")  # the database goes away under the running server
        down = server.client.get(f"/api/nano-banana/jobs/{created.json()['jobId']}", headers=s.headers)
        assert down.status_code == 503, down.text
    finally:
        server.stop()
    return [json.loads(raw) for raw in server.logs().splitlines() if raw.startswith("{")]


# ------------------------------------------------------------------------------------------ in process


class FlakyLimits(MemoryLimits):
    """The in-memory limits, whose next slot release can be made to fail (a Firestore outage)."""

    fail_release = False

    def release_slot(self, *, project_id: uuid.UUID, job_id: uuid.UUID) -> None:
        if self.fail_release:
            self.fail_release = False
            raise Unavailable("the limits store is unavailable")
        super().release_slot(project_id=project_id, job_id=job_id)


@contextmanager
def capture() -> Iterator[list[Line]]:
    """Every line the package logs inside the block, formatted exactly as on stdout."""
    lines: list[Line] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(json.loads(logs.JsonFormatter().format(record)))

    logger = logging.getLogger("nano_banana")
    handler, level = Collect(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (1, 2, 3)).save(buf, "PNG")
    return buf.getvalue()


def in_process_lines(database_uri: str) -> list[Line]:
    server = vs.VertexServer()
    store = PostgresJobStore(database_uri, max_size=4)
    clock_offset = [timedelta(0)]

    def clock() -> datetime:
        return datetime.now(UTC) + clock_offset[0]

    def client() -> genai.Client:
        return genai.Client(
            vertexai=True,
            project="test-project",
            location="global",
            credentials=Credentials(token="test-token"),  # type: ignore[no-untyped-call]
            http_options=types.HttpOptions(base_url=server.url, retry_options=types.HttpRetryOptions(attempts=1)),
        )

    gen = VertexGenerator(
        client,
        "gemini-2.5-flash-image",
        clock=lambda: datetime.now(UTC),
        rng=random.Random(1),
        backoff=Backoff(base_s=0.05, cap_s=0.2),
    )
    # A monthly budget of 3 images: the two jobs left to expire take the month (1 stored + 2 reserved) across
    # 80 % and to 100 % (budget_threshold); the failed, canceled and rolled-back ones gave theirs back.
    cfg = Settings(NANO_BANANA_GENERATOR="vertex", NANO_BANANA_TIMEOUT_S=60, NANO_BANANA_PROJECT_MONTHLY_IMAGES=3)
    limits = FlakyLimits(100, 100, clock)
    queue = RecordingQueue()
    svc = usecases.Services(
        settings=cfg,
        store=store,
        limits=limits,
        queue=queue,
        blobs=MemoryBlobStore(),
        generator_factory=lambda: gen,
        processor_factory=None,
        clock=clock,
        webhooks=WebhookSender(notifying.policy(cfg)),
    )
    receiver = WebhookReceiver(statuses=(500,))
    user, project = uuid.uuid4(), uuid.uuid4()
    store.add_member(project, user)

    def create() -> uuid.UUID:
        data = _png()
        upload = usecases.ImageUpload(data, inspect_image(data, max_bytes=10**6, max_pixels=10**6))
        return usecases.create_job(svc, user, usecases.CreateJob(project, "edit", 1, None, upload=upload)).job.id

    try:
        with capture() as lines:
            # Vertex: a 429 retried, then images; a safety block; a 400 (not retried).
            server.script = [lambda: vs.error(429, "Resource exhausted. Please try again later."), lambda: vs.images(1)]
            usecases.run_generation(svc, create())
            server.requests.clear()
            server.script = [vs.safety_block]
            usecases.run_generation(svc, create())
            server.requests.clear()
            server.script = [lambda: vs.error(400, "Request contains an invalid argument.")]
            usecases.run_generation(svc, create())
            # The queue refuses the generate task: the creation is rolled back and answered 503
            # (job_rejected with reason enqueue_failed; no job is left to fail).
            queue.fail_next = Unavailable("the task queue is unavailable; retry shortly")
            try:
                create()
            except Unavailable:
                pass
            else:  # pragma: no cover - the assertion below reports it
                raise AssertionError("an enqueue failure must fail the creation")
            # A slot release fails when a job is canceled.
            canceled = create()
            limits.fail_release = True
            usecases.cancel_job(svc, user, canceled)
            # Past the deadline: the expire task fails one job, the sweep the other (its task was lost).
            by_task, by_sweep = create(), create()
            clock_offset[0] = timedelta(seconds=cfg.timeout_s + 5)
            usecases.expire_job(svc, by_task)
            usecases.sweep(svc)
            swept = store.get_job(by_sweep)
            assert swept is not None
            assert (swept.status.value, swept.error_code) == ("failed", "timeout")
            clock_offset[0] = timedelta(0)
            # The event streams' shared LISTEN connection is killed and comes back.
            watched = create()
            events = store.wait_for_change(watched, 20, heartbeat_s=0.3)
            next(events)
            with psycopg.connect(database_uri, autocommit=True) as conn:
                conn.execute(
                    "select pg_terminate_backend(pid) from pg_stat_activity where application_name = %s",
                    ("nano-banana-listener",),
                )
            deadline = time.monotonic() + 15
            while not any(line.get("event") == "listener_reconnected" for line in lines):
                assert time.monotonic() < deadline, "the listener did not reconnect"
                next(events)
            events.close()
            # A completion webhook: the receiver answers 500 (retried), then 200.
            data = _png()
            upload = usecases.ImageUpload(data, inspect_image(data, max_bytes=10**6, max_pixels=10**6))
            command = usecases.CreateJob(
                project, "edit", 1, None, upload=upload, webhook_url=f"{receiver.base_url}/hook"
            )
            hooked = usecases.create_job(svc, user, command).job.id
            usecases.cancel_job(svc, user, hooked)
            render = job_renderer(svc)
            try:
                usecases.deliver_webhook(svc, hooked, "canceled", render=render)
            except TransientError:
                pass
            else:  # pragma: no cover - the assertion below reports it
                raise AssertionError("a 500 must be retried")
            usecases.deliver_webhook(svc, hooked, "canceled", render=render)
    finally:
        store.close()
        server.stop()
        receiver.stop()
    return lines
