"""One LISTEN connection per process, shared by every event stream of that process.

A connection per open stream would cost the database one backend per watching browser tab (and Supabase's
transaction pooler cannot LISTEN at all), so one background thread listens on `pip_ai_job_events`,
through a session-capable URL, and wakes the streams whose job changed. When the connection drops, every
stream is woken (it re-reads its job: a change may have been missed) and the thread reconnects with
backoff; streams keep their heartbeats meanwhile.
"""

from __future__ import annotations

import json
import logging
import random
import threading
from urllib.parse import urlsplit, urlunsplit

import psycopg

from nano_banana.errors import Unavailable

CHANNEL = "pip_ai_job_events"
APPLICATION_NAME = "nano-banana-listener"
log = logging.getLogger("nano_banana.listener")


def session_conninfo(conninfo: str) -> str:
    """The URL to LISTEN through. Supabase's transaction pooler (Supavisor, port 6543) hands each
    transaction to any backend, so LISTEN there never hears a NOTIFY; the same host serves session mode on
    port 5432. Anything else is used as given."""
    parts = urlsplit(conninfo)
    if (
        parts.scheme.startswith("postgres")
        and parts.port == 6543
        and (parts.hostname or "").endswith(".pooler.supabase.com")
    ):
        userinfo, _, _hostport = parts.netloc.rpartition("@")
        netloc = f"{userinfo}@{parts.hostname}:5432" if userinfo else f"{parts.hostname}:5432"
        return urlunsplit(parts._replace(netloc=netloc))
    return conninfo


class Subscription:
    """A stream's doorbell: `wait` returns True when its job changed (or may have) since the last wait."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self._event = threading.Event()

    def ring(self) -> None:
        self._event.set()

    def wait(self, timeout_s: float) -> bool:
        rang = self._event.wait(timeout_s)
        self._event.clear()
        return rang


class JobChangeListener:
    def __init__(self, conninfo: str, *, connect_timeout_s: float = 3.0, poll_s: float = 1.0) -> None:
        self._conninfo = conninfo
        self._connect_timeout_s = connect_timeout_s
        self._poll_s = poll_s
        self._lock = threading.Lock()
        self._subscribers: dict[str, set[Subscription]] = {}
        self._listening = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.connections = 0  # connections opened so far (observability, tests)

    def subscribe(self, job_id: str) -> Subscription:
        """Register before the caller re-reads its job: every NOTIFY from then on rings the subscription.
        Raises Unavailable when no listening connection can be had within the connect timeout."""
        sub = Subscription(job_id)
        with self._lock:
            self._subscribers.setdefault(job_id, set()).add(sub)
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._thread = threading.Thread(target=self._run, name="nano-banana-listener", daemon=True)
                self._thread.start()
        if not self._listening.wait(self._connect_timeout_s + 1):
            self.unsubscribe(sub)
            raise Unavailable("the database is unavailable; retry shortly")
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            subs = self._subscribers.get(sub.job_id)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subscribers[sub.job_id]

    def close(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(self._poll_s + self._connect_timeout_s + 2)

    def _ring(self, job_id: str | None) -> None:
        with self._lock:
            if job_id is None:
                targets = [s for subs in self._subscribers.values() for s in subs]
            else:
                targets = list(self._subscribers.get(job_id, ()))
        for sub in targets:
            sub.ring()

    def _run(self) -> None:
        failures = 0
        rng = random.Random()
        while not self._stop.is_set():
            try:
                with psycopg.connect(
                    self._conninfo,
                    autocommit=True,
                    connect_timeout=max(1, round(self._connect_timeout_s)),
                    application_name=APPLICATION_NAME,
                ) as conn:
                    self.connections += 1
                    conn.execute(f"listen {CHANNEL}")
                    self._listening.set()
                    if failures:
                        log.info("listener reconnected", extra={"event": "listener_reconnected"})
                        self._ring(None)  # anything may have changed while we were deaf
                    failures = 0
                    while not self._stop.is_set():
                        for notify in conn.notifies(timeout=self._poll_s):
                            try:
                                job_id = json.loads(notify.payload).get("id")
                            except (ValueError, AttributeError):
                                continue
                            if isinstance(job_id, str):
                                self._ring(job_id)
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                self._listening.clear()
                failures += 1
                self._ring(None)
                delay = rng.uniform(0, min(5.0, 0.2 * 2**failures))
                log.warning(
                    "listener connection lost",
                    extra={"event": "listener_down", "attempt": failures, "reason": type(exc).__name__},
                )
                self._stop.wait(delay)
        self._listening.clear()
