"""The commands README.md and docs/n8n.md show, run as written: the curl walk-through against a dev server
(only its first line's port and data directory are replaced by the test server's), the port and data
directory settings of the quick start, and the n8n signature example.

Which shell block of README.md and docs/*.md is run where, or why not, is written above each block
(`<!-- tested: … -->` / `<!-- not run: … -->`; tests/unit/test_docs_links.py checks every block has one)."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.browser import photo_bytes
from tests.support.devserver import ROOT, DevServer, free_port, start_dev_server

pytestmark = pytest.mark.e2e


def block(page: str, marker: str) -> str:
    """The shell block right under the `<!-- tested: … -->` comment that contains `marker`."""
    text = (ROOT / page).read_text()
    found = re.search(r"<!-- tested: [^\n]*" + re.escape(marker) + r"[^\n]*-->\n```sh\n(.*?)\n```", text, re.DOTALL)
    assert found, f"no tested block marked {marker!r} in {page}"
    return found.group(1)


def test_the_readme_curl_walk_through_gets_a_job_to_succeeded(
    dev_server_factory: Callable[..., DevServer], tmp_path: Path
) -> None:
    """README.md's walk-through, run by bash -eu at a checkout's root: a `.venv` and a `photo.jpg` there."""
    server = dev_server_factory()
    script = block("README.md", "runs this block against a dev server")
    first = script.splitlines()[0]
    assert first.startswith("PORT=8080; export NANO_BANANA_DATA_DIR=.data"), "the line the reader edits"
    port = server.url.rsplit(":", 1)[1]
    script = script.replace("PORT=8080;", f"PORT={port};", 1).replace(
        "NANO_BANANA_DATA_DIR=.data", f"NANO_BANANA_DATA_DIR={server.data_dir}", 1
    )
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    (checkout / ".venv").symlink_to(ROOT / ".venv")
    (checkout / "photo.jpg").write_bytes(photo_bytes((800, 600)))
    env = {k: v for k, v in server.env.items() if k not in ("NANO_BANANA_DATA_DIR", "PORT")}
    run = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = run.stdout
    assert re.search(r'"status":\s*"succeeded"', out), out[-3000:]
    assert "event: " in out or "data: " in out, "the event stream answered"
    assert '"ticket"' in out
    assert "the job has already succeeded" in out, "cancel after the end is a 409 in words"
    assert '"image_compare"' in out
    assert '"messageId"' in out, "the refinement was created"
    assert out.count('"role"') >= 3, "the thread: the user's turn, the answer, the refinement"


def test_the_quick_starts_port_and_data_directory_take_effect(tmp_path: Path) -> None:
    """README: `PORT=… NANO_BANANA_DATA_DIR=… make dev` (make dev runs `nano-banana dev`); the banner prints
    the URL with that port, the data directory, and the dev-token command for that directory."""
    line = block("README.md", "the same variables given to")
    assert re.findall(r"\b([A-Z_]+)=", line) == ["PORT", "NANO_BANANA_DATA_DIR"]
    assert line.split("#")[0].split()[-2:] == ["make", "dev"]
    port = free_port()
    server = start_dev_server(tmp_path, {"PORT": str(port)})
    try:
        banner = server.logs()
        data_dir = server.data_dir.resolve()
        assert f"running at http://127.0.0.1:{port}/" in banner
        assert f"Data: {data_dir}" in banner
        assert f"NANO_BANANA_DATA_DIR={data_dir} .venv/bin/nano-banana dev-token" in banner
        assert (data_dir / "postgres" / "PG_VERSION").is_file(), "the embedded Postgres lives in the data directory"
    finally:
        server.stop()


def test_the_n8n_signature_example_prints_the_signature_it_shows() -> None:
    script = block("docs/n8n.md", "compares the signature")
    shown = re.search(r"^# (\S+=)\s", script, re.MULTILINE)
    assert shown
    run = subprocess.run(
        ["bash", "-eu", "-c", script], capture_output=True, text=True, timeout=30, check=False, env=dict(os.environ)
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == shown.group(1)
