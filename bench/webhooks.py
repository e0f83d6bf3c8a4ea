"""What a completion webhook costs the generate path (issue 27): real (embedded) Postgres, no HTTP.

The delivery is recorded by a CTE of the `complete` statement itself and its task is enqueued beside the
other post-transition cleanups (usecases/finishing.ended, side by side), so the generate path should see
no extra round trip and only the cost of one more row in its final statement. Times `claim_for_generation`
+ `complete` for jobs with and without a webhook, interleaved, and counts their round trips; then the
delivery task's own round trips (read the job, record the attempt), which run on the webhooks queue.
Usage: .venv/bin/python bench/webhooks.py [--jobs 300]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "functions"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nano_banana.adapters.postgres import PostgresJobStore
from nano_banana.domain import DEFAULT_WEBHOOK_EVENTS, VariantUpload
from nano_banana.embedded_pg import EmbeddedPostgres
from nano_banana.migrations import apply_migrations
from tests.support.new_jobs import new_job


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        pg = EmbeddedPostgres(Path(tmp) / "pg")
        try:
            apply_migrations(pg.uri)
            store = PostgresJobStore(pg.uri, max_size=2)
            user, project = uuid.uuid4(), uuid.uuid4()
            timings: dict[bool, list[float]] = {False: [], True: []}
            trips: dict[bool, int] = {False: 0, True: 0}
            for i in range(2 * args.jobs):
                hooked = i % 2 == 1
                webhook = {"webhook_url": "https://hooks.example.com/h", "webhook_events": DEFAULT_WEBHOOK_EVENTS}
                job = store.create_job(new_job(project, user, **(webhook if hooked else {})))
                assert job is not None
                before = store.round_trips
                start = time.perf_counter()
                claimed = store.claim_for_generation(job.id, datetime.now(UTC))
                assert claimed is not None
                upload = VariantUpload(0, f"jobs/{job.id}/1/0.png", "image/png", 8, 8, 9)
                done = store.complete(job.id, claimed.attempt, [upload], None, now=datetime.now(UTC))
                timings[hooked].append((time.perf_counter() - start) * 1000)
                trips[hooked] += store.round_trips - before
                assert done is not None
                assert (done.webhook is not None) == hooked
            before = store.round_trips
            delivered = store.get_job(job.id)  # what the delivery task reads, then records its attempt
            assert delivered is not None
            store.record_webhook_attempt(
                job.id, "succeeded", state="delivered", status=200, reason=None, now=datetime.now(UTC)
            )
            delivery_trips = store.round_trips - before
            store.close()
        finally:
            pg.stop()
    for hooked in (False, True):
        label = "with a webhook   " if hooked else "without a webhook"
        ms = timings[hooked]
        print(
            f"claim + complete {label}: p50 {pct(ms, 50):6.2f} ms  p95 {pct(ms, 95):6.2f} ms  "
            f"round trips {trips[hooked] / args.jobs:.2f} per job"
        )
    extra = pct(timings[True], 50) - pct(timings[False], 50)
    more = (trips[True] - trips[False]) / args.jobs
    print(f"generate-path cost of a webhook (p50): {extra:+.2f} ms, {more:+.2f} round trips per job")
    print(f"the delivery task (webhooks queue, not the generate path): {delivery_trips} round trips + the POST")


if __name__ == "__main__":
    main()
