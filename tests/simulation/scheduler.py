"""One seeded scheduler over actor threads that pass a baton: exactly one actor runs at a time.

An actor runs until it reaches a step (`point`: before every port call), a virtual sleep or a wait on a
future; then the scheduler picks the next runnable actor with its seeded RNG. Time is virtual: it moves
only when every actor sleeps (to the earliest wake-up) or when the world advances it. Given the seed,
the interleaving is the same on every run.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

T = TypeVar("T")


class Deadlock(RuntimeError):
    """Every live actor waits on something no runnable actor can bring about."""


class Stopped(BaseException):
    """Raised inside an actor thread when the scheduler abandons the run (it unwinds the thread)."""


@dataclass(eq=False)
class Actor:
    name: str
    fn: Callable[[], Any]
    parent: Actor | None = None
    wake_at: datetime | None = None
    until: Callable[[], bool] | None = None
    done: bool = False
    result: Any = None
    error: BaseException | None = None
    after_step: int = 0  # a late arrival: runs once the others made this many steps (or none can run)
    faults: int = 0  # faults injected into this actor's own calls (children's are added when they end)
    on_end: list[Callable[[Actor], None]] = field(default_factory=list)
    number: int = 0  # unique per run (an id() is reused once the actor is collected)
    go: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    @property
    def root(self) -> Actor:
        return self if self.parent is None else self.parent.root


class Scheduler:
    def __init__(self, seed: int, start: datetime) -> None:
        self.rng = random.Random(seed)
        self.now = start
        self.actors: list[Actor] = []
        self.steps = 0
        self.trace: list[str] = []
        self.on_advance: list[Callable[[datetime], None]] = []
        self._back = threading.Event()
        self._local = threading.local()
        self._stopping = False
        self._spawned = 0

    # ------------------------------------------------------------ inside actors

    def current(self) -> Actor | None:
        actor: Actor | None = getattr(self._local, "actor", None)
        return actor

    def point(self, label: str) -> None:
        """A step: record it and let the scheduler pick who runs next (no-op outside actors)."""
        actor = self.current()
        if actor is None:
            return
        self._yield(actor)
        self.steps += 1
        self.trace.append(f"{self.steps} {actor.name}: {label}")

    def sleep(self, seconds: float) -> None:
        actor = self.current()
        if actor is None:
            self.advance(timedelta(seconds=seconds))
            return
        actor.wake_at = self.now + timedelta(seconds=seconds)
        self._yield(actor)

    def monotonic(self) -> float:
        return self.now.timestamp()

    def wait_until(self, ready: Callable[[], bool]) -> None:
        actor = self.current()
        if actor is None:
            if not ready():
                raise Deadlock("a wait outside any actor")
            return
        while not ready():
            actor.until = ready
            self._yield(actor)

    def _yield(self, actor: Actor) -> None:
        self._back.set()
        actor.go.wait()
        actor.go.clear()
        if self._stopping:
            raise Stopped

    # ------------------------------------------------------------ the world's side

    def spawn(self, name: str, fn: Callable[[], Any], *, parent: Actor | None = None, later: int = 0) -> Actor:
        self._spawned += 1
        actor = Actor(name=name, fn=fn, parent=parent, after_step=self.steps + later, number=self._spawned)

        def body() -> None:
            self._local.actor = actor
            actor.go.wait()
            actor.go.clear()
            try:
                if self._stopping:
                    raise Stopped
                actor.result = actor.fn()
            except Stopped:
                pass
            except BaseException as exc:
                actor.error = exc
            actor.done = True
            if actor.parent is not None:
                actor.parent.faults += actor.faults
            for hook in actor.on_end:
                hook(actor)
            self._back.set()

        actor.thread = threading.Thread(target=body, name=f"sim-{name}", daemon=True)
        actor.thread.start()
        self.actors.append(actor)
        return actor

    @property
    def spawned(self) -> int:
        return self._spawned

    def runnable(self) -> list[Actor]:
        ready = []
        for actor in self.actors:
            if actor.wake_at is not None and actor.wake_at > self.now:
                continue
            if actor.until is not None and not actor.until():
                continue
            ready.append(actor)
        return [a for a in ready if a.after_step <= self.steps] or ready

    def step(self) -> bool:
        """Run one actor up to its next step; False when no actor is left. Advances virtual time when
        every live actor sleeps."""
        self.actors = [a for a in self.actors if not a.done]
        if not self.actors:
            return False
        ready = self.runnable()
        if not ready:
            sleepers = [a.wake_at for a in self.actors if a.wake_at is not None]
            if not sleepers:
                raise Deadlock(", ".join(a.name for a in self.actors))
            self.advance_to(min(sleepers))
            ready = self.runnable()
        actor = self.rng.choice(ready)
        actor.wake_at = None
        actor.until = None
        self._back.clear()
        actor.go.set()
        self._back.wait()
        return True

    def run_until_idle(self, limit: int = 100_000) -> None:
        for _ in range(limit):
            if not self.step():
                return
        raise Deadlock("the actors did not finish within the step limit")

    def advance(self, by: timedelta) -> None:
        self.advance_to(self.now + by)

    def advance_to(self, moment: datetime) -> None:
        if moment > self.now:
            self.now = moment
            for hook in self.on_advance:
                hook(moment)

    def stop(self) -> None:
        """Unwind every live actor thread (end of a run that failed midway)."""
        self._stopping = True
        for actor in self.actors:
            if not actor.done:
                self._back.clear()
                actor.go.set()
                self._back.wait(timeout=5)
        self.actors = []


class SimFuture(Future[T]):
    """A future whose waits yield to the scheduler instead of blocking the baton."""

    def __init__(self, scheduler: Scheduler) -> None:
        super().__init__()
        self._scheduler = scheduler

    def result(self, timeout: float | None = None) -> T:
        self._scheduler.wait_until(self.done)
        return super().result(timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        self._scheduler.wait_until(self.done)
        return super().exception(timeout)


class SimExecutor(Executor):
    """`Services.fanout`: each submitted call runs as its own actor; its future completes when it ends."""

    def __init__(self, scheduler: Scheduler) -> None:
        self._scheduler = scheduler

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: SimFuture[T] = SimFuture(self._scheduler)
        parent = self._scheduler.current()
        name = f"{parent.name if parent else 'main'}/{self._scheduler.spawned}"

        def finish(actor: Actor) -> None:
            if actor.error is not None:
                future.set_exception(actor.error)
            else:
                future.set_result(actor.result)

        child = self._scheduler.spawn(name, lambda: fn(*args, **kwargs), parent=parent)
        child.on_end.append(finish)
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        return None
