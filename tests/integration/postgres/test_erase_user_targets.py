"""`nano-banana erase-user` says what it will touch and refuses half an erasure: a real database with Storage
or limits left at their local defaults (the deployed functions' settings not loaded) would delete the rows
and leave the user's images and rate window, then report success."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from nano_banana.dev import ERASURE_TARGETS, env_names
from nano_banana.embedded_pg import EmbeddedPostgres

pytestmark = pytest.mark.postgres
BIN = Path(sys.executable).parent
SECRET = "erase-user-test-secret-0123456789abcdef"


def run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("NANO_BANANA_", "N8N_", "SUPABASE_"))}
    clean.pop("DATABASE_URL", None)
    clean.pop("FIRESTORE_EMULATOR_HOST", None)
    return subprocess.run(
        [str(BIN / "nano-banana"), *args],
        env={**clean, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_issue_command_exits_2_naming_storage_before_any_connection(tmp_path: Path) -> None:
    started = time.monotonic()
    out = run(
        ["erase-user", "--user", str(uuid.uuid4()), "--dry-run"],
        {"NANO_BANANA_DATABASE_URL": "postgresql://u@db.example.invalid/postgres"},
        tmp_path,
    )
    assert out.returncode == 2, out.stderr[-2000:]
    assert "refusing" in out.stderr
    assert "Storage is the local default" in out.stderr
    assert "limits are the local default" in out.stderr
    assert "database: Postgres at db.example.invalid:5432/postgres" in out.stderr
    assert out.stdout == "", "no report: nothing was erased"
    # No connection attempt (an unreachable host would take the 3 s connect timeout or a DNS failure), no
    # settings validation (the JWT secret is not even set), and no ./.data created.
    assert time.monotonic() - started < 15
    assert list(tmp_path.iterdir()) == []


def test_the_refusal_comes_before_any_connection_and_names_what_is_local(tmp_path: Path) -> None:
    """A listening socket as the database: the refused command never connects to it. Storage configured,
    limits not: the message names limits only, and the URL's password is never printed."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(5)
        port = listener.getsockname()[1]
        env = {
            "NANO_BANANA_DATABASE_URL": f"postgresql://postgres:s3cr3t-pass@127.0.0.1:{port}/postgres",
            "NANO_BANANA_JWT_SECRET": SECRET,
            "NANO_BANANA_STORAGE": "supabase",
            "SUPABASE_URL": "https://ref.supabase.example",
            "SUPABASE_SERVICE_ROLE_KEY": "service-key",
        }
        out = run(["erase-user", "--user", str(uuid.uuid4())], env, tmp_path)
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.accept()
    assert out.returncode == 2, out.stderr[-2000:]
    assert "limits are the local default (NANO_BANANA_LIMITS is not firestore)" in out.stderr
    assert "Storage is the local default" not in out.stderr
    assert "storage: Supabase Storage, bucket pip-ai-images at https://ref.supabase.example" in out.stderr
    assert f"database: Postgres at 127.0.0.1:{port}/postgres" in out.stderr
    assert "s3cr3t-pass" not in out.stderr


def test_local_storage_says_it_is_intended_and_the_report_names_the_backends(
    embedded_pg: EmbeddedPostgres, tmp_path: Path
) -> None:
    env = {
        "NANO_BANANA_DATABASE_URL": embedded_pg.uri,
        "NANO_BANANA_JWT_SECRET": SECRET,
        "NANO_BANANA_DATA_DIR": str(tmp_path / "data"),
    }
    refused = run(["erase-user", "--user", str(uuid.uuid4()), "--dry-run"], env, tmp_path)
    assert refused.returncode == 2
    out = run(["erase-user", "--user", str(uuid.uuid4()), "--dry-run", "--local-storage"], env, tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout)
    assert report["jobs"] == 0
    backends = report["backends"]
    assert backends["database"].startswith("Postgres at ")
    assert backends["storage"] == f"local blobs in {tmp_path / 'data' / 'blobs'}"
    assert backends["limits"].startswith("in memory")
    assert backends["queue"].startswith("inline")
    for name, where in backends.items():
        assert f"  {name}: {where}" in out.stderr, "the same targets were announced before anything ran"


def test_help_says_what_it_reads_and_is_not_local_only(tmp_path: Path) -> None:
    top = run(["--help"], {}, tmp_path)
    assert top.returncode == 0
    assert "locally" not in top.stdout
    assert "erase-user" in top.stdout
    assert "production" in " ".join(top.stdout.split())
    erase = run(["erase-user", "--help"], {}, tmp_path)
    assert erase.returncode == 0
    text = " ".join(erase.stdout.split())
    for field in ERASURE_TARGETS:
        assert env_names(field)[0] in text, field
    for phrase in ("--local-storage", "NANO_BANANA_JWT_SECRET", "SUPABASE_SERVICE_ROLE_KEY", "refuses (exit 2)"):
        assert phrase in text, phrase
