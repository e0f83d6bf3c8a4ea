"""Structured logs: one JSON line per event, never a secret, a token or image bytes."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
_SECRETISH = re.compile(
    r"(?i)(bearer\s+[A-Za-z0-9._~+/=-]+|eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9._-]+|"
    r"(?:key|token|secret|signature|sig|password)=[^&\s\"']+|postgres(?:ql)?://[^\s\"']+)"
)

log = logging.getLogger("nano_banana")

# Fields every line logged while handling one request carries: its id and, when the platform traced it,
# the Cloud Logging trace and span (Logs Explorer then groups our lines under the request's own entry).
_request_fields: ContextVar[dict[str, str]] = ContextVar("nano_banana_request_fields", default={})  # noqa: B039
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")
_CLOUD_TRACE = re.compile(r"^([0-9a-fA-F]{32})(?:/([0-9]{1,20}))?(?:;o=[0-9])?$")
_EXECUTION_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
TRACE_FIELD = "logging.googleapis.com/trace"
SPAN_FIELD = "logging.googleapis.com/spanId"


def redact(text: str) -> str:
    """Mask anything that looks like a token, key, signature or connection string."""
    return _SECRETISH.sub("[redacted]", text)


def request_fields(headers: Iterable[tuple[str, str]], gcp_project: str | None) -> dict[str, str]:
    """A new request id (ours: a caller cannot choose it), the platform's execution id when it sent one
    (Cloud Functions' `Function-Execution-Id`), and the trace the platform or the
    caller sent (W3C `traceparent`, else `X-Cloud-Trace-Context`). Header values that are not exactly
    the documented shapes are ignored: nothing a caller sends reaches a log line unchecked."""
    given = {name.lower(): value.strip() for name, value in headers}
    fields: dict[str, str] = {}
    execution_id = given.get("function-execution-id", "")
    fields["requestId"] = uuid.uuid4().hex[:16]
    if _EXECUTION_ID.match(execution_id):
        fields["executionId"] = execution_id
    trace = span = None
    if match := _TRACEPARENT.match(given.get("traceparent", "")):
        trace, span = match.group(1), match.group(2)
    elif match := _CLOUD_TRACE.match(given.get("x-cloud-trace-context", "")):
        trace = match.group(1).lower()
        if match.group(2) and 0 < int(match.group(2)) < 2**64:
            span = f"{int(match.group(2)):016x}"  # Cloud Logging wants the span id as 16 hex digits
    if trace and trace.strip("0"):
        fields[TRACE_FIELD] = f"projects/{gcp_project}/traces/{trace}" if gcp_project else trace
        if span and span.strip("0"):
            fields[SPAN_FIELD] = span
    return fields


@contextmanager
def request_scope(headers: Iterable[tuple[str, str]], gcp_project: str | None) -> Iterator[dict[str, str]]:
    """Bind the request's fields to every line logged inside the block (per thread or task)."""
    fields = request_fields(headers, gcp_project)
    token = _request_fields.set(fields)
    try:
        yield fields
    finally:
        _request_fields.reset(token)


def request_id() -> str | None:
    """The id of the request being handled, for error bodies (support quotes it back to us)."""
    return _request_fields.get().get("requestId")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "severity": record.levelname,
            "message": redact(record.getMessage()),
            **_request_fields.get(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = redact(value) if isinstance(value, str) else value
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            entry["errorType"] = type(exc).__name__
            entry["error"] = redact(str(exc))[:500]
        return json.dumps(entry, default=str, separators=(",", ":"))


def configure(level: str = "INFO") -> None:
    """Route the package's logs to stdout as JSON lines (Cloud Logging parses `severity`)."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    log.handlers[:] = [handler]
    log.setLevel(level.upper())
    log.propagate = False


@contextmanager
def timed(event: str, **fields: Any) -> Iterator[dict[str, Any]]:
    """Log `event` with durationMs when the block ends; the block may add fields to the dict."""
    start = time.perf_counter()
    extra: dict[str, Any] = {"event": event, **fields}
    try:
        yield extra
    finally:
        extra["durationMs"] = round((time.perf_counter() - start) * 1000, 1)
        log.info(event, extra=extra)


@contextmanager
def warming(
    event: str,
    failed_event: str,
    *,
    done: str,
    failed: str,
    errors: tuple[type[Exception], ...] = (Exception,),
) -> Iterator[None]:
    """A warm-up: log `event` with durationMs when the block ends, or `failed_event` with errorType and
    durationMs when it raises one of `errors`, which is swallowed (a warm-up never fails its caller: the
    first real call reports its own failure)."""
    start = time.monotonic()
    try:
        yield
    except errors as exc:
        log.warning(
            failed,
            extra={
                "event": failed_event,
                "errorType": type(exc).__name__,
                "durationMs": round((time.monotonic() - start) * 1000),
            },
        )
    else:
        log.info(done, extra={"event": event, "durationMs": round((time.monotonic() - start) * 1000)})
