"""What one sweep costs as history grows: real (embedded) Postgres, in-memory limits counting the limits
documents the reconciliation reads.

Builds `--history` ended jobs whose leases expired long ago, `--recent` jobs ended within the lease
grace spread over `--projects` projects (`--leaked` of them still holding a lease), and `--queued` jobs
queued past the requeue grace whose generate task is still waiting. Prints the sweep's Postgres round
trips, limits documents read (only those holding a lease or claim) and releases, and its time, for two
history sizes (bounded = independent of history).
Usage: .venv/bin/python bench/sweep.py [--history 5000] [--recent 200] [--projects 50] [--leaked 10]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "functions"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nano_banana import usecases
from nano_banana.adapters.limits_memory import MemoryLimits
from nano_banana.adapters.postgres import PostgresJobStore
from nano_banana.domain import NewJob
from nano_banana.embedded_pg import EmbeddedPostgres
from nano_banana.migrations import apply_migrations
from nano_banana.ports import Holding, HoldingKind, HoldingsPage, Task
from nano_banana.settings import Settings
from tests.support.memory_blobs import MemoryBlobStore
from tests.support.new_jobs import new_job
from tests.support.recording_queue import RecordingQueue

USER = uuid.UUID(int=7)


class CountingLimits(MemoryLimits):
    reads = 0
    releases = 0

    def holdings(self, kind: HoldingKind, *, offset: int, limit: int) -> HoldingsPage:
        page = super().holdings(kind, offset=offset, limit=limit)
        self.reads += page.documents
        return page

    def drop(self, holding: Holding) -> bool:
        self.releases += 1
        return super().drop(holding)


def _job(project: uuid.UUID, deadline: datetime) -> NewJob:
    job_id = uuid.uuid4()
    return new_job(
        project,
        USER,
        id=job_id,
        prompt="bench",
        input_path=f"inputs/{USER}/{job_id}.png",
        input_width=8,
        input_height=8,
        variant_count=1,
        deadline_at=deadline,
    )


def measure(uri: str, store: PostgresJobStore, args: argparse.Namespace, history: int) -> dict[str, float]:
    now = datetime.now(UTC)
    cfg = Settings(NANO_BANANA_RATE_PER_HOUR=10**6, NANO_BANANA_MAX_ACTIVE_PER_PROJECT=10**6)
    limits = CountingLimits(cfg.rate_per_hour, cfg.max_active_per_project, lambda: now)
    queue = RecordingQueue()
    svc = usecases.Services(
        settings=cfg,
        store=store,
        limits=limits,
        queue=queue,
        blobs=MemoryBlobStore(),
        generator_factory=None,
        processor_factory=None,
        clock=lambda: now,
    )
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute("truncate pip_ai_image_messages, pip_ai_image_variants, pip_ai_image_jobs cascade")
    for i in range(history):  # ended long ago: leases expired
        job = store.create_job(_job(uuid.UUID(int=10_000 + i % 500), now - timedelta(hours=2)))
        assert job is not None
        store.cancel(job.id)
    projects = [uuid.uuid4() for _ in range(args.projects)]
    deadline = now + timedelta(seconds=cfg.timeout_s - 120)  # created two minutes ago
    for i in range(args.recent):
        job = store.create_job(_job(projects[i % len(projects)], deadline))
        assert job is not None
        if i < args.leaked:  # reserved, ended, never released
            limits.reserve(user_id=USER, project_id=job.project_id, job_id=job.id, lease_expires_at=deadline)
        store.cancel(job.id)
    for _ in range(args.queued):
        job = store.create_job(_job(projects[0], deadline))
        assert job is not None
        queue.enqueue(Task(kind="generate", job_id=job.id))
    trips = store.round_trips
    started = time.perf_counter()
    usecases.sweep(svc)
    ms = (time.perf_counter() - started) * 1000
    return {
        "trips": store.round_trips - trips,
        "reads": limits.reads,
        "releases": limits.releases,
        "ms": ms,
        "queue_calls": queue.enqueue_calls - args.queued,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--history", type=int, default=5000)
    parser.add_argument("--recent", type=int, default=200)
    parser.add_argument("--projects", type=int, default=50)
    parser.add_argument("--leaked", type=int, default=10)
    parser.add_argument("--queued", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        pg = EmbeddedPostgres(Path(tmp) / "pg")
        try:
            apply_migrations(pg.uri)
            store = PostgresJobStore(pg.uri)
            small = measure(pg.uri, store, args, history=args.history // 10)
            large = measure(pg.uri, store, args, history=args.history)
            store.close()
        finally:
            pg.stop()
    for m, n in ((small, args.history // 10), (large, args.history)):
        print(
            f"history {n:6d} ended jobs: sweep {m['ms']:7.1f} ms, Postgres round trips {m['trips']:.0f}, "
            f"limits documents read {m['reads']:.0f} (projects holding a lease: {args.leaked}), "
            f"releases {m['releases']:.0f} (leaked: {args.leaked}), queue creates {m['queue_calls']:.0f}"
        )
    print(f"round trips large/small history: {large['trips'] / max(small['trips'], 1):.2f}")
    print(f"sweep time large/small history: {large['ms'] / max(small['ms'], 0.001):.2f}")


if __name__ == "__main__":
    main()
