"""The simulation's own machinery: the scheduler is deterministic, runs one actor at a time in virtual
time, and every kind of fault is injected and counted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from nano_banana.errors import Unavailable
from nano_banana.together import settle
from tests.simulation.faults import KINDS, FaultPlan, Faulty
from tests.simulation.scheduler import Scheduler, SimExecutor

START = datetime(2030, 1, 1, tzinfo=UTC)


def _interleave(seed: int) -> list[str]:
    sched = Scheduler(seed, START)
    running: list[str] = []

    def actor(name: str) -> None:
        for i in range(5):
            running.append(name)
            assert running.count(name) == 1, "two steps of one actor overlap"
            sched.point(f"{name}.{i}")
            running.remove(name)

    for name in "abc":
        sched.spawn(name, lambda n=name: actor(n))  # type: ignore[misc]
    sched.run_until_idle()
    return sched.trace


def test_the_same_seed_gives_the_same_interleaving_and_another_seed_another() -> None:
    assert _interleave(7) == _interleave(7)
    assert len(_interleave(7)) == 15
    assert any(_interleave(seed) != _interleave(7) for seed in range(8, 12))


def test_sleeps_run_in_virtual_time_and_wake_in_order() -> None:
    sched = Scheduler(1, START)
    woke: list[tuple[str, datetime]] = []

    def sleeper(name: str, seconds: float) -> None:
        sched.sleep(seconds)
        woke.append((name, sched.now))

    sched.spawn("long", lambda: sleeper("long", 3600))
    sched.spawn("short", lambda: sleeper("short", 2))
    sched.run_until_idle()
    assert woke == [("short", START + timedelta(seconds=2)), ("long", START + timedelta(hours=1))]


def test_fanout_runs_each_call_as_an_actor_and_waits_for_all() -> None:
    sched = Scheduler(3, START)
    executor = SimExecutor(sched)
    seen: list[object] = []

    def call(name: str) -> str:
        sched.point(name)
        return name

    def boom() -> str:
        sched.point("boom")
        raise Unavailable("down")

    def request() -> None:
        a, b, c = settle(executor, lambda: call("a"), lambda: call("b"), boom)
        seen.extend([a.get(), b.get(), type(c.error)])

    sched.spawn("request", request)
    sched.run_until_idle()
    assert seen == ["a", "b", Unavailable]
    assert sorted(line.split(": ")[1] for line in sched.trace) == ["a", "b", "boom"]


class Counter:
    def __init__(self) -> None:
        self.applied = 0

    def bump(self) -> int:
        self.applied += 1
        return self.applied


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_of_fault_is_injected_and_counted(kind: str) -> None:
    sched = Scheduler(5, START)
    plan = FaultPlan(rate=1.0)
    target = Counter()
    port = Faulty("limits", target, sched, plan, lambda: Unavailable("down"))
    outcomes: list[object] = []

    def caller() -> None:
        for _ in range(30):
            try:
                outcomes.append(port.bump())
            except Unavailable:
                outcomes.append("raised")

    sched.spawn("caller", caller)
    sched.run_until_idle()
    assert plan.total == 30
    assert plan.counts[f"{kind} limits.bump"] > 0
    fails, loses, delays = (plan.counts[f"{k} limits.bump"] for k in KINDS)
    assert target.applied == loses + delays, "a failed call is not applied; a lost or delayed one is"
    assert outcomes.count("raised") == fails + loses
    assert (sched.now > START) == (delays > 0), "a delay moves virtual time"


def test_no_fault_when_the_plan_is_off() -> None:
    sched = Scheduler(5, START)
    plan = FaultPlan(rate=1.0, enabled=False)
    port = Faulty("queue", Counter(), sched, plan, lambda: Unavailable("down"))
    sched.spawn("caller", lambda: [port.bump() for _ in range(10)])
    sched.run_until_idle()
    assert plan.total == 0
