"""Round trips on the critical path, with every dependency a fixed delay away (issue 18).

The production adapters run against local stand-ins: Postgres (embedded), FirestoreLimits (Google's
Firestore emulator), CloudTasksQueue (the real client against tests/support/fake_cloudtasks.py) and
SupabaseBlobStore (storage3 against tests/support/storage_server.py). A TCP proxy in front of each adds
--delay-ms each way to every byte and records each round trip it carries (tests/support/delay_proxy.py):
the waves (round trips that overlap in time ran side by side) are counted, not estimated.

Measured, after a warm-up, for --requests sequential requests per mode:
- POST /jobs over HTTP (multipart 512x384 PNG): wall time, waves and round trips;
- the generate step (usecases.run_generation: claim, input download, history, uploads of --variants
  outputs, completion, slot release, expire-task delete, stale-output listing) with a generator that
  returns at once: its wall time is the service's overhead around the model call.
Two modes, interleaved: "fanout" (Services.fanout as wired: independent round trips side by side) and
"sequential" (Services.fanout runs each call inline, one after another: the code before fan-out), so
one run prints the before/after ratio. Generate tasks are delivered to a receiver that only records them.
Figures per request (medians): waves (round trips that overlap in time merged: the sequential steps),
chain (the most round trips that ran one after another), round trips (all of them), p50/p95 wall time.
Usage: .venv/bin/python bench/latency.py [--delay-ms 20] [--requests 24] [--generations 12] [--variants 4]
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Executor, Future
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "functions"), str(ROOT)]

import httpx  # noqa: E402

from infra import firestore_emulator  # noqa: E402
from nano_banana import auth, bootstrap, usecases  # noqa: E402
from nano_banana.domain import GeneratedImage, GenerationRequest, GenerationResult  # noqa: E402
from nano_banana.embedded_pg import EmbeddedPostgres  # noqa: E402
from nano_banana.migrations import apply_migrations  # noqa: E402
from nano_banana.settings import Settings  # noqa: E402
from tests.support.delay_proxy import DelayProxy, Exchange, ProxyLoop, chain, describe, waves  # noqa: E402
from tests.support.devserver import free_port, png_bytes  # noqa: E402
from tests.support.fake_cloudtasks import FakeCloudTasks, TaskReceiver  # noqa: E402
from tests.support.storage_server import StorageServer  # noqa: E402

KEY = "service-role-key-bench"
JWT_SECRET = "latency-bench-jwt-secret-0123456789abcdef"
MODES = ("fanout", "sequential")


class Inline(Executor):
    """Runs each submitted call at once on the caller's thread: `together` becomes one call after another."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # handed to the caller through the future, as a pool would
            future.set_exception(exc)
        return future


class InstantGenerator:
    """A model that answers at once with prepared images: what remains is the service's own time."""

    def __init__(self, variants: int) -> None:
        from PIL import Image

        self.images = []
        for i in range(variants):
            buf = io.BytesIO()
            Image.new("RGB", (512, 384), (40 * i, 120, 200)).save(buf, "PNG")
            self.images.append(GeneratedImage(buf.getvalue(), "image/png", 512, 384))

    def generate(self, request: GenerationRequest, *, deadline: datetime) -> GenerationResult:
        return GenerationResult(tuple(self.images[: request.variant_count]))


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


class Sample:
    def __init__(self) -> None:
        self.ms: list[float] = []
        self.waves: list[int] = []
        self.chains: list[int] = []
        self.trips: list[int] = []
        self.paths: list[str] = []
        self.parts: list[tuple[float, float, float, float]] = []

    def add(self, start: float, end: float, exchanges: list[Exchange]) -> None:
        elapsed_s = end - start
        groups = waves(exchanges)
        spans = [(min(e.start for e in g), max(e.end for e in g)) for g in groups]
        if spans:
            inside = sum(b - a for a, b in spans)
            between = sum(max(0.0, spans[i + 1][0] - spans[i][1]) for i in range(len(spans) - 1))
            self.parts.append((spans[0][0] - start, inside, between, end - spans[-1][1]))
        self.ms.append(elapsed_s * 1000)
        self.waves.append(len(groups))
        self.chains.append(chain(exchanges))
        self.trips.append(len(exchanges))
        self.paths.append(describe(groups))

    def row(self, label: str) -> str:
        return (
            f"{label:<26} {statistics.median(self.waves):>5.0f} {statistics.median(self.chains):>5.0f}"
            f" {statistics.median(self.trips):>11.0f}"
            f" {pct(self.ms, 50):>8.1f} {pct(self.ms, 95):>8.1f}"
        )

    def split(self) -> str:
        """Where the time went (medians, ms): before the first wave, inside waves, between them, after."""
        if not self.parts:
            return "no round trips were recorded"
        columns = zip(*self.parts, strict=True)
        before, inside, between, after = (statistics.median(c) * 1000 for c in columns)
        return f"before {before:.1f}, in waves {inside:.1f}, between {between:.1f}, after {after:.1f} ms"

    def path(self) -> str:
        """The most common critical path."""
        return max(set(self.paths), key=self.paths.count)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--delay-ms", type=float, default=20.0, help="added each way on every connection")
    parser.add_argument("--requests", type=int, default=24, help="POST /jobs per mode")
    parser.add_argument("--generations", type=int, default=12, help="generate steps per mode")
    parser.add_argument("--variants", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured rounds per mode")
    parser.add_argument(
        "--monthly-images",
        type=int,
        default=0,
        help="NANO_BANANA_PROJECT_MONTHLY_IMAGES (0: no budget); compare the waves of POST /jobs with and without",
    )
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    began = time.perf_counter()
    delay_s = args.delay_ms / 1000

    with tempfile.TemporaryDirectory() as tmp:
        pg = EmbeddedPostgres(Path(tmp) / "pg")
        emulator = firestore_emulator.start()
        tasks = FakeCloudTasks().start()
        receiver = TaskReceiver()
        storage = StorageServer(KEY)
        proxies = ProxyLoop()
        try:
            apply_migrations(pg.uri)
            socket_dir = pg.uri.rpartition("host=")[2]
            pg_proxy = proxies.add("postgres", f"{socket_dir}/.s.PGSQL.5432", protocol="burst", delay_s=delay_s)
            fs_proxy = proxies.add("firestore", emulator.host, protocol="h2", delay_s=delay_s)
            tasks_proxy = proxies.add("cloudtasks", tasks.endpoint, protocol="h2", delay_s=delay_s)
            storage_port = storage.url.rpartition(":")[2].rstrip("/")
            storage_proxy = proxies.add("storage", f"127.0.0.1:{storage_port}", protocol="burst", delay_s=delay_s)
            all_proxies = [pg_proxy, fs_proxy, tasks_proxy, storage_proxy]
            os.environ["FIRESTORE_EMULATOR_HOST"] = fs_proxy.address
            port = free_port()
            settings = Settings(
                NANO_BANANA_DATABASE_URL=f"postgresql://postgres@{pg_proxy.address}/postgres?sslmode=disable",
                NANO_BANANA_JWT_SECRET=JWT_SECRET,
                NANO_BANANA_DATA_DIR=Path(tmp),
                PORT=port,
                NANO_BANANA_LOG_LEVEL="WARNING",
                NANO_BANANA_RATE_PER_HOUR=10**6,
                NANO_BANANA_MAX_ACTIVE_PER_PROJECT=10**6,
                NANO_BANANA_PROJECT_MONTHLY_IMAGES=args.monthly_images,
                NANO_BANANA_LIMITS="firestore",
                GOOGLE_CLOUD_PROJECT=emulator.project,
                NANO_BANANA_QUEUE="cloudtasks",
                NANO_BANANA_TASKS_ENDPOINT=tasks_proxy.address,
                NANO_BANANA_GENERATE_URL=receiver.url("/tasks/generate"),
                NANO_BANANA_EXPIRE_URL=receiver.url("/tasks/expire"),
                NANO_BANANA_STORAGE="supabase",
                SUPABASE_URL=f"http://{storage_proxy.address}",
                SUPABASE_SERVICE_ROLE_KEY=KEY,
            )
            rt = bootstrap.build(settings)
            try:
                run(args, rt, settings, all_proxies, began)
            finally:
                rt.close()
        finally:
            proxies.stop()
            storage.stop()
            receiver.stop()
            tasks.stop()
            emulator.stop()
            pg.stop()


def run(
    args: argparse.Namespace, rt: bootstrap.Runtime, settings: Settings, proxies: list[DelayProxy], began: float
) -> None:
    from werkzeug.serving import make_server

    from nano_banana.dev import create_app

    svc = rt.services
    generator = InstantGenerator(args.variants)
    svc.generator_factory = lambda: generator
    executors: dict[str, Executor] = {"fanout": svc.fanout, "sequential": Inline()}
    server = make_server("127.0.0.1", settings.port, create_app(rt), threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    user, project = uuid.uuid4(), uuid.uuid4()
    svc.store.add_member(project, user)
    headers = {"Authorization": f"Bearer {auth.issue_dev_token(JWT_SECRET, user)}"}
    image = png_bytes(512, 384)
    samples = {(step, mode): Sample() for step in ("post", "generate") for mode in MODES}

    def between(start: float, end: float) -> list[Exchange]:
        return [e for proxy in proxies for e in proxy.between(start, end)]

    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{settings.port}/api/nano-banana", timeout=60) as client:

            def one_round(mode: str, *, generate: bool, measured: bool) -> None:
                svc.fanout = executors[mode]
                start = time.perf_counter()
                r = client.post(
                    "/jobs",
                    headers=headers,
                    data={"projectId": str(project), "prompt": "latency", "variantCount": str(args.variants)},
                    files={"image": ("a.png", image, "image/png")},
                )
                end = time.perf_counter()
                if r.status_code != 202:
                    raise SystemExit(f"POST /jobs answered {r.status_code}: {r.text[:500]}")
                if measured:
                    samples["post", mode].add(start, end, between(start, end))
                if not generate:
                    return
                time.sleep(2.5 * args.delay_ms / 1000)  # let stragglers of the POST (if any) finish
                start = time.perf_counter()
                done = usecases.run_generation(svc, uuid.UUID(r.json()["jobId"]))
                end = time.perf_counter()
                if done is None or done.status.value != "succeeded":
                    raise SystemExit(f"the generate step did not succeed: {done}")
                if measured:
                    samples["generate", mode].add(start, end, between(start, end))

            for _ in range(args.warmup):
                for mode in MODES:
                    one_round(mode, generate=True, measured=False)
            for i in range(args.requests):
                for mode in MODES if i % 2 == 0 else MODES[::-1]:
                    one_round(mode, generate=i < args.generations, measured=True)
    finally:
        svc.fanout = executors["fanout"]
        server.shutdown()

    print(
        f"latency: {args.delay_ms:g} ms each way on every connection to Postgres, Firestore, Cloud Tasks and Storage"
        f" ({2 * args.delay_ms:g} ms per round trip); {args.requests} POST /jobs and {args.generations} generate"
        f" steps ({args.variants} variants, instant generator) per mode, after {args.warmup} warm-up rounds"
    )
    print(f"{'':<26} {'waves':>5} {'chain':>5} {'round trips':>11} {'p50 ms':>8} {'p95 ms':>8}")
    for step, label in (("post", "POST /jobs"), ("generate", "generate step")):
        for mode in MODES:
            print(samples[step, mode].row(f"{label} ({mode})"))
    for step, label in (("post", "POST /jobs"), ("generate", "generate step")):
        fan, seq = samples[step, "fanout"], samples[step, "sequential"]
        print(
            f"{label}: fanout/sequential p50 ratio {pct(fan.ms, 50) / pct(seq.ms, 50):.2f},"
            f" waves {statistics.median(fan.waves):.0f} vs {statistics.median(seq.waves):.0f},"
            f" chain {statistics.median(fan.chains):.0f} vs {statistics.median(seq.chains):.0f}"
        )
        print(f"  time (fanout):     {fan.split()}")
        print(f"  time (sequential): {seq.split()}")
        print(f"  critical path (fanout):     {fan.path()}")
        print(f"  critical path (sequential): {seq.path()}")
    print(f"wall time {time.perf_counter() - began:.1f} s")


if __name__ == "__main__":
    main()
