"""Signed callbacks and the n8n processor mode, against the real dev server and a fake n8n."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.support.devserver import DevServer, Session, png_bytes
from tests.support.fake_n8n import FakeN8n, png
from tests.support.openapi import validate, validate_error

pytestmark = pytest.mark.callback

SECRET = "n8n-shared-secret-for-tests"
OLD_SECRET = "the-previous-secret"

Start = Callable[..., tuple[DevServer, FakeN8n]]


@pytest.fixture
def n8n_stack(dev_server_factory: Callable[..., DevServer]) -> Iterator[Start]:
    fakes: list[FakeN8n] = []

    def start(mode: str = "good", **env: str) -> tuple[DevServer, FakeN8n]:
        fake = FakeN8n(SECRET, mode=mode)
        fakes.append(fake)
        server = dev_server_factory(
            NANO_BANANA_GENERATOR="n8n",
            N8N_WEBHOOK_NANO_BANANA_PROCESSOR=fake.url,
            N8N_NANO_BANANA_SECRET=f"{SECRET},{OLD_SECRET}",
            **env,
        )
        return server, fake

    yield start
    for fake in fakes:
        fake.stop()


def _callback_url(server: DevServer) -> str:
    return f"{server.api}/callback"


def _running_job(server: DevServer, fake: FakeN8n, s: Session) -> dict[str, Any]:
    job_id = server.create_job(s, variant_count=2).json()["jobId"]
    end = time.monotonic() + 10
    while not any(p["jobId"] == job_id for p in fake.received):
        assert time.monotonic() < end, "n8n never received the job"
        time.sleep(0.05)
    return server.wait_for(s, job_id, {"running"})


def test_n8n_processes_the_job_and_calls_back(n8n_stack: Start) -> None:
    server, fake = n8n_stack()
    s = server.session()
    job_id = server.create_job(s, prompt="paint it teal", variant_count=2, aspect_ratio="3:2").json()["jobId"]
    job = server.wait_for(s, job_id, {"succeeded"})
    assert len(job["variants"]) == 2
    assert all(v["storagePath"].startswith(f"jobs/{job_id}/") for v in job["variants"])
    assert httpx.get(job["variants"][1]["url"]).content == png((40, 200, 90))
    (sent,) = fake.received
    assert sent["prompt"] == "paint it teal"
    assert sent["variantCount"] == 2
    assert sent["aspectRatio"] == "3:2"
    assert sent["context"] == []
    assert len(sent["uploadUrls"]) == 2
    assert sent["outputPrefix"] == f"jobs/{job_id}/1/"
    assert sent["callbackUrl"].endswith("/api/nano-banana/callback")
    assert fake.downloaded == [png_bytes()]
    assert fake.rejected == 0


def test_n8n_gets_an_input_the_model_accepts_inline(n8n_stack: Start) -> None:
    """n8n sends the input to Vertex inline: over the inline limit, it gets a smaller version (stored with
    the attempt's outputs and deleted when the job ends), and the job's own input stays untouched."""
    import io
    import os

    from PIL import Image

    server, fake = n8n_stack(NANO_BANANA_VERTEX_INLINE_MAX_BYTES="100000")
    s = server.session()
    buf = io.BytesIO()
    Image.frombytes("RGB", (400, 300), os.urandom(400 * 300 * 3)).save(buf, "PNG")
    big = buf.getvalue()
    assert len(big) > 300_000
    job = server.wait_for(s, server.create_job(s, image=big).json()["jobId"], {"succeeded"})
    (sent,) = fake.received
    assert sent["inputMimeType"] == "image/jpeg"
    assert sent["inputUrl"].split("?")[0].endswith(f"/jobs/{job['id']}/1/model-input.jpg")
    (downloaded,) = fake.downloaded
    assert len(downloaded) <= 100_000
    with Image.open(io.BytesIO(downloaded)) as img:
        assert img.format == "JPEG"
        assert img.width / img.height == pytest.approx(4 / 3, abs=0.02)
    stored = sorted(
        p.relative_to(server.data_dir / "blobs").as_posix()
        for p in (server.data_dir / "blobs" / "jobs" / job["id"]).rglob("*.*")
        if not p.name.endswith(".meta")
    )
    assert stored == sorted(v["storagePath"] for v in job["variants"]), "the model input went with the job"
    assert (server.data_dir / "blobs" / job["inputPath"]).read_bytes() == big


def test_replayed_webhook_is_acknowledged_and_ignored(n8n_stack: Start) -> None:
    server, fake = n8n_stack()
    s = server.session()
    job = server.wait_for(s, server.create_job(s).json()["jobId"], {"succeeded"})
    # The fake records its callback once our response reaches it, a moment after the commit. (Under load
    # the hand-off to n8n may be retried, and a second run's callback is refused: replay the accepted one.)
    end = time.monotonic() + 10
    while not (accepted := [c for c in fake.callbacks if c[2] == 200]):
        assert time.monotonic() < end, f"the fake recorded no accepted callback: {[c[2] for c in fake.callbacks]}"
        time.sleep(0.02)
    raw, headers, _status = accepted[0]
    again = httpx.post(_callback_url(server), content=raw, headers=headers)
    assert again.status_code == 200
    assert again.json() == {"duplicate": True}
    # Same variants, nothing rewritten (the signed URLs are minted per read, so they are left out).
    unsigned = [{k: v for k, v in variant.items() if k != "url"} for variant in job["variants"]]
    after = server.job(s, job["id"])["variants"]
    assert [{k: v for k, v in variant.items() if k != "url"} for variant in after] == unsigned


def test_a_rerun_reporting_success_again_keeps_the_images(n8n_stack: Start) -> None:
    """Issue 13.1(b) end to end: n8n re-runs the execution and reports the same result under a new
    webhook-id. Before: 409 and every variant deleted (the job stayed succeeded with dead URLs)."""
    server, fake = n8n_stack()
    s = server.session()
    job = server.wait_for(s, server.create_job(s, variant_count=2).json()["jobId"], {"succeeded"})
    (sent,) = fake.received
    again = {
        "jobId": job["id"],
        "status": "succeeded",
        "variants": [{"path": v["storagePath"], "mimeType": v["mimeType"]} for v in job["variants"]],
    }
    r = fake.call_back(sent["callbackUrl"], again, msg_id="msg_rerun")
    assert r.status_code == 200, r.text
    assert r.json() == {"jobId": job["id"], "status": "succeeded", "variants": 2}
    validate(r.json(), "CallbackResult")
    after = server.job(s, job["id"])
    assert [v["storagePath"] for v in after["variants"]] == [v["storagePath"] for v in job["variants"]]
    for variant in after["variants"]:
        assert httpx.get(variant["url"]).content == png((40 * variant["index"], 200, 90)), "still served"


def test_forged_stale_and_tampered_callbacks_are_401(n8n_stack: Start) -> None:
    server, fake = n8n_stack("never")
    s = server.session()
    job = _running_job(server, fake, s)
    url = _callback_url(server)
    body = json.dumps(
        {"jobId": job["id"], "status": "failed", "error": {"code": "generation_failed", "message": "x"}}
    ).encode()
    good = fake_sign(body, SECRET)
    cases = {
        "missing": {},
        "wrong-secret": fake_sign(body, "not-the-secret"),
        "stale": fake_sign(body, SECRET, now=datetime.now(UTC) - timedelta(minutes=6)),
        "future": fake_sign(body, SECRET, now=datetime.now(UTC) + timedelta(minutes=6)),
        "garbage-signature": {**good, "webhook-signature": "v1,@@@"},
        "no-version": {**good, "webhook-signature": "abc"},
        "other-id": {**good, "webhook-id": "msg_other"},
    }
    for name, headers in cases.items():
        r = httpx.post(url, content=body, headers=headers)
        assert r.status_code == 401, name
        validate_error(r.json(), "invalid_signature")
    tampered = body.replace(b"generation_failed", b"generation_faileD")
    assert httpx.post(url, content=tampered, headers=good).status_code == 401
    assert server.job(s, job["id"])["status"] == "running", "nothing was applied"
    rotated = httpx.post(url, content=body, headers=fake_sign(body, OLD_SECRET))
    assert rotated.status_code == 200, "the previous key still verifies during rotation"
    assert server.job(s, job["id"])["errorCode"] == "generation_failed"


def fake_sign(body: bytes, secret: str, **kwargs: Any) -> dict[str, str]:
    from nano_banana import webhooks

    return {"Content-Type": "application/json", **webhooks.sign(body, secret, **kwargs)}


def test_bad_variant_reports_write_nothing(n8n_stack: Start) -> None:
    server, fake = n8n_stack("never")
    s = server.session()
    job = _running_job(server, fake, s)
    sent = next(p for p in fake.received if p["jobId"] == job["id"])
    httpx.put(
        sent["uploadUrls"][0], content=b"GIF89a not an image", headers={"Content-Type": "image/png"}
    ).raise_for_status()
    foreign = f"jobs/{uuid.uuid4()}/1/0.png"
    bodies = {
        "foreign-prefix": [{"path": foreign, "mimeType": "image/png"}],
        "traversal": [{"path": f"jobs/{job['id']}/../../inputs/x.png", "mimeType": "image/png"}],
        "missing": [{"path": f"jobs/{job['id']}/1/9.png", "mimeType": "image/png"}],
        "not-an-image": [{"path": f"{sent['outputPrefix']}0.png", "mimeType": "image/png"}],
        "bad-mime": [{"path": f"{sent['outputPrefix']}0.png", "mimeType": "image/gif"}],
        "empty": [],
    }
    for name, variants in bodies.items():
        r = fake.call_back(sent["callbackUrl"], {"jobId": job["id"], "status": "succeeded", "variants": variants})
        assert r.status_code in (415, 422), (name, r.text)
    r = fake.call_back(sent["callbackUrl"], {"jobId": job["id"], "status": "succeeded", "extra": 1})
    assert r.status_code == 422
    r = fake.call_back(sent["callbackUrl"], {"jobId": str(uuid.uuid4()), "status": "running"})
    assert r.status_code == 404
    assert server.job(s, job["id"])["status"] == "running"
    assert server.job(s, job["id"])["variants"] == []
    # The same webhook id can still deliver a good result after a rejection (rejections record nothing).
    httpx.put(sent["uploadUrls"][0], content=png((1, 2, 3)), headers={"Content-Type": "image/png"}).raise_for_status()
    good = {
        "jobId": job["id"],
        "status": "succeeded",
        "variants": [{"path": f"{sent['outputPrefix']}0.png", "mimeType": "image/png"}],
    }
    r = fake.call_back(sent["callbackUrl"], good, msg_id="msg_fixed")
    assert r.status_code == 200, r.text
    finished = server.job(s, job["id"])
    assert finished["status"] == "succeeded"
    assert finished["note"] == "1 of 2 variants came back."


@pytest.mark.parametrize("ended_by", ["cancel", "delete"])
def test_a_late_callback_after_a_cancel_or_a_deletion_is_refused_and_its_blobs_are_deleted(
    n8n_stack: Start, ended_by: str
) -> None:
    """409 for a canceled job, 404 for a deleted one; either way the images the processor uploaded after
    the job ended are deleted at once (before: a deleted job's waited for the purge at its deadline + 3 min)."""
    server, fake = n8n_stack("never")
    s = server.session()
    job = _running_job(server, fake, s)
    sent = next(p for p in fake.received if p["jobId"] == job["id"])
    if ended_by == "cancel":
        r = server.client.post(f"/api/nano-banana/jobs/{job['id']}/cancel", headers=s.headers)
    else:
        r = server.client.delete(f"/api/nano-banana/jobs/{job['id']}", headers=s.headers)
    assert r.status_code == 200, r.text
    for url in sent["uploadUrls"]:
        httpx.put(url, content=png((9, 9, 9)), headers={"Content-Type": "image/png"}).raise_for_status()
    body = {
        "jobId": job["id"],
        "status": "succeeded",
        "variants": [{"path": f"{sent['outputPrefix']}{i}.png", "mimeType": "image/png"} for i in range(2)],
    }
    blobs = server.data_dir / "blobs" / "jobs" / job["id"]
    assert len(list(blobs.rglob("*.png"))) == 2
    r = fake.call_back(sent["callbackUrl"], body)
    if ended_by == "cancel":
        assert r.status_code == 409
        validate_error(r.json(), "invalid_transition")
        assert server.job(s, job["id"])["status"] == "canceled"
    else:
        assert r.status_code == 404
        validate_error(r.json(), "not_found")
        foreign = {**body, "variants": [{"path": f"jobs/{uuid.uuid4()}/1/0.png", "mimeType": "image/png"}]}
        assert fake.call_back(sent["callbackUrl"], foreign).status_code == 404, "a bad report changes nothing"
    assert list(blobs.rglob("*.png")) == []


def test_failure_report_fails_the_job(n8n_stack: Start) -> None:
    server, _ = n8n_stack("fail")
    s = server.session()
    job = server.wait_for(s, server.create_job(s).json()["jobId"], {"failed"})
    assert (job["errorCode"], job["errorMessage"]) == ("content_blocked", "the model refused")
    assert server.create_job(s).status_code == 202


def test_n8n_down_fails_with_processor_unavailable_within_the_deadline(n8n_stack: Start) -> None:
    server, fake = n8n_stack("down", NANO_BANANA_TIMEOUT_S="4")
    s = server.session()
    started = time.monotonic()
    job = server.wait_for(s, server.create_job(s).json()["jobId"], {"failed"}, timeout_s=15)
    assert job["errorCode"] in ("processor_unavailable", "timeout")
    assert time.monotonic() - started < 10
    assert fake.received == []


def test_n8n_that_never_calls_back_times_out(n8n_stack: Start) -> None:
    server, fake = n8n_stack("never", NANO_BANANA_TIMEOUT_S="2")
    s = server.session()
    job = server.wait_for(s, server.create_job(s).json()["jobId"], {"failed"}, timeout_s=10)
    assert job["errorCode"] == "timeout"
    assert len(fake.received) == 1


def test_oversized_callback_is_413_before_verification(n8n_stack: Start) -> None:
    server, _ = n8n_stack("never")
    body = b"{" + b" " * 70_000 + b"}"
    r = httpx.post(_callback_url(server), content=body, headers=fake_sign(body, SECRET))
    assert r.status_code == 413
    assert httpx.get(_callback_url(server)).status_code == 405


def test_a_repeated_success_report_for_a_deleted_job_keeps_a_variant_another_job_uses(n8n_stack: Start) -> None:
    """Issue 24, finding 1 (data loss). J2 is made from J1's variant (`inputPath`); deleting J1 keeps that
    variant (J2 uses it). n8n then reports J1's success again (a re-run of the execution): before, the 404
    path deleted every path the report named, J2's input included; now deletion goes through the gate."""
    server, fake = n8n_stack()
    s = server.session()
    first = server.wait_for(s, server.create_job(s, variant_count=2).json()["jobId"], {"succeeded"})
    used = first["variants"][0]["storagePath"]
    r = server.client.post(
        "/api/nano-banana/jobs",
        json={"projectId": s.project_id, "prompt": "from the first", "inputPath": used, "variantCount": 1},
        headers=s.headers,
    )
    assert r.status_code == 202, r.text
    second = server.wait_for(s, r.json()["jobId"], {"succeeded"})
    assert second["inputPath"] == used
    sent = next(p for p in fake.received if p["jobId"] == first["id"])
    assert server.client.delete(f"/api/nano-banana/jobs/{first['id']}", headers=s.headers).status_code == 200
    stored = server.data_dir / "blobs" / used
    assert stored.exists(), "the deletion kept the variant the second job uses"
    again = {
        "jobId": first["id"],
        "status": "succeeded",
        "variants": [{"path": v["storagePath"], "mimeType": v["mimeType"]} for v in first["variants"]],
    }
    r = fake.call_back(sent["callbackUrl"], again, msg_id="msg_rerun_after_delete")
    assert r.status_code == 404
    assert stored.exists(), "the repeated report deleted another job's input"
    unused = server.data_dir / "blobs" / first["variants"][1]["storagePath"]
    assert not unused.exists(), "what nothing references is gone"
