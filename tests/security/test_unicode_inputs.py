"""Any unicode, in any form field, JSON string, query parameter, header or path segment of every route,
never yields a 5xx: the real app (Flask test client) over the embedded Postgres. Postgres text rejects
NUL and UTF-8 cannot encode a lone surrogate ("\\ud800" in JSON), so both must be refused as bad input
before they reach the database, the blob store or a log line."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.test import TestResponse

from nano_banana import auth, bootstrap
from nano_banana.bootstrap import Runtime
from nano_banana.dev import create_app
from nano_banana.embedded_pg import EmbeddedPostgres
from nano_banana.settings import Settings
from tests.support.devserver import png_bytes

pytestmark = [pytest.mark.security, pytest.mark.postgres]

SECRET = "unicode-property-test-secret-0123456789abcdef"
BASE = "/api/nano-banana"

# Every code point, lone surrogates and NUL included (hypothesis leaves surrogates out by default).
ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=40)
EDGE_TEXT = st.sampled_from(
    ["\x00", "a\x00b", "\ud800", "x\udfff", "²", "\u0661\u0662", "\U0001d7da", "\u202e", "\ufeff", " 2 "]
)
TEXT = st.one_of(ANY_TEXT, EDGE_TEXT)


@dataclass
class App:
    client: FlaskClient
    headers: dict[str, str]
    project_id: str
    job_id: str
    variant_id: str
    input_path: str


@pytest.fixture(scope="module")
def app(embedded_pg: EmbeddedPostgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    settings = Settings(
        NANO_BANANA_DATABASE_URL=embedded_pg.uri,
        NANO_BANANA_JWT_SECRET=SECRET,
        NANO_BANANA_DATA_DIR=tmp_path_factory.mktemp("unicode"),
        NANO_BANANA_RATE_PER_HOUR="100000",
        NANO_BANANA_MAX_ACTIVE_PER_PROJECT="100000",
        NANO_BANANA_LOG_LEVEL="ERROR",
    )
    rt: Runtime = bootstrap.build(settings)
    try:
        user, project = uuid.uuid4(), uuid.uuid4()
        rt.services.store.add_member(project, user)
        headers = {"Authorization": f"Bearer {auth.issue_dev_token(SECRET, user)}"}
        client = create_app(rt).test_client()
        created = client.post(
            f"{BASE}/jobs",
            data={"projectId": str(project), "prompt": "a seed job", "image": (io.BytesIO(png_bytes()), "a.png")},
            headers=headers,
        )
        assert created.status_code == 202, created.get_data(as_text=True)
        job_id = created.get_json()["jobId"]
        job = _wait_succeeded(client, headers, job_id)
        yield App(client, headers, str(project), job_id, job["variants"][0]["id"], job["inputPath"])
    finally:
        rt.close()


def _wait_succeeded(client: FlaskClient, headers: dict[str, str], job_id: str) -> dict[str, Any]:
    import time

    for _ in range(400):
        job: dict[str, Any] = client.get(f"{BASE}/jobs/{job_id}", headers=headers).get_json()
        if job["status"] == "succeeded":
            return job
        time.sleep(0.05)
    raise AssertionError(f"the seed job stayed {job['status']}")


def _raw(text: str) -> bytes:
    """What a client puts on the wire for this text: UTF-8, lone surrogates as their (invalid) bytes."""
    return text.encode("utf-8", "surrogatepass")


def _header(text: str) -> str:
    """A header value carrying these bytes (WSGI headers are latin-1 strings of the raw bytes)."""
    return _raw(text).decode("latin-1").replace("\r", " ").replace("\n", " ")


def _query(params: dict[str, str]) -> str:
    return "&".join(f"{quote(k)}={quote(_raw(v))}" for k, v in params.items())


def _assert_no_5xx(r: TestResponse, what: object, *, envelope: bool = True) -> None:
    assert r.status_code < 500, (what, r.status_code, r.get_data(as_text=True)[:500])
    if r.status_code >= 400 and envelope:
        assert r.get_json()["error"]["code"], what  # the envelope, with a stable code


def _field(valid: str) -> st.SearchStrategy[str]:
    """A field that is either valid (so the request gets past it to the next field) or any text."""
    return st.one_of(st.just(valid), TEXT)


PROPERTY = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)


@PROPERTY
@given(data=st.data())
def test_multipart_create_never_5xx(app: App, data: st.DataObject) -> None:
    fields = {
        "projectId": data.draw(_field(app.project_id)),
        "prompt": data.draw(_field("make it warmer")),
        "variantCount": data.draw(_field("1")),
        "aspectRatio": data.draw(_field("4:3")),
    }
    key = data.draw(st.one_of(st.none(), TEXT))
    headers = {**app.headers, **({"Idempotency-Key": _header(key)} if key is not None else {})}
    boundary = "unicodeprop"
    body = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode() + _raw(value) + b"\r\n"
        for name, value in fields.items()
    )
    body += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode() + png_bytes(8, 8)
    body += f"\r\n--{boundary}--\r\n".encode()
    r = app.client.post(
        f"{BASE}/jobs", data=body, content_type=f"multipart/form-data; boundary={boundary}", headers=headers
    )
    _assert_no_5xx(r, (fields, key))


@PROPERTY
@given(data=st.data())
def test_json_create_and_refine_never_5xx(app: App, data: st.DataObject) -> None:
    # Everything is drawn before the first request (the app's own randomness must not run inside a draw).
    create = {
        "projectId": data.draw(_field(app.project_id)),
        "prompt": data.draw(_field("again, warmer")),
        "inputPath": data.draw(_field(app.input_path)),
        "aspectRatio": data.draw(_field("1:1")),
    }
    refine = {
        "jobId": data.draw(_field(app.job_id)),
        "variantId": data.draw(_field(app.variant_id)),
        "prompt": data.draw(_field("now at night")),
    }
    key = data.draw(st.one_of(st.none(), TEXT))
    paths = {"paths": data.draw(st.lists(_field(app.input_path), min_size=1, max_size=3))}
    odd = {data.draw(TEXT): data.draw(TEXT)}  # a JSON key can be any text too
    headers = {**app.headers, **({"Idempotency-Key": _header(key)} if key is not None else {})}
    for path, body, sent_headers in (
        ("/jobs", create, app.headers),
        ("/messages", refine, headers),
        ("/signed-urls", paths, app.headers),
        ("/jobs", odd, app.headers),
    ):
        r = app.client.post(
            f"{BASE}{path}", data=json.dumps(body), content_type="application/json", headers=sent_headers
        )
        _assert_no_5xx(r, (path, body, key))


@PROPERTY
@given(data=st.data())
def test_queries_and_path_segments_never_5xx(app: App, data: st.DataObject) -> None:
    listing = {
        "projectId": data.draw(_field(app.project_id)),
        "status": data.draw(_field("succeeded")),
        "limit": data.draw(_field("5")),
        "cursor": data.draw(TEXT),
    }
    blocks = {
        "variantId": data.draw(_field(app.variant_id)),
        "type": data.draw(_field("image_compare")),
        "layout": data.draw(_field("slider")),
    }
    segment = quote(_raw(data.draw(TEXT)), safe="")
    ticket = {"ticket": data.draw(TEXT)}
    r = app.client.get(f"{BASE}/jobs?{_query(listing)}", headers=app.headers)
    _assert_no_5xx(r, listing)
    r = app.client.get(f"{BASE}/jobs/{app.job_id}/blocks?{_query(blocks)}", headers=app.headers)
    _assert_no_5xx(r, blocks)
    for method, path in (
        ("GET", f"/jobs/{segment}"),
        ("GET", f"/jobs/{segment}/messages"),
        ("POST", f"/jobs/{segment}/cancel"),
        ("POST", f"/jobs/{segment}/events-ticket"),
        ("GET", f"/jobs/{segment}/events"),
    ):
        r = app.client.open(f"{BASE}{path}", method=method, headers=app.headers)
        # A control character in the path never reaches the API in the dev app (Flask's router answers
        # 404 itself); the deployed functions hand every path to the API.
        _assert_no_5xx(r, path, envelope=r.mimetype == "application/json")
    r = app.client.get(f"{BASE}/jobs/{app.job_id}/events?{_query(ticket)}")
    _assert_no_5xx(r, ticket)


@PROPERTY
@given(token=TEXT, origin=TEXT, trace=TEXT)
def test_headers_never_5xx(app: App, token: str, origin: str, trace: str) -> None:
    headers = {
        "Authorization": _header(f"Bearer {token}"),
        "Origin": _header(origin),
        "X-Cloud-Trace-Context": _header(trace),
        "traceparent": _header(trace),
    }
    r = app.client.get(f"{BASE}/jobs/{app.job_id}", headers=headers)
    _assert_no_5xx(r, headers)
    r = app.client.post(f"{BASE}/callback", data=_raw(token), headers={"webhook-id": _header(trace)})
    _assert_no_5xx(r, token)


def test_the_reported_cases_are_422(app: App) -> None:
    """Issue 13 item 8: a superscript digit and a NUL in the prompt answered 500 and 503."""
    for fields in ({"variantCount": "²"}, {"prompt": "a\x00b"}, {"variantCount": "\u0661"}):
        form = {"projectId": app.project_id, "prompt": "p", **fields, "image": (io.BytesIO(png_bytes()), "a.png")}
        r = app.client.post(f"{BASE}/jobs", data=form, headers=app.headers)
        assert r.status_code == 422, (fields, r.get_data(as_text=True))
        assert r.get_json()["error"]["code"] == "invalid_request"
    for body in ({"prompt": "\ud800"}, {"prompt": "nul \x00 here"}):
        full = {"jobId": app.job_id, "variantId": app.variant_id, **body}
        r = app.client.post(
            f"{BASE}/messages", data=json.dumps(full), content_type="application/json", headers=app.headers
        )
        assert r.status_code == 422, (body, r.get_data(as_text=True))
    before = app.client.get(f"{BASE}/jobs?projectId={app.project_id}&limit=100", headers=app.headers).get_json()
    assert all("\x00" not in job["prompt"] for job in before["jobs"])
