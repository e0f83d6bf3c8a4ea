"""Google's Firestore emulator for tests: started once per session, wiped before each test.

Import the fixtures explicitly in a test module:
    from tests.support.firestore import firestore_client, firestore_emulator  # noqa: F401
A missing emulator fails the tests (with the apt-get line to fix it); it never skips them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from google.cloud import firestore

from infra.firestore_emulator import Emulator, start


@pytest.fixture(scope="session")
def firestore_emulator() -> Iterator[Emulator]:
    """One emulator process for the session; FIRESTORE_EMULATOR_HOST points at it meanwhile."""
    emulator = start()
    previous = os.environ.get("FIRESTORE_EMULATOR_HOST")
    os.environ["FIRESTORE_EMULATOR_HOST"] = emulator.host
    try:
        yield emulator
    finally:
        emulator.stop()
        if previous is None:
            os.environ.pop("FIRESTORE_EMULATOR_HOST", None)
        else:
            os.environ["FIRESTORE_EMULATOR_HOST"] = previous


@pytest.fixture
def firestore_client(firestore_emulator: Emulator) -> Iterator[firestore.Client]:
    """A real client on an empty emulator database."""
    firestore_emulator.wipe()
    client = firestore.Client(project=firestore_emulator.project)
    try:
        yield client
    finally:
        client.close()
