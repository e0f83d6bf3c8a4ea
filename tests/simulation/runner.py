"""Runs seeds: random moves interleaved step by step with invariant checks, then quiescence (faults off,
every actor and due task run, one sweep: leases checked; then past every deadline and grace, sweeps:
the rest checked). `run_seeds` prints one summary line."""

from __future__ import annotations

import random
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import psycopg

from nano_banana.adapters.postgres import PostgresJobStore
from nano_banana.usecases import CREATION_GRACE, LATE_UPLOAD_GRACE, LEASE_GRACE
from tests.simulation import invariants
from tests.simulation.moves import Moves
from tests.simulation.scheduler import Deadlock
from tests.simulation.world import Move, Violation, World

MOVES = 40
IN_FLIGHT = 5


@dataclass
class SeedResult:
    seed: int
    steps: int
    faults: int
    violations: list[Violation]
    trace: list[str] = field(default_factory=list)
    processor_mode: bool = False


@contextmanager
def seeded_ids(seed: int) -> Iterator[None]:
    """uuid4 from the seed while the run lasts: job ids, and so every ordering by id, repeat."""
    rng = random.Random(seed * 104729 + 3)
    real = uuid.uuid4
    uuid.uuid4 = lambda: uuid.UUID(int=rng.getrandbits(128), version=4)
    try:
        yield
    finally:
        uuid.uuid4 = real


def run_seed(
    seed: int,
    store: PostgresJobStore,
    conn: psycopg.Connection[Any],
    *,
    moves: int = MOVES,
    fault_rate: float = 0.05,
    processor: bool | None = None,
) -> SeedResult:
    with seeded_ids(seed):
        world = World(seed, store, conn, fault_rate=fault_rate, processor=processor)
        try:
            _explore(world, Moves(world), moves)
            _quiesce(world)
        except Deadlock as exc:
            world.violate(0, f"deadlock: {exc}")
        except Exception as exc:  # a bug of the simulation itself: reported with the seed, the run goes on
            world.violate(0, f"the simulation failed: {''.join(traceback.format_exception(exc))}")
        finally:
            world.sched.stop()
    sched = world.sched
    return SeedResult(seed, sched.steps, world.plan.total, world.violations, sched.trace, world.processor_mode)


def _explore(world: World, moves: Moves, count: int) -> None:
    sched, rng = world.sched, world.sched.rng
    started = 0
    while started < count or sched.actors:
        live = [a for a in sched.actors if not a.done]
        roll = rng.random()
        if started < count and not live and roll < 0.3:
            _time_passes(world, busy=False)  # between requests: minutes, now and then a day
            moves.pick()
            started += 1
        elif started < count and (not live or (roll < 0.2 and len(live) < IN_FLIGHT)):
            moves.pick()
            started += 1
        elif started < count and roll < 0.23:
            _time_passes(world, busy=True)
        elif sched.step():
            invariants.after_step(world)


def _time_passes(world: World, *, busy: bool) -> None:
    """While requests are in flight, seconds (a request lasts seconds, not minutes); between them,
    up to minutes, and now and then a day (retention)."""
    rng = world.sched.rng
    if busy:
        seconds = rng.choice((0.2, 1, 3))
    else:
        seconds = rng.choice((5, 20, 60, 200, 400)) if rng.random() < 0.9 else 86400 + rng.choice((0, 3600))
    world.sched.trace.append(f"  time passes: {seconds} s")
    world.sched.advance(timedelta(seconds=seconds))


def _settle(world: World, moves: Moves) -> None:
    """Run every actor, every due task and (processor mode) every hand-off to the end, faults off."""
    sched = world.sched
    for _ in range(200):
        sched.run_until_idle()
        if world.queue.due():
            moves.deliver()
        elif world.processor_mode and world.processor.inbox:
            moves.process()
        else:
            return
    world.violate(0, "the world did not settle")


def _quiesce(world: World) -> None:
    world.plan.enabled = False
    world.sched.trace.append("  quiescence: faults off")
    moves = Moves(world)
    _settle(world, moves)
    # Past the sweep's creation grace (it gives back a never-inserted job's lease or claim only then), shorter
    # than a lease: a lease or claim still held past one sweep leaked.
    world.sched.advance(CREATION_GRACE + timedelta(seconds=10))
    _settle(world, moves)
    _sweep(world, moves)
    invariants.leases_follow_rows(world)
    grace = timedelta(seconds=world.settings.timeout_s) + LEASE_GRACE + LATE_UPLOAD_GRACE
    for _ in range(3):  # past every deadline, every grace, and the orphan sweep's rest
        world.sched.advance(grace + timedelta(seconds=world.settings.orphan_grace_s + 1))
        _settle(world, moves)
        _sweep(world, moves)
    invariants.at_rest(world)


def _sweep(world: World, moves: Moves) -> None:
    moves.sweep()
    world.sched.run_until_idle()
    _settle(world, moves)


def run_seeds(
    seeds: Sequence[int],
    store: PostgresJobStore,
    conn: psycopg.Connection[Any],
    *,
    trace: bool = False,
    out: Callable[[str], None] = print,
    **options: Any,
) -> list[SeedResult]:
    results = []
    started = time.perf_counter()
    for seed in seeds:
        result = run_seed(seed, store, conn, **options)
        results.append(result)
        if result.violations or trace:
            report(result, out, full=trace)
    elapsed = time.perf_counter() - started
    steps = sum(r.steps for r in results)
    faults = sum(r.faults for r in results)
    violations = sum(len(r.violations) for r in results)
    out(f"({steps / max(elapsed, 1e-9):.0f} steps/s over {elapsed:.1f} s)")
    out(f"simulation: {len(results)} seeds, {steps} steps, {faults} faults injected, {violations} invariant violations")
    return results


def report(result: SeedResult, out: Callable[[str], None], *, full: bool = False) -> None:
    mode = "processor (n8n)" if result.processor_mode else "generator"
    out(f"--- seed {result.seed} ({mode}): {len(result.violations)} violations")
    for v in result.violations:
        out(f"  invariant {v.invariant} at step {v.step}: {v.message}")
    out("  trace:" if full else "  trace (the moves, faults and steps that led to the first violation):")
    lines = result.trace if full else _relevant(result)
    for line in lines:
        out(f"    {line}")
    out(f"  replay: python -m tests.simulation --seed {result.seed} --trace")


def _relevant(result: SeedResult) -> list[str]:
    """The trace up to the first violation, keeping moves, faults, removals, time and the violation."""
    first = result.violations[0].step if result.violations else 0
    kept = []
    for line in result.trace:
        head = line.split(" ", 1)[0]
        if head.isdigit() and int(head) > first:
            break
        if not head.isdigit() or "VIOLATION" in line:
            kept.append(line)
    return kept


__all__ = ["Move", "SeedResult", "report", "run_seed", "run_seeds"]
