"""Iterative refinement threads and Document Builder blocks, end to end over HTTP."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.support.devserver import DevServer, Session
from tests.support.openapi import validate, validate_error

pytestmark = pytest.mark.e2e


def succeeded_job(server: DevServer, s: Session, **kwargs: Any) -> dict[str, Any]:
    r = server.create_job(s, **kwargs)
    assert r.status_code == 202, r.text
    return server.wait_for(s, r.json()["jobId"], {"succeeded"})


def refine(
    server: DevServer, s: Session, job: dict[str, Any], prompt: str, variant: int = 0, **headers: str
) -> httpx.Response:
    body = {"jobId": job["id"], "variantId": job["variants"][variant]["id"], "prompt": prompt}
    return server.client.post("/api/nano-banana/messages", json=body, headers={**s.headers, **headers})


def thread(server: DevServer, s: Session, job_id: str) -> dict[str, Any]:
    r = server.client.get(f"/api/nano-banana/jobs/{job_id}/messages", headers=s.headers)
    assert r.status_code == 200, r.text
    validate(r.json(), "Thread")
    body: dict[str, Any] = r.json()
    return body


def test_three_turn_thread_chains_messages_parents_and_inputs(dev_server: DevServer) -> None:
    s = dev_server.session()
    first = succeeded_job(dev_server, s, prompt="turn the sky orange")
    r = refine(dev_server, s, first, "now add birds", variant=1)
    assert r.status_code == 202, r.text
    validate(r.json(), "RefineCreated")
    second = dev_server.wait_for(s, r.json()["jobId"], {"succeeded"})
    third_id = refine(dev_server, s, second, "make it night").json()["jobId"]
    third = dev_server.wait_for(s, third_id, {"succeeded"})

    assert second["threadId"] == third["threadId"] == first["id"]
    assert (second["parentJobId"], second["sourceVariantId"]) == (first["id"], first["variants"][1]["id"])
    assert (third["parentJobId"], third["sourceVariantId"]) == (second["id"], second["variants"][0]["id"])
    assert second["inputPath"] == first["variants"][1]["storagePath"]
    assert third["inputPath"] == second["variants"][0]["storagePath"]
    assert (third["inputWidth"], third["inputHeight"]) == (
        second["variants"][0]["width"],
        second["variants"][0]["height"],
    )

    for job_id in (first["id"], second["id"], third["id"]):  # the same thread from any job in it
        messages = thread(dev_server, s, job_id)["messages"]
        assert [(m["role"], m["jobId"]) for m in messages] == [
            ("user", first["id"]),
            ("assistant", first["id"]),
            ("user", second["id"]),
            ("assistant", second["id"]),
            ("user", third["id"]),
            ("assistant", third["id"]),
        ]
    assert [m["content"] for m in messages if m["role"] == "user"] == [
        "turn the sky orange",
        "now add birds",
        "make it night",
    ]
    assert messages[2]["variantId"] == first["variants"][1]["id"]
    assert messages[1]["variantId"] == first["variants"][0]["id"]
    assert all(m["job"]["status"] == "succeeded" and m["job"]["variants"] for m in messages)
    # The preview generator draws the turn number: the third turn's image differs from a fresh job's.
    assert httpx.get(third["variants"][0]["url"]).content != httpx.get(first["variants"][0]["url"]).content


def test_refinement_rejections_write_nothing(dev_server_factory: Callable[..., DevServer]) -> None:
    server = dev_server_factory(NANO_BANANA_TIMEOUT_S="1", NANO_BANANA_PREVIEW_DELAY_MS="2500")
    s = server.session()
    failed = server.wait_for(s, server.create_job(s).json()["jobId"], {"failed"})
    body = {"jobId": failed["id"], "variantId": str(uuid.uuid4()), "prompt": "again"}
    r = server.client.post("/api/nano-banana/messages", json=body, headers=s.headers)
    assert r.status_code == 409
    validate_error(r.json(), "invalid_transition")
    assert len(thread(server, s, failed["id"])["messages"]) == 2


def test_refining_across_projects_or_threads_is_404(dev_server: DevServer) -> None:
    s = dev_server.session()
    a = succeeded_job(dev_server, s)
    b = succeeded_job(dev_server, s)
    # A variant of another thread's job, named with this job's id.
    body = {"jobId": a["id"], "variantId": b["variants"][0]["id"], "prompt": "mix"}
    r = dev_server.client.post("/api/nano-banana/messages", json=body, headers=s.headers)
    assert r.status_code == 404
    validate_error(r.json(), "not_found")
    stranger = dev_server.token_for(uuid.uuid4(), uuid.uuid4())
    r = refine(dev_server, stranger, a, "steal")
    assert r.status_code == 404
    for job in (a, b):
        assert len(thread(dev_server, s, job["id"])["messages"]) == 2
    r = dev_server.client.post("/api/nano-banana/messages", json={"jobId": a["id"]}, headers=s.headers)
    assert r.status_code == 422
    r = refine(dev_server, s, a, "x" * 2001)
    assert r.status_code == 422
    validate_error(r.json(), "invalid_request")


def test_concurrent_refinements_of_one_variant_are_separate_jobs(dev_server: DevServer) -> None:
    s = dev_server.session()
    root = succeeded_job(dev_server, s)
    results: list[httpx.Response] = []
    barrier = threading.Barrier(2)

    def go(prompt: str) -> None:
        barrier.wait()
        with httpx.Client(base_url=dev_server.url, timeout=30) as c:
            body = {"jobId": root["id"], "variantId": root["variants"][0]["id"], "prompt": prompt}
            results.append(c.post("/api/nano-banana/messages", json=body, headers=s.headers))

    threads = [threading.Thread(target=go, args=(p,)) for p in ("left", "right")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.status_code for r in results] == [202, 202]
    ids = {r.json()["jobId"] for r in results}
    assert len(ids) == 2
    for job_id in ids:
        job = dev_server.wait_for(s, job_id, {"succeeded"})
        assert job["parentJobId"] == root["id"]
    assert len(thread(dev_server, s, root["id"])["messages"]) == 6


def test_refine_idempotency_and_turn_limit(dev_server_factory: Callable[..., DevServer]) -> None:
    server = dev_server_factory(NANO_BANANA_MAX_THREAD_TURNS="2")
    s = server.session()
    root = succeeded_job(server, s)
    first = refine(server, s, root, "one more", **{"Idempotency-Key": "r1"})
    again = refine(server, s, root, "one more", **{"Idempotency-Key": "r1"})
    assert (first.status_code, again.status_code) == (202, 200)
    assert first.json()["jobId"] == again.json()["jobId"]
    assert refine(server, s, root, "different", **{"Idempotency-Key": "r1"}).status_code == 409
    server.wait_for(s, first.json()["jobId"], {"succeeded"})
    r = refine(server, s, root, "a third turn")
    assert r.status_code == 422
    assert r.json()["error"]["details"]["maxTurns"] == 2


def test_blocks(dev_server: DevServer) -> None:
    s = dev_server.session()
    job = succeeded_job(dev_server, s, prompt="a cosy reading nook")
    variant = job["variants"][1]
    base = f"/api/nano-banana/jobs/{job['id']}/blocks"
    image = dev_server.client.get(base, params={"variantId": variant["id"], "type": "image"}, headers=s.headers)
    assert image.status_code == 200, image.text
    validate(image.json(), "ImageBlock")
    props = image.json()["props"]
    assert props["storagePath"] == variant["storagePath"]
    assert (props["width"], props["height"]) == (variant["width"], variant["height"])
    assert "cosy reading nook" in props["alt"]
    assert httpx.get(props["src"]).status_code == 200
    for layout in ("slider", "side_by_side"):
        r = dev_server.client.get(
            base, params={"variantId": variant["id"], "type": "image_compare", "layout": layout}, headers=s.headers
        )
        assert r.status_code == 200
        validate(r.json(), "ImageCompareBlock")
        compare = r.json()["props"]
        assert compare["layout"] == layout
        assert compare["initialPosition"] == 50
        assert compare["before"]["storagePath"] == job["inputPath"]
        assert (compare["before"]["width"], compare["before"]["height"]) == (job["inputWidth"], job["inputHeight"])
        assert compare["after"]["storagePath"] == variant["storagePath"]
        assert httpx.get(compare["before"]["src"]).status_code == 200
    r = dev_server.client.get(base, params={"variantId": str(uuid.uuid4())}, headers=s.headers)
    assert r.status_code == 404
    r = dev_server.client.get(base, params={"variantId": variant["id"], "type": "video"}, headers=s.headers)
    assert r.status_code == 422


def test_a_refinements_compare_block_before_is_its_parent_variant_or_the_original(dev_server: DevServer) -> None:
    """`before=parent` (the default) is what the refinement was made from: the variant it refined;
    `before=original` is the photo the thread began with, two turns up."""
    s = dev_server.session()
    root = succeeded_job(dev_server, s, prompt="a porch at dusk")
    second = dev_server.wait_for(s, refine(dev_server, s, root, "add lanterns").json()["jobId"], {"succeeded"})
    third = dev_server.wait_for(s, refine(dev_server, s, second, "and snow").json()["jobId"], {"succeeded"})
    base = f"/api/nano-banana/jobs/{third['id']}/blocks"
    query = {"variantId": third["variants"][0]["id"], "type": "image_compare"}

    def before(**extra: str) -> dict[str, Any]:
        r = dev_server.client.get(base, params={**query, **extra}, headers=s.headers)
        assert r.status_code == 200, r.text
        validate(r.json(), "ImageCompareBlock")
        shown: dict[str, Any] = r.json()["props"]["before"]
        return shown

    assert before()["storagePath"] == second["variants"][0]["storagePath"] == third["inputPath"]
    assert before(before="parent") == before()
    original = before(before="original")
    assert original["storagePath"] == root["inputPath"]
    assert (original["width"], original["height"]) == (root["inputWidth"], root["inputHeight"])
    assert httpx.get(original["src"]).status_code == 200
    first = dev_server.client.get(
        f"/api/nano-banana/jobs/{root['id']}/blocks",
        params={"variantId": root["variants"][0]["id"], "type": "image_compare", "before": "original"},
        headers=s.headers,
    )
    assert first.json()["props"]["before"]["storagePath"] == root["inputPath"], "a first turn is its own original"
    r = dev_server.client.get(base, params={**query, "before": "grandparent"}, headers=s.headers)
    assert r.status_code == 422
    assert "before" in r.json()["error"]["message"]


def test_blocks_only_for_succeeded_jobs(dev_server_factory: Callable[..., DevServer]) -> None:
    server = dev_server_factory(NANO_BANANA_PREVIEW_DELAY_MS="5000")
    s = server.session()
    job_id = server.create_job(s).json()["jobId"]
    r = server.client.get(
        f"/api/nano-banana/jobs/{job_id}/blocks", params={"variantId": str(uuid.uuid4())}, headers=s.headers
    )
    assert r.status_code == 409
    validate_error(r.json(), "invalid_transition")


def test_a_stored_blocks_paths_can_be_signed_again(dev_server: DevServer) -> None:
    """A document keeps storagePath; when src expires the builder re-signs the paths its user may see."""
    s = dev_server.session()
    job = succeeded_job(dev_server, s, prompt="a reading nook")
    compare = dev_server.client.get(
        f"/api/nano-banana/jobs/{job['id']}/blocks",
        params={"variantId": job["variants"][0]["id"], "type": "image_compare"},
        headers=s.headers,
    ).json()["props"]
    before, after = compare["before"]["storagePath"], compare["after"]["storagePath"]
    foreign = f"jobs/{uuid.uuid4()}/1/0.png"
    garbage = ["../etc/passwd", f"jobs/{job['id']}/../../inputs/x.png", "inputs/not-a-uuid/x.png"]
    url = "/api/nano-banana/signed-urls"

    r = dev_server.client.post(url, json={"paths": [before, after, foreign, *garbage, after]}, headers=s.headers)
    assert r.status_code == 200, r.text
    validate(r.json(), "SignedUrls")
    body = r.json()
    assert set(body["urls"]) == {before, after}
    assert body["notFound"] == [foreign, *garbage]
    for path, signed in body["urls"].items():
        assert httpx.get(signed).content == httpx.get(compare["before" if path == before else "after"]["src"]).content

    # Someone outside the project sees nothing; a bad body is 422; no token is 401.
    stranger = dev_server.token_for(uuid.uuid4())
    r = dev_server.client.post(url, json={"paths": [before, after]}, headers=stranger.headers)
    assert r.json() == {**r.json(), "urls": {}, "notFound": [before, after]}
    for bad in ({"paths": []}, {"paths": ["x"] * 51}, {"paths": "x"}, {"paths": ["x"], "more": 1}):
        r = dev_server.client.post(url, json=bad, headers=s.headers)
        assert r.status_code == 422, bad
        validate_error(r.json(), "invalid_request")
    assert dev_server.client.post(url, json={"paths": [before]}).status_code == 401
