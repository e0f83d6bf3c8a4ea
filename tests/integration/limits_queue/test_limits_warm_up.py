"""A cold instance must not refuse its first job: on a fresh stack the first creation answered 503 after
exactly the 3 s call timeout, because the channel setup and the emulator's cold first call (~1.3-2 s
measured here) shared the call's budget. Against a fresh (cold) Google Firestore emulator each time."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from google.cloud import firestore

from infra import firestore_emulator
from infra.firestore_emulator import Emulator
from nano_banana import bootstrap
from nano_banana.adapters.limits_firestore import FirestoreLimits
from nano_banana.deferred import DeferredLimits
from nano_banana.errors import Unavailable
from nano_banana.settings import Settings

pytestmark = pytest.mark.firestore
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def cold_emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    """A just-started emulator nobody has called yet."""
    emulator = firestore_emulator.start()
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", emulator.host)
    try:
        yield emulator
    finally:
        emulator.stop()


def _reserve(limits: FirestoreLimits) -> None:
    limits.reserve(
        user_id=uuid.uuid4(), project_id=uuid.uuid4(), job_id=uuid.uuid4(), lease_expires_at=NOW + timedelta(minutes=5)
    )


def test_the_first_calls_get_their_own_budget(cold_emulator: Emulator) -> None:
    """A call timeout far below a cold first call (but plenty for a warm one): the first read and the first
    commit still succeed, because until a call of their kind has succeeded they get the first-call budget."""
    client = firestore.Client(project=cold_emulator.project)
    limits = FirestoreLimits(client, "cold", 10, 2, lambda: NOW, call_timeout_s=0.2, first_call_timeout_s=60)
    assert not limits.warm
    _reserve(limits)  # before: DeadlineExceeded after 0.2 s -> Unavailable ("the limits store is unavailable")
    assert limits.warm
    client.close()


def test_the_write_warm_up_builds_and_warms_the_client_in_the_background(
    cold_emulator: Emulator, caplog: pytest.LogCaptureFixture, tmp_path: object
) -> None:
    settings = Settings(
        NANO_BANANA_LIMITS="firestore", GOOGLE_CLOUD_PROJECT=cold_emulator.project, NANO_BANANA_DATA_DIR=tmp_path
    )
    deferred = DeferredLimits(lambda: bootstrap.build_limits(settings, lambda: NOW))
    with caplog.at_level(logging.INFO, logger="nano_banana"):
        assert not deferred.built, "nothing is built before it is needed or warmed"
        (thread,) = bootstrap.warm_up_clients(deferred)  # what Runtime.warm_up_writes runs in its thread
        limits = deferred.prepare()
        assert isinstance(limits, FirestoreLimits)
        assert limits.wait_warm(60), "the warm-up read and commit both succeeded"
        thread.join(10)
    warmed = [r for r in caplog.records if getattr(r, "event", None) == "limits_warmed_up"]
    assert len(warmed) == 1
    print(f"\n[cold emulator] warm-up took {warmed[0].durationMs} ms")
    _reserve(limits)  # now within the ordinary call budget


def test_an_unreachable_store_is_logged_with_the_exception_type(
    cold_emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    client = firestore.Client(project=cold_emulator.project)
    limits = FirestoreLimits(client, "gone", 10, 2, lambda: NOW, call_timeout_s=0.5, first_call_timeout_s=1)
    cold_emulator.stop()
    with caplog.at_level(logging.WARNING, logger="nano_banana"), pytest.raises(Unavailable):
        _reserve(limits)
    (line,) = [r for r in caplog.records if getattr(r, "event", None) == "limits_reserve_unavailable"]
    assert line.errorType in {"ServiceUnavailable", "DeadlineExceeded", "RetryError", "_InactiveRpcError"}
    assert line.warm is False
    client.close()
