"""Issue 27 done-when, on `make dev`: a job created with `webhookUrl` pointing at a local receiver produces
exactly one `job.succeeded` delivery whose signature the official `standardwebhooks` library accepts, GET
/jobs/{id} shows it delivered, and the bad URLs of the issue are 422 `webhook_url_invalid` with nothing
created (multipart, JSON and POST /messages alike)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook

from nano_banana.domain import webhook_id
from nano_banana.settings import DEV_WEBHOOK_SECRET
from tests.support.devserver import DevServer, Session, png_bytes
from tests.support.openapi import validate, validate_error
from tests.support.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.e2e

BAD_URLS = (
    "http://169.254.169.254/",
    "http://[::1]/",
    "http://10.0.0.1/",
    "https://user:pass@hooks.example.com/",
    "ftp://hooks.example.com/",
)


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver()
    yield server
    server.stop()


def _delivered(server: DevServer, s: Session, job_id: str, timeout_s: float = 20) -> dict[str, Any]:
    end = time.monotonic() + timeout_s
    while True:
        job = server.job(s, job_id)
        deliveries = job["webhook"]["deliveries"]
        if deliveries and all(d["state"] != "pending" for d in deliveries):
            return job
        assert time.monotonic() < end, f"deliveries still pending: {deliveries}"
        time.sleep(0.05)


def test_a_job_with_a_webhook_gets_exactly_one_verified_succeeded_delivery(
    dev_server: DevServer, receiver: WebhookReceiver
) -> None:
    s = dev_server.session()
    url = f"{receiver.base_url}/api/nano-hook"
    r = dev_server.client.post(
        "/api/nano-banana/jobs",
        data={"projectId": s.project_id, "prompt": "add a rainbow", "variantCount": "1", "webhookUrl": url},
        files={"image": ("p.png", png_bytes(), "image/png")},
        headers=s.headers,
    )
    assert r.status_code == 202, r.text
    job_id = r.json()["jobId"]
    job = _delivered(dev_server, s, job_id)
    validate(job, "Job")
    assert job["status"] == "succeeded"
    assert job["webhook"]["url"] == url
    assert job["webhook"]["events"] == ["succeeded", "failed", "canceled"]
    (delivery,) = job["webhook"]["deliveries"]
    assert (delivery["event"], delivery["state"], delivery["attempts"], delivery["lastStatus"]) == (
        "succeeded",
        "delivered",
        1,
        200,
    )

    (got,) = receiver.wait_for(1)
    time.sleep(0.5)
    assert len(receiver.received) == 1, "exactly one delivery"
    payload = Webhook(DEV_WEBHOOK_SECRET).verify(got.body, got.headers)  # the official verifier
    assert payload["type"] == "job.succeeded"
    assert payload["data"]["id"] == job_id
    assert payload["data"]["variants"][0]["url"].startswith(dev_server.url)
    assert got.headers["webhook-id"] == webhook_id(uuid.UUID(job_id), "succeeded")
    assert json.loads(got.body)["data"]["status"] == "succeeded"


def test_bad_webhook_urls_are_422_and_create_nothing(dev_server: DevServer) -> None:
    s = dev_server.session()
    before = dev_server.job_count(s)
    for url in BAD_URLS:
        r = dev_server.client.post(
            "/api/nano-banana/jobs",
            data={"projectId": s.project_id, "prompt": "p", "webhookUrl": url},
            files={"image": ("p.png", png_bytes(), "image/png")},
            headers=s.headers,
        )
        assert r.status_code == 422, (url, r.text)
        validate_error(r.json(), "webhook_url_invalid")
    r = dev_server.client.post(
        "/api/nano-banana/jobs",
        json={"projectId": s.project_id, "prompt": "p", "inputPath": f"inputs/{s.user_id}/x.png",
              "webhookUrl": "http://127.0.0.1/h", "webhookEvents": ["finished"]},
        headers=s.headers,
    )  # fmt: skip
    assert r.status_code == 422, r.text
    validate_error(r.json(), "webhook_url_invalid")
    assert r.json()["error"]["details"]["field"] == "webhookEvents"
    assert dev_server.job_count(s) == before


def test_a_refinement_may_ask_for_its_own_webhook(dev_server: DevServer, receiver: WebhookReceiver) -> None:
    s = dev_server.session()
    created = dev_server.create_job(s, variant_count=1)
    parent = dev_server.wait_for(s, created.json()["jobId"], {"succeeded"})
    assert parent["webhook"] is None
    body = {"jobId": parent["id"], "variantId": parent["variants"][0]["id"], "prompt": "now at night"}
    refused = dev_server.client.post(
        "/api/nano-banana/messages", json={**body, "webhookUrl": BAD_URLS[0]}, headers=s.headers
    )
    assert refused.status_code == 422, refused.text
    validate_error(refused.json(), "webhook_url_invalid")
    r = dev_server.client.post(
        "/api/nano-banana/messages",
        json={**body, "webhookUrl": f"{receiver.base_url}/h", "webhookEvents": ["running", "succeeded"]},
        headers=s.headers,
    )
    assert r.status_code == 202, r.text
    job = _delivered(dev_server, s, r.json()["jobId"])
    assert sorted(d["event"] for d in job["webhook"]["deliveries"]) == ["running", "succeeded"]
    types = sorted(json.loads(got.body)["type"] for got in receiver.wait_for(2))
    assert types == ["job.running", "job.succeeded"]
