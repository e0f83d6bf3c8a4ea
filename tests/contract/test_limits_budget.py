# ruff: noqa: F811 (the contract fixtures are imported from test_limits and named as parameters)
"""The monthly image budget of the `Limits` contract, on the in-process twin and on Firestore (Google's
emulator): images reserved in the same commit as rate and concurrency, settled when the job ends, given
back with a rolled-back creation; exact under races.

Run with `pytest -s` to see the measured admission counts.
"""

from __future__ import annotations

import uuid
import zoneinfo
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from google.cloud import firestore

from nano_banana.adapters.limits_firestore import FirestoreLimits
from nano_banana.errors import BudgetExceeded, ConcurrencyLimited, RateLimited
from nano_banana.ports import BudgetUse, Limits, LimitsReading, Reservation
from tests.contract.test_limits import (  # noqa: F401 (fixtures)
    LEASE,
    T0,
    FakeClock,
    MakeLimits,
    _count_ops,
    _fleet,
    _race,
    clock,
    kind,
    make_limits,
)
from tests.support.firestore import firestore_client, firestore_emulator  # noqa: F401

MONTH = "2030-01"


def _reserve_images(
    limits: Limits,
    clock: FakeClock,
    *,
    project: uuid.UUID,
    images: int,
    budget: int | None,
    user: uuid.UUID | None = None,
    job: uuid.UUID | None = None,
    reading: LimitsReading | None = None,
) -> Reservation:
    return limits.reserve(
        user_id=user or uuid.uuid4(),
        project_id=project,
        job_id=job or uuid.uuid4(),
        lease_expires_at=clock() + LEASE,
        reading=reading,
        images=images,
        monthly_images=budget,
    )


def test_twenty_concurrent_creations_admit_exactly_the_budget(
    kind: str, make_limits: MakeLimits, clock: FakeClock
) -> None:
    """Twenty 1-image creations at once on four instances, one fresh project, budget 4: exactly 4."""
    fleet = _fleet(kind, make_limits, 4, rate_per_hour=1000, max_active=100)
    project = uuid.uuid4()
    outcomes, admitted, elapsed = _race(
        20, lambda i: _reserve_images(fleet[i % 4], clock, project=project, images=1, budget=4)
    )
    print(f"\n[{kind}] 20 parallel 1-image reserves on 4 instances, budget 4: {dict(outcomes)} in {elapsed:.2f} s")
    assert outcomes == Counter({"admitted": 4, "BudgetExceeded": 16})
    assert fleet[0].month_usage(project, clock()) == BudgetUse(MONTH, used=0, reserved=4)
    assert sorted(fleet[0].active_jobs(project)) == sorted(r.job_id for r in admitted), "no refused job holds a lease"


def test_multi_image_creations_never_pass_the_budget_under_races(
    kind: str, make_limits: MakeLimits, clock: FakeClock
) -> None:
    """Budget 7, thirty creations of 1-4 images at once: whatever gets in sums to at most 7, never more."""
    fleet = _fleet(kind, make_limits, 3, rate_per_hour=1000, max_active=100)
    project = uuid.uuid4()
    outcomes, admitted, _ = _race(
        30, lambda i: _reserve_images(fleet[i % 3], clock, project=project, images=1 + i % 4, budget=7)
    )
    total = sum(r.images for r in admitted)
    assert total <= 7
    assert total >= 4, "a refusal needs the month to be nearly full"
    assert outcomes["admitted"] + outcomes["BudgetExceeded"] == 30
    assert fleet[0].month_usage(project, clock()).reserved == total


def test_budget_exceeded_says_how_much_and_until_the_next_month(make_limits: MakeLimits, clock: FakeClock) -> None:
    limits = make_limits(rate_per_hour=100, max_active=100)
    project = uuid.uuid4()
    first = _reserve_images(limits, clock, project=project, images=2, budget=4)
    assert first.images == 2
    assert first.budget == BudgetUse(MONTH, used=0, reserved=2, limit=4)
    _reserve_images(limits, clock, project=project, images=2, budget=4)
    with pytest.raises(BudgetExceeded) as refused:
        _reserve_images(limits, clock, project=project, images=1, budget=4)
    until_february = int((datetime(2030, 2, 1, tzinfo=UTC) - T0).total_seconds())
    assert refused.value.status == 429
    assert refused.value.code == "budget_exceeded"
    assert refused.value.retry_after_s == until_february
    assert refused.value.headers["Retry-After"] == str(until_february)
    assert refused.value.details == {
        "limit": 4,
        "used": 0,
        "reserved": 4,
        "month": MONTH,
        "retryAfterSeconds": until_february,
    }


def test_a_budget_refusal_reserves_nothing(make_limits: MakeLimits, clock: FakeClock) -> None:
    limits = make_limits(rate_per_hour=1, max_active=1)
    user, project = uuid.uuid4(), uuid.uuid4()
    with pytest.raises(BudgetExceeded):
        _reserve_images(limits, clock, user=user, project=project, images=3, budget=2)
    assert limits.active_jobs(project) == [], "no lease"
    assert limits.month_usage(project, clock()) == BudgetUse(MONTH, used=0, reserved=0)
    _reserve_images(limits, clock, user=user, project=project, images=2, budget=2)  # the user's one admission is left


def test_the_order_is_rate_then_budget_then_concurrency(make_limits: MakeLimits, clock: FakeClock) -> None:
    limits = make_limits(rate_per_hour=1, max_active=1)
    user, project = uuid.uuid4(), uuid.uuid4()
    _reserve_images(limits, clock, user=user, project=project, images=1, budget=1)
    with pytest.raises(RateLimited):
        _reserve_images(limits, clock, user=user, project=project, images=1, budget=1)
    with pytest.raises(BudgetExceeded):  # the project's slot is full too: the month is the lasting refusal
        _reserve_images(limits, clock, project=project, images=1, budget=1)
    with pytest.raises(ConcurrencyLimited):
        _reserve_images(limits, clock, project=project, images=1, budget=5)


def test_settling_keeps_what_was_stored_and_is_idempotent(make_limits: MakeLimits, clock: FakeClock) -> None:
    """1 of 2 stored -> 1 counts; a failed job -> 0; settling again changes nothing."""
    limits = make_limits(rate_per_hour=100, max_active=100)
    project = uuid.uuid4()
    half = _reserve_images(limits, clock, project=project, images=2, budget=4)
    failed = _reserve_images(limits, clock, project=project, images=2, budget=4)
    with pytest.raises(BudgetExceeded):
        _reserve_images(limits, clock, project=project, images=1, budget=4)
    for _ in range(2):
        limits.settle_images(project_id=project, job_id=half.job_id, reserved_at=clock(), images=1)
        limits.settle_images(project_id=project, job_id=failed.job_id, reserved_at=clock(), images=0)
    assert limits.month_usage(project, clock()) == BudgetUse(MONTH, used=1, reserved=0)
    _reserve_images(limits, clock, project=project, images=3, budget=4)  # 1 + 3: the failed job's 2 came back
    with pytest.raises(BudgetExceeded) as refused:
        _reserve_images(limits, clock, project=project, images=1, budget=4)
    assert (refused.value.details["used"], refused.value.details["reserved"]) == (1, 3)


def test_a_settled_job_reserving_again_is_not_counted_twice(make_limits: MakeLimits, clock: FakeClock) -> None:
    limits = make_limits(rate_per_hour=100, max_active=100)
    project, job, user = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    first = _reserve_images(limits, clock, user=user, project=project, job=job, images=2, budget=2)
    again = _reserve_images(limits, clock, user=user, project=project, job=job, images=2, budget=2)
    assert again.at == first.at
    assert limits.month_usage(project, clock()) == BudgetUse(MONTH, used=0, reserved=2)


def test_give_back_returns_the_images(make_limits: MakeLimits, clock: FakeClock) -> None:
    limits = make_limits(rate_per_hour=100, max_active=100)
    project = uuid.uuid4()
    held = _reserve_images(limits, clock, project=project, images=4, budget=4)
    limits.give_back(held)
    limits.give_back(held)  # idempotent
    assert limits.month_usage(project, clock()) == BudgetUse(MONTH, used=0, reserved=0)
    _reserve_images(limits, clock, project=project, images=4, budget=4)


def test_no_budget_still_counts_the_images(make_limits: MakeLimits, clock: FakeClock) -> None:
    """With the budget off the month is still counted, so a budget set mid-month starts from the truth."""
    limits = make_limits(rate_per_hour=100, max_active=100)
    project = uuid.uuid4()
    for _ in range(3):
        _reserve_images(limits, clock, project=project, images=4, budget=None)
    assert limits.month_usage(project, clock()) == BudgetUse(MONTH, used=0, reserved=12)
    with pytest.raises(BudgetExceeded):
        _reserve_images(limits, clock, project=project, images=1, budget=12)


def test_a_new_month_starts_empty(make_limits: MakeLimits, clock: FakeClock) -> None:
    limits = make_limits(rate_per_hour=100, max_active=100)
    project = uuid.uuid4()
    _reserve_images(limits, clock, project=project, images=4, budget=4)
    clock.now = datetime(2030, 2, 1, tzinfo=UTC)
    february = _reserve_images(limits, clock, project=project, images=4, budget=4)
    assert february.budget == BudgetUse("2030-02", used=0, reserved=4, limit=4)
    assert limits.month_usage(project, T0) == BudgetUse(MONTH, used=0, reserved=4)


def test_a_job_settles_in_the_month_it_reserved_in(make_limits: MakeLimits, clock: FakeClock) -> None:
    """Reserved at 23:59:59 on the 31st by this clock, its row created at 00:00:01 by the database's: the
    January entry settles, February is untouched."""
    limits = make_limits(rate_per_hour=100, max_active=100)
    project = uuid.uuid4()
    clock.now = datetime(2030, 1, 31, 23, 59, 59, tzinfo=UTC)
    held = _reserve_images(limits, clock, project=project, images=2, budget=4)
    february = datetime(2030, 2, 1, 0, 0, 1, tzinfo=UTC)
    limits.settle_images(project_id=project, job_id=held.job_id, reserved_at=february, images=2)
    assert limits.month_usage(project, T0) == BudgetUse(MONTH, used=2, reserved=0)
    assert limits.month_usage(project, february) == BudgetUse("2030-02", used=0, reserved=0)


def test_a_reading_with_the_month_lets_reserve_decide_the_budget(make_limits: MakeLimits, clock: FakeClock) -> None:
    limits = make_limits(rate_per_hour=100, max_active=100)
    project = uuid.uuid4()
    stale = limits.check(user_id=uuid.uuid4(), project_id=project, images=2)
    _reserve_images(limits, clock, project=project, images=3, budget=4)  # another creation meanwhile
    with pytest.raises(BudgetExceeded):
        _reserve_images(limits, clock, project=project, images=2, budget=4, reading=stale)


@pytest.mark.firestore
def test_firestore_budget_costs_no_extra_round_trip(
    firestore_client: firestore.Client,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """check (3 documents in one read) -> reserve (one commit of 3 writes) -> settle (one blind commit)."""
    limits = FirestoreLimits(firestore_client, f"t{uuid.uuid4().hex[:8]}", 10, 2, clock)
    user, project = uuid.uuid4(), uuid.uuid4()
    ops = _count_ops(firestore_client, monkeypatch)
    reading = limits.check(user_id=user, project_id=project, images=2)
    held = _reserve_images(limits, clock, user=user, project=project, images=2, budget=4, reading=reading)
    assert ops == Counter({"BatchGetDocuments": 1, "documents read": 3, "Commit": 1, "documents written": 3})
    limits.settle_images(project_id=project, job_id=held.job_id, reserved_at=clock(), images=1)
    assert ops == Counter({"BatchGetDocuments": 1, "documents read": 3, "Commit": 2, "documents written": 4})
    doc = firestore_client.collection(f"{limits._months.id}").document(f"{project}_{MONTH}").get().to_dict()
    assert doc == {"reserved": {}, "settled": {str(held.job_id): 1}}


def test_budget_months_are_utc(make_limits: MakeLimits, clock: FakeClock) -> None:
    """A moment given in another zone counts in its UTC month."""
    limits = make_limits(rate_per_hour=100, max_active=100)
    project = uuid.uuid4()
    clock.now = datetime(2030, 1, 31, 23, 30, tzinfo=UTC)
    _reserve_images(limits, clock, project=project, images=1, budget=4)
    local = clock.now.astimezone(zoneinfo.ZoneInfo("Asia/Tokyo"))  # already February there
    assert limits.month_usage(project, local).month == MONTH
    assert limits.month_usage(project, local + timedelta(hours=1)).month == "2030-02"
