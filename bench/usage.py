"""What GET /usage's query costs on a busy project: real (embedded) Postgres with the migrations applied.

Inserts `--jobs` ended jobs into one project, spread evenly over the last 92 UTC days (mixed statuses,
images and tokens as the terminal transitions write them), and `--other` jobs into other projects (the
index must skip them). Then runs the usage query (`PostgresJobStore.usage_days`) over the full 92 days
`--runs` times and prints its p50 / p95 / max in ms, the plan's access path, and whether p95 is under the
200 ms target. Usage: .venv/bin/python bench/usage.py [--jobs 100000] [--other 100000] [--runs 20]
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "functions"))

from nano_banana.adapters.postgres import PostgresJobStore, queries
from nano_banana.embedded_pg import EmbeddedPostgres
from nano_banana.migrations import apply_migrations

TARGET_MS = 200.0
DAYS = 92

# One statement per batch: ended jobs created `seconds` apart going back from the end of today, statuses
# in the mix the terminal transitions leave (succeeded with 1-4 images and tokens, failed, canceled).
_SEED = """
insert into pip_ai_image_jobs (
  project_id, user_id, thread_id, prompt, input_path, input_mime_type, input_width, input_height, status,
  error_code, variant_count, model, attempt, created_at, started_at, finished_at, deadline_at, updated_at,
  images, prompt_tokens, output_tokens, total_tokens, generation_ms)
select %(project)s, %(user)s, gen_random_uuid(), 'bench', 'inputs/bench/x.png', 'image/png', 64, 64, s.status,
  case when s.status = 'failed' then 'generation_failed' end, s.variants, 'gemini-2.5-flash-image', 1,
  s.created, s.created + interval '2 seconds', s.created + interval '2 seconds' + s.took, s.created + interval '5 minutes',
  s.created + interval '2 seconds' + s.took,
  case when s.status = 'succeeded' then s.variants else 0 end,
  268, case when s.status = 'succeeded' then 1290 * s.variants end,
  268 + case when s.status = 'succeeded' then 1290 * s.variants else 0 end, extract(epoch from s.took)::int * 1000
from (
  select g,
    %(end)s::timestamptz - make_interval(secs => g * %(seconds)s) as created,
    (array['succeeded', 'succeeded', 'succeeded', 'succeeded', 'succeeded', 'succeeded', 'succeeded', 'failed',
           'canceled', 'succeeded'])[1 + g %% 10] as status,
    1 + g %% 4 as variants,
    make_interval(secs => 5 + (g * 7919) %% 40) as took
  from generate_series(%(first)s::int, %(last)s::int) g
) s
"""


def seed(uri: str, project: uuid.UUID, count: int, end: datetime) -> None:
    seconds = DAYS * 86400 / max(count, 1)
    with psycopg.connect(uri, autocommit=True) as conn:
        for first in range(0, count, 20_000):
            params = {
                "project": project,
                "user": uuid.uuid4(),
                "end": end,
                "seconds": seconds,
                "first": first,
                "last": min(count, first + 20_000) - 1,
            }
            conn.execute(_SEED, params)  # type: ignore[arg-type]
        conn.execute("vacuum analyze pip_ai_image_jobs")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--other", type=int, default=100_000)
    parser.add_argument("--projects", type=int, default=20, help="the other jobs' projects")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--plan", action="store_true", help="print the query plan (explain analyze)")
    args = parser.parse_args()
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    end = today + timedelta(days=1)
    start = end - timedelta(days=DAYS)
    project = uuid.uuid4()
    with tempfile.TemporaryDirectory() as tmp:
        pg = EmbeddedPostgres(Path(tmp) / "pg")
        try:
            apply_migrations(pg.uri)
            began = time.perf_counter()
            seed(pg.uri, project, args.jobs, end - timedelta(seconds=1))
            for _ in range(args.projects):
                seed(pg.uri, uuid.uuid4(), args.other // max(args.projects, 1), end - timedelta(seconds=1))
            seeded_s = time.perf_counter() - began
            store = PostgresJobStore(pg.uri)
            store.usage_days(project, start, end)  # warm: the connection, the plan, the pages
            samples = []
            for _ in range(args.runs):
                t = time.perf_counter()
                buckets = store.usage_days(project, start, end)
                samples.append((time.perf_counter() - t) * 1000)
            with psycopg.connect(pg.uri) as conn:
                plan = [
                    row[0]
                    for row in conn.execute(
                        "explain (analyze, buffers) " + queries()["usage_days"],  # type: ignore[arg-type]
                        {"project_id": project, "start": start, "end": end},
                    )
                ]
            store.close()
        finally:
            pg.stop()
    totals = next(b for b in buckets if b.day is None)
    samples.sort()
    p50 = statistics.median(samples)
    p95 = samples[max(0, int(len(samples) * 0.95) - 1)]
    access = sorted({re.sub(r"^->\s*", "", line.strip()).split("  (")[0] for line in plan if " Scan" in line})
    print(f"seeded {args.jobs} jobs in the project and {args.other} in {args.projects} others in {seeded_s:.1f} s")
    print(
        f"usage query over {DAYS} days: {len(buckets) - 1} day buckets, {totals.jobs} jobs, {totals.images} images, "
        f"{totals.total_tokens} tokens"
    )
    print(f"access path: {'; '.join(access)}")
    if args.plan:
        print("\n".join(plan))
    print(f"query time over {args.runs} runs: p50 {p50:.1f} ms, p95 {p95:.1f} ms, max {samples[-1]:.1f} ms")
    verdict = "under" if p95 < TARGET_MS else "NOT under"
    print(f"p95 {p95:.1f} ms is {verdict} the {TARGET_MS:.0f} ms target here")


if __name__ == "__main__":
    main()
