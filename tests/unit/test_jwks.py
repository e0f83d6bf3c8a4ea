"""Asymmetric Supabase tokens (ES256/RS256) verified against a JWKS endpoint served locally."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from nano_banana.auth import TokenVerifier
from nano_banana.errors import Unauthenticated, Unavailable
from tests.support.jwks_server import JwksServer

pytestmark = pytest.mark.unit

EC_KEY = ec.generate_private_key(ec.SECP256R1())
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_EC = ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def jwks_url() -> Iterator[str]:
    server = JwksServer({"ec-1": (EC_KEY, "ES256"), "rsa-1": (RSA_KEY, "RS256")})
    yield server.url
    server.stop()


def token(key: Any, alg: str, kid: str, **claims: Any) -> str:
    base = {"sub": str(uuid.uuid4()), "aud": "authenticated", "exp": int(time.time()) + 600, "role": "authenticated"}
    return jwt.encode({**base, **claims}, key, algorithm=alg, headers={"kid": kid})


def test_es256_and_rs256_tokens_verify_through_jwks(jwks_url: str) -> None:
    verifier = TokenVerifier(secret=None, audience="authenticated", jwks_url=jwks_url)
    user = uuid.uuid4()
    assert verifier.user_id(f"Bearer {token(EC_KEY, 'ES256', 'ec-1', sub=str(user))}") == user
    assert verifier.user_id(f"Bearer {token(RSA_KEY, 'RS256', 'rsa-1', sub=str(user))}") == user


def test_an_unreachable_jwks_is_503_not_401() -> None:
    from nano_banana.errors import Unavailable

    verifier = TokenVerifier(secret=None, audience="authenticated", jwks_url="http://127.0.0.1:9/jwks.json")
    with pytest.raises(Unavailable):
        verifier.user_id(f"Bearer {token(EC_KEY, 'ES256', 'ec-1')}")


def test_forged_or_confused_tokens_are_refused(jwks_url: str) -> None:
    verifier = TokenVerifier(
        secret="hs-secret-hs-secret-hs-secret-hs-secret", audience="authenticated", jwks_url=jwks_url
    )
    for bad in (
        token(OTHER_EC, "ES256", "ec-1"),  # signed by another key under a known kid
        token(EC_KEY, "ES256", "unknown-kid"),
        token(EC_KEY, "ES256", "ec-1", aud="anon"),
        token(EC_KEY, "ES256", "ec-1", exp=int(time.time()) - 120),
    ):
        with pytest.raises(Unauthenticated):
            verifier.user_id(f"Bearer {bad}")
    # Algorithm confusion: an HS256 token whose secret is the public key's PEM must not pass.
    no_jwks = TokenVerifier(secret=None, audience="authenticated", jwks_url=jwks_url)
    with pytest.raises(Unauthenticated):
        no_jwks.user_id(
            f"Bearer {jwt.encode({'sub': str(uuid.uuid4()), 'aud': 'authenticated', 'exp': int(time.time()) + 60}, 'x' * 40, algorithm='HS256')}"
        )


def test_prefetched_keys_serve_the_first_token(jwks_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cold instance fetches the keys in the background; its first token is verified from them."""
    verifier = TokenVerifier(secret=None, audience="authenticated", jwks_url=jwks_url)
    verifier.prefetch()

    def offline() -> Any:
        raise AssertionError("the keys were fetched again")

    monkeypatch.setattr(verifier._jwks, "fetch_data", offline)
    user = uuid.uuid4()
    assert verifier.user_id(f"Bearer {token(EC_KEY, 'ES256', 'ec-1', sub=str(user))}") == user


def test_a_failed_prefetch_is_logged_and_the_first_token_reports_its_own_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    verifier = TokenVerifier(secret=None, audience="authenticated", jwks_url="http://127.0.0.1:9/jwks.json")
    with caplog.at_level("WARNING", logger="nano_banana"):
        verifier.prefetch()  # raises nothing
    (line,) = [r for r in caplog.records if getattr(r, "event", None) == "jwks_prefetch_failed"]
    assert line.errorType == "PyJWKClientConnectionError"
    with pytest.raises(Unavailable):  # the token's own fetch fails too: a 503, not a wait on the prefetch
        verifier.user_id(f"Bearer {token(EC_KEY, 'ES256', 'ec-1')}")
