"""The HTTP edge of the `api` function: parse, call one use case, render. Errors become one envelope.

Rooms: api (what a request is served with), bodies (parsing and validation), rendering, routes (one handler
per route), dispatch (routing, CORS, logging)."""

from __future__ import annotations

from nano_banana.http.api import BASE_PATH, Api
from nano_banana.http.dispatch import CORS_ALLOW_HEADERS, CORS_EXPOSE_HEADERS, handle, route
from nano_banana.http.rendering import (
    error_response,
    job_renderer,
    render_block,
    render_job,
    render_jobs,
    render_variant,
)
from nano_banana.http.routes import ROUTES, Handler

__all__ = [
    "BASE_PATH",
    "CORS_ALLOW_HEADERS",
    "CORS_EXPOSE_HEADERS",
    "ROUTES",
    "Api",
    "Handler",
    "error_response",
    "handle",
    "job_renderer",
    "render_block",
    "render_job",
    "render_jobs",
    "render_variant",
    "route",
]
