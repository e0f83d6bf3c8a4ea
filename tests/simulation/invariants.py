"""The global invariants, read from the rows (the truth) and the stand-ins' state.

1 every job answered 2xx exists until a deletion that may remove it (owner, retention, erasure), and
  reaches exactly one terminal state; terminal states never change
2 at most `rate` admitted jobs per user per hour and `max_active` active jobs per project, at every instant
3 no lease or key claim outlives its job past one sweep (at quiescence)
4 every path a live row references exists in storage; at quiescence no object is left that nothing references
5 an Idempotency-Key maps to at most one job, and a replay returns that job (world.answer)
6 every acknowledged callback's transition is applied (moves.Moves._report)
7 a request no fault touched never answers 5xx (a definite outcome is not "unknown")
8 nothing raises an unexpected exception (a 500)
9 budget: a hook for monthly image budgets (issue 28), off until budgets exist
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from nano_banana.adapters.limits_memory import to_epoch
from tests.simulation.world import World

TERMINAL = {"succeeded", "failed", "canceled"}
ACTIVE = {"queued", "running"}
WINDOW = timedelta(hours=1)

BudgetCheck = Callable[[World, dict[uuid.UUID, dict[str, Any]]], None]
BUDGET_CHECKS: list[BudgetCheck] = []  # issue 28: append a check of images per user per month


def after_step(world: World) -> None:
    rows = world.rows()
    _terminal_never_changes(world, rows)
    _limits_hold(world, rows)
    _referenced_paths_exist(world, rows)
    for check in BUDGET_CHECKS:
        check(world, rows)


def _terminal_never_changes(world: World, rows: dict[uuid.UUID, dict[str, Any]]) -> None:
    for job_id, row in rows.items():
        before = world.statuses.get(job_id)
        if before in TERMINAL and row["status"] != before:
            world.violate(1, f"job {job_id} left its terminal state {before} for {row['status']}")
        world.statuses[job_id] = row["status"]


def _limits_hold(world: World, rows: dict[uuid.UUID, dict[str, Any]]) -> None:
    now = world.sched.now
    active = Counter(r["project_id"] for r in rows.values() if r["status"] in ACTIVE and r["deadline_at"] > now)
    for project, count in active.items():
        if count > world.settings.max_active_per_project:
            world.violate(2, f"project {project} has {count} active jobs", key=f"2 active {project}")
    recent = Counter(r["user_id"] for r in rows.values() if r["created_at"] > now - WINDOW)
    for user, count in recent.items():
        if count > world.settings.rate_per_hour:
            world.violate(2, f"user {user} has {count} jobs admitted within an hour", key=f"2 rate {user}")


def referenced(rows: dict[uuid.UUID, dict[str, Any]]) -> dict[str, uuid.UUID]:
    paths: dict[str, uuid.UUID] = {}
    for job_id, row in rows.items():
        paths.setdefault(row["input_path"], job_id)
        for path in row["variants"]:
            paths.setdefault(path, job_id)
    return paths


def _referenced_paths_exist(world: World, rows: dict[uuid.UUID, dict[str, Any]]) -> None:
    objects = world.blobs.objects
    for path, job_id in referenced(rows).items():
        if path not in objects:
            row = rows[job_id]
            use = "input" if row["input_path"] == path else "variant"
            world.violate(
                4,
                f"{path} ({use} of job {job_id}, {row['status']}) is missing from storage; deleted by"
                f" {world.blobs.deleted_by.get(path, 'nobody')}",
                key=f"4 missing {path}",
            )


def leases_follow_rows(world: World) -> None:
    """At quiescence, after one sweep: every live lease belongs to an active job, every live claim to a job."""
    rows = world.rows()
    now = to_epoch(world.sched.now)
    for project, leases in sorted(world.limits._leases.items()):
        for job_key, expires in sorted(leases.items()):
            row = rows.get(uuid.UUID(job_key))
            if expires > now and (row is None or row["status"] not in ACTIVE):
                state = "no row" if row is None else row["status"]
                world.violate(
                    3,
                    f"lease of job {job_key} ({state}) in project {project} outlives its job past a sweep"
                    f" (expires in {expires - now:.0f} s); faults on it: {world.plan.about(job_key)}",
                )
    for user, claims in sorted(world.limits._claims.items()):
        for claim, (job_key, expires) in sorted(claims.items()):
            if expires > now and uuid.UUID(job_key) not in rows:
                world.violate(
                    3,
                    f"key claim {claim[:8]} of user {user} held by job {job_key}, which has no row, outlives it"
                    f" past a sweep (expires in {expires - now:.0f} s); faults on it: {world.plan.about(job_key)}",
                )


def at_rest(world: World) -> None:
    """After every deadline, grace and sweep: every job terminal, every object referenced."""
    rows = world.rows()
    for job_id, row in rows.items():
        if row["status"] not in TERMINAL:
            world.violate(1, f"job {job_id} is still {row['status']} after every deadline and sweep")
    for job_id, how in world.answered.items():
        if job_id not in rows and not world.removed.get(job_id, "").startswith("legit"):
            world.violate(1, f"job {job_id} answered 2xx ({how}) is gone ({world.removed.get(job_id, 'unknown')})")
    keep = referenced(rows)
    for path in sorted(world.blobs.objects):
        if path not in keep:
            world.violate(4, f"{path} is left in storage though no row references it, after grace and sweeps")
    _referenced_paths_exist(world, rows)
