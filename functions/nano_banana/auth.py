"""Supabase access tokens: verified with PyJWT against the HS256 secret or the project's JWKS."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import jwt

from nano_banana.errors import Unauthenticated, Unavailable
from nano_banana.log import warming

_ASYMMETRIC = ("RS256", "ES256")
_JWKS_TIMEOUT_S = 5
_log = logging.getLogger("nano_banana")


class TokenVerifier:
    """Turns an `Authorization: Bearer …` header into the caller's user id (the token's `sub`)."""

    def __init__(self, *, secret: str | None, audience: str, jwks_url: str | None = None, leeway_s: int = 30) -> None:
        self._secret = secret
        self._audience = audience
        self._leeway_s = leeway_s
        self._jwks = (
            jwt.PyJWKClient(jwks_url, cache_keys=True, lifespan=3600, timeout=_JWKS_TIMEOUT_S) if jwks_url else None
        )
        self._prefetched = threading.Event()  # set while no prefetch is in flight
        self._prefetched.set()

    def prefetch(self) -> None:
        """Fetch the JWKS keys ahead of the first asymmetric token (a warm-up thread calls this). A token
        arriving meanwhile waits for this fetch instead of making its own. Failures are logged only: the
        first token then fetches (and reports) for itself."""
        if self._jwks is None:
            return
        self._prefetched.clear()
        try:
            with warming(
                "jwks_prefetched", "jwks_prefetch_failed", done="JWKS keys prefetched", failed="JWKS prefetch failed"
            ):
                self._jwks.get_jwk_set()
        finally:
            self._prefetched.set()

    def user_id(self, authorization: str | None) -> uuid.UUID:
        token = _bearer(authorization)
        try:
            header = jwt.get_unverified_header(token)
            alg = header.get("alg")
            if alg == "HS256" and self._secret:
                key: object = self._secret
            elif alg in _ASYMMETRIC and self._jwks is not None:
                self._prefetched.wait(_JWKS_TIMEOUT_S)
                key = self._jwks.get_signing_key_from_jwt(token).key
            else:
                raise Unauthenticated("token algorithm is not accepted")
            claims = jwt.decode(
                token,
                key,  # type: ignore[arg-type]
                algorithms=[alg],
                audience=self._audience,
                leeway=self._leeway_s,
                options={"require": ["exp", "sub", "aud"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthenticated("token has expired") from exc
        except jwt.PyJWKClientConnectionError as exc:  # the JWKS endpoint is down: not the caller's fault
            raise Unavailable("the token keys could not be fetched; retry shortly") from exc
        except jwt.PyJWTError as exc:
            raise Unauthenticated("token is not valid") from exc
        try:
            return uuid.UUID(str(claims["sub"]))
        except ValueError as exc:
            raise Unauthenticated("token subject is not a user id") from exc


def _bearer(authorization: str | None) -> str:
    if not authorization:
        raise Unauthenticated("missing Authorization: Bearer token")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip() or len(token) > 8192:
        raise Unauthenticated("Authorization must be `Bearer <token>`")
    return token.strip()


def issue_dev_token(secret: str, user_id: uuid.UUID, *, audience: str = "authenticated", ttl_s: int = 12 * 3600) -> str:
    """An HS256 token shaped like Supabase's, for local development only."""
    now = int(time.time())
    claims = {
        "sub": str(user_id),
        "aud": audience,
        "role": "authenticated",
        "iat": now,
        "exp": now + ttl_s,
        "iss": "nano-banana-dev",
    }
    return jwt.encode(claims, secret, algorithm="HS256")


def dev_token_expiry(ttl_s: int = 12 * 3600) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=ttl_s)
