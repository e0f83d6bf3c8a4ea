"""Signing a list page's image URLs on Supabase Storage: path by path vs the signer's one bulk call.

A page of --jobs jobs with --variants variants each carries jobs * (1 + variants) signed URLs. storage3
talks to the local Storage server, which waits --rtt-ms on every request to stand in for the network
between the function and Supabase. Figures: storage calls and wall time for (a) one create_signed_url per
path, as responses were rendered before the signer, (b) the signer cold (one bulk call), (c) the signer
warm (the same page read again while its URLs are young: no call).
Usage: .venv/bin/python bench/signing.py [--jobs 20] [--variants 4] [--rtt-ms 30] [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "functions"), str(ROOT)]

from nano_banana.adapters.blobs_supabase import SupabaseBlobStore  # noqa: E402
from nano_banana.signing import UrlSigner  # noqa: E402
from tests.support.storage_server import StorageServer  # noqa: E402

KEY = "service-role-key-bench"
TTL = 3600


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--variants", type=int, default=4)
    parser.add_argument("--rtt-ms", type=float, default=30.0)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    server = StorageServer(KEY)
    store = SupabaseBlobStore(server.url, KEY, "pip-ai-images", timeout_s=30)
    paths = [f"inputs/u/{j}.png" for j in range(args.jobs)]
    paths += [f"jobs/{j}/1/{v}.png" for j in range(args.jobs) for v in range(args.variants)]
    for path in paths:
        store.put(path, b"\x89PNG", "image/png")
    server.delay_s = args.rtt_ms / 1000

    def timed(fn: object) -> tuple[float, int]:
        before = len(server.calls)
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        return (time.perf_counter() - start) * 1000, len(server.calls) - before

    per_path, cold, warm = [], [], []
    for _ in range(args.runs):
        per_path.append(timed(lambda: [store.signed_url(p, ttl_s=TTL) for p in paths]))
        signer = UrlSigner(store, ttl_s=TTL, clock=lambda: datetime.now(UTC))
        cold.append(timed(lambda signer=signer: signer.sign(paths)))
        warm.append(timed(lambda signer=signer: signer.sign(paths)))
    store.close()
    server.stop()

    print(f"list page: {args.jobs} jobs x (1 input + {args.variants} variants) = {len(paths)} signed URLs")
    print(f"simulated round trip to Storage: {args.rtt_ms:.0f} ms; median of {args.runs} runs")
    rows = [("path by path", per_path), ("signer, cold (bulk)", cold), ("signer, warm (cached)", warm)]
    for name, results in rows:
        ms = statistics.median(r[0] for r in results)
        calls = results[0][1]
        print(f"  {name:<24} {calls:>4} storage calls  {ms:>9.1f} ms")
    ratio = statistics.median(r[0] for r in per_path) / max(statistics.median(r[0] for r in cold), 0.001)
    print(f"path by path / bulk: {ratio:.1f}x wall time")


if __name__ == "__main__":
    main()
