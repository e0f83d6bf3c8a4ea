"""Per job: the model, the resolution and reference images (issue 29), end to end on the dev server."""

from __future__ import annotations

import io
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.support.devserver import DevServer, Session, png_bytes
from tests.support.openapi import validate, validate_error

pytestmark = pytest.mark.e2e

JOBS = "/api/nano-banana/jobs"
FLASH, PRO = "gemini-2.5-flash-image", "gemini-3-pro-image-preview"
LOGO, STYLE = png_bytes(40, 30, (0, 0, 255)), png_bytes(30, 40, (0, 255, 0))


def _post(
    server: DevServer, s: Session, refs: list[bytes], headers: dict[str, str] | None = None, **fields: str
) -> httpx.Response:
    data = {"projectId": s.project_id, "prompt": "put the logo on it", "variantCount": "1", **fields}
    files = [("image", ("photo.png", png_bytes(), "image/png"))]
    files += [("reference", (f"ref{i}.png", ref, "image/png")) for i, ref in enumerate(refs)]
    return server.client.post(JOBS, data=data, files=files, headers={**s.headers, **(headers or {})})


def _stored(server: DevServer) -> list[Path]:
    root = server.data_dir / "blobs"
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))


def _pixel(data: bytes, xy: tuple[int, int]) -> Any:
    with Image.open(io.BytesIO(data)) as img:
        return img.convert("RGB").getpixel(xy)


def test_two_references_with_the_default_model_at_1k(dev_server: DevServer) -> None:
    s = dev_server.session()
    r = _post(dev_server, s, [LOGO, STYLE], model=FLASH, resolution="1K")
    assert r.status_code == 202, r.text
    job = dev_server.wait_for(s, r.json()["jobId"], {"succeeded"})
    validate(job, "Job")
    assert (job["model"], job["resolution"]) == (FLASH, "1K")
    refs = job["references"]
    assert [ref["path"] for ref in refs] == [f"jobs/{job['id']}/refs/0.png", f"jobs/{job['id']}/refs/1.png"]
    assert [(ref["width"], ref["height"], ref["mimeType"]) for ref in refs] == [
        (40, 30, "image/png"),
        (30, 40, "image/png"),
    ]
    for ref, sent in zip(refs, (LOGO, STYLE), strict=True):
        got = httpx.get(ref["url"], timeout=10).content
        assert len(got) == ref["bytes"]
        assert Image.open(io.BytesIO(got)).getpixel((0, 0)) == Image.open(io.BytesIO(sent)).getpixel((0, 0))
    # The preview renders at the asked size (long edge 1024 for 1K), the references as thumbnails in the
    # top-right corner (first rightmost: the logo's blue), and the before/after block keeps the input.
    (variant,) = job["variants"]
    assert max(variant["width"], variant["height"]) == 1024
    output = httpx.get(variant["url"], timeout=10).content
    assert _pixel(output, (variant["width"] - 30, 30)) == (0, 0, 255)
    block = dev_server.client.get(
        f"{JOBS}/{job['id']}/blocks",
        params={"variantId": variant["id"], "type": "image_compare"},
        headers=s.headers,
    ).json()
    assert block["props"]["before"]["storagePath"] == job["inputPath"]
    # The references go with the job.
    assert dev_server.client.delete(f"{JOBS}/{job['id']}", headers=s.headers).status_code == 200
    assert not [p for p in _stored(dev_server) if f"jobs/{job['id']}/" in p.as_posix()]


def test_refusals_store_nothing(dev_server: DevServer) -> None:
    s, other = dev_server.session(), dev_server.token_for(uuid.uuid4(), uuid.uuid4())
    theirs = dev_server.wait_for(other, dev_server.create_job(other).json()["jobId"], {"succeeded"})
    mine = dev_server.wait_for(s, dev_server.create_job(s).json()["jobId"], {"succeeded"})
    before, jobs = _stored(dev_server), dev_server.job_count(s)
    refused = {
        "unknown model": (_post(dev_server, s, [], model="gemini-9-ultra"), 422, "model"),
        "size the model lacks": (_post(dev_server, s, [], model=FLASH, resolution="4K"), 422, "resolution"),
        "one reference too many": (_post(dev_server, s, [LOGO, STYLE, LOGO]), 422, "reference"),
        "a text file": (_post(dev_server, s, [b"hello, not an image\n"]), 415, "reference"),
    }
    body = {"projectId": s.project_id, "prompt": "again", "inputPath": mine["inputPath"]}
    for name, paths, status, field in (
        ("another user's upload", [theirs["inputPath"]], 403, "referencePaths"),
        ("another project's variant", [theirs["variants"][0]["storagePath"]], 403, "referencePaths"),
        ("three paths", [mine["inputPath"]] * 3, 422, "reference"),
    ):
        refused[name] = (
            dev_server.client.post(JOBS, json={**body, "referencePaths": paths}, headers=s.headers),
            status,
            field,
        )
    for name, (r, status, field) in refused.items():
        assert r.status_code == status, (name, r.text)
        validate_error(r.json(), {403: "forbidden", 415: "unsupported_media_type", 422: "invalid_request"}[status])
        assert r.json()["error"]["details"]["field"] == field, name
    assert "gemini-2.5-flash-image" in refused["size the model lacks"][0].json()["error"]["message"]
    assert refused["size the model lacks"][0].json()["error"]["details"]["model"] == FLASH
    assert _stored(dev_server) == before
    assert dev_server.job_count(s) == jobs


def test_reference_paths_and_the_key_fingerprint(dev_server: DevServer) -> None:
    s = dev_server.session()
    first = dev_server.wait_for(s, _post(dev_server, s, [LOGO]).json()["jobId"], {"succeeded"})
    paths = [first["inputPath"], first["variants"][0]["storagePath"]]
    body = {"projectId": s.project_id, "prompt": "in this style", "inputPath": first["inputPath"], "variantCount": 1}
    key = {"Idempotency-Key": f"refs-{uuid.uuid4()}"}
    r = dev_server.client.post(JOBS, json={**body, "referencePaths": paths}, headers={**s.headers, **key})
    assert r.status_code == 202, r.text
    job = dev_server.wait_for(s, r.json()["jobId"], {"succeeded"})
    assert [ref["path"] for ref in job["references"]] == paths
    assert job["references"][0]["width"] == first["inputWidth"]
    assert job["model"] == FLASH
    assert job["resolution"] is None
    again = dev_server.client.post(JOBS, json={**body, "referencePaths": paths}, headers={**s.headers, **key})
    assert again.status_code == 200
    assert again.json()["jobId"] == job["id"]
    other = dev_server.client.post(JOBS, json={**body, "referencePaths": paths[:1]}, headers={**s.headers, **key})
    assert other.status_code == 409, "another reference list is another request"
    assert other.json()["error"]["code"] == "idempotency_conflict"
    # Deleting the first job keeps the blobs the second still references (an upload, a variant).
    assert dev_server.client.delete(f"{JOBS}/{first['id']}", headers=s.headers).status_code == 200
    assert not [p for p in _stored(dev_server) if f"jobs/{first['id']}/refs/" in p.as_posix()], "its own go"
    for ref in dev_server.job(s, job["id"])["references"]:
        assert httpx.get(ref["url"], timeout=10).status_code == 200, ref["path"]


def test_a_model_with_sizes_renders_the_asked_size(dev_server_factory: Any) -> None:
    server: DevServer = dev_server_factory(NANO_BANANA_MODELS=f"{FLASH},{PRO}")
    config = server.client.get("/api/nano-banana/config").json()
    validate(config, "Config")
    assert config["models"] == [
        {"name": FLASH, "resolutions": ["1K"], "maxReferences": 2},
        {"name": PRO, "resolutions": ["1K", "2K", "4K"], "maxReferences": 13},
    ]
    s = server.session()
    r = _post(server, s, [LOGO, STYLE, LOGO], model=PRO, resolution="2K", aspectRatio="16:9")
    assert r.status_code == 202, r.text
    job = server.wait_for(s, r.json()["jobId"], {"succeeded"})
    assert (job["model"], job["resolution"], len(job["references"])) == (PRO, "2K", 3)
    assert (job["variants"][0]["width"], job["variants"][0]["height"]) == (2048, 1152)
