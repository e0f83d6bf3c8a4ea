"""task_auth against real RS256 ID tokens and a local certs endpoint (Google's v1 certs format)."""

from __future__ import annotations

import dataclasses
import socket
import time
from collections.abc import Iterator

import pytest

from nano_banana.errors import Unauthenticated, Unavailable
from nano_banana.task_auth import verify_task_request
from tests.support.fake_cloudtasks import CertsServer, mint_id_token, new_signing_key, signing_key

AUDIENCE = "https://us-central1-demo.cloudfunctions.net/nano-banana-generate"
SA = "tasks-invoker@demo.iam.gserviceaccount.com"

pytestmark = pytest.mark.unit


@pytest.fixture
def certs() -> Iterator[CertsServer]:
    server = CertsServer()
    try:
        yield server
    finally:
        server.stop()


def _verify(header: str | None, certs: CertsServer, *, audience: str = AUDIENCE, sa: str = SA) -> None:
    verify_task_request(header, audience=audience, service_account=sa, certs_url=certs.url)


def test_a_good_token_passes(certs: CertsServer) -> None:
    _verify(f"Bearer {mint_id_token(audience=AUDIENCE, email=SA)}", certs)


def test_the_signing_certs_are_cached(certs: CertsServer) -> None:
    for _ in range(5):
        _verify(f"Bearer {mint_id_token(audience=AUDIENCE, email=SA)}", certs)
    assert certs.fetches == 1


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(lambda: mint_id_token(audience="https://elsewhere.example/x", email=SA), id="wrong-audience"),
        pytest.param(lambda: mint_id_token(audience=AUDIENCE, email="someone@evil.example"), id="wrong-email"),
        pytest.param(lambda: mint_id_token(audience=AUDIENCE, email=SA, email_verified=False), id="email-unverified"),
        pytest.param(
            lambda: mint_id_token(audience=AUDIENCE, email=SA, issued_at=time.time() - 7200, lifetime_s=3600),
            id="expired",
        ),
        pytest.param(lambda: mint_id_token(audience=AUDIENCE, email=SA, issuer="https://evil.example"), id="issuer"),
        pytest.param(lambda: mint_id_token(audience=AUDIENCE, email=SA, key=new_signing_key()), id="unknown-key"),
        pytest.param(
            lambda: mint_id_token(
                audience=AUDIENCE, email=SA, key=dataclasses.replace(new_signing_key(), kid=signing_key().kid)
            ),
            id="forged-signature",
        ),
        pytest.param(lambda: "garbage", id="garbage"),
        pytest.param(lambda: "a.b.c", id="three-garbage-segments"),
    ],
)
def test_a_bad_token_is_unauthenticated(certs: CertsServer, token: object) -> None:
    with pytest.raises(Unauthenticated) as raised:
        _verify(f"Bearer {token()}", certs)  # type: ignore[operator]
    assert raised.value.status == 401
    assert raised.value.message == "invalid task token"  # the reason stays in the log


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer   ", "Basic dXNlcjpwYXNz", "token-without-scheme"])
def test_a_missing_or_malformed_header_is_unauthenticated(certs: CertsServer, header: str | None) -> None:
    with pytest.raises(Unauthenticated):
        _verify(header, certs)


def test_unreachable_certs_are_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(Unavailable):
        verify_task_request(
            f"Bearer {mint_id_token(audience=AUDIENCE, email=SA)}",
            audience=AUDIENCE,
            service_account=SA,
            certs_url=f"http://127.0.0.1:{port}/certs",
        )
