"""Test-session hygiene, as a pytest plugin (tests/conftest.py loads it).

1. A temp root of the session's own: unless `--basetemp` is given, every tmp_path (and so every embedded
   Postgres data directory, dev server data dir and emulator log) lives under a fresh
   `$TMPDIR/nano-banana-tests-XXXX/`. Under the shared `/tmp/pytest-of-<user>/`, a second pytest run
   resets that directory to mode 0700 and the first run's Postgres (which runs as the unprivileged
   `embedded_postgres` user) can no longer reach its data: `initdb: could not access directory`.
2. Nothing left behind: every process the session starts inherits a marker in its environment (Postgres
   servers too, although pg_ctl detaches them from us). When the session ends, after every fixture was
   torn down, any process still carrying the marker is reported, stopped, and fails the run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import psutil
import pytest

# Not NANO_BANANA_*: the dev server helper passes those on only when a test sets them.
MARKER = "PYTEST_NANO_BANANA_SESSION"
_ROOT_KEY = pytest.StashKey[Path]()
# Processes a teardown has just asked to stop get this long to exit (tests of this plugin shorten it).
GRACE_ENV = "PYTEST_NANO_BANANA_LEFTOVER_GRACE_S"


@pytest.hookimpl(tryfirst=True)  # before pytest's tmp_path plugin reads --basetemp
def pytest_configure(config: pytest.Config) -> None:
    os.environ[MARKER] = uuid.uuid4().hex
    if config.option.basetemp is None and not hasattr(config, "workerinput"):
        root = Path(tempfile.mkdtemp(prefix="nano-banana-tests-")).resolve()
        root.chmod(0o755)  # the embedded Postgres runs as another user and must traverse it
        config.stash[_ROOT_KEY] = root
        config.option.basetemp = str(root / "tmp")


def session_processes(marker: str, basetemp: str | None = None) -> list[psutil.Process]:
    """Live processes (not zombies), other than this one, carrying this session's marker or naming its
    temp directory on their command line (a Postgres whose starter was given a bare environment)."""
    found = []
    ours = {os.getpid(), *(p.pid for p in psutil.Process().parents())}  # this run and what started it
    inside = None if basetemp is None else basetemp.rstrip(os.sep) + os.sep
    for proc in psutil.process_iter(["pid", "status", "cmdline"]):
        if proc.pid in ours or proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        try:
            in_basetemp = inside is not None and inside in " ".join(proc.info["cmdline"] or [])
            if in_basetemp or proc.environ().get(MARKER) == marker:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def _describe(proc: psutil.Process) -> str:
    try:
        return f"pid {proc.pid} (parent {proc.ppid()}): {' '.join(proc.cmdline())[:300]}"
    except psutil.Error:
        return f"pid {proc.pid} (gone)"


def _stop(procs: list[psutil.Process]) -> None:
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=5)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=5)


def _reap_zombie_children() -> None:
    """Collect exited children nobody waited for (a killed server's children, say)."""
    for child in psutil.Process().children():
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                os.waitpid(child.pid, os.WNOHANG)
        except (psutil.Error, ChildProcessError):
            continue


@pytest.hookimpl(trylast=True)  # after pytest's own sessionfinish tore the session fixtures down
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    marker = os.environ.get(MARKER, "")
    basetemp = str(Path(session.config.option.basetemp).resolve()) if session.config.option.basetemp else None
    end = time.monotonic() + float(os.environ.get(GRACE_ENV, "10"))
    leftovers = session_processes(marker, basetemp)
    while leftovers and time.monotonic() < end:
        time.sleep(0.2)
        leftovers = session_processes(marker, basetemp)
    if leftovers:
        lines = [_describe(p) for p in leftovers]
        _stop(leftovers)
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        message = "the test session left processes running (now stopped):\n  " + "\n  ".join(lines)
        if reporter is not None:
            reporter.ensure_newline()
            reporter.write_sep("!", "leftover processes", red=True)
            reporter.write_line(message)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    _reap_zombie_children()
    root = session.config.stash.get(_ROOT_KEY, None)
    if root is not None:
        if session.exitstatus == pytest.ExitCode.OK:
            shutil.rmtree(root, ignore_errors=True)
        else:
            reporter = session.config.pluginmanager.get_plugin("terminalreporter")
            if reporter is not None:
                reporter.write_line(f"test data kept for inspection: {root}")
