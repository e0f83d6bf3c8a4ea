"""The dev server on Supabase Storage (the local server answering as storage-api v1.70.6) when Storage
refuses: readiness names the cause, a lock is waited out, and a slow processor still gets its images in."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.support.devserver import DevServer
from tests.support.fake_n8n import FakeN8n, png
from tests.support.openapi import validate
from tests.support.storage_server import StorageServer

pytestmark = [pytest.mark.storage, pytest.mark.e2e]
KEY = "service-role-key-e2e"
SECRET = "n8n-shared-secret-for-storage-tests"


@pytest.fixture
def storage() -> Iterator[StorageServer]:
    server = StorageServer(KEY)
    yield server
    server.stop()


def on_supabase(factory: Callable[..., DevServer], storage: StorageServer, **env: str) -> DevServer:
    return factory(NANO_BANANA_STORAGE="supabase", SUPABASE_URL=storage.url, SUPABASE_SERVICE_ROLE_KEY=KEY, **env)


def test_readiness_and_creation_name_a_wrong_key_the_anon_key_and_a_missing_bucket(
    dev_server_factory: Callable[..., DevServer], storage: StorageServer
) -> None:
    server = on_supabase(dev_server_factory, storage)
    s = server.session()
    assert server.client.get("/readyz").json()["checks"]["storage"] == "ok"
    service_key, anon_key = storage.service_key, storage.anon_key
    for cause, change in (
        ("key_rejected", lambda: setattr(storage, "service_key", "rotated-elsewhere")),
        ("key_not_service_role", lambda: (setattr(storage, "service_key", "x"), setattr(storage, "anon_key", KEY))),
        ("bucket_not_found", lambda: setattr(storage, "bucket", "renamed-bucket")),
    ):
        storage.service_key, storage.anon_key, storage.bucket = service_key, anon_key, "pip-ai-images"
        change()
        ready = server.client.get("/readyz")
        assert ready.status_code == 503, cause
        details = ready.json()["error"]["details"]
        assert details["storage"] == cause
        assert details["database"] == "ok"
        assert "storage is misconfigured" in details["problems"]["storage"]
        created = server.create_job(s)
        assert created.status_code == 503, created.text
        assert created.json()["error"]["code"] == "unavailable"
    storage.service_key, storage.anon_key, storage.bucket = service_key, anon_key, "pip-ai-images"
    assert server.client.get("/readyz").status_code == 200
    logs = [json.loads(line) for line in server.logs().splitlines() if line.startswith("{")]
    failed_creations = [e for e in logs if e.get("event") == "request_failed" and "/jobs" in e.get("path", "")]
    assert len(failed_creations) == 3
    assert all("storage is misconfigured" in e["message"] for e in failed_creations), failed_creations
    causes = {e["cause"] for e in logs if e.get("event") == "storage_misconfigured"}
    assert causes >= {"key_rejected", "key_not_service_role", "bucket_not_found"}
    assert KEY not in server.logs()
    assert server.job_count(s) == 0, "a refused creation writes nothing"


def test_a_locked_input_is_redelivered_and_the_job_succeeds_once_the_lock_is_gone(
    dev_server_factory: Callable[..., DevServer], storage: StorageServer
) -> None:
    server = on_supabase(dev_server_factory, storage)
    s = server.session()
    # Held for the first delivery's three tries and one more: the task answers 503, Cloud Tasks (here the
    # in-process queue) redelivers, and the second delivery reads the input once the lock is gone.
    storage.inject(423, "ResourceLocked", times=4, route="GET object/pip-ai-images/inputs/")
    job = server.wait_for(s, server.create_job(s).json()["jobId"], {"succeeded", "failed"})
    assert job["status"] == "succeeded", job
    events = [json.loads(line) for line in server.logs().splitlines() if line.startswith("{")]
    redelivered = [e for e in events if e.get("event") == "task_failed" and "-generate-" in e.get("task", "")]
    assert [(e["errorType"], e["retry"]) for e in redelivered] == [("TransientError", True)]
    # A path storage-api would refuse is a clear 4xx, never a 500 (storage3 raises a bare ValueError).
    for bad in (f"inputs/{s.user_id}/..", f"inputs/{s.user_id}/é.png", f"inputs/{s.user_id}/a#b.png"):
        body = {"projectId": s.project_id, "prompt": "again", "inputPath": bad}
        refused = server.client.post("/api/nano-banana/jobs", json=body, headers=s.headers)
        assert (refused.status_code, refused.json()["error"]["code"]) == (422, "invalid_request"), bad
    assert server.job_count(s) == 1, "a refused creation writes nothing"


class SlowProcessor(FakeN8n):
    """A processor whose images take longer than Storage's upload URLs live: it proves the hand-off URL
    expired, then asks for fresh ones with a signed `running` report and uploads to those."""

    def __init__(self, secret: str, wait_s: float) -> None:
        super().__init__(secret)
        self.wait_s = wait_s
        self.late_puts: list[tuple[int, Any]] = []
        self.grants: list[dict[str, Any]] = []

    def process(self, payload: dict[str, Any]) -> None:
        httpx.get(payload["inputUrl"], timeout=10).raise_for_status()
        time.sleep(self.wait_s)  # "generating"
        late = httpx.put(payload["uploadUrls"][0], content=png((1, 2, 3)), headers={"Content-Type": "image/png"})
        self.late_puts.append((late.status_code, late.json()))
        attempt = int(payload["outputPrefix"].rstrip("/").rsplit("/", 1)[1])
        grant = self.call_back(
            payload["callbackUrl"], {"jobId": payload["jobId"], "status": "running", "attempt": attempt}
        )
        self.grants.append((grant.status_code, grant.json()))
        variants = []
        for index, url in enumerate(grant.json()["uploadUrls"]):
            data = png((40 * index, 200, 90))
            httpx.put(url, content=data, headers={"Content-Type": "image/png"}, timeout=10).raise_for_status()
            variants.append({"path": f"{grant.json()['outputPrefix']}{index}.png", "mimeType": "image/png"})
        self.call_back(payload["callbackUrl"], {"jobId": payload["jobId"], "status": "succeeded", "variants": variants})


def test_a_processor_slower_than_the_upload_url_lifetime_still_delivers(
    dev_server_factory: Callable[..., DevServer], storage: StorageServer
) -> None:
    storage.upload_url_lifetime_s = 2  # storage-api's 60 s default, shortened so the test takes seconds
    processor = SlowProcessor(SECRET, wait_s=3)
    try:
        server = on_supabase(
            dev_server_factory,
            storage,
            NANO_BANANA_GENERATOR="n8n",
            N8N_WEBHOOK_NANO_BANANA_PROCESSOR=processor.url,
            N8N_NANO_BANANA_SECRET=SECRET,
        )
        s = server.session()
        job_id = server.create_job(s, variant_count=2).json()["jobId"]
        job = server.wait_for(s, job_id, {"succeeded", "failed"})
        assert job["status"] == "succeeded", job
        assert [httpx.get(v["url"]).content for v in job["variants"]] == [png((0, 200, 90)), png((40, 200, 90))]
        (late,) = processor.late_puts
        assert (late[0], late[1]["code"]) == (400, "InvalidJWT"), "the hand-off URL had really expired"
        ((status, grant),) = processor.grants
        assert status == 200
        validate(grant, "CallbackRunningAnswer")
        assert (grant["jobId"], grant["status"], grant["attempt"]) == (job_id, "running", 1)
        assert grant["outputPrefix"] == f"jobs/{job_id}/1/"
        assert grant["uploadMethod"] == "PUT"
        assert len(grant["uploadUrls"]) == 2
    finally:
        processor.stop()


def test_the_running_report_grants_urls_only_to_the_current_attempt_of_a_running_job(
    dev_server_factory: Callable[..., DevServer], storage: StorageServer
) -> None:
    processor = FakeN8n(SECRET, mode="never")
    try:
        server = on_supabase(
            dev_server_factory,
            storage,
            NANO_BANANA_GENERATOR="n8n",
            N8N_WEBHOOK_NANO_BANANA_PROCESSOR=processor.url,
            N8N_NANO_BANANA_SECRET=SECRET,
        )
        s = server.session()
        job_id = server.create_job(s, variant_count=3).json()["jobId"]
        server.wait_for(s, job_id, {"running"})
        callback = f"{server.api}/callback"
        running = {"jobId": job_id, "status": "running"}
        first = processor.call_back(callback, running, msg_id="msg_same")
        again = processor.call_back(callback, running, msg_id="msg_same")
        assert first.status_code == again.status_code == 200, "no receipt: a repeated report is answered again"
        assert again.json()["attempt"] == 1
        assert len(again.json()["uploadUrls"]) == 3
        for url in again.json()["uploadUrls"]:
            assert url.startswith(f"{storage.url}/storage/v1/object/upload/sign/pip-ai-images/jobs/{job_id}/1/")
        wrong = processor.call_back(callback, {**running, "attempt": 2})
        assert (wrong.status_code, wrong.json()["error"]["code"]) == (409, "invalid_transition")
        assert server.client.post(f"{server.api}/jobs/{job_id}/cancel", headers=s.headers).status_code == 200
        done = processor.call_back(callback, {**running, "attempt": 1})
        assert (done.status_code, done.json()["error"]["code"]) == (409, "invalid_transition")
    finally:
        processor.stop()


def test_a_lock_on_signing_leaves_urls_out_and_signed_urls_answers_503(
    dev_server_factory: Callable[..., DevServer], storage: StorageServer
) -> None:
    """Seen on the real server while a lock was held on storage.objects: GET /jobs/{id} and /signed-urls
    answered 500 (a 4xx StorageApiError escaped the signer). They degrade as in an outage."""
    server = on_supabase(dev_server_factory, storage)
    s = server.session()
    storage.inject(423, "ResourceLocked", times=100_000, route="POST object/sign/")  # before anything was signed
    job = server.wait_for(s, server.create_job(s).json()["jobId"], {"succeeded"})
    validate(job, "Job")
    assert job["inputUrl"] is None
    assert [v["url"] for v in job["variants"]] == [None, None]
    listed = server.client.get("/api/nano-banana/jobs", params={"projectId": s.project_id}, headers=s.headers)
    assert listed.status_code == 200
    paths = {"paths": [v["storagePath"] for v in job["variants"]]}
    refused = server.client.post("/api/nano-banana/signed-urls", json=paths, headers=s.headers)
    assert (refused.status_code, refused.json()["error"]["code"]) == (503, "unavailable")
    storage.clear_injected()
    time.sleep(5.1)  # the signer's back-off after a failed call
    signed = server.client.post("/api/nano-banana/signed-urls", json=paths, headers=s.headers)
    assert signed.status_code == 200
    assert sorted(signed.json()["urls"]) == sorted(paths["paths"])
