"""The per-process memory budgets: shares never exceed the capacity, waiters get a clean 503, and every
image decode goes through the budget."""

from __future__ import annotations

import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from nano_banana import images
from nano_banana.errors import Unavailable
from nano_banana.images import MemoryBudget

pytestmark = pytest.mark.unit


def test_holders_never_exceed_the_capacity() -> None:
    budget = MemoryBudget(100, wait_s=10)
    inside = 0
    worst = 0
    lock = threading.Lock()

    def work(i: int) -> None:
        nonlocal inside, worst
        share = 10 + (i * 7) % 50
        with budget.hold(share):
            with lock:
                inside += share
                worst = max(worst, inside)
            time.sleep(0.005)
            with lock:
                inside -= share

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(work, range(200)))
    assert worst <= 100
    assert budget.peak <= 100
    assert budget.in_use == 0


def test_a_waiter_gives_up_with_503_and_holds_nothing() -> None:
    budget = MemoryBudget(100, wait_s=0.2, purpose="uploads")
    with budget.hold(80):
        start = time.monotonic()
        with pytest.raises(Unavailable) as err, budget.hold(30):
            pass
        assert 0.15 < time.monotonic() - start < 2
        assert err.value.status == 503
        assert err.value.headers["Retry-After"] == "2"
        assert err.value.details == {"reason": "uploads_memory"}
        assert budget.in_use == 80
    assert budget.in_use == 0


def test_a_share_larger_than_the_budget_runs_alone() -> None:
    budget = MemoryBudget(100, wait_s=0.2)
    with budget.hold(10**9):
        assert budget.in_use == 100
        with pytest.raises(Unavailable), budget.hold(1):
            pass
    with budget.hold(10**9):
        pass
    assert budget.in_use == 0


def test_a_failing_holder_gives_its_share_back() -> None:
    budget = MemoryBudget(100)
    with pytest.raises(RuntimeError), budget.hold(60):
        raise RuntimeError("boom")
    assert budget.in_use == 0


def test_image_decodes_take_their_share() -> None:
    """Eight parallel decodes of a 1000x1000 PNG (~4 MiB each) through a 9 MiB budget: at most two at
    once, all succeed, and the budget is empty afterwards."""
    from PIL import Image

    buf = io.BytesIO()
    Image.linear_gradient("L").resize((1000, 1000)).convert("RGB").save(buf, "PNG")
    data = buf.getvalue()
    images.configure_budgets(upload_bytes=64 * images.MIB, decode_bytes=9 * images.MIB)
    try:
        with ThreadPoolExecutor(8) as pool:
            infos = list(
                pool.map(lambda _: images.inspect_image(data, max_bytes=10 * images.MIB, max_pixels=10**7), range(8))
            )
        budget = images.decode_budget()
        assert {(i.width, i.height) for i in infos} == {(1000, 1000)}
        assert 4 * images.MIB < budget.peak <= 9 * images.MIB
        assert budget.in_use == 0
    finally:
        images.configure_budgets(upload_bytes=192 * images.MIB, decode_bytes=256 * images.MIB)
