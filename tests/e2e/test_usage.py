"""Monthly image budgets end to end on `nano-banana dev`: real HTTP, real Postgres, the in-process limits."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.support.devserver import DevServer, Session
from tests.support.openapi import validate, validate_error

pytestmark = pytest.mark.e2e

StartServer = Callable[..., DevServer]


def _log_lines(server: DevServer) -> list[dict[str, Any]]:
    lines = []
    for text in server.logs().splitlines():
        with contextlib.suppress(ValueError):
            if isinstance(line := json.loads(text), dict):
                lines.append(line)
    return lines


def _seconds_to_next_month() -> float:
    now = datetime.now(UTC)
    start = datetime(now.year + now.month // 12, now.month % 12 + 1, 1, tzinfo=UTC)
    return (start - now).total_seconds()


def _refused(server: DevServer, s: Session, variant_count: int) -> dict[str, object]:
    r = server.create_job(s, variant_count=variant_count)
    assert r.status_code == 429, r.text
    validate_error(r.json(), "budget_exceeded")
    assert abs(int(r.headers["Retry-After"]) - _seconds_to_next_month()) < 60, "Retry-After: the next month's start"
    assert r.headers["RateLimit-Limit"] == "4"
    details: dict[str, object] = r.json()["error"]["details"]
    return details


def test_budget_of_four_admits_two_jobs_of_two_and_refuses_the_third(dev_server_factory: StartServer) -> None:
    server = dev_server_factory(NANO_BANANA_PROJECT_MONTHLY_IMAGES="4", NANO_BANANA_MAX_ACTIVE_PER_PROJECT="10")
    s = server.session()
    jobs = [server.create_job(s, variant_count=2) for _ in range(2)]
    assert [r.status_code for r in jobs] == [202, 202]
    for r in jobs:
        done = server.wait_for(s, r.json()["jobId"], {"succeeded"})
        assert len(done["variants"]) == 2
    deadline = time.monotonic() + 5
    while (details := _refused(server, s, 2))["used"] != 4:  # settled just after the terminal transitions
        assert time.monotonic() < deadline, details
        time.sleep(0.1)
    assert {k: details[k] for k in ("limit", "used", "reserved")} == {"limit": 4, "used": 4, "reserved": 0}
    assert _refused(server, s, 1)["used"] == 4, "not even one image more"
    assert server.job_count(s) == 2, "nothing stored for a refused creation"


def test_twenty_concurrent_creations_with_budget_four_admit_exactly_four(dev_server_factory: StartServer) -> None:
    server = dev_server_factory(
        NANO_BANANA_PROJECT_MONTHLY_IMAGES="4",
        NANO_BANANA_MAX_ACTIVE_PER_PROJECT="100",
        NANO_BANANA_RATE_PER_HOUR="100",
    )
    s = server.session()
    with ThreadPoolExecutor(max_workers=20) as pool:
        codes = sorted(r.status_code for r in pool.map(lambda _: server.create_job(s, variant_count=1), range(20)))
    assert codes == [202] * 4 + [429] * 16
    assert server.job_count(s) == 4


def test_a_failed_jobs_images_come_back(dev_server_factory: StartServer) -> None:
    """Budget 2: a job of 2 that times out settles to 0, so the next job of 2 fits."""
    server = dev_server_factory(
        NANO_BANANA_PROJECT_MONTHLY_IMAGES="2",
        NANO_BANANA_TIMEOUT_S="1",
        NANO_BANANA_PREVIEW_DELAY_MS="3000",
        NANO_BANANA_MAX_ACTIVE_PER_PROJECT="10",
    )
    s = server.session()
    first = server.create_job(s, variant_count=2)
    assert first.status_code == 202
    r = server.create_job(s, variant_count=1)
    assert r.status_code == 429, "the running job holds both images"
    assert r.json()["error"]["details"]["reserved"] == 2
    failed = server.wait_for(s, first.json()["jobId"], {"failed"}, timeout_s=10)
    assert failed["errorCode"] == "timeout"
    deadline = time.monotonic() + 5
    while (again := server.create_job(s, variant_count=2)).status_code == 429:  # settled just after the transition
        assert time.monotonic() < deadline, again.text
        time.sleep(0.1)
    assert again.status_code == 202


def test_a_job_shows_its_usage_and_timings_and_logs_them(dev_server_factory: StartServer) -> None:
    server = dev_server_factory(NANO_BANANA_PREVIEW_DELAY_MS="300")
    s = server.session()
    job_id = server.create_job(s, variant_count=2).json()["jobId"]
    job = server.wait_for(s, job_id, {"succeeded"})
    validate(job, "Job")
    assert job["usage"] == {
        "model": "gemini-2.5-flash-image",  # the default model: the preview generator renders for the model asked
        "images": 2,
        "promptTokens": None,  # the preview generator is no model: it reports no tokens
        "outputTokens": None,
        "totalTokens": None,
    }
    timings = job["timings"]
    assert timings["generationMs"] >= 300, "the preview's delay is spent in the generator"
    assert 0 <= timings["queuedMs"] < timings["totalMs"]
    assert timings["totalMs"] >= timings["queuedMs"] + timings["generationMs"]
    deadline = time.monotonic() + 5
    while not (lines := [e for e in _log_lines(server) if e.get("event") == "job_succeeded"]):
        assert time.monotonic() < deadline, "no job_succeeded line"
        time.sleep(0.1)
    (line,) = lines
    assert (line["model"], line["images"], line["totalTokens"]) == ("gemini-2.5-flash-image", 2, None)
    assert line["generationMs"] == timings["generationMs"]
    assert line["totalMs"] == timings["totalMs"]


def test_usage_agrees_with_the_rows_and_is_for_members_only(dev_server_factory: StartServer) -> None:
    server = dev_server_factory(
        NANO_BANANA_PROJECT_MONTHLY_IMAGES="10",
        NANO_BANANA_MAX_ACTIVE_PER_PROJECT="10",
        NANO_BANANA_PREVIEW_DELAY_MS="200",
    )
    s = server.session()
    made = [server.create_job(s, variant_count=n).json()["jobId"] for n in (1, 2, 3)]
    for job_id in made[:2]:
        server.wait_for(s, job_id, {"succeeded"})
    canceled = server.client.post(f"/api/nano-banana/jobs/{made[2]}/cancel", headers=s.headers)
    assert canceled.status_code in {200, 409}
    jobs = [server.wait_for(s, job_id, {"succeeded", "canceled"}) for job_id in made]
    time.sleep(0.3)  # the last settlement follows its transition
    today = datetime.now(UTC).date()
    r = server.client.get(
        "/api/nano-banana/usage",
        params={"projectId": s.project_id, "from": (today - timedelta(days=2)).isoformat(), "to": today.isoformat()},
        headers=s.headers,
    )
    assert r.status_code == 200, r.text
    usage = r.json()
    validate(usage, "Usage")
    images = sum(len(j["variants"]) for j in jobs)
    statuses = Counter(j["status"] for j in jobs)
    assert usage["totals"]["jobs"] == {
        "total": 3,
        "queued": 0,
        "running": 0,
        "succeeded": statuses["succeeded"],
        "failed": 0,
        "canceled": statuses["canceled"],
    }
    assert usage["totals"]["images"] == images
    assert [d["date"] for d in usage["days"]] == [(today - timedelta(days=i)).isoformat() for i in (2, 1, 0)]
    assert [d["jobs"]["total"] for d in usage["days"]] == [0, 0, 3]
    assert usage["days"][2]["images"] == images
    totals = sorted(j["timings"]["totalMs"] for j in jobs)
    assert totals[0] <= usage["totals"]["totalMs"]["p50"] <= totals[-1]
    assert usage["budget"] | {"resetsAt": None} == {
        "month": today.strftime("%Y-%m"),
        "limit": 10,
        "used": images,
        "reserved": 0,
        "remaining": 10 - images,
        "resetsAt": None,
    }

    outsider = server.token_for(uuid.uuid4())
    refused = server.client.get("/api/nano-banana/usage", params={"projectId": s.project_id}, headers=outsider.headers)
    assert refused.status_code == 403
    validate_error(refused.json(), "forbidden")
    for params in (
        {"from": (today - timedelta(days=92)).isoformat(), "to": today.isoformat()},  # 93 days
        {"from": today.isoformat(), "to": (today - timedelta(days=1)).isoformat()},
        {"from": "yesterday"},
    ):
        bad = server.client.get(
            "/api/nano-banana/usage", params={"projectId": s.project_id, **params}, headers=s.headers
        )
        assert bad.status_code == 422, params
        validate_error(bad.json(), "invalid_request")
    quarter = server.client.get(
        "/api/nano-banana/usage",
        params={"projectId": s.project_id, "from": (today - timedelta(days=91)).isoformat(), "to": today.isoformat()},
        headers=s.headers,
    )
    assert quarter.status_code == 200
    assert len(quarter.json()["days"]) == 92


def test_usage_refuses_days_out_of_range_with_422(dev_server: DevServer) -> None:
    s = dev_server.session()
    for params in ({"from": "0001-01-01", "to": "0001-01-31"}, {"from": "9999-12-01", "to": "9999-12-31"}):
        r = dev_server.client.get(
            "/api/nano-banana/usage", params={"projectId": s.project_id, **params}, headers=s.headers
        )
        assert r.status_code == 422, r.text
        validate_error(r.json(), "invalid_request")
    r = dev_server.client.get("/api/nano-banana/usage", params={"projectId": s.project_id}, headers=s.headers)
    assert r.status_code == 200
    assert r.json()["from"] == datetime.now(UTC).date().replace(day=1).isoformat(), "the default: this month so far"
