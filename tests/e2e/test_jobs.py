"""The spine end to end: the dev server as a subprocess, real HTTP, real Postgres, every guardrail."""

from __future__ import annotations

import io
import json
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from PIL import Image

from nano_banana.settings import DEV_JWT_SECRET
from tests.support.devserver import DevServer, png_bytes, png_of_size
from tests.support.openapi import validate, validate_error

pytestmark = pytest.mark.e2e

StartServer = Callable[..., DevServer]


def blob_files(server: DevServer, prefix: str) -> list[Path]:
    root = server.data_dir / "blobs" / prefix
    return (
        [p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".") and not p.name.endswith(".meta")]
        if root.exists()
        else []
    )


def test_create_job_reaches_succeeded_with_downloadable_variants(dev_server: DevServer) -> None:
    s = dev_server.session()
    r = dev_server.create_job(s, variant_count=3, prompt="add a sunset")
    assert r.status_code == 202, r.text
    validate(r.json(), "Created")
    assert r.headers["Location"].endswith(r.json()["jobId"])
    job = dev_server.wait_for(s, r.json()["jobId"], {"succeeded"})
    validate(job, "Job")
    assert job["prompt"] == "add a sunset"
    assert [v["index"] for v in job["variants"]] == [0, 1, 2]
    assert job["startedAt"] <= job["finishedAt"] < job["deadlineAt"]
    digests = set()
    for variant in job["variants"]:
        assert variant["storagePath"].startswith(f"jobs/{job['id']}/")
        image = httpx.get(variant["url"], timeout=10)
        assert image.status_code == 200
        decoded = Image.open(io.BytesIO(image.content))
        assert decoded.format == "PNG"
        assert decoded.size == (variant["width"], variant["height"])
        digests.add(image.content)
    assert len(digests) == 3, "variants differ from each other"
    assert httpx.get(job["inputUrl"], timeout=10).content == png_bytes()
    tampered = job["variants"][0]["url"].replace("sig=", "sig=0")
    assert httpx.get(tampered, timeout=10).status_code == 404
    listed = dev_server.client.get("/api/nano-banana/jobs", params={"projectId": s.project_id}, headers=s.headers)
    validate(listed.json(), "JobPage")
    assert job["id"] in [j["id"] for j in listed.json()["jobs"]]


def test_aspect_ratio_is_honoured(dev_server: DevServer) -> None:
    s = dev_server.session()
    r = dev_server.create_job(s, image=png_bytes(300, 300), aspect_ratio="16:9", variant_count=1)
    assert r.status_code == 202, r.text
    job = dev_server.wait_for(s, r.json()["jobId"], {"succeeded"})
    (variant,) = job["variants"]
    assert abs(variant["width"] / variant["height"] - 16 / 9) < 0.02
    assert job["aspectRatio"] == "16:9"


def test_events_stream_reports_each_state_until_terminal(dev_server_factory: StartServer) -> None:
    server = dev_server_factory(NANO_BANANA_PREVIEW_DELAY_MS="600")
    s = server.session()
    job_id = server.create_job(s).json()["jobId"]
    statuses: list[str] = []
    with server.client.stream("GET", f"/api/nano-banana/jobs/{job_id}/events", headers=s.headers) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                body = json.loads(line[6:])
                validate(body, "Job")
                statuses.append(body["status"])
    assert statuses[-1] == "succeeded"
    assert "running" in statuses
    assert statuses == sorted(statuses, key=["queued", "running", "succeeded"].index)


def test_events_stream_opened_right_after_create_still_ends(dev_server_factory: StartServer) -> None:
    """The job may finish between the stream's first read and its LISTEN; the stream must still end."""
    server = dev_server_factory(NANO_BANANA_PREVIEW_DELAY_MS="0")
    s = server.session()
    for _ in range(5):
        job_id = server.create_job(s).json()["jobId"]
        last = None
        ticket = server.client.post(f"/api/nano-banana/jobs/{job_id}/events-ticket", headers=s.headers)
        with server.client.stream(
            "GET",
            ticket.json()["url"],  # what EventSource opens: no header, the ticket in the URL
            timeout=httpx.Timeout(10.0),  # under the 15 s heartbeat: a lost change would time out here
        ) as r:
            for line in r.iter_lines():
                if line.startswith("data: "):
                    last = json.loads(line[6:])["status"]
        assert last == "succeeded"


def test_stream_tickets_open_one_jobs_stream_and_nothing_else(dev_server: DevServer) -> None:
    """EventSource cannot send headers and URLs get logged: the URL carries a ticket, never the token."""
    s, stranger = dev_server.session(), dev_server.token_for(uuid.uuid4())
    job_id = dev_server.create_job(s).json()["jobId"]
    other_job = dev_server.create_job(s).json()["jobId"]
    r = dev_server.client.post(f"/api/nano-banana/jobs/{job_id}/events-ticket", headers=s.headers)
    assert r.status_code == 200, r.text
    validate(r.json(), "EventsTicket")
    ticket, url = r.json()["ticket"], r.json()["url"]
    assert url == f"/api/nano-banana/jobs/{job_id}/events?ticket={ticket}"
    with dev_server.client.stream("GET", url) as stream:
        assert stream.status_code == 200
        first = next(line for line in stream.iter_lines() if line.startswith("data: "))
        assert json.loads(first[6:])["id"] == job_id

    def refused(path: str, **kwargs: Any) -> None:
        r = dev_server.client.request(kwargs.pop("method", "GET"), path, **kwargs)
        assert r.status_code == 401, (path, r.text)
        assert r.json()["error"]["code"] == "unauthenticated"

    refused(f"/api/nano-banana/jobs/{other_job}/events", params={"ticket": ticket})  # another job
    refused(f"/api/nano-banana/jobs/{job_id}/events", params={"ticket": ticket[:-2] + "xx"})  # tampered
    refused(f"/api/nano-banana/jobs/{job_id}/events", params={"access_token": s.token})  # tokens never in URLs
    refused(f"/api/nano-banana/jobs/{job_id}", headers={"Authorization": f"Bearer {ticket}"})  # not a token
    # Nobody gets a ticket for a job they cannot see.
    r = dev_server.client.post(f"/api/nano-banana/jobs/{job_id}/events-ticket", headers=stranger.headers)
    assert r.status_code == 404
    assert dev_server.client.post(f"/api/nano-banana/jobs/{job_id}/events-ticket").status_code == 401
    assert s.token not in dev_server.logs()


# ---------------------------------------------------------------- auth


def _token(claims: dict[str, Any], key: str = DEV_JWT_SECRET, alg: str = "HS256") -> str:
    base = {"sub": str(uuid.uuid4()), "aud": "authenticated", "exp": int(time.time()) + 600}
    return jwt.encode({**base, **claims}, key, algorithm=alg)


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer",
        "Basic dXNlcjpwYXNz",
        "Bearer not-a-jwt",
        f"Bearer {_token({}, key='wrong-key-wrong-key-wrong-key-wrong')}",
        f"Bearer {_token({'exp': int(time.time()) - 3600})}",
        f"Bearer {_token({'aud': 'anon'})}",
        f"Bearer {_token({'sub': 'not-a-uuid'})}",
        "Bearer "
        + jwt.encode(
            {"sub": str(uuid.uuid4()), "aud": "authenticated", "exp": int(time.time()) + 600}, None, algorithm="none"
        ),
    ],
    ids=["missing", "empty", "basic", "garbage", "wrong-key", "expired", "wrong-audience", "bad-sub", "alg-none"],
)
def test_bad_tokens_are_401(dev_server: DevServer, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    r = dev_server.client.get(f"/api/nano-banana/jobs/{uuid.uuid4()}", headers=headers)
    assert r.status_code == 401
    validate_error(r.json(), "unauthenticated")
    assert "Traceback" not in r.text


def test_projects_are_private(dev_server: DevServer) -> None:
    owner = dev_server.session()
    job_id = dev_server.create_job(owner).json()["jobId"]
    stranger = dev_server.token_for(uuid.uuid4(), uuid.uuid4())  # a member of some other project
    r = dev_server.create_job(stranger, project_id=owner.project_id)
    assert r.status_code == 403
    validate_error(r.json(), "forbidden")
    for method, path in (
        ("GET", f"/api/nano-banana/jobs/{job_id}"),
        ("POST", f"/api/nano-banana/jobs/{job_id}/cancel"),
        ("GET", f"/api/nano-banana/jobs/{job_id}/messages"),
        ("GET", f"/api/nano-banana/jobs/{job_id}/blocks?variantId={uuid.uuid4()}"),
        ("GET", f"/api/nano-banana/jobs/{job_id}/events"),
    ):
        r = dev_server.client.request(method, path, headers=stranger.headers)
        assert r.status_code == 404, (path, r.text)
        validate_error(r.json(), "not_found")
    r = dev_server.client.get("/api/nano-banana/jobs", params={"projectId": owner.project_id}, headers=stranger.headers)
    assert r.status_code == 403
    assert dev_server.job(owner, job_id)["status"] != "canceled"


# ---------------------------------------------------------------- input validation


def _gif() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(buf, "GIF")
    return buf.getvalue()


def _bomb() -> bytes:
    buf = io.BytesIO()
    Image.new("1", (12000, 12000)).save(buf, "PNG")  # 144 MP in a few KB
    return buf.getvalue()


@pytest.mark.parametrize(
    ("image", "status", "code"),
    [
        (_gif(), 415, "unsupported_media_type"),
        (b"", 422, "invalid_request"),
        (png_bytes()[:60], 422, "invalid_request"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 200, 422, "invalid_request"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", 415, "unsupported_media_type"),
        (_bomb(), 413, "file_too_large"),
    ],
    ids=["gif-as-png", "empty", "truncated-png", "lying-png-header", "svg", "decompression-bomb"],
)
def test_bad_images_are_rejected_and_nothing_is_kept(
    dev_server: DevServer, image: bytes, status: int, code: str
) -> None:
    s = dev_server.session()
    before_jobs = dev_server.job_count(s)
    before_blobs = len(blob_files(dev_server, f"inputs/{s.user_id}"))
    r = dev_server.create_job(s, image=image)
    assert r.status_code == status, r.text
    validate_error(r.json(), code)
    assert dev_server.job_count(s) == before_jobs
    assert len(blob_files(dev_server, f"inputs/{s.user_id}")) == before_blobs


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"variantCount": "5"}, "variantCount"),
        ({"variantCount": "two"}, "variantCount"),
        ({"aspectRatio": "7:3"}, "aspectRatio"),
        ({"prompt": "x" * 2001}, "prompt"),
        ({"prompt": "   "}, "prompt"),
        ({"projectId": "nope"}, "projectId"),
        ({"colour": "red"}, "fields"),
    ],
)
def test_bad_fields_are_422(dev_server: DevServer, fields: dict[str, str], problem: str) -> None:
    s = dev_server.session()
    data = {"projectId": s.project_id, "prompt": "ok", **fields}
    files = {"image": ("a.png", png_bytes(), "image/png")}
    r = dev_server.client.post("/api/nano-banana/jobs", data=data, files=files, headers=s.headers)
    assert r.status_code == 422, r.text
    validate_error(r.json(), "invalid_request")
    assert problem in json.dumps(r.json()["error"])


def test_malformed_requests(dev_server: DevServer) -> None:
    s = dev_server.session()
    url = "/api/nano-banana/jobs"
    r = dev_server.client.post(url, content=b"--x\r\n", headers={**s.headers, "Content-Type": "multipart/form-data"})
    assert (r.status_code, r.json()["error"]["code"]) == (400, "invalid_request")
    body = b'--b\r\nContent-Disposition: form-data; name="prompt"\r\n\r\nhi\r\n'  # never closed
    r = dev_server.client.post(
        url, content=body, headers={**s.headers, "Content-Type": "multipart/form-data; boundary=b"}
    )
    assert r.status_code == 400
    r = dev_server.client.post(url, content=b"{not json", headers={**s.headers, "Content-Type": "application/json"})
    assert (r.status_code, r.json()["error"]["code"]) == (400, "invalid_request")
    r = dev_server.client.post(url, content=b"hello", headers={**s.headers, "Content-Type": "text/plain"})
    assert (r.status_code, r.json()["error"]["code"]) == (415, "unsupported_media_type")
    two = {"image": ("a.png", png_bytes(), "image/png")}
    r = dev_server.client.post(
        url,
        data={"projectId": s.project_id, "prompt": "x"},
        files=[("image", two["image"]), ("image", two["image"])],
        headers=s.headers,
    )
    assert (r.status_code, r.json()["error"]["code"]) == (422, "invalid_request")
    r = dev_server.client.post(
        url, json={"projectId": s.project_id, "prompt": "x", "inputPath": "inputs/x.png", "extra": 1}, headers=s.headers
    )
    assert r.status_code == 422
    r = dev_server.client.delete(url, headers=s.headers)
    assert (r.status_code, r.json()["error"]["code"]) == (405, "method_not_allowed")
    r = dev_server.client.get("/api/nano-banana/nothing-here", headers=s.headers)
    assert (r.status_code, r.json()["error"]["code"]) == (404, "not_found")
    # A newline in a path segment (schemathesis sent one): Flask's `<path:…>` converter cannot match it,
    # and the answer is still the API's JSON error, not Flask's HTML 404.
    for method in ("GET", "DELETE"):
        r = dev_server.client.request(method, "/api/nano-banana/jobs/%C2%96%3A%0A%15", headers=s.headers)
        assert r.headers["content-type"].startswith("application/json"), r.text[:200]
        validate_error(r.json(), "not_found")


def test_file_size_cap_is_exact_and_streamed(dev_server_factory: StartServer) -> None:
    cap = 200_000
    server = dev_server_factory(NANO_BANANA_MAX_FILE_BYTES=str(cap))
    s = server.session()
    exact = png_of_size(cap)
    assert len(exact) == cap
    r = server.create_job(s, image=exact)
    assert r.status_code == 202, r.text
    r = server.create_job(s, image=exact + b"\x00")
    assert r.status_code == 413
    validate_error(r.json(), "file_too_large")

    # A body far over the cap with no Content-Length is cut off while streaming.
    def chunks() -> Any:
        yield b'--b\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n'
        for _ in range(100):
            yield b"\x89PNG" + b"\x00" * 65532

    r = server.client.post(
        "/api/nano-banana/jobs",
        content=chunks(),
        headers={**s.headers, "Content-Type": "multipart/form-data; boundary=b"},
    )
    assert r.status_code == 413
    assert server.job_count(s) == 1


# ---------------------------------------------------------------- limits, lifecycle


def test_rate_limit_rejects_the_eleventh_and_reserves_nothing(dev_server_factory: StartServer) -> None:
    server = dev_server_factory(NANO_BANANA_MAX_ACTIVE_PER_PROJECT="100")
    s = server.session()
    for _ in range(10):
        assert server.create_job(s).status_code == 202
    before = len(blob_files(server, f"inputs/{s.user_id}"))
    r = server.create_job(s)
    assert r.status_code == 429
    validate_error(r.json(), "rate_limited")
    assert 3000 < int(r.headers["Retry-After"]) <= 3600
    assert r.headers["RateLimit-Limit"] == "10"
    assert r.headers["RateLimit-Remaining"] == "0"
    assert len(blob_files(server, f"inputs/{s.user_id}")) == before
    assert server.job_count(s) == 10


def test_concurrency_limit_and_slot_release_on_cancel(dev_server_factory: StartServer) -> None:
    server = dev_server_factory(NANO_BANANA_PREVIEW_DELAY_MS="4000")
    s = server.session()
    first = server.create_job(s).json()["jobId"]
    second = server.create_job(s).json()["jobId"]
    r = server.create_job(s)
    assert r.status_code == 429
    validate_error(r.json(), "concurrency_limited")
    assert int(r.headers["Retry-After"]) >= 1
    server.wait_for(s, first, {"running"})
    r = server.client.post(f"/api/nano-banana/jobs/{first}/cancel", headers=s.headers)
    assert r.status_code == 200
    validate(r.json(), "Job")
    assert r.json()["status"] == "canceled"
    third = server.create_job(s)
    assert third.status_code == 202, "the canceled job's slot is free at once"
    again = server.client.post(f"/api/nano-banana/jobs/{first}/cancel", headers=s.headers)
    assert again.status_code == 409
    validate_error(again.json(), "invalid_transition")
    # The canceled job's late result is discarded: no variants, and its blobs are deleted.
    server.wait_for(s, second, {"succeeded"}, timeout_s=20)
    time.sleep(0.5)
    assert server.job(s, first)["variants"] == []
    assert blob_files(server, f"jobs/{first}") == []


def test_timeout_fails_the_job_and_frees_the_slot(dev_server_factory: StartServer) -> None:
    server = dev_server_factory(
        NANO_BANANA_TIMEOUT_S="1", NANO_BANANA_PREVIEW_DELAY_MS="3000", NANO_BANANA_MAX_ACTIVE_PER_PROJECT="1"
    )
    s = server.session()
    job_id = server.create_job(s).json()["jobId"]
    job = server.wait_for(s, job_id, {"failed"}, timeout_s=10)
    assert job["errorCode"] == "timeout"
    assert job["variants"] == []
    assert server.create_job(s).status_code == 202
    time.sleep(3)
    assert server.job(s, job_id)["status"] == "failed", "terminal states never change"
    assert blob_files(server, f"jobs/{job_id}") == []


def test_idempotency_key(dev_server: DevServer) -> None:
    s = dev_server.session()
    key = {"Idempotency-Key": f"k-{uuid.uuid4()}"}
    first = dev_server.create_job(s, headers=key)
    again = dev_server.create_job(s, headers=key)
    assert (first.status_code, again.status_code) == (202, 200)
    assert first.json()["jobId"] == again.json()["jobId"]
    other = dev_server.create_job(s, headers=key, prompt="something else")
    assert other.status_code == 409
    validate_error(other.json(), "idempotency_conflict")
    bad = dev_server.create_job(s, headers={"Idempotency-Key": "with space"})
    assert bad.status_code == 422


def test_concurrent_identical_requests_with_one_key_make_one_job(dev_server_factory: StartServer) -> None:
    server = dev_server_factory(NANO_BANANA_MAX_ACTIVE_PER_PROJECT="100")
    s = server.session()
    key = {"Idempotency-Key": "same-key"}
    results: list[httpx.Response] = []
    barrier = threading.Barrier(6)

    def post() -> None:
        barrier.wait()
        with httpx.Client(base_url=server.url, timeout=30) as c:
            files = {"image": ("a.png", png_bytes(), "image/png")}
            data = {"projectId": s.project_id, "prompt": "same"}
            results.append(c.post("/api/nano-banana/jobs", data=data, files=files, headers={**s.headers, **key}))

    threads = [threading.Thread(target=post) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {r.json()["jobId"] for r in results} == {results[0].json()["jobId"]}
    assert server.job_count(s) == 1
    # The losers gave their reservations back: 9 more jobs still fit in the hour.
    for _ in range(9):
        assert server.create_job(s).status_code == 202
    assert server.create_job(s).status_code == 429


def test_concurrent_retries_with_one_key_and_one_unit_left_get_the_job_not_429(dev_server_factory: StartServer) -> None:
    """Issue 13 #4 over HTTP: the key is claimed in the limits commit, so the retries wait for the first
    request's job instead of competing for the last unit of the hour."""
    server = dev_server_factory(NANO_BANANA_RATE_PER_HOUR="1")
    s = server.session()
    key = {"Idempotency-Key": f"k-{uuid.uuid4()}"}
    results: list[httpx.Response] = []
    barrier = threading.Barrier(6)

    def post() -> None:
        barrier.wait()
        with httpx.Client(base_url=server.url, timeout=30) as c:
            files = {"image": ("a.png", png_bytes(), "image/png")}
            data = {"projectId": s.project_id, "prompt": "same"}
            results.append(c.post("/api/nano-banana/jobs", data=data, files=files, headers={**s.headers, **key}))

    threads = [threading.Thread(target=post) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.status_code for r in results) == [200, 200, 200, 200, 200, 202], [r.text for r in results]
    assert {r.json()["jobId"] for r in results} == {results[0].json()["jobId"]}
    assert server.job_count(s) == 1


def test_json_create_from_own_upload_and_path_rules(dev_server: DevServer) -> None:
    s = dev_server.session()
    job = dev_server.wait_for(s, dev_server.create_job(s).json()["jobId"], {"succeeded"})
    body = {"projectId": s.project_id, "prompt": "again", "inputPath": job["inputPath"]}
    r = dev_server.client.post("/api/nano-banana/jobs", json=body, headers=s.headers)
    assert r.status_code == 202, r.text
    from_variant = {**body, "inputPath": job["variants"][0]["storagePath"]}
    assert dev_server.client.post("/api/nano-banana/jobs", json=from_variant, headers=s.headers).status_code == 202
    other_user = f"inputs/{uuid.uuid4()}/x.png"
    for path in (
        other_user,
        f"inputs/{s.user_id}/../../etc/passwd",
        "jobs/../inputs/x.png",
        f"inputs/{s.user_id}/missing.png",
    ):
        r = dev_server.client.post("/api/nano-banana/jobs", json={**body, "inputPath": path}, headers=s.headers)
        assert r.status_code in (403, 404, 422), (path, r.text)
        validate(r.json(), "Error")


def test_logs_are_json_lines_with_job_ids_and_no_secrets(dev_server: DevServer) -> None:
    s = dev_server.session()
    job_id = dev_server.create_job(s).json()["jobId"]
    dev_server.wait_for(s, job_id, {"succeeded"})
    time.sleep(0.2)
    events = []
    for line in dev_server.logs().splitlines():
        if line.startswith("{"):
            events.append(json.loads(line))
    mine = [e for e in events if e.get("jobId") == job_id]
    assert {"job_created", "job_started", "job_succeeded"} <= {e["event"] for e in mine}
    assert all("durationMs" in e for e in mine if e["event"] in {"job_created", "job_succeeded"})
    assert s.token not in dev_server.logs()
    assert DEV_JWT_SECRET not in dev_server.logs()
    assert "Traceback" not in dev_server.logs()


def test_a_requests_log_lines_share_its_id_and_trace(dev_server: DevServer) -> None:
    s = dev_server.session()
    trace = uuid.uuid4().hex
    r = dev_server.create_job(s, headers={"traceparent": f"00-{trace}-00f067aa0ba902b7-01"})
    assert r.status_code == 202, r.text
    request_id = r.headers["X-Request-Id"]
    job_id = r.json()["jobId"]
    refused = dev_server.client.get(f"/api/nano-banana/jobs/{uuid.uuid4()}", headers=s.headers)
    assert refused.status_code == 404
    assert refused.json()["error"]["requestId"] == refused.headers["X-Request-Id"] != request_id
    validate(refused.json(), "Error")
    hostile = dev_server.client.get(
        "/api/nano-banana/jobs", params={"projectId": s.project_id}, headers={**s.headers, "traceparent": '00-"}{-x-01'}
    )
    time.sleep(0.2)
    events = [json.loads(line) for line in dev_server.logs().splitlines() if line.startswith("{")]
    mine = [e for e in events if e.get("requestId") == request_id]
    assert {e["event"] for e in mine} == {"job_created", "request"}, "the creation's lines, and only those"
    assert all(e["logging.googleapis.com/trace"] == trace for e in mine)  # no GOOGLE_CLOUD_PROJECT in dev
    assert all(e["logging.googleapis.com/spanId"] == "00f067aa0ba902b7" for e in mine)
    (line,) = [e for e in mine if e["event"] == "request"]
    assert (line["method"], line["path"], line["status"]) == ("POST", "/api/nano-banana/jobs", 202)
    assert next(e for e in mine if e["event"] == "job_created")["jobId"] == job_id
    (refusal,) = [e for e in events if e.get("requestId") == refused.headers["X-Request-Id"]]
    assert (refusal["status"], refusal["code"]) == (404, "not_found")
    (listing,) = [e for e in events if e.get("requestId") == hostile.headers["X-Request-Id"]]
    assert "logging.googleapis.com/trace" not in listing, "a malformed traceparent is ignored"


def test_an_unchanged_job_or_page_is_a_bodiless_304(dev_server_factory: StartServer) -> None:
    server = dev_server_factory(NANO_BANANA_PREVIEW_DELAY_MS="6000")  # the job stays running meanwhile
    s = server.session()
    job_id = server.create_job(s).json()["jobId"]
    server.wait_for(s, job_id, {"running"})
    url = f"/api/nano-banana/jobs/{job_id}"
    first = server.client.get(url, headers=s.headers)
    assert first.headers["Cache-Control"] == "private, no-cache"
    etag = first.headers["ETag"]
    again = server.client.get(url, headers={**s.headers, "If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["ETag"] == etag
    assert again.headers["X-Request-Id"]
    page = {"projectId": s.project_id}
    listed = server.client.get("/api/nano-banana/jobs", params=page, headers=s.headers)
    unchanged = server.client.get(
        "/api/nano-banana/jobs", params=page, headers={**s.headers, "If-None-Match": listed.headers["ETag"]}
    )
    assert unchanged.status_code == 304
    # A stranger's conditional request is still a 404: the ETag is checked after the authorised read.
    stranger = server.token_for(uuid.uuid4())  # a member of no project
    assert server.client.get(url, headers={**stranger.headers, "If-None-Match": etag}).status_code == 404
    assert server.client.post(f"{url}/cancel", headers=s.headers).status_code == 200
    changed = server.client.get(url, headers={**s.headers, "If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.json()["status"] == "canceled"
    assert changed.headers["ETag"] != etag
    assert "ETag" not in server.client.post(f"{url}/cancel", headers=s.headers).headers, "errors carry none"


def test_health_and_config(dev_server: DevServer) -> None:
    assert dev_server.client.get("/healthz").json() == {"status": "ok"}
    ready = dev_server.client.get("/readyz")
    assert ready.status_code == 200, ready.text
    config = dev_server.client.get("/api/nano-banana/config").json()
    validate(config, "Config")
    assert config["acceptedTypes"] == ["image/jpeg", "image/png", "image/webp"]
    assert config["timeoutSeconds"] == 300
