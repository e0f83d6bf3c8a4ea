"""A dead Firestore answers Unavailable (a quick 503), never a hang or a 500."""

from __future__ import annotations

import socket
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from google.cloud import firestore

from nano_banana.adapters.limits_firestore import FirestoreLimits
from nano_banana.errors import Unavailable


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.faults
def test_unreachable_firestore_is_a_quick_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", f"127.0.0.1:{_closed_port()}")
    client = firestore.Client(project="demo-nano-banana")
    now = datetime.now(UTC)
    limits = FirestoreLimits(client, "dead", 10, 2, lambda: now)
    started = time.monotonic()
    with pytest.raises(Unavailable) as raised:
        limits.reserve(
            user_id=uuid.uuid4(),
            project_id=uuid.uuid4(),
            job_id=uuid.uuid4(),
            lease_expires_at=now + timedelta(minutes=5),
        )
    assert raised.value.status == 503
    with pytest.raises(Unavailable):
        limits.release_slot(project_id=uuid.uuid4(), job_id=uuid.uuid4())
    with pytest.raises(Unavailable):
        limits.active_jobs(uuid.uuid4())
    with pytest.raises(Unavailable):
        limits.check(user_id=uuid.uuid4(), project_id=uuid.uuid4())
    elapsed = time.monotonic() - started
    print(f"\n[firestore down] four calls answered Unavailable in {elapsed:.2f} s")
    assert elapsed < 10
    client.close()
