"""Request-scoped log fields: the request id and the Cloud Logging trace, parsed strictly from headers."""

from __future__ import annotations

import io
import json
import logging
import threading

import pytest

from nano_banana import log as logs

pytestmark = pytest.mark.unit

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def fields(headers: dict[str, str], project: str | None = "my-project") -> dict[str, str]:
    return logs.request_fields(headers.items(), project)


def test_w3c_traceparent_names_the_trace_and_span() -> None:
    got = fields({"traceparent": f"00-{TRACE}-00f067aa0ba902b7-01"})
    assert got[logs.TRACE_FIELD] == f"projects/my-project/traces/{TRACE}"
    assert got[logs.SPAN_FIELD] == "00f067aa0ba902b7"
    assert fields({"Traceparent": f"00-{TRACE}-00f067aa0ba902b7-01"}, None)[logs.TRACE_FIELD] == TRACE


def test_cloud_trace_context_span_is_turned_into_hex() -> None:
    got = fields({"X-Cloud-Trace-Context": f"{TRACE.upper()}/12345;o=1"})
    assert got[logs.TRACE_FIELD] == f"projects/my-project/traces/{TRACE}"
    assert got[logs.SPAN_FIELD] == "0000000000003039"
    assert logs.SPAN_FIELD not in fields({"X-Cloud-Trace-Context": TRACE})
    assert logs.SPAN_FIELD not in fields({"X-Cloud-Trace-Context": f"{TRACE}/{2**64}"}), "past 64 bits"
    both = fields({"traceparent": f"00-{'a' * 32}-{'b' * 16}-01", "X-Cloud-Trace-Context": f"{TRACE}/1"})
    assert both[logs.TRACE_FIELD].endswith("a" * 32), "traceparent wins"


@pytest.mark.parametrize(
    "value",
    [
        "",
        "00-" + "0" * 32 + "-00f067aa0ba902b7-01",  # the all-zero trace id is invalid
        f"00-{TRACE}-00f067aa0ba902b7",
        f"00-{TRACE.upper()}-00f067aa0ba902b7-01",  # W3C ids are lowercase
        f'00-{TRACE}-00f067aa0ba902b7-01\n{{"severity":"CRITICAL"}}',
        f"00-{TRACE}z-00f067aa0ba902b7-01",
        "x" * 10_000,
    ],
)
def test_malformed_trace_headers_are_ignored(value: str) -> None:
    got = fields({"traceparent": value, "X-Cloud-Trace-Context": value})
    assert logs.TRACE_FIELD not in got
    assert logs.SPAN_FIELD not in got


def test_request_ids_are_ours_and_the_platforms_execution_id_rides_along() -> None:
    given = fields({"Function-Execution-Id": "abc123XYZ"})
    assert given["executionId"] == "abc123XYZ"
    assert given["requestId"] != "abc123XYZ", "a caller cannot choose the request id"
    assert "executionId" not in fields({"Function-Execution-Id": 'bad id"\n'})
    made = {fields({})["requestId"] for _ in range(20)}
    assert len(made) == 20
    assert all(len(r) == 16 and int(r, 16) >= 0 for r in made)


def test_lines_inside_a_scope_carry_its_fields_and_threads_keep_their_own() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    logger = logging.getLogger("nano_banana.test_log_context")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    barrier = threading.Barrier(2)

    ids: dict[str, str] = {}

    def work(name: str) -> None:
        with logs.request_scope([], None) as scope:
            ids[name] = scope["requestId"]
            barrier.wait()  # both scopes are open at once
            logger.info("inside", extra={"event": "inside", "who": name})
            assert logs.request_id() == scope["requestId"]

    threads = [threading.Thread(target=work, args=(name,)) for name in ("first", "second")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    logger.info("outside", extra={"event": "outside"})
    assert logs.request_id() is None
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    inside = [line for line in lines if line["event"] == "inside"]
    assert sorted((line["who"], line["requestId"]) for line in inside) == sorted(ids.items())
    assert ids["first"] != ids["second"]
    (outside,) = [line for line in lines if line["event"] == "outside"]
    assert "requestId" not in outside
