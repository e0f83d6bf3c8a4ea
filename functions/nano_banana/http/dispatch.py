"""Routing, CORS, request logging and ETags around the handlers; every failure becomes the error envelope."""

from __future__ import annotations

import hashlib
import logging
import re
import time
from typing import Any

from flask import Request, Response

from nano_banana import log as logs
from nano_banana.errors import (
    MethodNotAllowed,
    NanoBananaError,
    NotFound,
)
from nano_banana.http.api import BASE_PATH, Api
from nano_banana.http.rendering import error_response
from nano_banana.http.routes import ROUTES, Handler

log = logging.getLogger("nano_banana")


def route(routes: list[tuple[str, re.Pattern[str], Handler]], method: str, path: str) -> tuple[Handler, dict[str, str]]:
    """Find the handler for a path (with or without the /api/nano-banana base)."""
    if path.startswith(BASE_PATH):
        path = path[len(BASE_PATH) :] or "/"
    path = path.rstrip("/") or "/"
    allowed = []
    for verb, pattern, handler in routes:
        match = pattern.match(path)
        if match:
            if verb == method or (verb == "GET" and method == "HEAD"):
                return handler, match.groupdict()
            allowed.append(verb)
    if allowed:
        raise MethodNotAllowed(f"use {' or '.join(allowed)} here", details={"allowed": allowed})
    raise NotFound("no such route", details={"path": path[:200]})


CORS_ALLOW_HEADERS = "Authorization, Content-Type, Idempotency-Key"


# What a cross-origin page may read: when to retry after 429/503, where a created job lives.
CORS_EXPOSE_HEADERS = "Retry-After, Location, RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset, X-Request-Id"


def handle(api: Api, request: Request, routes: list[tuple[str, re.Pattern[str], Handler]] = ROUTES) -> Response:
    """One API request: its log lines carry its id and trace, the answer carries X-Request-Id, and one
    `request` line records the outcome (status, error code, time until the response started)."""
    started = time.perf_counter()
    with logs.request_scope(request.headers.items(), api.services.settings.gcp_project) as fields:
        response = _with_cors(api, request, routes)
        if request.method == "GET" and response.status_code == 200 and response.mimetype == "application/json":
            _revalidated(request, response)
        response.headers["X-Request-Id"] = fields["requestId"]
        outcome: dict[str, Any] = {
            "event": "request",
            "method": request.method,
            "path": request.path[:200],
            "status": response.status_code,
            "durationMs": round((time.perf_counter() - started) * 1000, 1),
        }
        if response.status_code >= 400 and response.mimetype == "application/json":
            code = (response.get_json(silent=True) or {}).get("error", {}).get("code")
            if isinstance(code, str):
                outcome["code"] = code
        log.info("request", extra=outcome)
    return response


def _revalidated(request: Request, response: Response) -> None:
    """GET answers carry an ETag of their body and may be kept by the caller's browser, which asks again
    every time (`private, no-cache`): a poll of an unchanged job is a bodiless 304. Signed URLs are
    stable while young, so an unchanged job renders to the same bytes. Nothing is served without a
    fresh, authorised read: the ETag is computed from this caller's own answer."""
    response.set_etag(hashlib.sha256(response.get_data()).hexdigest()[:32])
    response.headers["Cache-Control"] = "private, no-cache"
    response.make_conditional(request)


def _with_cors(api: Api, request: Request, routes: list[tuple[str, re.Pattern[str], Handler]]) -> Response:
    """Dispatch one request, answering CORS for the builder's origins (NANO_BANANA_CORS_ORIGINS): the
    builder's page lives on another origin than the function, and sends an Authorization header, so every
    call is preflighted."""
    allowed = api.services.settings.cors_origins
    origin = request.headers.get("Origin")
    granted = origin if origin and ("*" in allowed or origin in allowed) else None
    if granted and request.method == "OPTIONS" and request.headers.get("Access-Control-Request-Method"):
        response = Response(status=204)
        response.headers["Access-Control-Allow-Methods"] = "GET, POST, DELETE"
        response.headers["Access-Control-Allow-Headers"] = CORS_ALLOW_HEADERS
        response.headers["Access-Control-Max-Age"] = "600"
    else:
        response = _dispatch(api, request, routes)
        if granted:
            response.headers["Access-Control-Expose-Headers"] = CORS_EXPOSE_HEADERS
    if granted:
        response.headers["Access-Control-Allow-Origin"] = granted
    if allowed:
        response.vary.add("Origin")  # the answer depends on the Origin header: caches must keep them apart
    return response


def _dispatch(api: Api, request: Request, routes: list[tuple[str, re.Pattern[str], Handler]]) -> Response:
    """Route one request; every failure becomes the error envelope, never a stack trace."""
    try:
        handler, params = route(routes, request.method, request.path)
        return handler(api, request, params)
    except NanoBananaError as exc:
        if exc.status >= 500:
            log.warning(exc.message, extra={"event": "request_failed", "code": exc.code, "path": request.path[:200]})
        return error_response(exc)
    except Exception as exc:
        log.error(
            "unhandled error",
            extra={"event": "internal_error", "errorType": type(exc).__name__, "path": request.path[:200]},
        )
        return error_response(NanoBananaError("internal error"))
