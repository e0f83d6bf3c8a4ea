"""The shipped n8n workflow, imported unchanged into real n8n 1.123.0, driven through the service's HTTP API
(NANO_BANANA_GENERATOR=n8n) and by hand-offs signed here. Every case ends in its terminal state in seconds:
a job that waited for its deadline would fail `wait_for`'s 60 s long before the 300 s deadline."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from nano_banana import webhooks
from tests.n8n.conftest import NEW_KEY, OLD_KEY, CallbackGate, N8n, Recorder, service_env
from tests.support.devserver import DevServer, Session, png_bytes, start_dev_server
from tests.support.vertex_server import (
    IMAGE_TOKENS,
    PROMPT_TOKENS,
    Answer,
    VertexServer,
    error,
    images,
    prompt_block,
    safety_block,
    text_only,
)

pytestmark = pytest.mark.n8n
TERMINAL = {"succeeded", "failed", "canceled"}


def _image_bytes(answer: Answer) -> list[bytes]:
    return [
        base64.b64decode(part["inlineData"]["data"])
        for candidate in answer[1]["candidates"]
        for part in candidate["content"]["parts"]
    ]


def _run(service: DevServer, s: Session, **job: Any) -> dict[str, Any]:
    r = service.create_job(s, **job)
    assert r.status_code == 202, r.text
    return service.wait_for(s, r.json()["jobId"], TERMINAL, timeout_s=60)


def _variant_bytes(job: dict[str, Any]) -> list[bytes]:
    return [httpx.get(v["url"], timeout=10).content for v in sorted(job["variants"], key=lambda v: v["index"])]


def test_two_images_become_two_variants_with_the_models_bytes(
    service: DevServer, vertex: VertexServer, gate: CallbackGate
) -> None:
    answer = images(2)
    vertex.script = [lambda: answer]
    s = service.session()
    photo = png_bytes(60, 40, (10, 20, 30))
    job = _run(service, s, image=photo, prompt="paint it teal", variant_count=2, aspect_ratio="3:2")
    assert job["status"] == "succeeded", job
    assert _variant_bytes(job) == _image_bytes(answer)
    (sent,) = vertex.requests
    assert sent["refusal"] is None
    assert sent["match"] == {
        "version": "v1",
        "project": "nano-banana-n8n-test",
        "location": "europe-west4",
        "model": "gemini-2.5-flash-image",
    }
    assert "authorization" not in {k.lower() for k in sent["headers"]}, "NANO_BANANA_VERTEX_AUTH=none"
    (content,) = sent["body"]["contents"]
    assert content["role"] == "user"
    inline, text = content["parts"]
    assert inline["inlineData"]["mimeType"] == "image/png"
    assert base64.b64decode(inline["inlineData"]["data"]) == photo, "the input image reaches Vertex"
    assert text == {"text": "paint it teal"}
    assert sent["body"]["generationConfig"] == {
        "responseModalities": ["IMAGE"],
        "candidateCount": 2,
        "imageConfig": {"aspectRatio": "3:2"},
    }
    running = [c for c in gate.seen if c["body"]["jobId"] == job["id"] and c["body"]["status"] == "running"]
    assert running, "n8n asked for fresh upload URLs before uploading"
    assert running[0]["body"]["attempt"] == 1


def test_one_of_two_images_succeeds_with_the_note(service: DevServer, vertex: VertexServer) -> None:
    answer = images(1)
    vertex.script = [lambda: answer]
    s = service.session()
    job = _run(service, s, variant_count=2)
    assert job["status"] == "succeeded", job
    assert _variant_bytes(job) == _image_bytes(answer)
    assert job["note"] == "1 of 2 variants came back."


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (safety_block(), "The image was blocked."),
        (prompt_block(), "Prompt blocked."),
        (text_only("I cannot edit this photo."), "I cannot edit this photo."),
    ],
    ids=["image-safety", "prompt-feedback", "text-only"],
)
def test_blocked_answers_end_content_blocked_with_the_models_reason(
    service: DevServer, vertex: VertexServer, answer: Answer, message: str
) -> None:
    vertex.script = [lambda: answer]
    s = service.session()
    job = _run(service, s)
    assert (job["status"], job["errorCode"], job["errorMessage"]) == ("failed", "content_blocked", message)
    assert len(vertex.requests) == 1, "a block is an answer, not retried"


def test_vertex_500_every_time_is_retried_then_generation_failed(service: DevServer, vertex: VertexServer) -> None:
    vertex.script = [lambda: error(500, "internal error")]
    s = service.session()
    job = _run(service, s)
    assert (job["status"], job["errorCode"]) == ("failed", "generation_failed")
    assert "500" in job["errorMessage"]
    assert len(vertex.requests) == 5, "NANO_BANANA_VERTEX_MAX_ATTEMPTS defaults to 5"


def test_vertex_4xx_fails_at_once(service: DevServer, vertex: VertexServer) -> None:
    vertex.script = [lambda: error(403, "Permission denied on resource project")]
    s = service.session()
    job = _run(service, s)
    assert (job["status"], job["errorCode"]) == ("failed", "generation_failed")
    assert "403" in job["errorMessage"]
    assert "Permission denied" in job["errorMessage"]
    assert len(vertex.requests) == 1


def test_vertex_500_then_200_succeeds(service: DevServer, vertex: VertexServer) -> None:
    answer = images(2)
    vertex.script = [lambda: error(503, "overloaded"), lambda: answer]
    s = service.session()
    job = _run(service, s)
    assert job["status"] == "succeeded", job
    assert _variant_bytes(job) == _image_bytes(answer)
    assert len(vertex.requests) == 2


def test_callback_answering_503_once_is_retried_with_the_same_webhook_id(
    service: DevServer, vertex: VertexServer, gate: CallbackGate
) -> None:
    gate.fail_next_final = 1
    s = service.session()
    job = _run(service, s)
    assert job["status"] == "succeeded", job

    def finals() -> list[dict[str, Any]]:
        return [c for c in gate.seen if c["body"]["jobId"] == job["id"] and c["body"]["status"] == "succeeded"]

    end = time.monotonic() + 5  # the job can read succeeded before the gate has recorded the answer it forwarded
    while any(c["answered"] == 0 for c in finals()) and time.monotonic() < end:
        time.sleep(0.05)
    assert [c["answered"] for c in finals()] == [503, 200]
    assert finals()[0]["webhookId"] == finals()[1]["webhookId"]


def test_refinement_sends_the_threads_earlier_prompt_as_context(service: DevServer, vertex: VertexServer) -> None:
    first_answer = images(2)
    vertex.script = [lambda: first_answer]
    s = service.session()
    first = _run(service, s, prompt="paint the wall teal")
    assert first["status"] == "succeeded", first
    variant = sorted(first["variants"], key=lambda v: v["index"])[1]
    r = service.client.post(
        "/api/nano-banana/messages",
        json={"jobId": first["id"], "variantId": variant["id"], "prompt": "now add a window"},
        headers=s.headers,
    )
    assert r.status_code == 202, r.text
    vertex.requests.clear()
    second = service.wait_for(s, r.json()["jobId"], TERMINAL, timeout_s=60)
    assert second["status"] == "succeeded", second
    (sent,) = vertex.requests
    *context, final = sent["body"]["contents"]
    assert context == [{"role": "user", "parts": [{"text": "paint the wall teal"}]}]
    inline, text = final["parts"]
    assert base64.b64decode(inline["inlineData"]["data"]) == _image_bytes(first_answer)[1]
    assert text == {"text": "now add a window"}


def _hand_off(recorder: Recorder, **overrides: Any) -> dict[str, Any]:
    job_id = str(uuid.uuid4())
    return {
        "jobId": job_id,
        "projectId": str(uuid.uuid4()),
        "prompt": "make it brighter",
        "context": [],
        "inputUrl": f"{recorder.url}/input.png",
        "inputMimeType": "image/png",
        "outputPrefix": f"jobs/{job_id}/1/",
        "uploadUrls": [f"{recorder.url}/handoff/0.png"],
        "uploadMethod": "PUT",
        "variantCount": 1,
        "aspectRatio": None,
        "deadlineAt": (datetime.now(UTC) + timedelta(minutes=5)).isoformat().replace("+00:00", "Z"),
        "callbackUrl": f"{recorder.url}/callback",
        "attempt": 1,
        **overrides,
    }


def _post(n8n: N8n, payload: dict[str, Any], *keys: str, age: timedelta = timedelta(0)) -> httpx.Response:
    raw = json.dumps(payload).encode()
    headers = {"Content-Type": "application/json"}
    if keys:
        at = datetime.now(UTC) - age
        signed = [webhooks.sign(raw, key, msg_id="msg_handoff_test", now=at) for key in keys]
        headers |= signed[0] | {"webhook-signature": " ".join(h["webhook-signature"] for h in signed)}
    return httpx.post(n8n.webhook_url, content=raw, headers=headers, timeout=30)


def test_unsigned_and_wrongly_signed_hand_offs_are_401(n8n: N8n, recorder: Callable[..., Recorder]) -> None:
    rec = recorder()
    payload = _hand_off(rec)
    unsigned, wrong_key = _post(n8n, payload), _post(n8n, payload, "not-one-of-n8ns-keys")
    stale = _post(n8n, payload, NEW_KEY, age=timedelta(minutes=6))
    for answer in (unsigned, wrong_key, stale):
        assert answer.status_code == 401
        assert answer.json() == {"error": "invalid_signature"}
    tampered = _post(n8n, payload, NEW_KEY)
    assert tampered.status_code == 202, "the same payload, rightly signed, is taken"
    assert rec.done.wait(30)
    assert rec.callbacks[-1]["status"] == "succeeded"


def test_download_failure_calls_back_generation_failed_signed_with_every_key(
    n8n: N8n, recorder: Callable[..., Recorder], vertex: VertexServer
) -> None:
    """Signed with the old key only, the hand-off is taken (n8n has `new,old`); its callback carries a
    signature a service still holding only the old key accepts."""
    rec = recorder(keys=[OLD_KEY])
    payload = _hand_off(rec, inputUrl=f"{rec.url}/gone.png")
    answer = _post(n8n, payload, OLD_KEY)
    assert (answer.status_code, answer.json()) == (202, {"accepted": True, "jobId": payload["jobId"]})
    assert rec.done.wait(30)
    (callback,) = rec.callbacks
    assert callback["status"] == "failed"
    assert callback["error"]["code"] == "generation_failed"
    assert callback["error"]["message"].startswith("could not download the input image")
    assert vertex.requests == []


def test_uploads_go_to_the_fresh_urls_of_the_running_answer(
    n8n: N8n, recorder: Callable[..., Recorder], vertex: VertexServer
) -> None:
    rec = recorder()
    rec.running_answer = (200, {"jobId": "x", "status": "running", "uploadUrls": [f"{rec.url}/fresh/0.png"]})
    payload = _hand_off(rec)
    assert _post(n8n, payload, NEW_KEY).status_code == 202
    assert rec.done.wait(30)
    assert [path for path, _ in rec.uploads] == ["/fresh/0.png"]
    running, final = rec.callbacks
    assert running == {"jobId": payload["jobId"], "status": "running", "attempt": 1}
    candidates = 2  # the stand-in's default answer: two images (one upload URL, so one is kept)
    assert final == {
        "jobId": payload["jobId"],
        "status": "succeeded",
        "variants": [{"path": f"{payload['outputPrefix']}0.png", "mimeType": "image/png"}],
        # what the model reported for the whole call (its usageMetadata)
        "usage": {
            "promptTokens": PROMPT_TOKENS,
            "outputTokens": candidates * IMAGE_TOKENS,
            "totalTokens": PROMPT_TOKENS + candidates * IMAGE_TOKENS,
        },
    }


def test_upload_failure_calls_back_generation_failed(
    n8n: N8n, recorder: Callable[..., Recorder], vertex: VertexServer
) -> None:
    rec = recorder(upload_status=500)
    payload = _hand_off(rec)
    assert _post(n8n, payload, NEW_KEY).status_code == 202
    assert rec.done.wait(30)
    assert [path for path, _ in rec.uploads] == ["/handoff/0.png"] * 3, "node-level retry, then give up"
    final = rec.callbacks[-1]
    assert (final["status"], final["error"]["code"]) == ("failed", "generation_failed")
    assert final["error"]["message"].startswith("could not upload the outputs")


@pytest.mark.parametrize(
    "service_keys",
    [OLD_KEY, f"key-2027-next-for-n8n-tests,{NEW_KEY}"],
    ids=["n8n-rotated-first", "service-rotated-first"],
)
def test_key_rotation_in_both_directions(n8n: N8n, vertex: VertexServer, tmp_path: Path, service_keys: str) -> None:
    server = start_dev_server(tmp_path, service_env(n8n, service_keys))
    try:
        s = server.session()
        job = _run(server, s, variant_count=2)
        assert job["status"] == "succeeded", job
    finally:
        server.stop()


def test_running_answered_409_stops_quietly(n8n: N8n, recorder: Callable[..., Recorder], vertex: VertexServer) -> None:
    """409 invalid_transition: the job is no longer running for this attempt (canceled, timed out, or a newer
    attempt took over); the workflow uploads nothing and reports nothing more."""
    rec = recorder()
    rec.running_answer = (409, {"error": {"code": "invalid_transition", "message": "job is canceled"}})
    payload = _hand_off(rec)
    assert _post(n8n, payload, NEW_KEY).status_code == 202
    deadline = time.monotonic() + 30
    while len(rec.callbacks) < 3:  # the node's own retries (maxTries 3) answered 409 each time
        assert time.monotonic() < deadline, rec.callbacks
        time.sleep(0.05)
    assert not rec.done.wait(3), f"a final callback followed the 409: {rec.callbacks}"
    assert rec.uploads == []
    assert all(c["status"] == "running" for c in rec.callbacks)


def test_vertex_timeout_ends_generation_failed_before_the_deadline(
    n8n: N8n, vertex: VertexServer, tmp_path: Path
) -> None:
    """Each Vertex call may take the job's remaining time less 10 s; when it times out and too little time is
    left for another try, the job fails with generation_failed at once, not `timeout` at the deadline."""
    vertex.delay_s = 8.0
    server = start_dev_server(tmp_path, service_env(n8n, NEW_KEY, NANO_BANANA_TIMEOUT_S="15"))
    try:
        s = server.session()
        job = _run(server, s)
        assert (job["status"], job["errorCode"]) == ("failed", "generation_failed")
        assert job["errorMessage"].startswith("the model kept failing: no answer"), job["errorMessage"]
    finally:
        vertex.delay_s = 0.0
        server.stop()


def test_references_follow_the_input_in_the_vertex_request(service: DevServer, vertex: VertexServer) -> None:
    vertex.script = [lambda: images(1)]
    vertex.requests.clear()
    s = service.session()
    photo, logo, style = png_bytes(60, 40, (10, 20, 30)), png_bytes(20, 20, (0, 0, 255)), png_bytes(30, 20, (0, 255, 0))
    r = service.client.post(
        "/api/nano-banana/jobs",
        data={"projectId": s.project_id, "prompt": "put the logo on it", "variantCount": "1", "resolution": "1K"},
        files=[
            ("image", ("photo.png", photo, "image/png")),
            ("reference", ("logo.png", logo, "image/png")),
            ("reference", ("style.png", style, "image/png")),
        ],
        headers=s.headers,
    )
    assert r.status_code == 202, r.text
    job = service.wait_for(s, r.json()["jobId"], TERMINAL, timeout_s=60)
    assert job["status"] == "succeeded", job
    assert len(job["references"]) == 2
    (sent,) = vertex.requests
    assert sent["refusal"] is None
    assert sent["match"]["model"] == "gemini-2.5-flash-image"
    parts = sent["body"]["contents"][-1]["parts"]
    assert [base64.b64decode(p["inlineData"]["data"]) for p in parts[:3]] == [photo, logo, style]
    assert parts[3] == {"text": "put the logo on it"}
    assert "imageSize" not in sent["body"]["generationConfig"].get("imageConfig", {}), "Flash takes none"


def test_a_hand_off_names_the_model_and_size(n8n: N8n, recorder: Callable[..., Recorder], vertex: VertexServer) -> None:
    vertex.script = [lambda: images(1)]
    vertex.requests.clear()
    rec = recorder()
    refs = [{"url": f"{rec.url}/input.png", "mimeType": "image/png"}] * 2
    payload = _hand_off(rec, model="gemini-3-pro-image-preview", imageSize="2K", references=refs, aspectRatio="16:9")
    assert _post(n8n, payload, NEW_KEY).status_code == 202
    assert rec.done.wait(30)
    assert rec.callbacks[-1]["status"] == "succeeded", rec.callbacks
    (sent,) = vertex.requests
    assert sent["match"]["model"] == "gemini-3-pro-image-preview"
    assert sent["body"]["generationConfig"]["imageConfig"] == {"aspectRatio": "16:9", "imageSize": "2K"}
    assert len([p for p in sent["body"]["contents"][-1]["parts"] if "inlineData" in p]) == 3


def test_a_reference_that_cannot_be_downloaded_fails_without_calling_vertex(
    n8n: N8n, recorder: Callable[..., Recorder], vertex: VertexServer
) -> None:
    vertex.requests.clear()
    rec = recorder()
    refs = [
        {"url": f"{rec.url}/input.png", "mimeType": "image/png"},
        {"url": f"{rec.url}/gone.png", "mimeType": "image/png"},
    ]
    assert _post(n8n, _hand_off(rec, references=refs), NEW_KEY).status_code == 202
    assert rec.done.wait(30)
    final = rec.callbacks[-1]
    assert (final["status"], final["error"]["code"]) == ("failed", "generation_failed")
    time.sleep(1)  # the other branch, had it gone on, would have called Vertex by now
    assert vertex.requests == []
