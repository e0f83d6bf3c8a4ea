"""Independent round trips at once: run calls side by side and wait for every one of them.

Every call is waited for, even when another failed first, so a caller that must undo what succeeded
(delete the upload whose insert failed) knows exactly what happened; nothing keeps running behind its back.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar, overload

A = TypeVar("A")
B = TypeVar("B")
C = TypeVar("C")
D = TypeVar("D")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Outcome(Generic[T]):
    """What one call gave: its value, or the exception it raised."""

    value: T | None
    error: BaseException | None

    @property
    def ok(self) -> bool:
        return self.error is None

    def get(self) -> T:
        if self.error is not None:
            raise self.error
        return self.value  # type: ignore[return-value]


def pool(workers: int = 64) -> ThreadPoolExecutor:
    """The executor Services hands to `together` (threads: every adapter here is blocking I/O). Sized for
    the `api` function's 40 concurrent requests, each with up to two calls on it at once (threads start
    only when needed); a smaller pool would queue one request's round trip behind another's."""
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="nano-banana-fanout")


def attempt(call: Callable[[], T]) -> Outcome[T]:
    """Run one call on this thread and keep its outcome (an exception is reported, raised by get())."""
    try:
        return Outcome(call(), None)
    except BaseException as exc:
        return Outcome(None, exc)


def _outcome(future: Future[T]) -> Outcome[T]:
    error = future.exception()
    return Outcome(None, error) if error is not None else Outcome(future.result(), None)


@overload
def settle(executor: Executor, a: Callable[[], A], b: Callable[[], B], /) -> tuple[Outcome[A], Outcome[B]]: ...
@overload
def settle(
    executor: Executor, a: Callable[[], A], b: Callable[[], B], c: Callable[[], C], /
) -> tuple[Outcome[A], Outcome[B], Outcome[C]]: ...
@overload
def settle(
    executor: Executor, a: Callable[[], A], b: Callable[[], B], c: Callable[[], C], d: Callable[[], D], /
) -> tuple[Outcome[A], Outcome[B], Outcome[C], Outcome[D]]: ...
def settle(executor: Executor, *calls: Callable[[], object]) -> tuple[Outcome[object], ...]:  # type: ignore[misc]
    """Run every call (the first on this thread, the rest on the executor) and return each outcome."""
    # Each call sees the caller's context (its log lines carry the request's id).
    futures = [executor.submit(contextvars.copy_context().run, call) for call in calls[1:]]
    return (attempt(calls[0]), *(_outcome(f) for f in futures))


def settle_each(executor: Executor, calls: Sequence[Callable[[], T]]) -> list[Outcome[T]]:
    """`settle` for any number of calls of one kind (N uploads): each call's outcome, in order."""
    if not calls:
        return []
    return list(settle(executor, *calls))


@overload
def together(executor: Executor, a: Callable[[], A], b: Callable[[], B], /) -> tuple[A, B]: ...
@overload
def together(executor: Executor, a: Callable[[], A], b: Callable[[], B], c: Callable[[], C], /) -> tuple[A, B, C]: ...
def together(executor: Executor, *calls: Callable[[], object]) -> tuple[object, ...]:
    """Run every call at once and return their values; once all have ended, raise the first error (in order)."""
    outcomes = settle(executor, *calls)
    return tuple(o.get() for o in outcomes)
