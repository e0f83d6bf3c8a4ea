"""Callback receipts and repeated reports, on the real Postgres store: a repeated success never deletes the
job's images, cleanup after a committed transition never fails the answer, and a duplicate of a delivery
still being applied is told to retry (never acknowledged as done)."""

from __future__ import annotations

import io
import json
import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Request
from PIL import Image
from werkzeug.test import EnvironBuilder

from nano_banana import callback, usecases, webhooks
from nano_banana.adapters.limits_memory import MemoryLimits
from nano_banana.adapters.postgres import PostgresJobStore
from nano_banana.domain import Job, JobStatus, VariantUpload, output_path
from nano_banana.errors import Unavailable
from nano_banana.settings import Settings
from tests.support.memory_blobs import MemoryBlobStore
from tests.support.new_jobs import new_job
from tests.support.openapi import validate, validate_error
from tests.support.recording_queue import RecordingQueue

pytestmark = [pytest.mark.callback, pytest.mark.postgres]

SECRET = "receipts-test-secret"
PROJECT = uuid.UUID(int=31)
USER = uuid.UUID(int=41)


def _png(color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buf, "PNG")
    return buf.getvalue()


class FaultyBlobs(MemoryBlobStore):
    """A real in-memory store whose `list` and `get` can be made to fail or to wait (to interleave)."""

    def __init__(self) -> None:
        super().__init__()
        self.list_failures = 0
        self.on_get: Callable[[str], None] | None = None

    def list(self, prefix: str) -> list[str]:
        if self.list_failures > 0:
            self.list_failures -= 1
            raise Unavailable("storage is unavailable")
        return super().list(prefix)

    def get(self, path: str, *, max_bytes: int) -> bytes:
        if self.on_get is not None:
            self.on_get(path)
        return super().get(path, max_bytes=max_bytes)


@dataclass
class Stack:
    svc: usecases.Services
    store: PostgresJobStore
    blobs: FaultyBlobs

    def running_job(self, outputs: int = 2) -> tuple[Job, list[str]]:
        """A job claimed by attempt 1 whose processor uploaded `outputs` images."""
        job_id = uuid.uuid4()
        now = datetime.now(UTC)
        self.store.create_job(
            new_job(
                PROJECT,
                USER,
                id=job_id,
                prompt="p",
                input_width=8,
                input_height=8,
                deadline_at=now + timedelta(minutes=5),
            )
        )
        job = self.store.claim_for_generation(job_id, now)
        assert job is not None
        paths = [output_path(job_id, 1, i, "image/png") for i in range(outputs)]
        for i, path in enumerate(paths):
            self.blobs.put(path, _png((i * 40, 90, 200)), "image/png")
        return job, paths

    def post(self, body: dict[str, Any], webhook_id: str) -> tuple[int, dict[str, Any], dict[str, str]]:
        raw = json.dumps(body).encode()
        headers = {"Content-Type": "application/json", **webhooks.sign(raw, SECRET, msg_id=webhook_id)}
        request = Request(EnvironBuilder(method="POST", data=raw, headers=headers).get_environ())
        response = callback.handle(self.svc, request)
        return response.status_code, json.loads(response.get_data()), dict(response.headers)


@pytest.fixture
def stack(pg_store: PostgresJobStore) -> Iterator[Stack]:
    pg_store.add_member(PROJECT, USER)
    cfg = Settings(N8N_NANO_BANANA_SECRET=SECRET, NANO_BANANA_CALLBACK_CLAIM_TTL_S=30)
    blobs = FaultyBlobs()
    svc = usecases.Services(
        settings=cfg,
        store=pg_store,
        limits=MemoryLimits(cfg.rate_per_hour, cfg.max_active_per_project, lambda: datetime.now(UTC)),
        queue=RecordingQueue(),
        blobs=blobs,
        generator_factory=None,
        processor_factory=None,
        clock=lambda: datetime.now(UTC),
    )
    return Stack(svc, pg_store, blobs)


def _success(job: Job, paths: list[str]) -> dict[str, Any]:
    return {
        "jobId": str(job.id),
        "status": "succeeded",
        "variants": [{"path": p, "mimeType": "image/png"} for p in paths],
    }


def test_a_cleanup_failure_after_the_commit_is_not_a_failed_delivery(stack: Stack) -> None:
    """Issue 13.1(a): storage fails while listing stale outputs after the CAS committed. Before: 503, the
    receipt forgotten, the resent request got 409 and deleted the job's variants."""
    job, paths = stack.running_job()
    stack.blobs.list_failures = 1
    status, body, _ = stack.post(_success(job, paths), "msg_first")
    assert (status, body) == (200, {"jobId": str(job.id), "status": "succeeded", "variants": 2})
    validate(body, "CallbackResult")
    status, body, _ = stack.post(_success(job, paths), "msg_first")  # the processor resends anyway
    assert (status, body) == (200, {"duplicate": True})
    validate(body, "CallbackResult")
    done = stack.store.get_job(job.id)
    assert done is not None
    assert done.status is JobStatus.succeeded
    assert sorted(v.storage_path for v in done.variants) == paths
    assert all(stack.blobs.stat(p) is not None for p in paths), "the variants are still stored"


def test_a_second_success_report_keeps_the_variants_and_is_answered_like_the_first(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 13.1(b): a re-run of the processor reports success again under a new webhook id."""
    job, paths = stack.running_job(outputs=3)
    with caplog.at_level(logging.INFO, logger="nano_banana"):
        first = stack.post(_success(job, paths[:2]), "msg_run_1")
        assert first[0] == 200
        assert stack.blobs.stat(paths[2]) is None, "the stale output beside the variants was cleaned up"
        stack.blobs.put(paths[2], _png((1, 2, 3)), "image/png")  # the re-run uploaded a third image
        second = stack.post(_success(job, [paths[0], paths[2]]), "msg_run_2")
    assert second[:2] == first[:2]
    events = [getattr(r, "event", None) for r in caplog.records]
    assert (events.count("callback_applied"), events.count("callback_repeated")) == (1, 1)
    assert stack.blobs.stat(paths[0]) is not None
    assert stack.blobs.stat(paths[1]) is not None
    assert stack.blobs.stat(paths[2]) is None, "what the repeated report named beside the variants is deleted"
    again = stack.store.get_job(job.id)
    assert again is not None
    assert [v.storage_path for v in again.variants] == paths[:2]


def test_a_completion_that_loses_to_the_same_result_keeps_it(stack: Stack) -> None:
    """The lost-CAS branch of complete_job: another report recorded these very paths first."""
    job, paths = stack.running_job()
    uploads = [VariantUpload(i, p, "image/png", 8, 8, 10) for i, p in enumerate(paths)]
    assert usecases.complete_job(stack.svc, job, 1, uploads, None) is not None
    assert usecases.complete_job(stack.svc, job, 1, uploads, None) is None
    assert all(stack.blobs.stat(p) is not None for p in paths)


def test_concurrent_reports_of_one_result_under_two_ids_both_succeed(stack: Stack) -> None:
    """Two deliveries with different ids read the job running; one wins, the other loses the CAS."""
    job, paths = stack.running_job()
    both_read = threading.Barrier(2, timeout=10)

    def wait_for_both(path: str) -> None:
        if path == paths[-1]:  # both have read the job as running and checked its outputs
            both_read.wait()

    stack.blobs.on_get = wait_for_both
    results: dict[str, tuple[int, dict[str, Any], dict[str, str]]] = {}

    def deliver(webhook_id: str) -> None:
        results[webhook_id] = stack.post(_success(job, paths), webhook_id)

    threads = [threading.Thread(target=deliver, args=(w,)) for w in ("msg_a", "msg_b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert [results[w][:2] for w in ("msg_a", "msg_b")] == [
        (200, {"jobId": str(job.id), "status": "succeeded", "variants": 2})
    ] * 2
    assert all(stack.blobs.stat(p) is not None for p in paths)


def test_a_duplicate_of_a_delivery_in_flight_is_told_to_retry(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 13.2: the duplicate arrives while the first is applying; the first then fails. Before: the
    duplicate got 200 {"duplicate": true}, the processor stopped, the job waited for its deadline."""
    monkeypatch.setattr(callback, "IN_FLIGHT_WAIT_S", 0.3)  # the first is still applying when the wait ends
    job, paths = stack.running_job()
    reading = threading.Event()
    fail_now = threading.Event()

    def first_delivery_stalls(path: str) -> None:
        if not fail_now.is_set() and threading.current_thread().name == "first":
            reading.set()
            assert fail_now.wait(10)
            raise Unavailable("storage went away")

    stack.blobs.on_get = first_delivery_stalls
    outcome: list[tuple[int, dict[str, Any], dict[str, str]]] = []
    first = threading.Thread(target=lambda: outcome.append(stack.post(_success(job, paths), "msg_x")), name="first")
    first.start()
    assert reading.wait(10)
    status, body, headers = stack.post(_success(job, paths), "msg_x")
    assert status == 503, body
    validate_error(body, "callback_in_progress")
    assert int(headers["Retry-After"]) >= 1
    fail_now.set()
    first.join(timeout=10)
    assert outcome[0][0] == 503
    assert outcome[0][1]["error"]["code"] == "unavailable"
    current = stack.store.get_job(job.id)
    assert current is not None
    assert current.status is JobStatus.running
    status, body, _ = stack.post(_success(job, paths), "msg_x")  # the processor's retry applies
    assert (status, body) == (200, {"jobId": str(job.id), "status": "succeeded", "variants": 2})


def test_a_duplicate_waits_for_the_delivery_in_flight_and_applies_when_it_fails(stack: Stack) -> None:
    """Issue 24 suspicion (proven): n8n's callback node retries 3 times 1 s apart and ignores Retry-After;
    its duplicates of a delivery still in flight were answered 503 at once, so when that delivery then
    failed (a second after the last retry) nothing delivered again and the job timed out. Interleaving:
    delivery 1 stalls mid-apply -> duplicate arrives -> delivery 1 fails. Now the duplicate waits for the
    outcome and applies the report itself."""
    job, paths = stack.running_job()
    reading = threading.Event()
    fail_now = threading.Event()

    def first_delivery_stalls(path: str) -> None:
        if threading.current_thread().name == "first":
            reading.set()
            assert fail_now.wait(10)
            raise Unavailable("storage went away")

    stack.blobs.on_get = first_delivery_stalls
    outcome: list[tuple[int, dict[str, Any], dict[str, str]]] = []
    first = threading.Thread(target=lambda: outcome.append(stack.post(_success(job, paths), "msg_y")), name="first")
    first.start()
    assert reading.wait(10)
    threading.Timer(0.5, fail_now.set).start()  # the first fails while the duplicate is waiting
    status, body, _ = stack.post(_success(job, paths), "msg_y")
    first.join(timeout=10)
    assert outcome[0][0] == 503
    assert (status, body) == (200, {"jobId": str(job.id), "status": "succeeded", "variants": 2})


def test_a_claim_whose_delivery_died_can_be_taken_over(stack: Stack) -> None:
    """A delivery that crashed mid-apply leaves a `processing` receipt: after the claim TTL a retry applies."""
    job, paths = stack.running_job()
    now = datetime.now(UTC)
    assert stack.store.claim_webhook("msg_dead", now=now - timedelta(seconds=31), stale_before=now) == "claimed"
    status, body, _ = stack.post(_success(job, paths), "msg_dead")
    assert (status, body["status"]) == (200, "succeeded")


def test_a_failure_report_applies_its_receipt_in_the_transition(stack: Stack) -> None:
    job, _ = stack.running_job()
    report = {"jobId": str(job.id), "status": "failed", "error": {"code": "content_blocked", "message": "no"}}
    assert stack.post(report, "msg_fail")[:2] == (200, {"jobId": str(job.id), "status": "failed"})
    now = datetime.now(UTC)
    assert stack.store.claim_webhook("msg_fail", now=now, stale_before=now) == "applied"
    assert stack.post(report, "msg_fail")[:2] == (200, {"duplicate": True})
