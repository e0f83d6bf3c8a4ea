"""The TypeScript client (`clients/typescript`): its generated types are current, it type-checks under
`tsc --strict` for browsers (no Node types, no runtime dependencies), and its `node --test` suite passes
against a real dev server (embedded Postgres, the preview generator slowed down so a job can be
watched, cancelled and aborted, and a rate limit low enough to provoke a 429)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.support.devserver import ROOT, DevServer, png_bytes

pytestmark = pytest.mark.client

CLIENT = ROOT / "clients" / "typescript"
BIN = CLIENT / "node_modules" / ".bin"
# One user with a project of their own per node test: the rate limit counts per user.
SESSIONS = ("lifecycle", "limits", "retries", "cancel", "refine", "abort", "reconnect", "silent", "polling")
RATE_PER_HOUR = 4


def _run(
    args: list[str], *, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=CLIENT, capture_output=True, text=True, timeout=timeout, env=env, check=False)


@pytest.fixture(scope="module")
def node_modules() -> Path:
    """The dev dependencies `make client-deps` installs with `npm ci` from the committed lockfile."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not on PATH: the TypeScript client's tests need Node.js 20+")
    installed = CLIENT / "node_modules" / ".package-lock.json"
    lock = CLIENT / "package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
        pytest.fail(
            "clients/typescript/node_modules is missing or older than package-lock.json: run `make client-deps`"
        )
    return BIN


def test_generated_types_match_the_openapi_document(node_modules: Path, tmp_path: Path) -> None:
    out = tmp_path / "openapi.ts"
    run = _run([str(node_modules / "openapi-typescript"), "../../infra/openapi.yaml", "--output", str(out)])
    assert run.returncode == 0, run.stdout + run.stderr
    committed = (CLIENT / "src" / "openapi.ts").read_text()
    assert out.read_text() == committed, (
        "clients/typescript/src/openapi.ts is stale: run `npm run generate` in clients/typescript and commit it"
    )


def test_package_is_pinned_and_has_no_runtime_dependencies() -> None:
    package = json.loads((CLIENT / "package.json").read_text())
    assert package.get("dependencies", {}) == {}
    pins = package["devDependencies"]
    assert all(re.fullmatch(r"\d+\.\d+\.\d+", version) for version in pins.values()), pins
    lock = json.loads((CLIENT / "package-lock.json").read_text())
    assert lock["packages"][""]["devDependencies"] == pins, "package-lock.json is not package.json's"


def test_client_type_checks_strict_without_node_types(node_modules: Path) -> None:
    """The client compiles against the DOM library alone: nothing in it needs Node (so it runs in browsers)."""
    run = _run([str(node_modules / "tsc"), "-p", "tsconfig.json", "--noEmit"])
    assert run.returncode == 0, run.stdout + run.stderr


def _sessions(server: DevServer) -> dict[str, dict[str, str]]:
    sessions = {}
    for name in SESSIONS:
        s = server.token_for(uuid.uuid4(), uuid.uuid4())
        sessions[name] = {"token": s.token, "userId": s.user_id, "projectId": s.project_id}
    return sessions


def _summary(output: str) -> dict[str, int]:
    """node --test's closing counts (the spec reporter's `pass 9`, `fail 0`, ... lines, after an info sign)."""
    return {k: int(v) for k, v in re.findall(r"^\u2139 (\w+) (\d+)$", output, re.MULTILINE)}


def test_node_suite_against_the_dev_server(node_modules: Path, tmp_path: Path, dev_server_factory: Any) -> None:
    build = tmp_path / "build"
    compiled = _run([str(node_modules / "tsc"), "-p", "tsconfig.test.json", "--outDir", str(build)])
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
    (build / "package.json").write_text('{"type": "module"}\n')  # the compiled files are ES modules

    server: DevServer = dev_server_factory(
        NANO_BANANA_RATE_PER_HOUR=str(RATE_PER_HOUR),
        NANO_BANANA_MAX_ACTIVE_PER_PROJECT="100",
        NANO_BANANA_PREVIEW_DELAY_MS="2000",  # long enough to see a job running, cancel it or cut its stream
    )
    image = tmp_path / "photo.png"
    image.write_bytes(png_bytes(96, 72))
    env = {
        "PATH": str(Path(shutil.which("node") or "node").parent),
        "NANO_BANANA_BASE_URL": server.api,
        "NANO_BANANA_SESSIONS": json.dumps(_sessions(server)),
        "NANO_BANANA_TEST_IMAGE": str(image),
        "NANO_BANANA_TEST_RATE_PER_HOUR": str(RATE_PER_HOUR),
    }
    tests = sorted(str(p) for p in (build / "test").glob("*.test.js"))
    assert tests, "no compiled node tests"
    run = _run(["node", "--test", "--test-reporter=spec", "--test-timeout=60000", *tests], timeout=170, env=env)
    output = run.stdout + run.stderr
    print(output)  # shown with -rP, and on failure
    counts = _summary(output)
    assert run.returncode == 0, f"node --test failed:\n{output}\n--- dev server log (tail) ---\n{server.logs()[-3000:]}"
    assert counts.get("fail") == 0
    assert counts.get("pass", 0) >= 8, output
