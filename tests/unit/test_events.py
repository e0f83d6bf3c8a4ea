"""The event registry (functions/nano_banana/events.py) against the code: every name logged is
registered, every registered name is logged. The names are read from the syntax tree, not imported."""

from __future__ import annotations

import json
import logging

import pytest

from nano_banana import log as logs
from nano_banana.events import FIELDS, TERMINAL_EVENTS, Event
from tests.support.logged_events import scan

pytestmark = pytest.mark.unit

# Registered before the code that logs them is on this branch: other branches of the same change add
# them (job creation refused by a limit; an Idempotency-Key replay). Once merged they are found in the
# code and this set no longer matters (test_every_registered_event_is_logged then covers them too).
ARRIVING_FROM_OTHER_BRANCHES: set[Event] = set()


def test_every_event_logged_is_registered() -> None:
    found = scan()
    assert not found.unresolved, (
        "event names the scanner cannot resolve (add the pattern to logged_events.py):\n" + "\n".join(found.unresolved)
    )
    registered = {e.value for e in Event}
    missing = {name: sorted(where) for name, where in found.names.items() if name not in registered}
    assert not missing, (
        "events logged but not registered in functions/nano_banana/events.py (add them to Event, and to "
        f"docs/operations.md if ops should know): {json.dumps(missing, indent=1)}"
    )


def test_every_registered_event_is_logged() -> None:
    found = set(scan().names)
    never = {e for e in Event if e.value not in found} - ARRIVING_FROM_OTHER_BRANCHES
    assert not never, f"registered in events.py but logged nowhere: {sorted(never)}"


def test_the_scanner_finds_each_kind_of_pattern() -> None:
    """Literal extra dicts, timed("..."), a name passed through two functions (_ended -> _log_end),
    f"{event}_unavailable" and a positional parameter (_unreachable): each resolves to its names."""
    names = scan().names
    assert "request" in names  # a dict literal
    assert "sweep" in names  # timed("sweep")
    assert {"job_failed", "job_expired", "job_succeeded", "job_canceled"} <= set(names)
    assert {"limits_reserve_unavailable", "limits_release_contended"} <= set(names)
    assert {"task_enqueue_failed", "task_lookup_failed"} <= set(names)


def test_registry_values_are_their_names_and_monitored_events_have_fields() -> None:
    assert all(e.value == e.name for e in Event)
    assert set(FIELDS) >= TERMINAL_EVENTS
    # A StrEnum member logs as its plain name.
    record = logging.makeLogRecord({"msg": "x", "event": Event.job_failed, "levelname": "INFO"})
    assert json.loads(logs.JsonFormatter().format(record))["event"] == "job_failed"


def test_the_scanner_reads_renames_and_reports_what_it_cannot_resolve() -> None:
    code = """
def create():
    with timed("job_created") as event:
        event["event"] = "job_replayed"
    log.info("x", extra=dict(event="job_rejected"))
    log.info("y", extra={"event": Event.job_started})
    log.info("z", extra={"event": pick()})
"""
    found = scan({"functions/nano_banana/sample.py": code})
    assert set(found.names) == {"job_created", "job_replayed", "job_rejected", "job_started"}
    assert len(found.unresolved) == 1
    assert "pick()" in found.unresolved[0]
