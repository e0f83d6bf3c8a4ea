"""together/settle: every call runs, every call is waited for, the first error (in order) is raised."""

from __future__ import annotations

import contextvars
import functools
import threading
import time

import pytest

from nano_banana.together import pool, settle, settle_each, together


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


def test_settle_each_runs_any_number_of_calls_at_once() -> None:
    barrier = threading.Barrier(4, timeout=5)

    def upload(index: int) -> int:
        barrier.wait()  # breaks unless all four run at the same time
        if index == 2:
            raise RuntimeError("upload 2 failed")
        return index

    with pool() as executor:
        outcomes = settle_each(executor, [functools.partial(upload, i) for i in range(4)])
        assert settle_each(executor, []) == []
    assert [o.ok for o in outcomes] == [True, True, False, True]
    assert [o.value for o in outcomes] == [0, 1, None, 3]
    assert isinstance(outcomes[2].error, RuntimeError)


def test_calls_on_the_executor_see_the_callers_context() -> None:
    """A request's log fields live in a ContextVar: its side-by-side calls must log under its id too."""
    request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="none")
    request_id.set("req-1")
    with pool() as executor:
        assert together(executor, request_id.get, request_id.get) == ("req-1", "req-1")
