"""Cloud Functions (2nd gen) entry points: `api`, `callback`, `generate`, `expire`, `webhook`, `sweep`.

Thin on purpose: each one parses nothing itself and hands the request to one module. The runtime is
built once per instance, on the first request, and each entry point imports only what it uses: `api`
answers GETs without importing Firestore or Cloud Tasks. What a first request would wait for is warmed
in the background (`Runtime.warm_up_reads` / `warm_up_writes`) without delaying any answer.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Request, Response

    from nano_banana.bootstrap import Runtime


_runtime: Runtime | None = None
_runtime_lock = threading.Lock()


def runtime() -> Runtime:
    """The instance's runtime, built once even when the first requests arrive concurrently."""
    global _runtime  # noqa: PLW0603 (one runtime per instance is the point)
    if _runtime is None:
        with _runtime_lock:
            if _runtime is None:
                from nano_banana import bootstrap
                from nano_banana.settings import load_settings

                _runtime = bootstrap.build(load_settings())
    return _runtime


_READS = frozenset({"GET", "HEAD", "OPTIONS"})


def _writer() -> Runtime:
    """The runtime of an entry point that will need the limits or the queue: they warm up meanwhile."""
    rt = runtime()
    rt.warm_up_writes()
    return rt


def api(request: Request) -> Response:
    """The builder's HTTPS API under /api/nano-banana."""
    from nano_banana import http

    rt = runtime()
    rt.warm_up_reads()
    if request.method not in _READS:
        rt.warm_up_writes()  # a write may need Firestore and Cloud Tasks: set them up while it is parsed
    response = http.handle(rt.api, request)
    response.call_on_close(rt.warm_up_writes)  # after the (first) answer is sent, ready the next write
    return response


def callback(request: Request) -> Response:
    """Signed processor callbacks (n8n or any external processor)."""
    from nano_banana import callback as callbacks

    return callbacks.handle(_writer().services, request)


def generate(request: Request) -> Response:
    """Cloud Tasks: run the model for one job."""
    from nano_banana import tasks

    return tasks.handle_task(_writer().services, request, "generate")


def expire(request: Request) -> Response:
    """Cloud Tasks, at the job's deadline: fail it with `timeout` if it is still active."""
    from nano_banana import tasks

    return tasks.handle_task(_writer().services, request, "expire")


def webhook(request: Request) -> Response:
    """Cloud Tasks (queue `webhooks`): POST one job event to the builder's server, signed. It neither
    enqueues nor touches the limits: nothing is warmed up for writes."""
    from nano_banana import tasks

    return tasks.handle_task(runtime().services, request, "webhook")


def sweep(request: Request) -> Response:
    """Cloud Scheduler, every minute: the safety net for expire tasks that never ran."""
    from nano_banana import tasks

    return tasks.handle_task(_writer().services, request, "sweep")
