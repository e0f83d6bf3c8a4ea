"""together/settle: every call runs, every call is waited for, the first error (in order) is raised."""

from __future__ import annotations

import contextvars
import threading
import time

import pytest

from nano_banana.together import pool, settle, together


def test_calls_run_at_once_and_return_in_order() -> None:
    barrier = threading.Barrier(3, timeout=5)

    def wait_for_all(value: int) -> int:
        barrier.wait()  # deadlocks (BrokenBarrierError after 5 s) unless all three run at the same time
        return value

    with pool() as executor:
        assert together(executor, lambda: wait_for_all(1), lambda: wait_for_all(2), lambda: wait_for_all(3)) == (
            1,
            2,
            3,
        )


def test_an_error_is_raised_only_after_every_call_ended() -> None:
    finished: list[str] = []

    def slow() -> str:
        time.sleep(0.2)
        finished.append("slow")
        return "stored"

    def broken() -> str:
        raise RuntimeError("insert failed")

    with pool() as executor:
        with pytest.raises(RuntimeError, match="insert failed"):
            together(executor, broken, slow)
        assert finished == ["slow"]  # the upload ended before the error reached the caller

        first, second = settle(executor, broken, slow)
    assert not first.ok
    assert isinstance(first.error, RuntimeError)
    assert second.ok
    assert second.get() == "stored"


def test_calls_on_the_executor_see_the_callers_context() -> None:
    """A request's log fields live in a ContextVar: its side-by-side calls must log under its id too."""
    request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="none")
    request_id.set("req-1")
    with pool() as executor:
        assert together(executor, request_id.get, request_id.get) == ("req-1", "req-1")
