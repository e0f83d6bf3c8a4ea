"""N simultaneous creations across users and projects against the Firestore emulator (FirestoreLimits).

Prints admitted vs expected, slot violations (must be 0) and latency. --instances N spreads the requests
over N FirestoreLimits objects, each with its own Firestore client, standing in for N function
instances (within one, attempts on a document take turns; between them, only Firestore's preconditions
decide). With --budget B, each reservation also takes --images K images of its project's monthly budget B
in the same commit, and the images admitted per project are checked against B (budget violations, must
be 0). Usage:
.venv/bin/python bench/contention.py [--requests 500 --users 20 --projects 5 --instances 1 --budget 0 --images 1]
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "functions"), str(ROOT)]

from infra import firestore_emulator  # noqa: E402
from nano_banana.errors import BudgetExceeded, ConcurrencyLimited, RateLimited, Unavailable  # noqa: E402


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--projects", type=int, default=5)
    parser.add_argument("--rate", type=int, default=10)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--instances", type=int, default=1)
    parser.add_argument("--budget", type=int, default=0, help="images per project per month (0: none)")
    parser.add_argument("--images", type=int, default=1, help="images per reservation (with --budget)")
    args = parser.parse_args()
    images = args.images if args.budget else 0
    emulator = firestore_emulator.start()
    os.environ["FIRESTORE_EMULATOR_HOST"] = emulator.host
    try:
        from google.cloud import firestore

        from nano_banana.adapters.limits_firestore import FirestoreLimits

        instances = [
            FirestoreLimits(
                firestore.Client(project="bench"), "bench", args.rate, args.slots, lambda: datetime.now(UTC)
            )
            for _ in range(args.instances)
        ]
        limits = instances[0]
        users = [uuid.uuid4() for _ in range(args.users)]
        projects = [uuid.uuid4() for _ in range(args.projects)]
        barrier = threading.Barrier(min(args.requests, 200))
        outcomes: Counter[str] = Counter()
        latencies: list[float] = []
        admitted: list[tuple[uuid.UUID, uuid.UUID]] = []
        lock = threading.Lock()

        def attempt(i: int) -> None:
            user, project = users[i % len(users)], projects[(i // len(users)) % len(projects)]
            if i < barrier.parties:
                barrier.wait()
            start = time.perf_counter()
            try:
                instances[i % len(instances)].reserve(
                    user_id=user,
                    project_id=project,
                    job_id=uuid.uuid4(),
                    lease_expires_at=datetime.now(UTC) + timedelta(minutes=6),
                    images=images,
                    monthly_images=args.budget or None,
                )
                outcome = "admitted"
                with lock:
                    admitted.append((user, project))
            except RateLimited:
                outcome = "rate_limited"
            except ConcurrencyLimited:
                outcome = "concurrency_limited"
            except BudgetExceeded:
                outcome = "budget_exceeded"
            except Unavailable:
                outcome = "unavailable"
            with lock:
                outcomes[outcome] += 1
                latencies.append((time.perf_counter() - start) * 1000)

        started = time.perf_counter()
        with ThreadPoolExecutor(200) as pool:
            list(pool.map(attempt, range(args.requests)))
        wall = time.perf_counter() - started
        per_project = Counter(p for _, p in admitted)
        per_user = Counter(u for u, _ in admitted)
        per_project_cap = min(args.slots, args.budget // images) if images else args.slots
        expected = min(args.projects * per_project_cap, args.users * args.rate, args.requests)
        violations = sum(max(0, n - args.slots) for n in per_project.values()) + sum(
            max(0, n - args.rate) for n in per_user.values()
        )
        live = sum(len(limits.active_jobs(p)) for p in projects)
        print(
            f"{args.requests} simultaneous reservations, {args.users} users, {args.projects} projects (rate {args.rate}/h, {args.slots} slots), {args.instances} instance(s): {wall:.1f} s"
        )
        print(
            f"admitted {outcomes['admitted']} (expected {expected}), leases held {live}; "
            + ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items()) if k != "admitted")
        )
        print(f"slot or rate violations: {violations}")
        if images:
            counted = {p: limits.month_usage(p, datetime.now(UTC)).counted for p in projects}
            over = sum(max(0, n * images - args.budget) for n in per_project.values())
            stored_over = sum(max(0, n - args.budget) for n in counted.values())
            print(
                f"budget {args.budget} images/project, {images} per job: images reserved per project "
                f"{sorted(counted.values())}; budget violations: {over + stored_over}"
            )
        print(f"latency ms: p50 {pct(latencies, 50):.0f}  p95 {pct(latencies, 95):.0f}  max {max(latencies):.0f}")
    finally:
        emulator.stop()


if __name__ == "__main__":
    main()
