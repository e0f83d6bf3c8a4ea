"""One contract for every BlobStore: the local directory store and Supabase Storage (storage3 against a
local server speaking the Storage REST API)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from PIL import Image

from nano_banana.adapters.blobs_local import LocalBlobStore
from nano_banana.adapters.blobs_supabase import SupabaseBlobStore
from nano_banana.errors import FileTooLarge, InvalidRequest, NotFound, Unavailable
from nano_banana.ports import BlobStore
from tests.support.storage_server import StorageServer

KEY = "service-role-key-for-tests"


def png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(buf, "PNG")
    return buf.getvalue()


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def storage_server() -> Iterator[StorageServer]:
    server = StorageServer(KEY)
    yield server
    server.stop()


@pytest.fixture(
    params=[pytest.param("local", marks=pytest.mark.unit), pytest.param("supabase", marks=pytest.mark.storage)]
)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobStore]:
    if request.param == "local":
        yield LocalBlobStore(tmp_path / "blobs", "http://127.0.0.1:9", b"k" * 32, Clock())
        return
    server = StorageServer(KEY)
    blobs = SupabaseBlobStore(server.url, KEY, "pip-ai-images", timeout_s=5)
    yield blobs
    blobs.close()
    server.stop()


def test_round_trip_overwrite_and_stat(store: BlobStore) -> None:
    data = png()
    store.put("inputs/u/a.png", data, "image/png")
    assert store.get("inputs/u/a.png", max_bytes=10_000) == data
    store.put("inputs/u/a.png", b"\x89PNG-second", "image/png")  # a redelivered task overwrites its own output
    assert store.get("inputs/u/a.png", max_bytes=10_000) == b"\x89PNG-second"
    info = store.stat("inputs/u/a.png")
    assert info is not None
    assert (info.size, info.content_type) == (len(b"\x89PNG-second"), "image/png")
    assert store.stat("inputs/u/missing.png") is None


def test_get_is_capped_and_missing_is_not_found(store: BlobStore) -> None:
    store.put("jobs/j/1/0.png", b"x" * 5000, "image/png")
    with pytest.raises(FileTooLarge):
        store.get("jobs/j/1/0.png", max_bytes=4999)
    assert len(store.get("jobs/j/1/0.png", max_bytes=5000)) == 5000
    with pytest.raises(NotFound):
        store.get("jobs/j/1/9.png", max_bytes=10)


def test_list_is_recursive_by_prefix_and_delete_is_idempotent(store: BlobStore) -> None:
    for path in ("jobs/a/1/0.png", "jobs/a/1/1.png", "jobs/a/2/0.png", "jobs/ab/1/0.png", "inputs/u/x.png"):
        store.put(path, b"d", "image/png")
    assert store.list("jobs/a/") == ["jobs/a/1/0.png", "jobs/a/1/1.png", "jobs/a/2/0.png"]
    store.delete(["jobs/a/1/0.png", "jobs/a/1/0.png", "jobs/a/9/9.png"])
    assert store.list("jobs/a/") == ["jobs/a/1/1.png", "jobs/a/2/0.png"]
    store.delete(store.list("jobs/a/"))
    assert store.list("jobs/a/") == []
    assert store.list("jobs/ab/") == ["jobs/ab/1/0.png"]


def test_list_folder_pages_one_level_with_write_times(store: BlobStore) -> None:
    """What the orphan scan walks: one level, names sorted, folders marked, objects with their last write."""
    started = datetime.now(UTC) - timedelta(seconds=5)
    for path in ("inputs/b/1.png", "inputs/a/2.png", "inputs/a/1.png", "inputs/c/x/deep.png", "jobs/j/1/0.png"):
        store.put(path, png(), "image/png")
    top = store.list_folder("inputs", offset=0, limit=10)
    assert [(e.name, e.folder) for e in top] == [("a", True), ("b", True), ("c", True)]
    assert [e.name for e in store.list_folder("inputs", offset=1, limit=1)] == ["b"]
    assert store.list_folder("inputs", offset=3, limit=10) == []
    files = store.list_folder("inputs/a", offset=0, limit=10)
    assert [(e.name, e.folder) for e in files] == [("1.png", False), ("2.png", False)]
    assert all(e.updated_at is not None and started < e.updated_at <= datetime.now(UTC) for e in files)
    assert store.list_folder("inputs/nobody", offset=0, limit=10) == []


def test_signed_urls(store: BlobStore, request: pytest.FixtureRequest) -> None:
    store.put("jobs/j/1/0.png", png(), "image/png")
    url = store.signed_url("jobs/j/1/0.png", ttl_s=60)
    upload = store.signed_upload_url("jobs/j/1/1.png", ttl_s=60)
    if isinstance(store, LocalBlobStore):
        path, query = url.split("/blobs/", 1)[1].split("?")
        params = dict(p.split("=") for p in query.split("&"))
        assert store.verify_signature("GET", path, params["exp"], params["sig"])
        assert not store.verify_signature("PUT", path, params["exp"], params["sig"]), "a read URL cannot upload"
        assert not store.verify_signature("GET", "jobs/j/1/1.png", params["exp"], params["sig"])
        assert not store.verify_signature("GET", path, str(int(params["exp"]) + 1), params["sig"])
        store._clock.now += timedelta(seconds=61)  # type: ignore[attr-defined]
        assert not store.verify_signature("GET", path, params["exp"], params["sig"]), "expired"
        return
    assert httpx.get(url).content == png()
    assert httpx.put(upload, content=b"\x89PNG-up", headers={"Content-Type": "image/png"}).status_code == 200
    assert store.get("jobs/j/1/1.png", max_bytes=100) == b"\x89PNG-up"
    assert httpx.get(url.replace("token=", "token=x")).status_code == 400


def _fetch(store: BlobStore, url: str) -> bytes | None:
    """What the URL serves: the dev server's /blobs route for the local store, HTTP for Supabase."""
    if isinstance(store, LocalBlobStore):
        path, query = url.split("/blobs/", 1)[1].split("?")
        params = dict(p.split("=") for p in query.split("&"))
        if not store.verify_signature("GET", path, params["exp"], params["sig"]):
            return None
        return store.get(path, max_bytes=10_000)
    response = httpx.get(url)
    return response.content if response.status_code == 200 else None


def test_bulk_signing_leaves_out_what_is_not_there(store: BlobStore) -> None:
    images = {f"jobs/j/1/{i}.png": png()[:-1] + bytes([i]) for i in range(3)}
    for path, data in images.items():
        store.put(path, data, "image/png")
    asked = [*images, "jobs/j/1/9.png", "inputs/nobody/x.png", "../etc/passwd"]
    urls = store.signed_urls(asked, ttl_s=60)
    assert sorted(urls) == sorted(images)
    for path, url in urls.items():
        assert _fetch(store, url) == images[path]
    assert store.signed_urls([], ttl_s=60) == {}


@pytest.mark.storage
def test_supabase_signs_in_batches_of_a_hundred(storage_server: StorageServer) -> None:
    store = SupabaseBlobStore(storage_server.url, KEY, "pip-ai-images", timeout_s=5)
    paths = [f"jobs/many/1/{i}.png" for i in range(150)]
    for path in paths:
        store.put(path, b"x", "image/png")
    before = len(storage_server.calls)
    assert sorted(store.signed_urls(paths, ttl_s=60)) == sorted(paths)
    assert storage_server.calls[before:] == [("POST", "/storage/v1/object/sign/pip-ai-images")] * 2
    store.close()


def test_paths_are_validated_locally(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path, "http://x", b"k", Clock())
    for bad in ("../etc/passwd", "/abs.png", "a/../../b.png", "a\\b.png", "a//b.png", "", "a/.hidden"):
        with pytest.raises(InvalidRequest):
            store.put(bad, b"x", "image/png")


@pytest.mark.storage
def test_supabase_retries_then_unavailable(storage_server: StorageServer) -> None:
    store = SupabaseBlobStore(storage_server.url, KEY, "pip-ai-images", timeout_s=2, max_retries=2)
    storage_server.fail_next = 2
    store.put("inputs/u/a.png", b"x", "image/png")  # two 500s, then success
    storage_server.fail_next = 10
    with pytest.raises(Unavailable):
        store.put("inputs/u/b.png", b"x", "image/png")
    storage_server.fail_next = 0
    wrong = SupabaseBlobStore(storage_server.url, "wrong-key", "pip-ai-images", timeout_s=2)
    with pytest.raises(Exception) as info:
        wrong.put("inputs/u/c.png", b"x", "image/png")
    assert KEY not in str(info.value)
    store.close()
    wrong.close()


@pytest.mark.storage
def test_supabase_unreachable_is_unavailable() -> None:
    store = SupabaseBlobStore("http://127.0.0.1:9", KEY, "pip-ai-images", timeout_s=0.5, max_retries=1)
    with pytest.raises(Unavailable):
        store.get("inputs/u/a.png", max_bytes=10)
    store.close()
