"""Hostile uploads: each gets its documented 4xx, nothing is stored or reserved, memory stays bounded."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.fixtures import make_hostile
from tests.support.devserver import DevServer, png_bytes, png_of_size

pytestmark = pytest.mark.security
CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "hostile"
MANIFEST = json.loads((CORPUS / "manifest.json").read_text())
MiB = 1024 * 1024


def test_committed_corpus_matches_its_generator(tmp_path: Path) -> None:
    make_hostile.write(tmp_path)
    for name in MANIFEST:
        assert (tmp_path / name).read_bytes() == (CORPUS / name).read_bytes(), name
    assert json.loads((tmp_path / "manifest.json").read_text()) == MANIFEST


def input_blobs(server: DevServer, user_id: str) -> int:
    root = server.data_dir / "blobs" / "inputs" / user_id
    return len([p for p in root.rglob("*") if p.is_file() and not p.name.endswith(".meta")]) if root.exists() else 0


def test_every_hostile_file_gets_its_answer_and_reserves_nothing(dev_server_factory: Callable[..., DevServer]) -> None:
    server = dev_server_factory(NANO_BANANA_RATE_PER_HOUR="5", NANO_BANANA_MAX_ACTIVE_PER_PROJECT="100")
    s = server.session()
    accepted = 0
    for name, expected in sorted(MANIFEST.items()):
        before = input_blobs(server, s.user_id)
        r = server.create_job(s, image=(CORPUS / name).read_bytes(), filename=name)
        assert r.status_code == expected["status"], (name, r.text)
        if expected["code"]:
            assert r.json()["error"]["code"] == expected["code"], name
            assert input_blobs(server, s.user_id) == before, f"{name} left a blob"
        else:
            accepted += 1
            # What is stored is the image alone: no appended archive, no metadata.
            job = server.job(s, r.json()["jobId"])
            stored = (server.data_dir / "blobs" / job["inputPath"]).read_bytes()
            assert b"PK\x03\x04" not in stored, name
            assert b"AAAAAAAA" not in stored, name
            assert len(stored) < len((CORPUS / name).read_bytes()), name
    # The rejected requests reserved nothing: exactly 5 - accepted more jobs fit in the hour.
    for _ in range(5 - accepted):
        assert server.create_job(s).status_code == 202
    assert server.create_job(s).status_code == 429


def test_exactly_10_mib_passes_and_one_byte_more_is_413(dev_server_factory: Callable[..., DevServer]) -> None:
    server = dev_server_factory()
    s = server.session()
    exact = png_of_size(10 * MiB)
    assert len(exact) == 10 * MiB
    assert server.create_job(s, image=exact).status_code == 202
    r = server.create_job(s, image=exact + b"\x00")
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "file_too_large"


def test_gigantic_fields_and_bodies(dev_server: DevServer) -> None:
    s = dev_server.session()
    r = dev_server.create_job(s, prompt="p" * MiB)
    assert r.status_code == 422
    assert r.json()["error"]["details"]["field"] == "prompt"
    r = dev_server.client.post(
        "/api/nano-banana/messages",
        content=b"{" + b" " * 200_000 + b"}",
        headers={**s.headers, "Content-Type": "application/json"},
    )
    assert r.status_code == 413
    r = dev_server.client.post(
        "/api/nano-banana/jobs",
        data={"projectId": s.project_id, "prompt": "x"},
        files=[("image", ("a.png", png_bytes(), "image/png"))] * 2,
        headers=s.headers,
    )
    assert r.status_code == 422


def test_server_memory_stays_bounded_under_a_huge_streamed_body(dev_server_factory: Callable[..., DevServer]) -> None:
    server = dev_server_factory()
    s = server.session()
    process = psutil.Process(server.process.pid)
    baseline = process.memory_info().rss
    peak = [baseline]
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()

    def body() -> Iterator[bytes]:
        yield b'--b\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\nContent-Type: image/png\r\n\r\n'
        chunk = b"\x89PNG" + b"\x00" * (MiB - 4)
        for _ in range(200):
            yield chunk

    status: int | None = None
    try:
        r = httpx.post(
            f"{server.api}/jobs",
            content=body(),
            headers={**s.headers, "Content-Type": "multipart/form-data; boundary=b"},
            timeout=60,
        )
        status = r.status_code
    except httpx.HTTPError:
        status = None  # the server may close the connection once it has answered
    finally:
        done.set()
        watcher.join()
    assert status in (413, None)
    growth = peak[0] - baseline
    assert growth < 60 * MiB, f"RSS grew by {growth / MiB:.0f} MiB while refusing a 200 MiB body"
    assert server.client.get("/healthz").status_code == 200
