"""Smoke runs of the benchmark scripts with tiny sizes: they run and print their figures."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.bench
ROOT = Path(__file__).resolve().parents[2]


def run(script: str, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_overhead() -> None:
    out = run("overhead.py", "--jobs", "5", "--concurrency", "2")
    assert "succeeded: 5" in out
    assert "Postgres round trips per job" in out


def test_overhead_with_webhooks() -> None:
    out = run("overhead.py", "--jobs", "5", "--concurrency", "2", "--webhook")
    assert "succeeded: 5" in out
    assert "webhook deliveries received: 5" in out


def test_webhooks_add_no_round_trip_to_the_generate_path() -> None:
    out = run("webhooks.py", "--jobs", "10")
    assert "+0.00 round trips per job" in out
    assert "the delivery task (webhooks queue, not the generate path): 2 round trips" in out


def test_sweep() -> None:
    out = run("sweep.py", "--history", "20", "--recent", "10", "--projects", "5", "--leaked", "2", "--queued", "2")
    assert "releases 2 (leaked: 2), queue creates 0" in out
    assert "limits documents read 2 " in out


def test_coldstart() -> None:
    out = run("coldstart.py", "--runs", "1", "--stack-runs", "1", "--skip-aiplatform")
    assert "api" in out
    assert "generate" in out
    assert re.search(r"GET 200 +\d+ +\d+ +\d+", out), "a cold instance answered its first GET"
    assert re.search(r"POST 202 +\d+ +\d+ +\d+", out), "a cold instance answered its first POST"
    assert "imported before the first GET answer (after): no Firestore, no Cloud Tasks" in out
    assert "ratio GET after / before" in out


def test_contention() -> None:
    out = run("contention.py", "--requests", "40", "--users", "4", "--projects", "2")
    assert "slot or rate violations: 0" in out
    assert "admitted 4 (expected 4)" in out


def test_memory() -> None:
    out = run("memory.py", "--size-mb", "1", "--variants", "2")
    assert "job succeeded" in out
    assert "peak RSS" in out


def test_api_memory() -> None:
    out = run("api_memory.py", "--side", "1200", "--requests", "3")
    assert "budgets" in out
    assert "unbounded / budgets peak RSS" in out
    assert "3x403" in out


def test_signing() -> None:
    out = run("signing.py", "--jobs", "3", "--variants", "2", "--rtt-ms", "1", "--runs", "1")
    assert "9 signed URLs" in out
    assert re.search(r"path by path\s+9 storage calls", out)
    assert re.search(r"signer, cold \(bulk\)\s+1 storage calls", out)
    assert re.search(r"signer, warm \(cached\)\s+0 storage calls", out)


def test_retention() -> None:
    out = run("retention.py", "--threads", "3", "--turns", "2", "--batch", "4", "--rtt-ms", "0")
    assert "jobs deleted: 4, blobs deleted: 12" in out, "two whole threads fit a batch of 4 jobs"
    assert "ms per job" in out


def test_latency() -> None:
    out = run("latency.py", "--requests", "2", "--generations", "1", "--warmup", "1", "--variants", "2")
    rows = {
        m.group(1): (int(m.group(2)), int(m.group(3)), int(m.group(4)))
        for m in re.finditer(
            r"^(POST /jobs|generate step) \((?:fanout|sequential)\)\s+(\d+)\s+(\d+)\s+(\d+)", out, re.M
        )
    }
    assert set(rows) == {"POST /jobs", "generate step"}, out
    for waves, chain, trips in rows.values():
        assert 0 < waves <= trips, out
        assert 0 < chain <= trips, out
    assert "POST /jobs: fanout/sequential p50 ratio" in out
    assert "generate step: fanout/sequential p50 ratio" in out
    # Every dependency's round trips were seen through its proxy (gRPC streams included).
    for dependency in ("postgres", "firestore", "cloudtasks", "storage"):
        assert dependency in out.split("POST /jobs: fanout")[1], dependency


def test_usage() -> None:
    out = run("usage.py", "--jobs", "2000", "--other", "400", "--projects", "2", "--runs", "2")
    assert "usage query over 92 days: 92 day buckets, 2000 jobs" in out
    assert re.search(r"query time over 2 runs: p50 [\d.]+ ms", out)
    assert "the 200 ms target here" in out


def test_contention_with_a_budget() -> None:
    out = run(
        "contention.py",
        *("--requests", "40", "--users", "10", "--projects", "2", "--rate", "100", "--slots", "100"),
        *("--budget", "5", "--images", "2", "--instances", "2"),
    )
    assert "admitted 4 (expected 4)" in out
    assert "images reserved per project [4, 4]; budget violations: 0" in out
