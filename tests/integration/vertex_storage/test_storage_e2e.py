"""The dev server on NANO_BANANA_STORAGE=supabase: storage3 against the local Storage server."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import httpx
import pytest

from tests.support.devserver import DevServer, png_bytes
from tests.support.openapi import validate
from tests.support.storage_server import StorageServer

pytestmark = [pytest.mark.storage, pytest.mark.e2e]
KEY = "service-role-key-e2e"


def test_jobs_run_on_supabase_storage(dev_server_factory: Callable[..., DevServer]) -> None:
    storage = StorageServer(KEY)
    try:
        server = dev_server_factory(
            NANO_BANANA_STORAGE="supabase", SUPABASE_URL=storage.url, SUPABASE_SERVICE_ROLE_KEY=KEY
        )
        s = server.session()
        job = server.wait_for(s, server.create_job(s).json()["jobId"], {"succeeded"})
        assert job["inputUrl"].startswith(storage.url)
        assert httpx.get(job["inputUrl"]).content == png_bytes()
        for variant in job["variants"]:
            assert variant["url"].startswith(f"{storage.url}/storage/v1/object/sign/pip-ai-images/jobs/{job['id']}/")
            assert httpx.get(variant["url"]).status_code == 200
        stored = sorted(k for k in storage.objects if k.startswith(f"jobs/{job['id']}/"))
        assert stored == sorted(v["storagePath"] for v in job["variants"])
        assert KEY not in server.logs()
        # Storage down: creation answers 503 and keeps nothing; the job count does not change.
        storage.fail_next = 100
        r = server.create_job(s)
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "unavailable"
        storage.fail_next = 0
        listed = server.client.get(
            "/api/nano-banana/jobs", params={"projectId": s.project_id}, headers=s.headers
        ).json()
        assert len(listed["jobs"]) == 1
        assert server.create_job(s).status_code == 202, "the failed attempt gave its reservation back"
    finally:
        storage.stop()


def test_a_list_page_is_signed_in_one_storage_call_and_urls_stay_stable(
    dev_server_factory: Callable[..., DevServer],
) -> None:
    storage = StorageServer(KEY)
    ttl = 10  # the shortest allowed: a URL is handed out again for 5 s, then re-signed
    try:
        server = dev_server_factory(
            NANO_BANANA_STORAGE="supabase",
            SUPABASE_URL=storage.url,
            SUPABASE_SERVICE_ROLE_KEY=KEY,
            NANO_BANANA_SIGNED_URL_TTL_S=str(ttl),
        )
        s = server.session()
        ids = [server.wait_for(s, server.create_job(s).json()["jobId"], {"succeeded"})["id"] for _ in range(3)]

        def listed() -> tuple[dict[str, dict[str, object]], list[tuple[str, str]]]:
            before = len(storage.calls)
            r = server.client.get("/api/nano-banana/jobs", params={"projectId": s.project_id}, headers=s.headers)
            assert r.status_code == 200, r.text
            signing = [c for c in storage.calls[before:] if c[1].startswith("/storage/v1/object/sign/")]
            return {j["id"]: j for j in r.json()["jobs"]}, signing

        time.sleep(ttl / 2 + 0.5)  # every URL signed so far is past half its life
        first, signing = listed()
        again, signing_again = listed()
        assert sorted(first) == sorted(ids)
        assert signing == [("POST", "/storage/v1/object/sign/pip-ai-images")], "9 images, one bulk call"
        assert signing_again == [], "young URLs are handed out again"
        assert again == first, "identical URLs: the browser's cached images stay valid"
        one = server.job(s, ids[0])
        assert one["variants"] == first[ids[0]]["variants"]
        for job in first.values():
            assert httpx.get(str(job["inputUrl"])).content == png_bytes()
            for variant in job["variants"]:  # type: ignore[attr-defined]
                assert httpx.get(variant["url"]).status_code == 200
    finally:
        storage.stop()


def test_a_storage_outage_leaves_urls_out_but_answers(dev_server_factory: Callable[..., DevServer]) -> None:
    storage = StorageServer(KEY)
    try:
        server = dev_server_factory(
            NANO_BANANA_STORAGE="supabase", SUPABASE_URL=storage.url, SUPABASE_SERVICE_ROLE_KEY=KEY
        )
        s = server.session()
        job_id = server.create_job(s).json()["jobId"]
        # Storage goes down once the variants are stored; nothing has signed this job's URLs yet.
        deadline = time.monotonic() + 20
        while sum(k.startswith(f"jobs/{job_id}/") for k in storage.objects) < 2:
            assert time.monotonic() < deadline, "the variants never reached storage"
            time.sleep(0.02)
        storage.fail_next = 10_000
        job = server.wait_for(s, job_id, {"succeeded"})
        validate(job, "Job")
        assert job["inputUrl"] is None
        assert [v["url"] for v in job["variants"]] == [None, None]
        assert all(v["storagePath"] for v in job["variants"])
        refused = server.client.post(
            "/api/nano-banana/signed-urls", json={"paths": [job["variants"][0]["storagePath"]]}, headers=s.headers
        )
        assert refused.status_code == 503, "an outage is not 'not found'"
        assert refused.json()["error"]["code"] == "unavailable"
        events = [json.loads(line) for line in server.logs().splitlines() if line.startswith("{")]
        assert any(e.get("event") == "signing_unavailable" for e in events)
    finally:
        storage.stop()
