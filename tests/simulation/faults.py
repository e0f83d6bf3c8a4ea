"""Faults per port call, drawn from the scheduler's RNG: fail before applying, apply and lose the answer,
or delay. Each port is wrapped in a `Faulty` proxy: every method call is one scheduler step, then maybe
one fault, raising what that port's real adapter raises."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from tests.simulation.scheduler import Scheduler

Kind = Literal["fail", "lose", "delay"]
KINDS: tuple[Kind, ...] = ("fail", "lose", "delay")


@dataclass
class FaultPlan:
    """`rate`: the chance that a port call gets a fault (then one of KINDS at random). `enabled` is
    turned off for quiescence. `only`: restrict faults to these ports (None: all)."""

    rate: float = 0.05
    enabled: bool = True
    only: frozenset[str] | None = None
    # Port methods that never get a fault (reads whose failure only ends a request early, say).
    exempt: frozenset[str] = frozenset()
    counts: Counter[str] = field(default_factory=Counter)
    log: list[tuple[str, str]] = field(default_factory=list)  # (what the call was about, the fault)

    def about(self, job_id: object) -> list[str]:
        """The faults injected into calls about this job (or a path under it)."""
        short = str(job_id)[:8]
        return [fault for about, fault in self.log if short in about]

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def draw(self, scheduler: Scheduler, port: str, method: str) -> Kind | None:
        if not self.enabled or (self.only is not None and port not in self.only):
            return None
        if f"{port}.{method}" in self.exempt:
            return None
        if scheduler.rng.random() >= self.rate:
            return None
        return scheduler.rng.choice(KINDS)


def subject(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """A short name for what a port call is about (a job id, a path), for the trace."""
    if isinstance(kwargs.get("job_id"), uuid.UUID):
        return str(kwargs["job_id"])[:8]
    for value in (*args, *kwargs.values()):
        if isinstance(value, uuid.UUID):
            return str(value)[:8]
        for attr in ("job_id", "id"):
            inner = getattr(value, attr, None)
            if isinstance(inner, uuid.UUID):
                return str(inner)[:8]
        if isinstance(value, str) and "/" in value:
            return value if len(value) < 30 else "…" + value[-22:]
        if isinstance(value, list | tuple) and value and isinstance(value[0], str | uuid.UUID):
            return ",".join(str(v)[:8] if isinstance(v, uuid.UUID) else v.rsplit("/", 3)[-3][:8] for v in value[:3])
    return ""


class Faulty:
    """A port whose every method call is a step and may get a fault. `error` builds the exception the
    real adapter raises for an outage."""

    def __init__(
        self,
        port: str,
        target: object,
        scheduler: Scheduler,
        plan: FaultPlan,
        error: Callable[[], BaseException],
    ) -> None:
        self._port = port
        self._target = target
        self._scheduler = scheduler
        self._plan = plan
        self._error = error

    @property
    def target(self) -> object:
        return self._target

    def __getattr__(self, method: str) -> Any:
        real = getattr(self._target, method)
        if not callable(real):
            return real
        port, scheduler, plan = self._port, self._scheduler, self._plan

        def call(*args: Any, **kwargs: Any) -> Any:
            about = subject(args, kwargs)
            scheduler.point(f"{port}.{method}({about})")
            kind = plan.draw(scheduler, port, method)
            if kind is None:
                return real(*args, **kwargs)
            plan.counts[f"{kind} {port}.{method}"] += 1
            plan.log.append((about, f"{kind} {port}.{method}"))
            actor = scheduler.current()
            if actor is not None:
                actor.faults += 1
            scheduler.trace.append(f"  fault: {kind} {port}.{method}({about})")
            if kind == "fail":
                raise self._error()
            if kind == "delay":
                scheduler.sleep(scheduler.rng.choice((0.5, 2.0, 10.0, 40.0)))
                return real(*args, **kwargs)
            real(*args, **kwargs)
            raise self._error()

        return call
