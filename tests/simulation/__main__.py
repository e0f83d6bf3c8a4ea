"""`python -m tests.simulation --seeds N` (make simulate) or `--seed S --trace` (replay one seed)."""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

import psycopg

from nano_banana.adapters.postgres import PostgresJobStore
from nano_banana.embedded_pg import EmbeddedPostgres
from tests.simulation import database
from tests.simulation.runner import run_seeds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.simulation")
    parser.add_argument("--seeds", type=int, default=20, help="run seeds 1..N")
    parser.add_argument("--seed", type=int, action="append", help="run this seed (repeatable)")
    parser.add_argument("--first", type=int, default=1, help="first seed of --seeds")
    parser.add_argument("--trace", action="store_true", help="print every step of every seed run")
    parser.add_argument("--moves", type=int, default=40, help="moves per seed")
    parser.add_argument("--fault-rate", type=float, default=0.05)
    args = parser.parse_args(argv)
    logging.getLogger("nano_banana").setLevel(logging.CRITICAL)
    seeds = args.seed or list(range(args.first, args.first + args.seeds))
    with tempfile.TemporaryDirectory(prefix="nano-banana-sim-") as tmp:
        pg = EmbeddedPostgres(Path(tmp) / "pg")
        try:
            conninfo = database.prepare(pg.uri)
            store = PostgresJobStore(conninfo, max_size=2)
            with psycopg.connect(conninfo, autocommit=True) as conn:
                results = run_seeds(seeds, store, conn, trace=args.trace, moves=args.moves, fault_rate=args.fault_rate)
            store.close()
        finally:
            pg.stop()
    return 1 if any(r.violations for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
