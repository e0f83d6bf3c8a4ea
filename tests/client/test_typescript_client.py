"""The TypeScript client (`clients/typescript`): its generated types are current, it type-checks under
`tsc --strict` for browsers (no Node types, no runtime dependencies), and its `node --test` suite passes
against a real dev server (embedded Postgres, the preview generator slowed down so a job can be
watched, cancelled and aborted, and a rate limit low enough to provoke a 429)."""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
import threading
import uuid
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.support.browser import browser_context_args, browser_type_launch_args  # noqa: F401
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


@pytest.fixture(scope="module")
def compiled(node_modules: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The client and its tests compiled by tsc (strict) into ES modules."""
    build = tmp_path_factory.mktemp("ts") / "build"
    run = _run([str(node_modules / "tsc"), "-p", "tsconfig.test.json", "--outDir", str(build)])
    assert run.returncode == 0, run.stdout + run.stderr
    (build / "package.json").write_text('{"type": "module"}\n')  # the compiled files are ES modules
    return build


def test_node_suite_against_the_dev_server(compiled: Path, tmp_path: Path, dev_server_factory: Any) -> None:
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
    tests = sorted(str(p) for p in (compiled / "test").glob("*.test.js"))
    assert tests, "no compiled node tests"
    run = _run(["node", "--test", "--test-reporter=spec", "--test-timeout=60000", *tests], timeout=170, env=env)
    output = run.stdout + run.stderr
    print(output)  # shown with -rP, and on failure
    counts = _summary(output)
    assert run.returncode == 0, f"node --test failed:\n{output}\n--- dev server log (tail) ---\n{server.logs()[-3000:]}"
    assert counts.get("fail") == 0
    assert counts.get("pass", 0) >= 14, output


# In the page: the built client, imported as-is (no bundler), against the API on another origin.
IN_THE_BROWSER = """async ([api, token, project, image]) => {
  const { createNanoBanana } = await import("/src/index.js");
  const nb = createNanoBanana({ baseUrl: api, getToken: () => token });
  const bytes = Uint8Array.from(atob(image), (c) => c.charCodeAt(0));
  const file = new File([bytes], "photo.png", { type: "image/png" });
  const created = await nb.createJob({ projectId: project, image: file, prompt: "from the builder" });
  const streamed = [];
  const job = await nb.waitFor(created.jobId, { onUpdate: (j) => streamed.push(j.status) });
  const block = await nb.blocks(job.id, { variantId: job.variants[0].id, type: "image_compare" });
  const again = await nb.createJob({ projectId: project, image: file, prompt: "polled" });
  const polled = [];
  const second = await nb.waitFor(again.jobId, { streamAttempts: 0, pollIntervalMs: 100, onUpdate: (j) => polled.push(j.status) });
  return { key: created.idempotencyKey, streamed, status: job.status, block: block.type,
           before: block.props.before.storagePath === job.inputPath, polled, second: second.status };
}"""


@pytest.mark.browser
def test_the_built_client_runs_in_chromium_across_origins(
    builder_port: int, page: Any, dev_server_factory: Any
) -> None:
    """Chromium imports build/src/index.js as-is from the builder's origin (localhost) and drives the API on
    127.0.0.1 through CORS: upload, the event stream with a ticket, typed blocks, and polling, where the
    browser revalidates on its own (ETag is not exposed to other origins) and the server answers 304."""
    import base64

    server: DevServer = dev_server_factory(
        NANO_BANANA_CORS_ORIGINS=f"http://localhost:{builder_port}", NANO_BANANA_PREVIEW_DELAY_MS="1500"
    )
    s = server.session()
    page.goto(f"http://localhost:{builder_port}/package.json")
    image = base64.b64encode(png_bytes(96, 72)).decode()
    result = page.evaluate(IN_THE_BROWSER, [server.api, s.token, s.project_id, image])
    assert re.fullmatch(r"[0-9a-f-]{36}", result["key"]), result
    assert result["status"] == "succeeded", result
    assert result["streamed"][-1] == "succeeded"
    assert len(result["streamed"]) >= 2, result
    assert result["block"] == "image_compare"
    assert result["before"] is True
    assert result["second"] == "succeeded"
    assert result["polled"] == sorted(set(result["polled"]), key=result["polled"].index), "each state once"
    lines = [json.loads(line) for line in server.logs().splitlines() if line.startswith("{")]
    requests = [r for r in lines if r.get("event") == "request"]
    polls = [r for r in requests if r.get("method") == "GET" and re.fullmatch(r".*/jobs/[^/]+", r.get("path", ""))]
    assert any(r["status"] == 304 for r in polls), [r["status"] for r in polls]


class _QuietFiles(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def builder_port(compiled: Path) -> Iterator[int]:
    """The builder's origin: the built client served as plain files on a free port (not through a
    Playwright route: Playwright switches the browser's HTTP cache off for intercepted pages, and the
    browser's revalidation is under test)."""
    with ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietFiles, directory=str(compiled))) as httpd:
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        yield httpd.server_port
        httpd.shutdown()
        thread.join(timeout=10)


def _in(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def test_the_packed_tarball_installs_as_its_readme_says_and_is_esm_only(node_modules: Path, tmp_path: Path) -> None:
    """The README's two install lines (`npm pack`, then `npm install ./….tgz` in the application) work in a
    default `npm init -y` app; `import` loads the client and `require()` fails as the README says it does
    (ESM only); the packed tarball is git-ignored."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    for name in ("package.json", "README.md"):
        shutil.copy(CLIENT / name, pkg / name)
    built = _run([str(node_modules / "tsc"), "-p", "tsconfig.json", "--outDir", str(pkg / "build")])
    assert built.returncode == 0, built.stdout + built.stderr
    packed = _in(pkg, "npm", "pack", "--pack-destination", str(tmp_path))
    tarball = tmp_path / "nano-banana-client-0.1.0.tgz"
    assert tarball.is_file(), packed.stdout + packed.stderr
    readme = (CLIENT / "README.md").read_text()
    assert "npm install /path/to/nano-banana/clients/typescript/nano-banana-client-0.1.0.tgz" in readme
    assert "ES module only" in readme
    ignored = _in(ROOT, "git", "check-ignore", "-q", "clients/typescript/nano-banana-client-0.1.0.tgz")
    assert ignored.returncode == 0, "the packed tarball is git-ignored"

    app = tmp_path / "app"
    app.mkdir()
    assert _in(app, "npm", "init", "-y").returncode == 0
    installed = _in(app, "npm", "install", "--offline", "--no-audit", "--no-fund", str(tarball))
    assert installed.returncode == 0, installed.stderr
    script = (
        "import * as nb from '@nano-banana/client'; console.log(typeof nb.createNanoBanana, typeof nb.NanoBananaError)"
    )
    imported = _in(app, "node", "--input-type=module", "-e", script)
    assert imported.stdout.split() == ["function", "function"], imported.stderr
    required = _in(app, "node", "-e", "require('@nano-banana/client')")
    assert required.returncode != 0
    assert "ERR_PACKAGE_PATH_NOT_EXPORTED" in required.stderr
