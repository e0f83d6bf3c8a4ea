"""The simulation on a fixed set of seeds (issue 24): every use case interleaved under faults over the
real Postgres store. A failure prints each failing seed's violations, trace and replay command."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from nano_banana.adapters.postgres import PostgresJobStore
from nano_banana.embedded_pg import EmbeddedPostgres
from tests.simulation import database
from tests.simulation.runner import report, run_seed, run_seeds

pytestmark = pytest.mark.postgres

# 12 seeds, ~15-35 s on two shared cores (`make simulate SEEDS=N` runs more). Besides 1-5, each shows one of
# issue 24's six findings on the code before their fixes: 18 (1: a late success report deletes another job's
# input), 21 (2: retention deletes a fresh refinement), 274 and 143 (3: a replay answered with a job its own
# creation then discards), 112 (4: a deletion whose slot release failed), 15 (5: a foreign-key refusal
# answered 503), 6 (6: a reservation whose answer was lost keeps its lease and key claim).
SEEDS = (1, 2, 3, 4, 5, 6, 15, 18, 21, 112, 143, 274)


@pytest.fixture(scope="module")
def sim_db(embedded_pg: EmbeddedPostgres) -> Iterator[tuple[PostgresJobStore, psycopg.Connection[Any]]]:
    conninfo = database.prepare(embedded_pg.uri)
    store = PostgresJobStore(conninfo, max_size=2)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        yield store, conn
    store.close()


def test_a_seed_replays_step_for_step(sim_db: tuple[PostgresJobStore, psycopg.Connection[Any]]) -> None:
    store, conn = sim_db
    first, again = (run_seed(3, store, conn, moves=15) for _ in range(2))
    assert first.steps > 50
    assert first.trace == again.trace


def test_the_fixed_seeds_keep_every_invariant(
    sim_db: tuple[PostgresJobStore, psycopg.Connection[Any]], caplog: pytest.LogCaptureFixture
) -> None:
    store, conn = sim_db
    lines: list[str] = []
    with caplog.at_level(logging.CRITICAL, logger="nano_banana"):
        results = run_seeds(SEEDS, store, conn, out=lines.append)
    assert sum(r.faults for r in results) > 0, "faults were injected"
    failing = [r for r in results if r.violations]
    text: list[str] = []
    for result in failing:
        report(result, text.append)
    if failing:
        pytest.fail("\n".join([lines[-1], *text]), pytrace=False)
