"""Fault injection on the local stack: killed workers, Postgres and Firestore outages, clock skew."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from infra import firestore_emulator
from nano_banana import webhooks
from nano_banana.embedded_pg import EmbeddedPostgres
from tests.support.devserver import DevServer, free_port, start_dev_server

pytestmark = pytest.mark.faults


def test_worker_killed_mid_generation_is_redelivered_and_ends_once(tmp_path: Path) -> None:
    emulator = firestore_emulator.start()
    port = free_port()
    env = {
        "PORT": str(port),
        "NANO_BANANA_PREVIEW_DELAY_MS": "4000",
        "NANO_BANANA_LIMITS": "firestore",
        "GOOGLE_CLOUD_PROJECT": "test-project",
        "FIRESTORE_EMULATOR_HOST": emulator.host,
        "NANO_BANANA_MAX_ACTIVE_PER_PROJECT": "2",
    }
    server = start_dev_server(tmp_path, env)
    try:
        s = server.session()
        job_id = server.create_job(s).json()["jobId"]
        server.wait_for(s, job_id, {"running"})
        os.kill(server.process.pid, signal.SIGKILL)  # the worker dies before uploading anything
        server.process.wait(timeout=10)
        server.client.close()
        # A new instance on the same data (the embedded Postgres outlives the killed process).
        server = start_dev_server(
            tmp_path, {**env, "NANO_BANANA_DATA_DIR": str(server.data_dir), "NANO_BANANA_PREVIEW_DELAY_MS": "0"}
        )
        assert server.job(s, job_id)["status"] == "running"
        # The platform redelivers the task (twice, as at-least-once delivery may).
        for _ in range(2):
            r = server.client.post("/tasks/generate", json={"jobId": job_id})
            assert r.status_code == 200, r.text
        job = server.wait_for(s, job_id, {"succeeded"})
        assert job["attempt"] == 2
        assert len(job["variants"]) == 2
        assert all("/2/" in v["storagePath"] for v in job["variants"])
        outputs = list((server.data_dir / "blobs" / "jobs" / job_id).rglob("*.png"))
        assert len(outputs) == 2, "one set of variants, nothing left of the dead attempt"
        # No slot leaked: the project admits max_active new jobs at once.
        slow = [server.create_job(s) for _ in range(2)]
        assert [r.status_code for r in slow] == [202, 202]
    finally:
        server.stop()
        EmbeddedPostgres(server.data_dir / "postgres").stop()
        emulator.stop()


def test_postgres_outage_gives_quick_503s_and_service_resumes(dev_server_factory: Callable[..., DevServer]) -> None:
    server = dev_server_factory(NANO_BANANA_RATE_PER_HOUR="3", NANO_BANANA_DB_CONNECT_TIMEOUT_S="2")
    s = server.session()
    assert server.create_job(s).status_code == 202
    pg = EmbeddedPostgres(server.data_dir / "postgres")
    pg.stop()
    try:
        for _ in range(3):
            started = time.monotonic()
            r = server.create_job(s)
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"] == "unavailable"
            assert time.monotonic() - started < 5
            r = server.client.get(f"/api/nano-banana/jobs?projectId={s.project_id}", headers=s.headers)
            assert r.status_code == 503
        assert server.client.get("/readyz").status_code == 503
    finally:
        pg.start()
    codes = []
    for _ in range(4):
        codes.append(
            server.client.get(f"/api/nano-banana/jobs?projectId={s.project_id}", headers=s.headers).status_code
        )
    assert codes.count(200) >= 3, f"resumed without a restart: {codes}"
    assert server.job_count(s) == 1, "nothing was half-written during the outage"
    # The failed creations gave their reservations back: 2 more fit in the hour, then 429.
    assert [server.create_job(s).status_code for _ in range(3)] == [202, 202, 429]


def test_firestore_outage_writes_no_job_and_limits_are_exact_after(tmp_path: Path) -> None:
    emulator = firestore_emulator.start()
    env = {
        "NANO_BANANA_LIMITS": "firestore",
        "GOOGLE_CLOUD_PROJECT": "test-project",
        "FIRESTORE_EMULATOR_HOST": emulator.host,
        "NANO_BANANA_RATE_PER_HOUR": "3",
        "NANO_BANANA_MAX_ACTIVE_PER_PROJECT": "100",
    }
    server = start_dev_server(tmp_path, env)
    try:
        s = server.session()
        assert server.create_job(s).status_code == 202
        emulator.stop()
        started = time.monotonic()
        r = server.create_job(s)
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "unavailable"
        assert time.monotonic() - started < 10
        assert server.job_count(s) == 1
        emulator = firestore_emulator.start(port=emulator.port)  # back, empty (the emulator keeps no data)
        back = time.monotonic()
        while (first := server.create_job(s).status_code) == 503:  # the client's channel reconnects with backoff
            assert time.monotonic() - back < 60, "limits never came back"
            time.sleep(0.5)
        print(f"firestore recovered {time.monotonic() - back:.1f} s after the emulator returned")
        assert first == 202
        assert server.job_count(s) == 2
        assert [server.create_job(s).status_code for _ in range(3)] == [202, 202, 429], "exact again"
    finally:
        server.stop()
        emulator.stop()


def test_clock_skew_of_two_minutes(dev_server_factory: Callable[..., DevServer]) -> None:
    secret = "skew-secret"
    server = dev_server_factory(
        NANO_BANANA_GENERATOR="n8n",
        N8N_WEBHOOK_NANO_BANANA_PROCESSOR="http://127.0.0.1:9/never",
        N8N_NANO_BANANA_SECRET=secret,
        NANO_BANANA_TIMEOUT_S="30",
    )
    s = server.session()
    job_id = server.create_job(s).json()["jobId"]
    # An expire task delivered 2 minutes early (a skewed scheduler) is retried, never applied.
    r = server.client.post("/tasks/expire", json={"jobId": job_id})
    assert r.status_code == 503
    assert server.job(s, job_id)["status"] in ("queued", "running", "failed")
    assert server.job(s, job_id).get("errorCode") != "timeout"
    # A processor whose clock is 2 minutes off either way still has its callback verified (tolerance 5 min).
    for offset in (-120, 120):
        body = json.dumps({"jobId": job_id, "status": "running"}).encode()
        headers = {
            "Content-Type": "application/json",
            **webhooks.sign(body, secret, now=datetime.now(UTC) + timedelta(seconds=offset)),
        }
        r = httpx.post(f"{server.api}/callback", content=body, headers=headers)
        assert r.status_code in (200, 409), r.text  # verified; 409 only if the job already failed (n8n unreachable)
        assert r.status_code != 401
    # Six minutes off is refused.
    body = json.dumps({"jobId": job_id, "status": "running"}).encode()
    headers = webhooks.sign(body, secret, now=datetime.now(UTC) - timedelta(minutes=6))
    assert httpx.post(f"{server.api}/callback", content=body, headers=headers).status_code == 401
