"""Blob deletion has one gate (usecases/services.delete_unreferenced): nothing else deletes blobs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
PACKAGE = Path(__file__).resolve().parents[2] / "functions" / "nano_banana"


def test_only_the_gate_calls_blobs_delete() -> None:
    """A raw `blobs.delete` of caller-named paths is how issue 24's finding 1 lost another job's input."""
    callers = sorted(
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if "adapters" not in path.parts and re.search(r"\bblobs\.delete\(", path.read_text())
    )
    assert callers == ["usecases/services.py"]
