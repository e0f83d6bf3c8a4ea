"""Service overhead on the local stack: N jobs through real HTTP with the 0 ms preview generator.

Prints p50/p95/p99 of POST /jobs and of create→succeeded minus generator time, and Postgres round
trips per job. Usage: .venv/bin/python bench/overhead.py [--jobs 200] [--concurrency 4] [--webhook]

--webhook: every job asks for a completion webhook to a local receiver (issue 27); its delivery is recorded
by the `complete` statement itself and enqueued beside the other post-transition cleanups, so the
create→succeeded figure should not move (compare runs with and without it). The delivery task's own round
trips (read the job, record the attempt) are counted apart.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "functions"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nano_banana import auth, bootstrap
from nano_banana.domain import GenerationRequest, GenerationResult
from nano_banana.settings import Settings
from tests.support.devserver import free_port, png_bytes
from tests.support.webhook_receiver import WebhookReceiver


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


class TimedGenerator:
    """Wraps the real generator to measure the time spent inside it per job."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.seconds: dict[uuid.UUID, float] = {}
        self._lock = threading.Lock()

    def generate(self, request: GenerationRequest, *, deadline: datetime) -> GenerationResult:
        start = time.perf_counter()
        result: GenerationResult = self.inner.generate(request, deadline=deadline)  # type: ignore[attr-defined]
        with self._lock:
            self.seconds[request.job_id] = time.perf_counter() - start
        return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--webhook", action="store_true", help="each job asks for a completion webhook")
    args = parser.parse_args()
    receiver = WebhookReceiver() if args.webhook else None

    import logging

    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.WARNING)

    from nano_banana.dev import create_app

    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        settings = Settings(
            NANO_BANANA_DATA_DIR=Path(tmp),
            PORT=port,
            NANO_BANANA_RATE_PER_HOUR=10**6,
            NANO_BANANA_MAX_ACTIVE_PER_PROJECT=10**6,
            NANO_BANANA_LOG_LEVEL=os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
        )
        rt = bootstrap.build(settings)
        timed = TimedGenerator(rt.services.generator)
        rt.services.generator_factory = lambda: timed  # type: ignore[assignment,return-value]
        server = make_server("127.0.0.1", port, create_app(rt), threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        user, project = uuid.uuid4(), uuid.uuid4()
        rt.services.store.add_member(project, user)
        headers = {"Authorization": f"Bearer {auth.issue_dev_token(settings.jwt_secret.get_secret_value(), user)}"}
        image = png_bytes(512, 384)
        base = f"http://127.0.0.1:{port}/api/nano-banana"
        post_ms: list[float] = []
        ids: list[str] = []
        store = rt.services.store
        trips_before = store.round_trips  # type: ignore[attr-defined]

        def create(_: int) -> None:
            with httpx.Client(timeout=30) as client:
                start = time.perf_counter()
                r = client.post(
                    f"{base}/jobs",
                    headers=headers,
                    data={
                        "projectId": str(project),
                        "prompt": "bench",
                        "variantCount": "2",
                        **({"webhookUrl": f"{receiver.base_url}/hook"} if receiver else {}),
                    },
                    files={"image": ("a.png", image, "image/png")},
                )
                post_ms.append((time.perf_counter() - start) * 1000)
                r.raise_for_status()
                ids.append(r.json()["jobId"])

        wall = time.perf_counter()
        with ThreadPoolExecutor(args.concurrency) as pool:
            list(pool.map(create, range(args.jobs)))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            page = store.list_jobs(project, status=None, limit=args.jobs, cursor=None)
            if sum(j.terminal for j in page.jobs) == args.jobs:
                break
            time.sleep(0.05)
        wall = time.perf_counter() - wall
        if receiver is not None:
            receiver.wait_for(args.jobs, timeout_s=120)
            time.sleep(0.5)  # the last deliveries record their attempt
        jobs = store.list_jobs(project, status=None, limit=args.jobs, cursor=None).jobs
        trips = store.round_trips - trips_before  # type: ignore[attr-defined]
        overhead_ms = [
            ((j.finished_at - j.created_at).total_seconds() - timed.seconds.get(j.id, 0.0)) * 1000
            for j in jobs
            if j.finished_at
        ]
        gen_ms = [s * 1000 for s in timed.seconds.values()]
        server.shutdown()
        rt.close()

    succeeded = sum(j.status.value == "succeeded" for j in jobs)
    print(
        f"jobs: {args.jobs} (concurrency {args.concurrency}), succeeded: {succeeded}, wall {wall:.1f} s, {args.jobs / wall:.1f} jobs/s"
    )
    print(
        f"POST /jobs latency ms:            p50 {pct(post_ms, 50):7.1f}  p95 {pct(post_ms, 95):7.1f}  p99 {pct(post_ms, 99):7.1f}"
    )
    print(
        f"create→succeeded minus generator: p50 {pct(overhead_ms, 50):7.1f}  p95 {pct(overhead_ms, 95):7.1f}  p99 {pct(overhead_ms, 99):7.1f}"
    )
    print(f"generator (preview, 0 ms delay):  p50 {pct(gen_ms, 50):7.1f}  p95 {pct(gen_ms, 95):7.1f}")
    print(
        f"Postgres round trips per job: {trips / args.jobs:.2f} (membership check, insert, claim, input history, complete, expire-task no-op)"
    )
    print(f"overhead/generator ratio (p50): {pct(overhead_ms, 50) / max(pct(gen_ms, 50), 0.001):.2f}")
    if receiver is not None:
        print(
            f"webhook deliveries received: {len(receiver.received)} (round trips above include 2 per delivery: "
            "read the job, record the attempt; none on the generate path)"
        )
        receiver.stop()
    _ = statistics


if __name__ == "__main__":
    main()
