"""The emulator launcher: wipes really empty the database, and a missing jar fails loudly (never skips)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from google.cloud import firestore

import infra.firestore_emulator as launcher
from infra.firestore_emulator import Emulator, EmulatorMissing
from tests.support.firestore import firestore_client, firestore_emulator  # noqa: F401

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.firestore
def test_wipe_empties_the_database(
    firestore_emulator: Emulator,  # noqa: F811
    firestore_client: firestore.Client,  # noqa: F811
) -> None:
    firestore_client.collection("c").document("d").set({"x": 1})
    assert firestore_client.collection("c").document("d").get().exists
    firestore_emulator.wipe()
    assert not firestore_client.collection("c").document("d").get().exists


@pytest.mark.infra
def test_a_missing_emulator_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(launcher, "PACKAGE", "no-such-package-nano-banana")
    monkeypatch.setattr(launcher, "DEFAULT_JAR", tmp_path / "absent.jar")
    with pytest.raises(EmulatorMissing, match="apt-get install google-cloud-cli-firestore-emulator"):
        launcher.start()


@pytest.mark.infra
def test_cli_finds_the_jar() -> None:
    done = subprocess.run(
        [sys.executable, "infra/firestore_emulator.py", "jar"],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith(".jar")
