"""How the Supabase adapter and the URL signer meet storage-api's failures, against the local server that
answers as storage-api v1.70.6 does (HTTP 400 with the real status in the body, scoped JWT tokens)."""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest
from flask import Flask, request

from nano_banana import tasks, usecases
from nano_banana.adapters.blobs_supabase import SupabaseBlobStore
from nano_banana.adapters.limits_memory import MemoryLimits
from nano_banana.adapters.postgres import PostgresJobStore
from nano_banana.errors import InvalidRequest, NotFound, StorageMisconfigured, TransientError, Unavailable
from nano_banana.images import inspect_image
from nano_banana.settings import Settings
from nano_banana.signing import UrlSigner
from tests.support.devserver import png_bytes
from tests.support.recording_queue import RecordingQueue
from tests.support.storage_server import StorageServer

pytestmark = pytest.mark.storage
KEY = "service-role-key-for-tests"
BUCKET = "pip-ai-images"


@pytest.fixture
def server() -> Iterator[StorageServer]:
    s = StorageServer(KEY)
    s.objects["inputs/u/a.png"] = (b"\x89PNG-input", "image/png")
    yield s
    s.stop()


def store(server: StorageServer, key: str = KEY, bucket: str = BUCKET) -> SupabaseBlobStore:
    return SupabaseBlobStore(server.url, key, bucket, timeout_s=2, max_retries=2)


# ------------------------------------------------------------ the stand-in answers as storage-api does


def test_the_stand_in_answers_like_storage_api(server: StorageServer) -> None:
    base = f"{server.url}/storage/v1"
    auth = {"Authorization": f"Bearer {KEY}", "apikey": KEY}
    missing = httpx.get(f"{base}/object/{BUCKET}/inputs/u/none.png", headers=auth)
    assert (missing.status_code, missing.json()) == (
        400,
        {"statusCode": "404", "code": "NoSuchKey", "error": "not_found", "message": "Object not found"},
    )
    no_bucket = httpx.get(f"{base}/object/info/other/inputs/u/a.png", headers=auth).json()
    assert (no_bucket["statusCode"], no_bucket["code"]) == ("404", "NoSuchBucket")
    # A missing bucket elsewhere: list is [], delete 200, bulk signing 200 with per-path errors, upload "404".
    assert httpx.post(f"{base}/object/list/other", headers=auth, json={"prefix": ""}).json() == []
    gone = httpx.request("DELETE", f"{base}/object/other", headers=auth, json={"prefixes": ["inputs/u/a.png"]})
    assert (gone.status_code, gone.json()) == (200, [])
    bulk = httpx.post(f"{base}/object/sign/other", headers=auth, json={"expiresIn": 60, "paths": ["inputs/u/a.png"]})
    assert bulk.status_code == 200
    assert bulk.json()[0]["signedURL"] is None
    upload = httpx.post(f"{base}/object/other/x.png", headers=auth, files={"file": ("x.png", b"x", "image/png")})
    assert (upload.json()["statusCode"], upload.json()["code"]) == ("404", "InvalidRequest")
    wrong = {"Authorization": "Bearer not-our-key"}
    assert httpx.get(f"{base}/object/{BUCKET}/inputs/u/a.png", headers=wrong).json()["code"] == "NoSuchBucket"
    denied = httpx.post(f"{base}/object/list/{BUCKET}", headers=wrong, json={"prefix": ""})
    assert (denied.status_code, denied.json()["statusCode"], denied.json()["code"]) == (400, "403", "AccessDenied")
    for bad in ("inputs/u/%C3%A9.png", "inputs/u/a%23b.png", "inputs/u/a%3Fb.png"):
        refused = httpx.get(f"{base}/object/{BUCKET}/{bad}", headers=auth).json()
        assert refused["code"] == "InvalidKey", bad
    sign = f"{base}/object/sign/{BUCKET}"
    assert httpx.post(sign, headers=auth, json={"expiresIn": 60, "paths": []}).json()["code"] == "InvalidRequest"
    many = {"expiresIn": 60, "paths": [f"p/{i}" for i in range(1001)]}
    assert httpx.post(sign, headers=auth, json=many).json()["message"].endswith("more than 1000 items")
    zero = httpx.post(f"{sign}/inputs/u/a.png", headers=auth, json={"expiresIn": 0})
    assert (zero.status_code, zero.json()["message"]) == (400, "body/expiresIn must be >= 1")
    # Scoped tokens: a download token does not upload, and a token for one object serves no other.
    url = (
        server.url
        + "/storage/v1"
        + httpx.post(f"{sign}/inputs/u/a.png", headers=auth, json={"expiresIn": 60}).json()["signedURL"]
    )
    assert httpx.get(url).content == b"\x89PNG-input"
    token = url.split("token=")[1]
    as_upload = httpx.put(f"{base}/object/upload/sign/{BUCKET}/inputs/u/a.png?token={token}", content=b"x")
    assert as_upload.json()["code"] == "InvalidSignature"
    other = httpx.get(f"{base}/object/sign/{BUCKET}/inputs/u/b.png?token={token}").json()
    assert (other["code"], other["message"]) == ("InvalidSignature", "Invalid signature")
    assert httpx.get(f"{base}/object/sign/{BUCKET}/inputs/u/a.png?token={token}x").json()["code"] == "InvalidJWT"
    del server.objects["inputs/u/a.png"]
    assert httpx.get(url).json()["code"] == "NoSuchKey", "a signed GET of a deleted object"
    # Injected: a lock (HTTP 400, "423" in the body, as storage-api renders it) and a gateway's 503.
    server.inject(423, "ResourceLocked", route="GET object/")
    locked = httpx.get(f"{base}/object/{BUCKET}/inputs/u/a.png", headers=auth)
    assert (locked.status_code, locked.json()["statusCode"], locked.json()["code"]) == (400, "423", "ResourceLocked")
    server.inject(503, "DatabaseReadOnly", http_status=503)
    assert httpx.post(f"{base}/object/list/{BUCKET}", headers=auth, json={}).status_code == 503


def test_a_multipart_upload_url_put_is_parsed_and_a_raw_one_kept_as_sent(server: StorageServer) -> None:
    blobs = store(server)
    upload = blobs.signed_upload_url("jobs/j/1/0.png", ttl_s=600)
    files = {"file": ("0.png", b"\x89PNG-multipart", "image/png")}
    assert httpx.put(upload, files=files).status_code == 200
    assert server.objects["jobs/j/1/0.png"] == (b"\x89PNG-multipart", "image/png")
    raw = blobs.signed_upload_url("jobs/j/1/1.png", ttl_s=600)
    assert httpx.put(raw, content=b"\x89PNG-raw").status_code == 200
    assert server.objects["jobs/j/1/1.png"] == (b"\x89PNG-raw", "application/octet-stream")
    blobs.close()


# ------------------------------------------------------------ defect 1: get


def test_a_locked_object_is_retried_and_then_unavailable_never_not_found(server: StorageServer) -> None:
    blobs = store(server)
    server.inject(423, "ResourceLocked", times=2, route="GET object/")
    assert blobs.get("inputs/u/a.png", max_bytes=100) == b"\x89PNG-input", "two locked answers, then the object"
    server.inject(423, "ResourceLocked", times=10, route="GET object/")
    with pytest.raises(Unavailable) as info:
        blobs.get("inputs/u/a.png", max_bytes=100)
    assert not isinstance(info.value, StorageMisconfigured)
    server.clear_injected()
    server.inject(503, "LockTimeout", times=10)
    with pytest.raises(Unavailable):
        blobs.get("inputs/u/a.png", max_bytes=100)
    server.clear_injected()
    server.inject(429, "SlowDown", times=1)
    assert blobs.get("inputs/u/a.png", max_bytes=100) == b"\x89PNG-input"
    with pytest.raises(NotFound):
        blobs.get("inputs/u/none.png", max_bytes=100)
    blobs.close()


@pytest.mark.parametrize(
    ("key", "bucket", "cause"),
    [("wrong-key", BUCKET, "bucket_not_found"), (KEY, "no-such-bucket", "bucket_not_found")],
    ids=["wrong key", "missing bucket"],
)
def test_get_with_our_configuration_wrong_is_misconfigured_not_missing(
    server: StorageServer, key: str, bucket: str, cause: str
) -> None:
    """storage-api answers GET with a wrong key as an anonymous caller: "Bucket not found"."""
    blobs = store(server, key, bucket)
    calls = len(server.calls)
    with pytest.raises(StorageMisconfigured) as info:
        blobs.get("inputs/u/a.png", max_bytes=100)
    assert info.value.cause == cause
    assert info.value.status == 503
    assert len(server.calls) == calls + 1, "a configuration error is not retried"
    assert KEY not in str(info.value.message)
    blobs.close()


def test_other_calls_with_a_wrong_key_say_the_key_is_rejected(server: StorageServer) -> None:
    blobs = store(server, "wrong-key")
    for call in (
        lambda: blobs.put("inputs/u/b.png", b"x", "image/png"),
        lambda: blobs.signed_urls(["inputs/u/a.png"], ttl_s=60),
        lambda: blobs.signed_upload_url("jobs/j/1/0.png", ttl_s=60),
        lambda: blobs.list("inputs/"),
    ):
        with pytest.raises(StorageMisconfigured) as info:
            call()
        assert info.value.cause == "key_rejected"
    blobs.close()


# ------------------------------------------------------------ defect 3: stat and readiness


def test_stat_is_none_only_for_a_missing_object(server: StorageServer) -> None:
    assert store(server).stat("inputs/u/none.png") is None
    for blobs in (store(server, "wrong-key"), store(server, KEY, "no-such-bucket")):
        with pytest.raises(StorageMisconfigured):
            blobs.stat("inputs/u/a.png")
    server.inject(423, "ResourceLocked", times=10)
    with pytest.raises(Unavailable):
        store(server).stat("inputs/u/a.png")


def test_readiness_says_whether_the_key_or_the_bucket_is_wrong(server: StorageServer) -> None:
    store(server).check_access()
    cases = {
        "key_rejected": store(server, "wrong-key"),
        "key_not_service_role": store(server, server.anon_key),
        "bucket_not_found": store(server, KEY, "no-such-bucket"),
    }
    for cause, blobs in cases.items():
        with pytest.raises(StorageMisconfigured) as info:
            blobs.check_access()
        assert info.value.cause == cause
    assert store(server, KEY, "no-such-bucket").signed_urls(["inputs/u/a.png"], ttl_s=60) == {}, (
        "bulk signing in a missing bucket is a 200 with per-path errors: only readiness can tell"
    )
    with pytest.raises(Unavailable):
        SupabaseBlobStore("http://127.0.0.1:9", KEY, BUCKET, timeout_s=0.5, max_retries=0).check_access()


# ------------------------------------------------------------ defect 4: paths storage refuses


@pytest.mark.parametrize("path", ["../etc/passwd", "inputs/../jobs/x.png", "inputs/./a.png", "a#b.png", "é.png", "a?b"])
def test_paths_storage_refuses_are_invalid_requests(server: StorageServer, path: str) -> None:
    blobs = store(server)
    calls = len(server.calls)
    for call in (
        lambda: blobs.get(path, max_bytes=10),
        lambda: blobs.put(path, b"x", "image/png"),
        lambda: blobs.stat(path),
        lambda: blobs.signed_url(path, ttl_s=60),
        lambda: blobs.signed_upload_url(path, ttl_s=60),
    ):
        with pytest.raises(InvalidRequest) as info:
            call()
        assert info.value.status == 422
    assert len(server.calls) == calls, "refused before any round trip"
    assert blobs.signed_urls([path, "inputs/u/a.png"], ttl_s=60).keys() == {"inputs/u/a.png"}
    blobs.delete([path])


# ------------------------------------------------------------ defect 2: the signer


class Clock:
    def __call__(self) -> datetime:
        return datetime.now(UTC)


@pytest.mark.parametrize(("status", "code"), [(423, "ResourceLocked"), (403, "AccessDenied")])
def test_the_signer_degrades_on_a_storage_refusal(server: StorageServer, status: int, code: str) -> None:
    signer = UrlSigner(store(server), ttl_s=60, clock=Clock())
    server.inject(status, code, times=20, route="POST object/sign/")
    signed = signer.sign(["inputs/u/a.png"])
    assert signed.urls == {}, "URLs left out (null), the response still goes out"
    with pytest.raises(Unavailable):
        signer.sign(["inputs/u/a.png"], degrade=False)


# ------------------------------------------------------------ upload URLs live as long as Storage says


def test_upload_urls_expire_when_storage_says_and_fresh_ones_work(server: StorageServer) -> None:
    server.upload_url_lifetime_s = 1
    blobs = store(server)
    (url,), expires = blobs.signed_upload_urls(["jobs/j/1/0.png"], ttl_s=3600)
    assert 0 < (expires - datetime.now(UTC)).total_seconds() <= 1.5, "the token's own expiry, not the ask"
    time.sleep(2.1)
    late = httpx.put(url, content=b"\x89PNG", headers={"Content-Type": "image/png"})
    assert (late.status_code, late.json()["code"]) == (400, "InvalidJWT")
    server.upload_url_lifetime_s = 60  # a 1 s token minted late in its second can expire before the PUT
    (fresh,), _ = blobs.signed_upload_urls(["jobs/j/1/0.png"], ttl_s=3600)
    assert httpx.put(fresh, content=b"\x89PNG", headers={"Content-Type": "image/png"}).status_code == 200
    blobs.close()


# ------------------------------------------------------------ the generate task answers 503 to be redelivered


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("status", "code"), [(423, "ResourceLocked"), (503, "DatabaseTimeout"), (403, "AccessDenied")], ids=str
)
def test_the_generate_task_answers_503_on_a_storage_refusal_and_succeeds_after(
    server: StorageServer, pg_store: PostgresJobStore, status: int, code: str
) -> None:
    svc, job_id = _queued_job(server, pg_store)
    server.inject(status, code, times=100, route="GET object/pip-ai-images/inputs/")
    app = Flask(__name__)
    for _ in range(2):  # every delivery while Storage refuses: 503, and the job is neither failed nor lost
        with app.test_request_context("/generate", method="POST", json={"jobId": str(job_id)}):
            answer = tasks.handle_task(svc, request, "generate")
        assert (answer.status_code, answer.get_json()) == (503, {"retry": True})
        job = pg_store.get_job(job_id)
        assert job is not None
        assert job.status.value == "running"
    server.clear_injected()
    with app.test_request_context("/generate", method="POST", json={"jobId": str(job_id)}):
        answer = tasks.handle_task(svc, request, "generate")
    assert (answer.status_code, answer.get_json()["status"]) == (200, "succeeded")


@pytest.mark.postgres
def test_an_input_the_anon_key_cannot_see_does_not_fail_the_job(
    server: StorageServer, pg_store: PostgresJobStore
) -> None:
    """Row-level security shows the anon key every object as NoSuchKey: the generate step checks that
    Storage can be read at all before it calls an input missing for good."""
    svc, job_id = _queued_job(server, pg_store)
    anon = dataclasses.replace(svc, blobs=store(server, server.anon_key))
    with pytest.raises(TransientError):
        usecases.run_generation(anon, job_id)
    job = pg_store.get_job(job_id)
    assert job is not None
    assert job.status.value == "running"
    done = usecases.run_generation(svc, job_id)
    assert done is not None
    assert done.status.value == "succeeded"


def _queued_job(server: StorageServer, pg_store: PostgresJobStore) -> tuple[usecases.Services, uuid.UUID]:
    from nano_banana.adapters.generator_preview import PreviewGenerator

    cfg = Settings(NANO_BANANA_TIMEOUT_S=60)
    svc = usecases.Services(
        settings=cfg,
        store=pg_store,
        limits=MemoryLimits(100, 10, Clock()),
        queue=RecordingQueue(),
        blobs=store(server),
        generator_factory=lambda: PreviewGenerator(0, cfg.max_pixels),
        processor_factory=None,
        clock=Clock(),
    )
    user, project = uuid.uuid4(), uuid.uuid4()
    pg_store.add_member(project, user)
    data = png_bytes()
    upload = usecases.ImageUpload(data, inspect_image(data, max_bytes=10**6, max_pixels=10**6))
    return svc, usecases.create_job(svc, user, usecases.CreateJob(project, "edit", 2, "4:3", upload=upload)).job.id
