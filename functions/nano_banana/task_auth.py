"""Who may call the task entry points: Cloud Tasks, carrying a Google-signed OIDC ID token.

The token must be signed by one of Google's keys (fetched from the certs URL, cached), be meant for
this endpoint (`aud`), and name our tasks service account as a verified `email`.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import Any

import google.auth.exceptions
import google.auth.transport
import google.auth.transport.requests
import jwt
from google.oauth2 import id_token

from nano_banana.errors import Unauthenticated, Unavailable

_log = logging.getLogger("nano_banana")

GOOGLE_CERTS_URL = "https://www.googleapis.com/oauth2/v1/certs"
_ISSUERS = frozenset({"https://accounts.google.com", "accounts.google.com"})
_DEFAULT_TTL_S = 300.0
_MAX_TTL_S = 3600.0
_FETCH_TIMEOUT_S = 5.0
_CLOCK_SKEW_S = 10


class _CachingRequest(google.auth.transport.Request):
    """google-auth's HTTP request, remembering successful GETs (the signing certs) for their max-age.

    google-auth fetches the certs on every verification otherwise: one extra HTTPS round trip per task.
    """

    def __init__(self) -> None:
        self._inner = google.auth.transport.requests.Request()
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, Any]] = {}

    def __call__(
        self,
        url: str,
        method: str = "GET",
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Any:
        if method != "GET":
            return self._inner(url, method=method, body=body, headers=headers, timeout=timeout, **kwargs)
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(url)
        if hit is not None and hit[0] > now:
            return hit[1]
        response = self._inner(url, method="GET", headers=headers, timeout=timeout or _FETCH_TIMEOUT_S, **kwargs)
        if response.status == 200:
            with self._lock:
                self._cache[url] = (now + _ttl(response.headers), response)
        return response

    def forget(self) -> None:
        with self._lock:
            self._cache.clear()


def _ttl(headers: Any) -> float:
    match = re.search(r"max-age=(\d+)", str((headers or {}).get("Cache-Control", "")))
    return min(float(match.group(1)), _MAX_TTL_S) if match else _DEFAULT_TTL_S


_request = _CachingRequest()


def verify_task_request(
    authorization: str | None, *, audience: str, service_account: str, certs_url: str | None = None
) -> None:
    """Raise Unauthenticated unless `authorization` is `Bearer <Google OIDC token>` for `audience`
    issued to `service_account`. Raises Unavailable when the signing certs cannot be fetched."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("a task request needs an OIDC bearer token")
    try:
        claims = id_token.verify_token(
            token.strip(),
            _request,
            audience=audience,
            certs_url=certs_url or GOOGLE_CERTS_URL,
            clock_skew_in_seconds=_CLOCK_SKEW_S,
        )
    except google.auth.exceptions.TransportError as exc:
        _log.warning("task token certs unavailable", extra={"event": "task_auth_certs_unavailable"})
        raise Unavailable("cannot fetch the token signing keys; retry shortly") from exc
    except (ValueError, google.auth.exceptions.GoogleAuthError, jwt.PyJWTError) as exc:
        # The reason (expired, wrong audience, bad signature) goes to the log, not to the caller.
        reason = f"{type(exc).__name__}: {str(exc).replace(token.strip(), '<token>')[:160]}"
        _log.warning("task token rejected", extra={"event": "task_auth_rejected", "reason": reason})
        raise Unauthenticated("invalid task token") from exc
    if claims.get("iss") not in _ISSUERS:
        raise Unauthenticated("invalid task token")
    if claims.get("email") != service_account or claims.get("email_verified") is not True:
        _log.warning("task token from another identity", extra={"event": "task_auth_wrong_identity"})
        raise Unauthenticated("invalid task token")
