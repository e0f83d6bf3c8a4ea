"""Cold start of the functions: import times, and a cold `api` instance's time to its first answer.

1. Import time of each entry point (median of N fresh interpreters), with what each imports on its first
   request under the production settings.
2. A cold `api` instance against the local stack (embedded Postgres, Firestore emulator, the fake Cloud
   Tasks server, the Storage server, a JWKS endpoint with an ES256 key as Supabase serves it): start ->
   first 200 on GET /jobs/{id} and -> first 202 on POST /jobs, each in a fresh process
   (bench/coldstart_instance.py), for three variants: `before` (everything imported and built on the first
   request, as before), `deferred` (Firestore and Cloud Tasks built on first use, import cuts, no warm-up),
   `after` (deferred + background warm-ups). Client construction, first connections, the JWKS fetch and
   the Firestore emulator's answers are included.
3. The modules each variant imported before its first answer, re-imported in fresh interpreters, beside
   `import vertexai.generative_models` (a throwaway venv) in the same run: the import ratio.

Usage: .venv/bin/python bench/coldstart.py [--runs 10] [--stack-runs 3] [--skip-aiplatform]
       [--skip-stack] [--aiplatform-python PATH]
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import venv
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.support.jwks_server import JwksServer

ROOT = Path(__file__).resolve().parents[1]
FUNCTIONS = ROOT / "functions"
INSTANCE = Path(__file__).resolve().parent / "coldstart_instance.py"
VARIANTS = ("before", "deferred", "after")

COMMON = "import main, nano_banana.bootstrap, nano_banana.adapters.postgres, nano_banana.adapters.limits_firestore, nano_banana.adapters.queue_cloudtasks, nano_banana.adapters.blobs_supabase"
ENTRY_POINTS = {
    "api (all adapters)": f"{COMMON}, nano_banana.http",
    "callback": f"{COMMON}, nano_banana.callback",
    "generate": f"{COMMON}, nano_banana.tasks, nano_banana.adapters.generator_vertex",
    "expire": f"{COMMON}, nano_banana.tasks",
    "sweep": f"{COMMON}, nano_banana.tasks",
    "google.genai alone": "import google.genai",
}
# Modules outside the service whose import we look for before a GET's answer.
WRITE_CLIENTS = ("google.cloud.firestore", "google.cloud.tasks_v2")


def timed_import(python: str, statement: str, runs: int, path: Path | None = None) -> float:
    """Median wall time of `statement` in a fresh interpreter, in ms."""
    code = f"import time; t = time.perf_counter(); {statement}; print(time.perf_counter() - t)"
    samples = []
    env = {"PYTHONPATH": str(path)} if path else {}
    for _ in range(runs):
        out = subprocess.run(
            [python, "-c", code], capture_output=True, text=True, check=True, env={**env, "PATH": "/usr/bin:/bin"}
        )
        samples.append(float(out.stdout.strip().splitlines()[-1]) * 1000)
    return statistics.median(samples)


def _module_import_code(modules: list[str]) -> str:
    """Code timing the import of exactly these modules, in their order (a module that cannot be imported
    on its own, e.g. one a package creates, is skipped: its package brings it)."""
    return (
        f"import importlib, sys; mods = {modules!r}; t = time.perf_counter()\n"
        "for m in mods:\n"
        "    try: importlib.import_module(m)\n"
        "    except BaseException: pass\n"
        "print(time.perf_counter() - t)"
    )


def _sample(python: str, code: str, path: Path | None) -> float:
    env = {"PYTHONPATH": str(path)} if path else {}
    out = subprocess.run(
        [python, "-c", "import time\n" + code],
        capture_output=True,
        text=True,
        check=True,
        env={**env, "PATH": "/usr/bin:/bin"},
    )
    return float(out.stdout.strip().splitlines()[-1]) * 1000


def interleaved(figures: dict[str, tuple[str, str, Path | None]], runs: int) -> dict[str, float]:
    """Median ms of each (python, code, path), sampled in turns (a, b, c, a, b, c, ...) so the machine's
    load at any moment weighs on every figure alike: their ratios are what this bench reports."""
    samples: dict[str, list[float]] = {name: [] for name in figures}
    for _ in range(runs):
        for name, (python, code, path) in figures.items():
            samples[name].append(_sample(python, code, path))
    return {name: statistics.median(values) for name, values in samples.items()}


def aiplatform_python() -> str | None:
    target = Path(tempfile.mkdtemp(prefix="aiplatform-venv-"))
    venv.create(target, with_pip=True)
    python = str(target / "bin" / "python")
    result = subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "google-cloud-aiplatform"],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        print(f"could not install google-cloud-aiplatform: {result.stderr[-300:]}")
        return None
    return python


# ---------------------------------------------------------------- the local stack


@dataclass
class Stack:
    env: dict[str, str]
    requests_file: Path
    jwks: JwksServer


@contextmanager
def local_stack(tmp: Path) -> Iterator[Stack]:
    sys.path[:0] = [str(FUNCTIONS), str(ROOT)]
    from cryptography.hazmat.primitives.asymmetric import ec
    from PIL import Image

    from infra import firestore_emulator
    from nano_banana.adapters.postgres import PostgresJobStore
    from nano_banana.embedded_pg import EmbeddedPostgres
    from nano_banana.migrations import apply_migrations
    from tests.support.fake_cloudtasks import FakeCloudTasks
    from tests.support.jwks_server import JwksServer
    from tests.support.storage_server import StorageServer

    key = "service-role-key-coldstart"
    pg = EmbeddedPostgres(tmp / "pg")
    emulator = fake = storage = jwks = None
    try:
        apply_migrations(pg.uri)
        emulator = firestore_emulator.start()
        fake = FakeCloudTasks().start()
        storage = StorageServer(key)
        jwks = JwksServer({"coldstart": (ec.generate_private_key(ec.SECP256R1()), "ES256")})
        user, project = uuid.uuid4(), uuid.uuid4()
        store = PostgresJobStore(pg.uri)
        store.add_member(project, user)
        store.close()
        unreachable = "http://127.0.0.1:9"  # tasks are created, never run: the job stays queued
        env = {
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": str(FUNCTIONS),
            "NANO_BANANA_DATABASE_URL": pg.uri,
            "NANO_BANANA_JWT_SECRET": secrets.token_urlsafe(32),
            "NANO_BANANA_JWKS_URL": jwks.url,
            "NANO_BANANA_LIMITS": "firestore",
            "NANO_BANANA_QUEUE": "cloudtasks",
            "NANO_BANANA_STORAGE": "supabase",
            "SUPABASE_URL": storage.url,
            "SUPABASE_SERVICE_ROLE_KEY": key,
            "GOOGLE_CLOUD_PROJECT": emulator.project,
            "FIRESTORE_EMULATOR_HOST": emulator.host,
            "NANO_BANANA_TASKS_ENDPOINT": fake.endpoint,
            "NANO_BANANA_GENERATE_URL": f"{unreachable}/tasks/generate",
            "NANO_BANANA_EXPIRE_URL": f"{unreachable}/tasks/expire",
            "NANO_BANANA_RATE_PER_HOUR": "1000000",
            "NANO_BANANA_MAX_ACTIVE_PER_PROJECT": "1000000",
        }
        image = tmp / "image.png"
        Image.new("RGB", (512, 384), (200, 120, 40)).save(image, "PNG")
        boundary = uuid.uuid4().hex
        body = tmp / "post.body"
        body.write_bytes(_multipart(boundary, {"projectId": str(project), "prompt": "cold"}, image.read_bytes()))
        authorization = f"Bearer {jwks.token('coldstart', user, exp=int(time.time()) + 3600)}"
        requests = {
            "post": {
                "method": "POST",
                "path": "/api/nano-banana/jobs",
                "authorization": authorization,
                "contentType": f"multipart/form-data; boundary={boundary}",
                "bodyFile": str(body),
            },
            "get": {"method": "GET", "path": "", "authorization": authorization},
        }
        requests_file = tmp / "requests.json"
        requests_file.write_text(json.dumps(requests))
        yield Stack(env=env, requests_file=requests_file, jwks=jwks)
    finally:
        for server in (jwks, storage, fake, emulator):
            if server is not None:
                server.stop()
        pg.stop()


def _multipart(boundary: str, fields: dict[str, str], png: bytes) -> bytes:
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
        "Content-Type: image/png\r\n\r\n".encode()
        + png
        + b"\r\n"
    )
    return b"".join(parts) + f"--{boundary}--\r\n".encode()


def cold_instance(stack: Stack, mode: str, variant: str, *, linger_s: float = 0, trace: bool = False) -> dict[str, Any]:
    env = {**stack.env, "NANO_BANANA_WARM_UP": "true" if variant == "after" else "false"}
    if linger_s:
        env["COLDSTART_LINGER_S"] = str(linger_s)
    if trace:
        env["COLDSTART_TRACE"] = "1"
    start = time.monotonic()
    out = subprocess.run(
        [sys.executable, str(INSTANCE), mode, variant, repr(start), str(stack.requests_file)],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        timeout=120,
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("COLDSTART ")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"cold instance failed ({mode}, {variant}): {out.stderr[-2000:]}")
    report: dict[str, Any] = json.loads(lines[-1].removeprefix("COLDSTART "))
    report["events"] = [json.loads(line).get("event") for line in out.stdout.splitlines() if line.startswith("{")]
    return report


def measure_stack(stack: Stack, runs: int) -> dict[tuple[str, str], list[dict[str, Any]]]:
    first = cold_instance(stack, "post", "after", linger_s=3)  # a job for the GETs; warms the disk cache too
    if first["status"] != 202:
        raise RuntimeError(f"the first POST answered {first['status']}")
    requests = json.loads(stack.requests_file.read_text())
    requests["get"]["path"] = f"/api/nano-banana/jobs/{first['jobId']}"
    stack.requests_file.write_text(json.dumps(requests))
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for _ in range(runs):
        for variant in VARIANTS:  # interleaved, so a noisy minute hits every variant alike
            for mode in ("get", "post"):
                report = cold_instance(stack, mode, variant)
                expected = 200 if mode == "get" else 202
                if report["status"] != expected:
                    raise RuntimeError(f"{mode} ({variant}) answered {report['status']}, not {expected}")
                results.setdefault((mode, variant), []).append(report)
    return results


def traced_modules(stack: Stack) -> dict[str, list[str]]:
    """What each variant imported before its first answer (one untimed run each, with the import trace)."""
    return {
        f"{mode}/{variant}": cold_instance(stack, mode, variant, trace=True)["modules"]
        for mode in ("get", "post")
        for variant in VARIANTS
    }


def report_stack(
    results: dict[tuple[str, str], list[dict[str, Any]]], modules: dict[str, list[str]], runs: int
) -> None:
    print(f"\ncold api instance, start -> first answer (median of {runs} fresh processes, ms):")
    print(f"  {'':<10}" + "".join(f"{v:>12}" for v in VARIANTS) + "   after/before")
    for mode, label in (("get", "GET 200"), ("post", "POST 202")):
        medians = {v: statistics.median(r["ms"] for r in results[(mode, v)]) for v in VARIANTS}
        row = "".join(f"{medians[v]:12.0f}" for v in VARIANTS)
        print(f"  {label:<10}{row}   {medians['after'] / medians['before']:.2f}")
    for key in ("get/after", "get/deferred"):
        loaded = [m for m in WRITE_CLIENTS if m in modules[key]]
        print(
            f"  imported before the first GET answer ({key.split('/')[1]}): {', '.join(loaded) or 'no Firestore, no Cloud Tasks'}"
        )
    events = sorted({e for r in results[("post", "after")] for e in r["events"] if e and "warm" in e})
    print(f"  warm-up events of a cold POST (after): {', '.join(events) or 'none'}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10, help="fresh interpreters per import figure")
    parser.add_argument("--stack-runs", type=int, default=3, help="cold instances per variant and request")
    parser.add_argument("--skip-aiplatform", action="store_true")
    parser.add_argument("--skip-stack", action="store_true")
    parser.add_argument("--aiplatform-python", help="a Python with google-cloud-aiplatform (else a throwaway venv)")
    parser.add_argument("--modules-out", type=Path, help="write the modules each variant imported (JSON)")
    args = parser.parse_args()
    results = {name: timed_import(sys.executable, stmt, args.runs, FUNCTIONS) for name, stmt in ENTRY_POINTS.items()}
    print(f"import time, median of {args.runs} fresh interpreters (ms):")
    for name, value in results.items():
        print(f"  {name:<20} {value:8.0f}")
    modules: dict[str, list[str]] = {}
    if not args.skip_stack:
        with tempfile.TemporaryDirectory(prefix="coldstart-") as tmp, local_stack(Path(tmp)) as stack:
            timed = measure_stack(stack, args.stack_runs)
            modules = traced_modules(stack)
            report_stack(timed, modules, args.stack_runs)
        if args.modules_out:
            args.modules_out.write_text(json.dumps(modules, indent=1))
    python = None if args.skip_aiplatform else (args.aiplatform_python or aiplatform_python())
    figures: dict[str, tuple[str, str, Path | None]] = {
        key: (sys.executable, _module_import_code(modules[key]), FUNCTIONS)
        for key in ("get/before", "get/after", "post/after")
        if key in modules
    }
    if python is not None:
        for module in ("vertexai.generative_models", "google.cloud.aiplatform"):
            figures[module] = (
                python,
                f"t = time.perf_counter(); import {module}; print(time.perf_counter() - t)",
                None,
            )
    if not figures:
        return
    ms = interleaved(figures, args.runs)
    print(
        f"\nimports before the first answer, re-imported in fresh interpreters (median of {args.runs}, in turns, ms):"
    )
    for key, value in ms.items():
        what = f"{len(modules[key]):5d} modules" if key in modules else "  (throwaway venv)"
        print(f"  {key:<28} {what} {value:8.0f}")
    if "get/after" in ms:
        print(f"ratio GET after / before: {ms['get/after'] / ms['get/before']:.2f}")
    if python is None:
        return
    generative = ms["vertexai.generative_models"]
    aiplatform = ms["google.cloud.aiplatform"]
    print(f"ratio aiplatform / generate entry point: {aiplatform / results['generate']:.2f}x")
    print(f"ratio aiplatform / google.genai alone:   {aiplatform / results['google.genai alone']:.2f}x")
    for key, label in (("get/after", "GET"), ("get/before", "GET, before"), ("post/after", "POST")):
        if key in ms:
            print(
                f"ratio api imports before its first {label} answer / vertexai.generative_models: "
                f"{ms[key] / generative:.2f}"
            )


if __name__ == "__main__":
    main()
