"""Structured logs: one JSON line per event, never a secret, a token or image bytes."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
_SECRETISH = re.compile(
    r"(?i)(bearer\s+[A-Za-z0-9._~+/=-]+|eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9._-]+|"
    r"(?:key|token|secret|signature|sig|password)=[^&\s\"']+|postgres(?:ql)?://[^\s\"']+)"
)

log = logging.getLogger("nano_banana")


def redact(text: str) -> str:
    """Mask anything that looks like a token, key, signature or connection string."""
    return _SECRETISH.sub("[redacted]", text)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "severity": record.levelname,
            "message": redact(record.getMessage()),
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
