"""One contract for every `Limits`: the in-process twin and Firestore (Google's emulator).

Run with `pytest -s` to see the measured admission counts and the Firestore reservation latency.
"""

from __future__ import annotations

import statistics
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from google.api_core import exceptions as gexc
from google.cloud import firestore

from nano_banana.adapters.limits_firestore import FirestoreLimits
from nano_banana.adapters.limits_memory import MemoryLimits
from nano_banana.errors import ConcurrencyLimited, RateLimited, Unavailable
from nano_banana.ports import Holding, HoldingKind, KeyClaimed, Limits, LimitsReading, Reservation
from tests.support.firestore import firestore_client, firestore_emulator  # noqa: F401

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
LEASE = timedelta(minutes=5)


class FakeClock:
    """An injected clock tests move by hand."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


MakeLimits = Callable[..., Limits]


@pytest.fixture(
    params=[
        pytest.param("memory", marks=pytest.mark.unit),
        pytest.param("firestore", marks=pytest.mark.firestore),
    ]
)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_limits(kind: str, clock: FakeClock, request: pytest.FixtureRequest) -> MakeLimits:
    """Build the implementation under test: make_limits(rate_per_hour=.., max_active=..)."""
    if kind == "memory":
        return lambda rate_per_hour=10, max_active=2: MemoryLimits(rate_per_hour, max_active, clock)
    client = request.getfixturevalue("firestore_client")
    prefix = f"t{uuid.uuid4().hex[:8]}"
    return lambda rate_per_hour=10, max_active=2: FirestoreLimits(client, prefix, rate_per_hour, max_active, clock)


def _reserve(
    limits: Limits,
    clock: FakeClock,
    *,
    user: uuid.UUID | None = None,
    project: uuid.UUID | None = None,
    job: uuid.UUID | None = None,
    lease: timedelta = LEASE,
    key: str | None = None,
    reading: LimitsReading | None = None,
) -> Reservation:
    return limits.reserve(
        user_id=user or uuid.uuid4(),
        project_id=project or uuid.uuid4(),
        job_id=job or uuid.uuid4(),
        lease_expires_at=clock() + lease,
        idempotency_key=key,
        reading=reading,
    )


def _fleet(kind: str, make_limits: MakeLimits, n: int, **limits: int) -> list[Limits]:
    """n function instances sharing one budget: separate FirestoreLimits objects on the same documents
    (each takes turns only among its own threads), or the one in-process twin."""
    if kind == "memory":
        return [make_limits(**limits)] * n
    return [make_limits(**limits) for _ in range(n)]


def _race(n: int, attempt: Callable[[int], Reservation]) -> tuple[Counter[str], list[Reservation], float]:
    """Run n attempts at once (a barrier lines the threads up); count outcomes by type."""
    barrier = threading.Barrier(n)
    admitted: list[Reservation] = []
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()

    def one(i: int) -> None:
        barrier.wait(timeout=30)
        try:
            reservation = attempt(i)
        except Exception as exc:
            with lock:
                outcomes[type(exc).__name__] += 1
            return
        with lock:
            outcomes["admitted"] += 1
            admitted.append(reservation)

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=n) as pool:
        for future in [pool.submit(one, i) for i in range(n)]:
            future.result(timeout=60)
    return outcomes, admitted, time.monotonic() - started


def test_exact_admission_under_contention(
    kind: str,
    make_limits: MakeLimits,
    clock: FakeClock,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ops = _count_ops(request.getfixturevalue("firestore_client"), monkeypatch) if kind == "firestore" else Counter()
    fleet = _fleet(kind, make_limits, 4, rate_per_hour=10, max_active=100)
    user = uuid.uuid4()
    outcomes, admitted, elapsed = _race(80, lambda i: _reserve(fleet[i % 4], clock, user=user))
    print(
        f"\n[{kind}] 80 parallel reserves on 4 instances, one user, rate 10/h: {dict(outcomes)} in {elapsed:.2f} s {dict(ops)}"
    )
    assert outcomes == Counter({"admitted": 10, "RateLimited": 70})
    assert len({r.job_id for r in admitted}) == 10


def test_slot_cap_never_exceeded(kind: str, make_limits: MakeLimits, clock: FakeClock) -> None:
    fleet = _fleet(kind, make_limits, 5, rate_per_hour=1000, max_active=2)
    project = uuid.uuid4()
    outcomes, admitted, elapsed = _race(50, lambda i: _reserve(fleet[i % 5], clock, project=project))
    print(f"\n[{kind}] 50 parallel reserves on 5 instances, one project, 2 slots: {dict(outcomes)} in {elapsed:.2f} s")
    assert outcomes == Counter({"admitted": 2, "ConcurrencyLimited": 48})
    assert sorted(fleet[0].active_jobs(project)) == sorted(r.job_id for r in admitted)


@pytest.mark.firestore
def test_one_instances_threads_take_turns_instead_of_losing_commits(
    firestore_client: firestore.Client,  # noqa: F811
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ops = _count_ops(firestore_client, monkeypatch)
    limits = FirestoreLimits(firestore_client, f"t{uuid.uuid4().hex[:8]}", 1000, 3, clock)
    project = uuid.uuid4()
    outcomes, _, _ = _race(30, lambda _: _reserve(limits, clock, project=project))
    assert outcomes == Counter({"admitted": 3, "ConcurrencyLimited": 27})
    assert ops["Commit"] == 3, "one commit per admission"
    assert ops["Commit lost"] == 0, "no thread of this instance raced another"
    assert 30 <= ops["BatchGetDocuments"] <= 60, "one read each, and a second for a writer that waited its turn"


def test_release_then_admit(make_limits: MakeLimits, clock: FakeClock) -> None:
    limits = make_limits(max_active=1)
    project = uuid.uuid4()
    first = _reserve(limits, clock, project=project)
    with pytest.raises(ConcurrencyLimited) as limited:
        _reserve(limits, clock, project=project)
    # A slot frees when a job ends, which may be any moment: a short poll, not the lease's 5 minutes (a
    # client that obeyed waited 6 minutes though the running job ended 150 ms later); the bound rides along.
    assert limited.value.retry_after_s == 5
    assert limited.value.headers["Retry-After"] == "5"
    assert limited.value.details["slotFreeBySeconds"] == 300
    assert limited.value.limit == 1
    limits.release_slot(project_id=project, job_id=first.job_id)
    second = _reserve(limits, clock, project=project)
    assert limits.active_jobs(project) == [second.job_id]


def test_expired_lease_does_not_count(make_limits: MakeLimits, clock: FakeClock) -> None:
    limits = make_limits(max_active=1)
    project = uuid.uuid4()
    _reserve(limits, clock, project=project, lease=timedelta(minutes=5))
    clock.advance(minutes=4)
    with pytest.raises(ConcurrencyLimited) as limited:
        _reserve(limits, clock, project=project)
    assert limited.value.retry_after_s == 5
    assert limited.value.details["slotFreeBySeconds"] == 60
    clock.advance(seconds=58)
    with pytest.raises(ConcurrencyLimited) as limited:
        _reserve(limits, clock, project=project)
    assert limited.value.retry_after_s == 2, "never later than the lease's own expiry"
    clock.advance(seconds=3)
    assert limits.active_jobs(project) == []
    later = _reserve(limits, clock, project=project)
    assert limits.active_jobs(project) == [later.job_id]


def test_release_is_idempotent(make_limits: MakeLimits, clock: FakeClock) -> None:
    limits = make_limits(max_active=1)
    project = uuid.uuid4()
    held = _reserve(limits, clock, project=project)
    for _ in range(2):
        limits.release_slot(project_id=project, job_id=held.job_id)
    limits.release_slot(project_id=uuid.uuid4(), job_id=uuid.uuid4())  # never reserved: fine
    assert limits.active_jobs(project) == []
    _reserve(limits, clock, project=project)


def test_reserve_is_idempotent(make_limits: MakeLimits, clock: FakeClock) -> None:
    limits = make_limits(rate_per_hour=2, max_active=2)
    user, project, job = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    first = _reserve(limits, clock, user=user, project=project, job=job)
    clock.advance(seconds=30)
    again = _reserve(limits, clock, user=user, project=project, job=job)
    assert again == first
    assert limits.active_jobs(project) == [job]
    _reserve(limits, clock, user=user, project=project)  # the second of two: the repeat took no entry
    with pytest.raises(RateLimited):
        _reserve(limits, clock, user=user, project=project)


def test_give_back_restores_rate_and_slot(make_limits: MakeLimits, clock: FakeClock) -> None:
    limits = make_limits(rate_per_hour=1, max_active=1)
    user, project = uuid.uuid4(), uuid.uuid4()
    held = _reserve(limits, clock, user=user, project=project)
    limits.give_back(held)
    limits.give_back(held)  # idempotent
    assert limits.active_jobs(project) == []
    again = _reserve(limits, clock, user=user, project=project)
    assert limits.active_jobs(project) == [again.job_id]


def test_forget_user_erases_only_that_users_window(
    kind: str, make_limits: MakeLimits, clock: FakeClock, request: pytest.FixtureRequest
) -> None:
    """Erasure (`nano-banana erase-user`): the user's rate document goes; other users and leases stay."""
    limits = make_limits(rate_per_hour=1, max_active=10)
    user, other, project = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    held = _reserve(limits, clock, user=user, project=project)
    _reserve(limits, clock, user=other)
    limits.forget_user(user)
    limits.forget_user(user)  # idempotent: a second erasure finds nothing
    if kind == "firestore":
        client: firestore.Client = request.getfixturevalue("firestore_client")
        rate_docs = [d.id for c in client.collections() if c.id.endswith("_rate") for d in c.list_documents()]
        assert str(user) not in rate_docs
        assert str(other) in rate_docs
    assert limits.active_jobs(project) == [held.job_id], "a running job keeps its lease"
    _reserve(limits, clock, user=user)  # the window is empty again
    with pytest.raises(RateLimited):
        _reserve(limits, clock, user=other)


def test_rate_is_checked_before_concurrency(make_limits: MakeLimits, clock: FakeClock) -> None:
    limits = make_limits(rate_per_hour=1, max_active=1)
    user, project = uuid.uuid4(), uuid.uuid4()
    _reserve(limits, clock, user=user, project=project)
    with pytest.raises(RateLimited):
        _reserve(limits, clock, user=user, project=project)


def test_a_rejection_reserves_nothing(make_limits: MakeLimits, clock: FakeClock) -> None:
    limits = make_limits(rate_per_hour=1, max_active=1)
    busy = uuid.uuid4()
    holder = _reserve(limits, clock, project=busy)
    user = uuid.uuid4()
    with pytest.raises(ConcurrencyLimited):
        _reserve(limits, clock, user=user, project=busy)  # rate passes, slot fails: no rate entry kept
    _reserve(limits, clock, user=user)  # so this user's single hourly admission is still there
    with pytest.raises(RateLimited):
        _reserve(limits, clock, user=user, project=busy)  # rate fails: no lease taken either
    assert limits.active_jobs(busy) == [holder.job_id]


def test_window_slides(make_limits: MakeLimits, clock: FakeClock) -> None:
    limits = make_limits(rate_per_hour=10, max_active=100)
    user = uuid.uuid4()
    for _ in range(10):
        _reserve(limits, clock, user=user)
        clock.advance(seconds=10)
    # Entries at T0, T0+10 s, ..., T0+90 s; now T0+100 s.
    clock.now = T0 + timedelta(minutes=59)
    with pytest.raises(RateLimited) as limited:
        _reserve(limits, clock, user=user)
    assert limited.value.retry_after_s == 60
    assert limited.value.limit == 10
    assert limited.value.headers["Retry-After"] == "60"
    clock.now = T0 + timedelta(minutes=60, seconds=5)  # only the T0 entry has left the window
    _reserve(limits, clock, user=user)
    with pytest.raises(RateLimited) as limited:
        _reserve(limits, clock, user=user)
    assert limited.value.retry_after_s == 5  # the T0+10 s entry leaves at T0+60 min 10 s
    clock.now = T0 + timedelta(minutes=61, seconds=31)  # everything up to T0+90 s has left
    for _ in range(9):
        _reserve(limits, clock, user=user)
    with pytest.raises(RateLimited):
        _reserve(limits, clock, user=user)


# ---------------------------------------------------------------- Idempotency-Key claims and the read-only check


def test_a_key_is_claimed_with_the_reservation_and_refuses_another_job(
    make_limits: MakeLimits, clock: FakeClock
) -> None:
    limits = make_limits(rate_per_hour=10, max_active=10)
    user, project, first = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    held = _reserve(limits, clock, user=user, project=project, job=first, key="key-1")
    assert held.claim is not None
    assert _reserve(limits, clock, user=user, project=project, job=first, key="key-1") == held, "idempotent"
    with pytest.raises(KeyClaimed) as claimed:
        _reserve(limits, clock, user=user, project=project, key="key-1")
    assert claimed.value.holder == first
    assert limits.active_jobs(project) == [first], "the refused job reserved nothing"
    _reserve(limits, clock, user=user, project=project, key="key-2")  # another key is another claim
    _reserve(limits, clock, project=project, key="key-1")  # and another user's key another namespace


def test_a_claim_goes_with_give_back_and_expires_with_the_lease(make_limits: MakeLimits, clock: FakeClock) -> None:
    limits = make_limits(rate_per_hour=10, max_active=10)
    user = uuid.uuid4()
    held = _reserve(limits, clock, user=user, key="key-1")
    limits.give_back(held)
    retry = _reserve(limits, clock, user=user, key="key-1")  # a retry after a failed creation: its key is free
    with pytest.raises(KeyClaimed):
        _reserve(limits, clock, user=user, key="key-1")
    clock.advance(seconds=LEASE.total_seconds() + 1)
    later = _reserve(limits, clock, user=user, key="key-1")
    assert later.job_id != retry.job_id


def test_release_claim_frees_only_the_holders_claim(make_limits: MakeLimits, clock: FakeClock) -> None:
    """A deleted job's key can be used again at once; a claim another job holds is never removed."""
    limits = make_limits(rate_per_hour=10, max_active=10)
    user, project = uuid.uuid4(), uuid.uuid4()
    held = _reserve(limits, clock, user=user, project=project, key="key-1")
    other = _reserve(limits, clock, user=user, project=project, key="key-2")

    def release(job: uuid.UUID, key: str) -> bool:
        return limits.release_claim(user_id=user, project_id=project, job_id=job, idempotency_key=key)

    assert not release(uuid.uuid4(), "key-1"), "not the holder: left alone"
    assert not release(held.job_id, "key-2")
    with pytest.raises(KeyClaimed):
        _reserve(limits, clock, user=user, project=project, key="key-1")
    assert release(held.job_id, "key-1")
    assert not release(held.job_id, "key-1"), "idempotent"
    reused = _reserve(limits, clock, user=user, project=project, key="key-1")
    assert reused.job_id != held.job_id
    with pytest.raises(KeyClaimed) as still:
        _reserve(limits, clock, user=user, project=project, key="key-2")
    assert still.value.holder == other.job_id
    assert sorted(limits.active_jobs(project)) == sorted([held.job_id, other.job_id, reused.job_id]), (
        "only the claim goes: the lease is released with the job's end, the rate entry stays"
    )


def test_a_reservation_of_unknown_outcome_is_given_back_by_job_id(make_limits: MakeLimits, clock: FakeClock) -> None:
    """Issue 24 #6: a reserve whose commit may have applied (its answer lost) is given back by its job id:
    release_claim (only if that job holds the key) and give_back without a claim. If it applied, both
    give everything back; if it did not, they touch nothing another job holds."""
    limits = make_limits(rate_per_hour=2, max_active=1)
    user, project = uuid.uuid4(), uuid.uuid4()

    def give_back_by_job(job: uuid.UUID, key: str) -> bool:
        released = limits.release_claim(user_id=user, project_id=project, job_id=job, idempotency_key=key)
        limits.give_back(Reservation(user, project, job, clock(), clock() + LEASE))
        return released

    applied = _reserve(limits, clock, user=user, project=project, key="key-1")
    assert give_back_by_job(applied.job_id, "key-1")
    assert limits.active_jobs(project) == []
    holder = _reserve(limits, clock, user=user, project=project, key="key-1")  # key, slot and rate unit are free
    assert not give_back_by_job(uuid.uuid4(), "key-1"), "never applied: the holder's claim stays"
    assert limits.active_jobs(project) == [holder.job_id]
    with pytest.raises(KeyClaimed) as claimed:
        _reserve(limits, clock, user=user, project=project, key="key-1")
    assert claimed.value.holder == holder.job_id
    limits.release_slot(project_id=project, job_id=holder.job_id)
    _reserve(limits, clock, user=user, project=project)  # the unit `applied` gave back
    with pytest.raises(RateLimited):
        _reserve(limits, clock, user=user, project=project)  # the holder's unit stayed taken


def test_a_claimed_key_is_refused_before_the_limits(make_limits: MakeLimits, clock: FakeClock) -> None:
    """A retry of a job being created learns about that job, not that its own job used the last unit."""
    limits = make_limits(rate_per_hour=1, max_active=10)
    user = uuid.uuid4()
    _reserve(limits, clock, user=user, key="key-1")
    with pytest.raises(KeyClaimed):
        _reserve(limits, clock, user=user, key="key-1")
    with pytest.raises(RateLimited):
        _reserve(limits, clock, user=user, key="key-2")


def test_check_says_what_reserve_would_and_reserves_nothing(make_limits: MakeLimits, clock: FakeClock) -> None:
    limits = make_limits(rate_per_hour=1, max_active=1)
    user, project = uuid.uuid4(), uuid.uuid4()
    reading = limits.check(user_id=user, project_id=project)
    assert limits.active_jobs(project) == []
    _reserve(limits, clock, user=user, project=project, key="key-1", reading=reading)
    with pytest.raises(RateLimited):
        limits.check(user_id=user, project_id=uuid.uuid4())
    with pytest.raises(RateLimited):
        limits.check(user_id=user, project_id=uuid.uuid4(), idempotency_key="key-2")
    limits.check(user_id=user, project_id=uuid.uuid4(), idempotency_key="key-1")  # claimed: reserve decides
    with pytest.raises(ConcurrencyLimited) as limited:
        limits.check(user_id=uuid.uuid4(), project_id=project)
    assert limited.value.retry_after_s == 5
    assert limited.value.details["slotFreeBySeconds"] == 300


def test_a_stale_reading_never_admits_past_a_limit(make_limits: MakeLimits, clock: FakeClock) -> None:
    limits = make_limits(rate_per_hour=10, max_active=1)
    project = uuid.uuid4()
    user = uuid.uuid4()
    stale = limits.check(user_id=user, project_id=project)
    _reserve(limits, clock, project=project)  # another request takes the last slot meanwhile
    with pytest.raises(ConcurrencyLimited):
        _reserve(limits, clock, user=user, project=project, reading=stale)


@pytest.mark.firestore
def test_firestore_reserve_on_a_reading_only_commits_and_never_stores_the_key(
    firestore_client: firestore.Client,  # noqa: F811
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    limits = FirestoreLimits(firestore_client, f"t{uuid.uuid4().hex[:8]}", 10, 2, clock)
    user, project = uuid.uuid4(), uuid.uuid4()
    ops = _count_ops(firestore_client, monkeypatch)
    reading = limits.check(user_id=user, project_id=project, idempotency_key="secret-key-1")
    _reserve(limits, clock, user=user, project=project, key="secret-key-1", reading=reading)
    assert ops == Counter({"BatchGetDocuments": 1, "documents read": 2, "Commit": 1, "documents written": 2})
    rate_docs = [d.to_dict() for c in firestore_client.collections() if c.id.endswith("_rate") for d in c.stream()]
    assert len(rate_docs) == 1
    assert "secret-key-1" not in repr(rate_docs), "the key is stored hashed"
    assert len(rate_docs[0]["keys"]) == 1


@pytest.mark.firestore
def test_firestore_a_commit_whose_answer_is_lost_is_unavailable_and_given_back_by_job_id(
    firestore_client: firestore.Client,  # noqa: F811
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 24 #6 on the real adapter: the commit applies and its answer is lost (past its timeout). The
    reservation raises Unavailable (it does not retry into an idempotent re-reserve it cannot tell from a
    new one), and the give-back by job id frees the slot and the key."""
    limits = FirestoreLimits(firestore_client, f"t{uuid.uuid4().hex[:8]}", 10, 1, clock)
    user, project, job = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    real_commit = limits._commit
    answers_lost = threading.Event()

    def commit_then_lose(batch: object) -> None:
        real_commit(batch)
        if not answers_lost.is_set():  # the first commit's answer only
            answers_lost.set()
            raise gexc.DeadlineExceeded("commit deadline exceeded")

    monkeypatch.setattr(limits, "_commit", commit_then_lose)
    with pytest.raises(Unavailable):
        _reserve(limits, clock, user=user, project=project, job=job, key="key-1")
    assert limits.active_jobs(project) == [job], "the commit did apply"
    assert limits.release_claim(user_id=user, project_id=project, job_id=job, idempotency_key="key-1")
    limits.give_back(Reservation(user, project, job, clock(), clock() + LEASE))
    assert limits.active_jobs(project) == []
    _reserve(limits, clock, user=user, project=project, key="key-1")  # slot and key are free again


@pytest.mark.firestore
def test_firestore_reservation_latency(firestore_client: firestore.Client, clock: FakeClock) -> None:  # noqa: F811
    limits = FirestoreLimits(firestore_client, "latency", 10, 2, clock)
    _reserve(limits, clock)  # warm the channel
    samples = []
    for _ in range(40):
        started = time.perf_counter()
        _reserve(limits, clock)
        samples.append((time.perf_counter() - started) * 1000)
    p50 = statistics.median(samples)
    p95 = sorted(samples)[int(len(samples) * 0.95) - 1]
    print(f"\n[firestore] uncontended reserve against the emulator: p50 {p50:.1f} ms, p95 {p95:.1f} ms (n=40)")
    assert p50 < 500


@pytest.mark.firestore
def test_firestore_operations_per_job(
    firestore_client: firestore.Client,  # noqa: F811
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The RPCs one job costs (reserve + release)."""
    ops = _count_ops(firestore_client, monkeypatch)
    limits = FirestoreLimits(firestore_client, "ops", 10, 2, clock)
    held = _reserve(limits, clock)
    limits.release_slot(project_id=held.project_id, job_id=held.job_id)
    print(f"\n[firestore] one job (reserve + release, uncontended): {dict(ops)}")
    assert ops == Counter({"BatchGetDocuments": 1, "documents read": 2, "Commit": 2, "documents written": 3})


def _count_ops(client: firestore.Client, monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Count the Firestore RPCs and documents an adapter uses, by wrapping the real client's calls."""
    ops: Counter[str] = Counter()
    lock = threading.Lock()
    real_get_all, real_batch = client.get_all, client.batch

    def get_all(refs: list[firestore.DocumentReference], **kwargs: object) -> object:
        with lock:
            ops["BatchGetDocuments"] += 1
            ops["documents read"] += len(refs)
        return real_get_all(refs, **kwargs)

    def batch() -> object:
        wrapped = real_batch()
        real_commit = wrapped.commit

        def commit(**kwargs: object) -> object:
            with lock:
                ops["Commit"] += 1
                ops["documents written"] += len(wrapped._write_pbs)
            try:
                return real_commit(**kwargs)
            except Exception:
                with lock:
                    ops["Commit lost"] += 1
                raise

        wrapped.commit = commit
        return wrapped

    monkeypatch.setattr(client, "get_all", get_all)
    monkeypatch.setattr(client, "batch", batch)
    return ops


def _all_holdings(limits: Limits, kind: HoldingKind, page: int) -> list[Holding]:
    """Page through every holding of a kind the way the sweep does (offset by documents read)."""
    found: list[Holding] = []
    offset = 0
    while True:
        got = limits.holdings(kind, offset=offset, limit=page)
        found += got.holdings
        if got.documents < page:
            return found
        offset += got.documents


def test_holdings_list_unexpired_leases_and_claims_a_page_at_a_time(make_limits: MakeLimits, clock: FakeClock) -> None:
    """The sweep's view of derived state (issue 24): every unexpired lease with its project, every claim
    with its user and hashed key; released, given back and expired ones are not among them."""
    limits = make_limits(rate_per_hour=10, max_active=2)
    users, projects = [uuid.uuid4() for _ in range(3)], [uuid.uuid4() for _ in range(3)]
    held = [
        _reserve(limits, clock, user=users[i], project=projects[i], key=f"key-{i}" if i else None) for i in range(3)
    ]
    short = _reserve(limits, clock, user=users[0], project=projects[0], key="short", lease=timedelta(seconds=30))
    given = _reserve(limits, clock, user=users[2], project=projects[1], key="given")
    limits.give_back(given)
    released = _reserve(limits, clock, user=users[1], project=projects[2])
    limits.release_slot(project_id=projects[2], job_id=released.job_id)
    clock.advance(seconds=31)  # `short` has expired
    leases = _all_holdings(limits, "lease", page=2)
    assert sorted((h.owner, h.job_id) for h in leases) == sorted((r.project_id, r.job_id) for r in held)
    assert all(h.kind == "lease" and h.claim is None for h in leases)
    assert {h.job_id: h.expires_at for h in leases} == {r.job_id: r.lease_expires_at for r in held}
    claims = _all_holdings(limits, "claim", page=1)
    assert sorted((h.owner, h.job_id, h.claim) for h in claims) == sorted(
        (r.user_id, r.job_id, r.claim) for r in held[1:]
    )
    assert short.job_id not in {h.job_id for h in [*leases, *claims]}


def test_drop_gives_back_a_lease_and_only_the_job_s_own_claim(make_limits: MakeLimits, clock: FakeClock) -> None:
    limits = make_limits(rate_per_hour=10, max_active=1)
    user, project = uuid.uuid4(), uuid.uuid4()
    held = _reserve(limits, clock, user=user, project=project, key="k")
    (lease,) = limits.holdings("lease", offset=0, limit=10).holdings
    (claim,) = [h for h in limits.holdings("claim", offset=0, limit=10).holdings if h.owner == user]
    assert limits.drop(lease)
    assert limits.active_jobs(project) == []
    assert limits.drop(claim)
    assert not limits.drop(claim), "idempotent"
    taken = _reserve(limits, clock, user=user, key="k")  # the key is free again: another job claims it
    assert taken.job_id != held.job_id
    assert not limits.drop(claim), "a claim another job holds stays"
    with pytest.raises(KeyClaimed):
        _reserve(limits, clock, user=user, key="k")
