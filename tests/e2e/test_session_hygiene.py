"""The test suite cleans up after itself and tolerates a second run on the same machine
(tests/support/hygiene.py): every server it starts is stopped, a leftover fails the run, and the embedded
Postgres data lives where another pytest run cannot lock it out."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable
from pathlib import Path

import psutil
import psycopg
import pytest

from nano_banana.embedded_pg import EmbeddedPostgres
from tests.support.devserver import DevServer
from tests.support.hygiene import GRACE_ENV, MARKER

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]
ROOT = Path(__file__).resolve().parents[2]


def _pytest(tmp_path: Path, test_source: str, *options: str) -> subprocess.CompletedProcess[str]:
    """Another pytest session on this machine, on one small test file, with pytest's default temp dir."""
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_other_run.py").write_text(textwrap.dedent(test_source))
    env = {
        **{k: v for k, v in os.environ.items() if k != MARKER},
        "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'functions'}",
        GRACE_ENV: "1",
    }
    args = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "-q",
        "-c",
        str(tmp_path / "pytest.ini"),
        *options,
    ]
    return subprocess.run(
        [*args, "--rootdir", str(tmp_path), str(tmp_path / "test_other_run.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _running(token: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        if proc.info["status"] != psutil.STATUS_ZOMBIE and token in " ".join(proc.info["cmdline"] or []):
            found.append(proc)
    return found


def test_a_process_left_running_fails_the_run_and_is_stopped(tmp_path: Path) -> None:
    token = f"leftover-{uuid.uuid4().hex}"
    result = _pytest(
        tmp_path,
        f"""
        import subprocess, sys
        def test_forgets_its_server():
            subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", "{token}"], start_new_session=True)
        """,
        "-p",
        "tests.support.hygiene",
        "--basetemp",
        str(tmp_path / "basetemp"),  # a failed run keeps its own temp root for inspection: not here
    )
    assert result.returncode == 1, result.stdout[-2000:]
    assert "1 passed" in result.stdout
    assert "leftover processes" in result.stdout
    assert token in result.stdout
    assert _running(token) == [], "the check stopped what it found"


def test_a_killed_dev_server_does_not_leave_its_postgres_running(
    dev_server_factory: Callable[..., DevServer],
) -> None:
    """`make test` left an embedded Postgres running whenever a dev server had to be killed (one that
    did not stop within 20 s, e.g. waiting on an unreachable n8n): the killed process cannot stop it."""
    server = dev_server_factory()
    pgdata = str((server.data_dir / "postgres").resolve())
    assert _running(pgdata), "the dev server's Postgres runs"
    os.kill(server.process.pid, signal.SIGKILL)
    server.process.wait(timeout=10)
    server.stop()
    assert _running(pgdata) == []


def test_another_pytest_run_does_not_lock_our_postgres_out(embedded_pg: EmbeddedPostgres, tmp_path: Path) -> None:
    """A second pytest run resets /tmp/pytest-of-<user> to mode 0700; the first run's Postgres (another
    OS user) could then no longer reach a data directory under it ("initdb: could not access directory")."""
    assert "/pytest-of-" not in str(embedded_pg.pgdata), "the data lives in a place of the session's own"
    other = _pytest(tmp_path, "def test_uses_a_temp_dir(tmp_path):\n    assert tmp_path.is_dir()\n")
    assert other.returncode == 0, other.stdout[-2000:]
    embedded_pg.pg_ctl("status")  # runs as the server's OS user: it must still reach its data directory
    with psycopg.connect(embedded_pg.uri) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
    fresh = EmbeddedPostgres(tmp_path / "fresh-pg")  # initdb as the server's user, after the other run
    try:
        with psycopg.connect(fresh.uri) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
    finally:
        fresh.stop()


def test_servers_the_tests_start_carry_the_session_marker(dev_server: DevServer) -> None:
    """What the session-end check looks for: a dev server (and so its Postgres) inherits the marker."""
    server = psutil.Process(dev_server.process.pid)
    assert server.environ().get(MARKER) == os.environ[MARKER]
    pgdata = str((dev_server.data_dir / "postgres").resolve())
    postgres = _running(pgdata)[0]  # the postmaster (its children retitle themselves)
    assert postgres.environ().get(MARKER) == os.environ[MARKER]
