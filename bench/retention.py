"""What one sweep run's retention step costs on Supabase Storage, to size NANO_BANANA_RETENTION_BATCH.

Builds --threads expired threads of --turns jobs each (--variants outputs per job) in an embedded Postgres,
their blobs behind the local Storage server (storage3 talks to it; every request waits --rtt-ms, standing
in for the network between the function and Supabase), then runs `apply_retention` once with the batch
(jobs per run) set to --batch. Figures: jobs and blobs deleted, Storage calls, Postgres statements, wall
time, and the time per job: the batch that fits a time budget is budget / (time per job).
Usage: .venv/bin/python bench/retention.py [--threads 20] [--turns 3] [--variants 2] [--batch 200] [--rtt-ms 30]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "functions"), str(ROOT)]

import psycopg  # noqa: E402

from nano_banana import usecases  # noqa: E402
from nano_banana.adapters.blobs_supabase import SupabaseBlobStore  # noqa: E402
from nano_banana.adapters.limits_memory import MemoryLimits  # noqa: E402
from nano_banana.adapters.postgres import PostgresJobStore  # noqa: E402
from nano_banana.domain import NewJob, VariantUpload, input_path, output_path  # noqa: E402
from nano_banana.embedded_pg import EmbeddedPostgres  # noqa: E402
from nano_banana.migrations import apply_migrations  # noqa: E402
from nano_banana.settings import Settings  # noqa: E402
from tests.support.recording_queue import RecordingQueue  # noqa: E402
from tests.support.storage_server import StorageServer  # noqa: E402

KEY = "service-role-key-bench"


def now() -> datetime:
    return datetime.now(UTC)


def new_job(user: uuid.UUID, project: uuid.UUID, parent: uuid.UUID | None, thread: uuid.UUID | None) -> NewJob:
    job_id = uuid.uuid4()
    return NewJob(
        id=job_id,
        project_id=project,
        user_id=user,
        thread_id=thread or job_id,
        parent_job_id=parent,
        source_variant_id=None,
        prompt="bench",
        input_path=input_path(user, uuid.uuid4(), "image/png"),
        input_mime_type="image/png",
        input_width=8,
        input_height=8,
        variant_count=2,
        aspect_ratio=None,
        model="preview",
        idempotency_key=None,
        request_hash=None,
        deadline_at=now() + timedelta(minutes=5),
    )


def build(store: PostgresJobStore, blobs: SupabaseBlobStore, args: argparse.Namespace) -> int:
    user, project = uuid.uuid4(), uuid.uuid4()
    jobs = 0
    for _ in range(args.threads):
        parent: uuid.UUID | None = None
        thread: uuid.UUID | None = None
        for _turn in range(args.turns):
            new = new_job(user, project, parent, thread)
            job = store.create_job(new) if parent is None else store.create_refinement(new, max_turns=100)
            assert job is not None
            assert not isinstance(job, int)
            blobs.put(new.input_path, b"\x89PNG", "image/png")
            claimed = store.claim_for_generation(job.id, now())
            assert claimed is not None
            uploads = []
            for index in range(args.variants):
                path = output_path(job.id, claimed.attempt, index, "image/png")
                blobs.put(path, b"\x89PNG", "image/png")
                uploads.append(VariantUpload(index, path, "image/png", 8, 8, 4))
            assert store.complete(job.id, claimed.attempt, uploads, None, now=now()) is not None
            parent, thread = job.id, job.thread_id
            jobs += 1
    return jobs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=20)
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--variants", type=int, default=2)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--rtt-ms", type=float, default=30.0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        pg = EmbeddedPostgres(Path(tmp) / "pg")
        server = StorageServer(KEY)
        try:
            apply_migrations(pg.uri)
            store = PostgresJobStore(pg.uri, max_size=2)
            blobs = SupabaseBlobStore(server.url, KEY, "pip-ai-images", timeout_s=30)
            built = build(store, blobs, args)
            with psycopg.connect(pg.uri, autocommit=True) as conn:
                conn.execute(
                    "update pip_ai_image_jobs set created_at = created_at - interval '40 days',"
                    " finished_at = finished_at - interval '40 days'"
                )
            svc = usecases.Services(
                settings=Settings(NANO_BANANA_RETENTION_DAYS=30, NANO_BANANA_RETENTION_BATCH=args.batch),
                store=store,
                limits=MemoryLimits(10, 10, now),
                queue=RecordingQueue(),
                blobs=blobs,
                generator_factory=None,
                processor_factory=None,
                clock=now,
            )
            objects_before = len(server.objects)
            server.delay_s = args.rtt_ms / 1000
            calls, statements = len(server.calls), store.round_trips
            started = time.perf_counter()
            deleted = usecases.apply_retention(svc)
            elapsed_ms = (time.perf_counter() - started) * 1000
            calls, statements = len(server.calls) - calls, store.round_trips - statements
            print(f"built {args.threads} threads x {args.turns} turns = {built} jobs, {objects_before} blobs")
            print(f"one retention run (batch {args.batch} jobs, storage RTT {args.rtt_ms:.0f} ms):")
            print(f"  jobs deleted: {deleted}, blobs deleted: {objects_before - len(server.objects)}")
            print(f"  storage calls: {calls} ({calls / max(deleted, 1):.2f} per job)")
            print(f"  postgres statements: {statements}")
            print(f"  wall time: {elapsed_ms:.0f} ms ({elapsed_ms / max(deleted, 1):.1f} ms per job)")
            print(
                f"  jobs that fit a 30 s budget at this rate: {int(30_000 / max(elapsed_ms / max(deleted, 1), 0.001))}"
            )
            blobs.close()
            store.close()
        finally:
            server.stop()
            pg.stop()


if __name__ == "__main__":
    main()
