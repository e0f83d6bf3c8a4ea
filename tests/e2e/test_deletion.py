"""DELETE /jobs/{id} and `nano-banana erase-user`, end to end: the dev server as a subprocess, real HTTP,
real Postgres, blobs on local disk or behind the Storage REST API (storage3)."""

from __future__ import annotations

import json
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.e2e.test_cloud_stack import cloud_server  # noqa: F401 (fixture)
from tests.e2e.test_jobs import blob_files
from tests.e2e.test_threads import refine
from tests.support.devserver import BIN, DevServer, Session
from tests.support.openapi import validate, validate_error
from tests.support.storage_server import StorageServer

pytestmark = pytest.mark.e2e
StartServer = Callable[..., DevServer]
KEY = "service-role-key-deletion"


def succeeded(server: DevServer, s: Session, **kwargs: Any) -> dict[str, Any]:
    r = server.create_job(s, **kwargs)
    assert r.status_code == 202, r.text
    return server.wait_for(s, r.json()["jobId"], {"succeeded"})


def delete(server: DevServer, s: Session, job_id: str) -> httpx.Response:
    return server.client.delete(f"/api/nano-banana/jobs/{job_id}", headers=s.headers)


def image_paths(job: dict[str, Any]) -> list[str]:
    return [job["inputPath"], *(v["storagePath"] for v in job["variants"])]


def not_found(server: DevServer, s: Session, paths: list[str]) -> list[str]:
    r = server.client.post("/api/nano-banana/signed-urls", json={"paths": paths}, headers=s.headers)
    assert r.status_code == 200, r.text
    validate(r.json(), "SignedUrls")
    found: list[str] = r.json()["notFound"]
    return found


def local_blobs(server: DevServer) -> set[str]:
    root = server.data_dir / "blobs"
    return {p.relative_to(root).as_posix() for p in blob_files(server, "")}


def test_delete_a_succeeded_job_and_every_image(dev_server: DevServer) -> None:
    s = dev_server.session()
    job = succeeded(dev_server, s)
    block = dev_server.client.get(
        f"/api/nano-banana/jobs/{job['id']}/blocks",
        params={"variantId": job["variants"][0]["id"], "type": "image_compare"},
        headers=s.headers,
    ).json()["props"]
    stored = [block["before"]["storagePath"], block["after"]["storagePath"]]  # what a document keeps
    other_user = dev_server.token_for(uuid.uuid4(), uuid.uuid4())
    other = succeeded(dev_server, other_user, project_id=other_user.project_id)
    assert not_found(dev_server, s, stored) == []
    assert set(image_paths(job)) <= local_blobs(dev_server)

    r = delete(dev_server, s, job["id"])
    assert r.status_code == 200, r.text
    validate(r.json(), "Deleted")
    assert r.json() == {"deleted": [job["id"]]}
    assert blob_files(dev_server, f"jobs/{job['id']}") == []
    assert not set(image_paths(job)) & local_blobs(dev_server)
    assert not_found(dev_server, s, stored) == stored, "a stored block's paths: render a placeholder"
    assert httpx.get(job["variants"][0]["url"]).status_code == 404, "signed URLs handed out earlier die too"
    assert dev_server.client.get(f"/api/nano-banana/jobs/{job['id']}", headers=s.headers).status_code == 404
    again = delete(dev_server, s, job["id"])
    assert again.status_code == 404
    validate_error(again.json(), "not_found")
    # Another user's job: untouched.
    assert dev_server.job(other_user, other["id"])["status"] == "succeeded"
    assert set(image_paths(other)) <= local_blobs(dev_server)


def test_only_the_creator_deletes(dev_server: DevServer) -> None:
    s = dev_server.session()
    job = succeeded(dev_server, s)
    colleague = dev_server.token_for(uuid.uuid4(), uuid.UUID(s.project_id))
    stranger = dev_server.token_for(uuid.uuid4(), uuid.uuid4())
    r = delete(dev_server, colleague, job["id"])
    assert r.status_code == 403
    validate_error(r.json(), "forbidden")
    r = delete(dev_server, stranger, job["id"])
    assert r.status_code == 404
    validate_error(r.json(), "not_found")
    assert dev_server.client.delete(f"/api/nano-banana/jobs/{job['id']}").status_code == 401
    assert delete(dev_server, s, "not-a-uuid").status_code == 404
    assert dev_server.job(s, job["id"])["status"] == "succeeded"
    assert set(image_paths(job)) <= local_blobs(dev_server)


def test_deleting_the_middle_of_a_three_turn_thread(dev_server: DevServer) -> None:
    s = dev_server.session()
    first = succeeded(dev_server, s, prompt="turn the sky orange")
    second = dev_server.wait_for(s, refine(dev_server, s, first, "birds", variant=1).json()["jobId"], {"succeeded"})
    third = dev_server.wait_for(s, refine(dev_server, s, second, "night").json()["jobId"], {"succeeded"})

    r = delete(dev_server, s, second["id"])
    assert r.status_code == 200, r.text
    assert r.json()["deleted"][0] == second["id"]
    assert sorted(r.json()["deleted"]) == sorted([second["id"], third["id"]])
    assert dev_server.job(s, first["id"])["status"] == "succeeded"
    thread = dev_server.client.get(f"/api/nano-banana/jobs/{first['id']}/messages", headers=s.headers).json()
    assert {m["jobId"] for m in thread["messages"]} == {first["id"]}
    assert set(image_paths(first)) <= local_blobs(dev_server), "the variant the refinement came from stays"
    for gone in (second, third):
        assert blob_files(dev_server, f"jobs/{gone['id']}") == []
        assert dev_server.client.get(f"/api/nano-banana/jobs/{gone['id']}", headers=s.headers).status_code == 404


def _logged(server: DevServer, event: str, job_id: str, timeout_s: float = 30) -> dict[str, Any]:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        for line in server.logs().splitlines():
            entry = json.loads(line) if line.startswith("{") else {}
            if entry.get("event") == event and entry.get("jobId") == job_id:
                return dict(entry)
        time.sleep(0.1)
    raise AssertionError(f"no {event} for {job_id} in the log")


def test_deleting_a_running_job_frees_the_slot_and_discards_the_late_result(start: StartServer) -> None:
    server = start(
        NANO_BANANA_PREVIEW_DELAY_MS="4000",
        NANO_BANANA_MAX_ACTIVE_PER_PROJECT="1",
        NANO_BANANA_CORS_ORIGINS="https://builder.example.com",
    )
    s = server.session()
    job_id = server.create_job(s).json()["jobId"]
    server.wait_for(s, job_id, {"running"})
    assert server.create_job(s).status_code == 429, "the one slot is taken"
    stream_ended: list[object] = []

    def watch() -> None:
        try:  # read timeout under the 15 s heartbeat: the deletion's cancel is notified, and ends the stream
            with httpx.stream(
                "GET", f"{server.api}/jobs/{job_id}/events", headers=s.headers, timeout=httpx.Timeout(10.0)
            ) as stream:
                for _ in stream.iter_lines():
                    pass
            stream_ended.append("ended")
        except httpx.HTTPError as exc:
            stream_ended.append(exc)

    watcher = threading.Thread(target=watch)
    watcher.start()
    time.sleep(0.5)  # the stream is open and listening

    r = delete(server, s, job_id)
    assert r.status_code == 200, r.text
    watcher.join(15)
    assert stream_ended == ["ended"], "an open event stream ends when its job is deleted"
    assert r.json() == {"deleted": [job_id]}
    nxt = server.create_job(s)
    assert nxt.status_code == 202, "the slot is free at once"

    _logged(server, "result_discarded", job_id)  # the generator finished after the deletion
    assert blob_files(server, f"jobs/{job_id}") == []
    assert server.client.get(f"/api/nano-banana/jobs/{job_id}", headers=s.headers).status_code == 404
    server.wait_for(s, nxt.json()["jobId"], {"succeeded"})

    preflight = server.client.options(
        f"/api/nano-banana/jobs/{job_id}",
        headers={"Origin": "https://builder.example.com", "Access-Control-Request-Method": "DELETE"},
    )
    assert "DELETE" in preflight.headers["Access-Control-Allow-Methods"]


@pytest.fixture
def start(dev_server_factory: StartServer) -> StartServer:
    return dev_server_factory


@pytest.mark.storage
def test_delete_on_supabase_storage(start: StartServer) -> None:
    storage = StorageServer(KEY)
    try:
        server = start(NANO_BANANA_STORAGE="supabase", SUPABASE_URL=storage.url, SUPABASE_SERVICE_ROLE_KEY=KEY)
        s = server.session()
        job = succeeded(server, s)
        kept = succeeded(server, s)
        assert set(image_paths(job)) <= set(storage.objects)
        r = delete(server, s, job["id"])
        assert r.status_code == 200, r.text
        assert not [k for k in storage.objects if k.startswith(f"jobs/{job['id']}/")]
        assert job["inputPath"] not in storage.objects
        assert not_found(server, s, image_paths(job)) == image_paths(job)
        assert set(image_paths(kept)) <= set(storage.objects)
        assert not_found(server, s, image_paths(kept)) == []
        assert ("DELETE", "/storage/v1/object/pip-ai-images") in storage.calls
    finally:
        storage.stop()


def erase(server: DevServer, user: str, *extra: str) -> dict[str, Any]:
    done = subprocess.run(
        [str(BIN / "nano-banana"), "erase-user", "--user", user, *extra],
        env=server.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def test_erase_user_twice_and_dry_run(start: StartServer) -> None:
    server = start()
    s = server.session()
    colleague = server.token_for(uuid.uuid4(), uuid.UUID(s.project_id))
    mine = succeeded(server, s)
    their_refinement = server.wait_for(
        colleague, refine(server, colleague, mine, "more").json()["jobId"], {"succeeded"}
    )
    theirs = succeeded(server, colleague)
    before = local_blobs(server)

    dry = erase(server, s.user_id, "--dry-run")
    assert dry["dryRun"] is True
    assert dry["backends"]["database"].startswith("the embedded local Postgres in ")
    assert dry["backends"]["storage"].startswith("local blobs in ")
    assert sorted(dry["jobIds"]) == sorted([mine["id"], their_refinement["id"]])
    assert set(dry["paths"]) == set(image_paths(mine)) | set(image_paths(their_refinement))
    assert local_blobs(server) == before, "a dry run changes nothing"
    assert server.job(s, mine["id"])["status"] == "succeeded"

    report = erase(server, s.user_id)
    assert (report["dryRun"], report["jobs"], report["blobs"]) == (False, 2, len(dry["paths"]))
    assert set(report["paths"]) == set(dry["paths"])
    assert report["rateLimits"] == "deleted"
    assert local_blobs(server) == before - set(dry["paths"])
    assert not any(p.startswith(f"inputs/{s.user_id}/") for p in local_blobs(server))
    for job in (mine, their_refinement):
        assert server.client.get(f"/api/nano-banana/jobs/{job['id']}", headers=s.headers).status_code == 404
    assert server.job(colleague, theirs["id"])["status"] == "succeeded"

    again = erase(server, s.user_id)
    assert (again["jobs"], again["blobs"], again["paths"]) == (0, 0, [])
    assert server.client.get("/healthz").status_code == 200, "the dev server's Postgres kept running"


@pytest.mark.firestore
@pytest.mark.cloudtasks
@pytest.mark.storage
def test_erase_user_on_the_production_adapters(cloud_server: Callable[..., tuple[DevServer, Any]]) -> None:  # noqa: F811
    """The command with the functions' settings: Firestore (emulator), Cloud Tasks (real client, fake
    server), Supabase Storage through storage3 (local Storage server), Postgres."""
    from google.cloud import firestore

    storage = StorageServer(KEY)
    try:
        server, _ = cloud_server(
            NANO_BANANA_STORAGE="supabase", SUPABASE_URL=storage.url, SUPABASE_SERVICE_ROLE_KEY=KEY
        )
        s = server.session()
        job = succeeded(server, s)
        client = firestore.Client(project="test-project")
        rate = client.collection("nano_banana_rate").document(s.user_id)
        assert rate.get().exists, "the user's rate window is in Firestore"
        assert set(image_paths(job)) <= set(storage.objects)

        report = erase(server, s.user_id)
        assert (report["jobIds"], sorted(report["paths"])) == ([job["id"]], sorted(image_paths(job)))
        assert report["backends"]["storage"] == f"Supabase Storage, bucket pip-ai-images at {storage.url}"
        assert report["backends"]["limits"].startswith("Firestore database (default) of test-project")
        assert report["backends"]["queue"].startswith("Cloud Tasks queue ")
        assert not rate.get().exists, "the rate document is gone"
        assert not [k for k in storage.objects if job["id"] in k or k.startswith(f"inputs/{s.user_id}/")]
        assert server.client.get(f"/api/nano-banana/jobs/{job['id']}", headers=s.headers).status_code == 404
        assert erase(server, s.user_id)["jobs"] == 0
        client.close()
    finally:
        storage.stop()
