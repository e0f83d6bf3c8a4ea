"""Rate window and project leases in Firestore: both documents checked and written in one atomic commit.

Documents: `{prefix}_rate/{userId}` with `admits: {jobId: epochSeconds}` and the user's Idempotency-Key
claims `keys: {keyHash: {jobId, expiresAt}}` (the key is hashed, never stored), and
`{prefix}_slots/{projectId}` with `leases: {jobId: epochSeconds}`; `keysUntil` / `leasesUntil` hold the
latest expiry of the map when it was last rewritten, so the sweep can query the documents that may still
hold something (`holdings`). A project's images per UTC month live in `{prefix}_budget/{projectId}_{YYYY-MM}`
with `reserved: {jobId: images}` (jobs still running) and `settled: {jobId: images stored}` (jobs that
ended), read and written in the same commit as the other two when a reservation asks for images. Times
come from the injected clock, never server time, so tests can move time. The algorithm is
`limits_memory.decide`, shared with the in-process twin.

Concurrency control is optimistic: read both documents, decide, then commit both writes in one batch
whose preconditions say "each document is still the version we read" (or still absent). A batch commit
is all-or-nothing, so a lost race writes nothing and is retried here with full jitter. We do not use a
read-write transaction: its reads take shared locks, two contending writers deadlock, and Firestore's
emulator resolves that only by a 2 s lock timeout that aborts both (measured: 80 concurrent reserves on
one user -> 1 admitted, 79 aborted past any retry budget). Preconditioned commits hold no locks.

Within one instance, writers take turns (a lock per document, taken in a fixed order): a function
instance serves many requests at once (`THREADS` = concurrency), and threads of one process racing each
other for a document only burn commits that must fail. A writer whose read predates a commit of ours
reads again in its turn. Reads and rejections take no turn, so a full project still answers 429 at the
speed of one read. Races between instances are still settled by the
preconditions; the locks only save wasted commits, correctness never depends on them.

A cold client's first read and first commit also set up the gRPC channel (and, on Google, fetch a
token), and a cold emulator's first call takes ~1.3-2 s: each kind of call gets `first_call_timeout_s`
until one of its kind has succeeded, then `call_timeout_s`. `warm_up_in_background()` (bootstrap calls
it at start-up) makes one read and one empty commit in a thread, so the first job rarely waits at all.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import grpc
from google.api_core import exceptions as gexc
from google.cloud import firestore

from nano_banana.adapters.limits_memory import (
    Decision,
    budget_of,
    check_admission,
    decide,
    from_epoch,
    key_claim,
    reservation_of,
    settle_months,
    to_epoch,
)
from nano_banana.domain import month_of
from nano_banana.errors import Unavailable
from nano_banana.log import warming
from nano_banana.ports import BudgetUse, Clock, Holding, HoldingKind, HoldingsPage, LimitsReading, Reservation

_log = logging.getLogger("nano_banana")

T = TypeVar("T")

_MAX_TURN_LOCKS = 10_000
_BACKOFF_BASE_S = 0.02
_BACKOFF_CAP_S = 0.5

# Failures that mean "Firestore is unreachable or overloaded right now": a 503, never a 500.
_UNREACHABLE: tuple[type[BaseException], ...] = (
    gexc.ServiceUnavailable,
    gexc.DeadlineExceeded,
    gexc.InternalServerError,
    gexc.ResourceExhausted,
    gexc.Cancelled,
    gexc.Unknown,
    gexc.RetryError,
    grpc.RpcError,
)
# A precondition failed: another writer changed (or created) a document since we read it.
_LOST_RACE: tuple[type[BaseException], ...] = (gexc.FailedPrecondition, gexc.Conflict, gexc.Aborted)


@dataclass
class _Turn:
    """One document's writers in this process: they take turns, and count the commits they made (a
    thread whose read predates one of them reads again before writing)."""

    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    writes: int = 0


@dataclass(frozen=True)
class _Read:
    """What `check` read (LimitsReading.documents): both snapshots, and this process's commit counts then."""

    rate_doc: Any
    slot_doc: Any
    seen: tuple[int, ...]
    month_doc: Any = None
    month: str | None = None  # the budget month read (None: not read)


class _Retry(Exception):
    """This attempt lost a race; read again and decide again."""


class FirestoreLimits:
    """`Limits` on Firestore, for many function instances sharing one budget per user and project."""

    def __init__(  # noqa: PLR0917 (the positional order is the agreed constructor contract)
        self,
        client: firestore.Client,
        collection_prefix: str,
        rate_per_hour: int,
        max_active_per_project: int,
        clock: Clock,
        max_attempts: int = 12,
        *,
        call_timeout_s: float = 3.0,
        first_call_timeout_s: float = 15.0,
        retry_budget_s: float = 8.0,
    ) -> None:
        self._client = client
        self._rates = client.collection(f"{collection_prefix}_rate")
        self._slots = client.collection(f"{collection_prefix}_slots")
        self._months = client.collection(f"{collection_prefix}_budget")
        self._rate = rate_per_hour
        self._max_active = max_active_per_project
        self._clock = clock
        self._max_attempts = max_attempts
        self._call_timeout_s = call_timeout_s
        self._first_call_timeout_s = max(first_call_timeout_s, call_timeout_s)
        self._warm = {"read": threading.Event(), "commit": threading.Event()}  # one of its kind succeeded
        self._retry_budget_s = retry_budget_s
        self._turns: OrderedDict[str, _Turn] = OrderedDict()  # document path -> its writers' turn
        self._turns_lock = threading.Lock()

    # ------------------------------------------------------------ Limits

    def check(
        self, *, user_id: uuid.UUID, project_id: uuid.UUID, idempotency_key: str | None = None, images: int = 0
    ) -> LimitsReading:
        """Raise RateLimited / ConcurrencyLimited as `reserve` would now, writing nothing: one
        BatchGetDocuments (2 documents, 3 with `images`: the project's month), no turn taken. What it
        read lets `reserve` go straight to its commit."""
        rate_ref = self._rates.document(str(user_id))
        slot_ref = self._slots.document(str(project_id))
        month = month_of(self._clock()) if images > 0 else None
        refs = [rate_ref, slot_ref] + ([self._month_ref(project_id, month)] if month is not None else [])
        seen = self._writes(sorted({ref.path for ref in refs}))
        started = time.monotonic()
        try:
            rate_doc, slot_doc, *month_doc = self._guard(lambda: self._read(*refs))
        except Unavailable as exc:
            _log.warning(
                "limits store unreachable",
                extra={
                    "event": "limits_check_unavailable",
                    "projectId": str(project_id),
                    "errorType": type(exc.__cause__).__name__,
                    "warm": self.warm,
                    "durationMs": round((time.monotonic() - started) * 1000),
                },
            )
            raise
        check_admission(
            _times(rate_doc, "admits"),
            _times(slot_doc, "leases"),
            _claims(rate_doc),
            claim=key_claim(idempotency_key) if idempotency_key is not None else None,
            now=to_epoch(self._clock()),
            rate_per_hour=self._rate,
            max_active=self._max_active,
        )
        return LimitsReading(
            user_id, project_id, _Read(rate_doc, slot_doc, seen, month_doc[0] if month_doc else None, month)
        )

    def reserve(
        self,
        *,
        user_id: uuid.UUID,
        project_id: uuid.UUID,
        job_id: uuid.UUID,
        lease_expires_at: datetime,
        idempotency_key: str | None = None,
        reading: LimitsReading | None = None,
        images: int = 0,
        monthly_images: int | None = None,
    ) -> Reservation:
        """Admit one job, claim its key and reserve its images, or raise KeyClaimed / RateLimited /
        BudgetExceeded / ConcurrencyLimited / Unavailable, reserving nothing.

        One BatchGetDocuments (2 documents, 3 with `images`) and, when admitting, one Commit (2 or 3
        preconditioned writes); with a `reading` from `check`, the first attempt only commits
        (preconditioned on what it read).
        """
        rate_ref = self._rates.document(str(user_id))
        slot_ref = self._slots.document(str(project_id))
        claim = key_claim(idempotency_key) if idempotency_key is not None else None
        now = self._clock()
        month = month_of(now) if images > 0 else None
        month_ref = self._month_ref(project_id, month) if month is not None else None
        refs = [rate_ref, slot_ref] + ([month_ref] if month_ref is not None else [])
        # What check() read, if it was for these documents: the first attempt decides on it.
        read = _reading_of(reading, user_id, project_id)
        reuse = [read] if read is not None and read.month == month else []

        def read_and_decide() -> tuple[Any, Any, Any, Decision]:
            if reuse:
                read = reuse.pop()
                rate_doc, slot_doc, month_doc = read.rate_doc, read.slot_doc, read.month_doc
            else:
                rate_doc, slot_doc, *rest = self._read(*refs)
                month_doc = rest[0] if rest else None
            decision = decide(  # raises KeyClaimed / RateLimited / ...: that read decides
                _times(rate_doc, "admits"),
                _times(slot_doc, "leases"),
                job_key=str(job_id),
                now=to_epoch(now),
                lease_expires_at=to_epoch(lease_expires_at),
                rate_per_hour=self._rate,
                max_active=self._max_active,
                claims=_claims(rate_doc),
                claim=claim,
                budget=budget_of(
                    _counts(month_doc, "reserved"),
                    _counts(month_doc, "settled"),
                    job_key=str(job_id),
                    images=images,
                    limit=monthly_images,
                    now=now,
                ),
            )
            return rate_doc, slot_doc, month_doc, decision

        paths = sorted({ref.path for ref in refs})

        def attempt() -> Reservation:
            seen = reuse[0].seen if reuse else self._writes(paths)
            rate_doc, slot_doc, month_doc, decision = read_and_decide()
            if decision.changed:
                with self._turn(paths) as turns:
                    if tuple(turn.writes for turn in turns) != seen:  # a thread of ours committed since our read
                        rate_doc, slot_doc, month_doc, decision = read_and_decide()
                    if decision.changed:
                        batch = self._client.batch()
                        # Whole maps are rewritten, so entries pruned by `decide` leave the documents too.
                        rate = {"admits": decision.admits, **_keys_fields(decision.claims)}
                        _write_if_unchanged(batch, rate_doc, rate_ref, rate)
                        _write_if_unchanged(batch, slot_doc, slot_ref, _leases_fields(decision.leases))
                        if month_ref is not None and decision.budget is not None and decision.budget.changed:
                            _write_if_unchanged(batch, month_doc, month_ref, {"reserved": decision.budget.reserved})
                        self._commit(batch)
                        for turn in turns:
                            turn.writes += 1
            return reservation_of(
                decision, user_id=user_id, project_id=project_id, job_id=job_id, claim=claim, images=images
            )

        return self._with_retries(attempt, event="limits_reserve", job_id=job_id, project_id=project_id)

    def give_back(self, reservation: Reservation) -> None:
        """Remove the job's rate entry, lease and key claim in one commit (field deletes). Idempotent.
        (The claim is deleted unread: it cannot have passed to another job, as it lives as long as the
        lease and a creation gives back within seconds.)"""
        key = str(reservation.job_id)
        rate_fields = {"admits": key} | ({"keys": reservation.claim} if reservation.claim else {})
        targets = [
            (self._rates.document(str(reservation.user_id)), rate_fields),
            (self._slots.document(str(reservation.project_id)), {"leases": key}),
        ]
        if reservation.budget is not None:  # the month's images go in the same commit
            targets.append((self._month_ref(reservation.project_id, reservation.budget.month), {"reserved": key}))
        self._with_retries(
            lambda: self._delete_fields(*targets),
            event="limits_give_back",
            job_id=reservation.job_id,
            project_id=reservation.project_id,
        )

    def settle_images(self, *, project_id: uuid.UUID, job_id: uuid.UUID, reserved_at: datetime, images: int) -> None:
        """The job's entry becomes `settled: images` (its reserved entry deleted) in one merge commit, no
        read; a job created within minutes of a month's start first reads both months to settle in the
        one it reserved in. Idempotent."""
        key = str(job_id)
        months = settle_months(reserved_at)

        def attempt() -> None:
            month = months[0]
            if len(months) > 1:
                docs = self._read(*(self._month_ref(project_id, m) for m in months))
                month = next(
                    (
                        m
                        for m, doc in zip(months, docs, strict=True)
                        if key in _counts(doc, "reserved") | _counts(doc, "settled")
                    ),
                    month,
                )
            batch = self._client.batch()
            change = {"reserved": {key: firestore.DELETE_FIELD}, "settled": {key: images}}
            batch.set(self._month_ref(project_id, month), change, merge=True)
            self._commit(batch)

        self._with_retries(attempt, event="limits_settle", job_id=job_id, project_id=project_id)

    def month_usage(self, project_id: uuid.UUID, at: datetime) -> BudgetUse:
        """The project's month as stored (one read)."""
        month = month_of(at)
        (snap,) = self._guard(lambda: self._read(self._month_ref(project_id, month)))
        return BudgetUse(month, sum(_counts(snap, "settled").values()), sum(_counts(snap, "reserved").values()))

    def _month_ref(self, project_id: uuid.UUID, month: str) -> Any:
        return self._months.document(f"{project_id}_{month}")

    def release_slot(self, *, project_id: uuid.UUID, job_id: uuid.UUID) -> None:
        """Remove the job's project lease (one field delete). Idempotent."""
        self._with_retries(
            lambda: self._delete_fields((self._slots.document(str(project_id)), {"leases": str(job_id)})),
            event="limits_release",
            job_id=job_id,
            project_id=project_id,
        )

    def release_claim(
        self, *, user_id: uuid.UUID, project_id: uuid.UUID, job_id: uuid.UUID, idempotency_key: str
    ) -> bool:
        """Remove the key's claim if this job holds it: one read and, if it does, one commit of the
        user's `keys` map without it, preconditioned on the version read (a claim taken meanwhile by
        another job is never removed). Idempotent."""
        return self._drop_claim(user_id, project_id, job_id, key_claim(idempotency_key))

    def _drop_claim(self, user_id: uuid.UUID, project_id: uuid.UUID | None, job_id: uuid.UUID, claim: str) -> bool:
        ref = self._rates.document(str(user_id))

        def attempt() -> bool:
            seen = self._writes([ref.path])
            (snap,) = self._read(ref)
            claims = _claims(snap)
            if claims.get(claim, ("", 0.0))[0] != str(job_id):
                return False
            with self._turn([ref.path]) as turns:
                if tuple(turn.writes for turn in turns) != seen:  # a thread of ours committed since our read
                    raise _Retry
                batch = self._client.batch()
                _write_if_unchanged(batch, snap, ref, _keys_fields({k: c for k, c in claims.items() if k != claim}))
                self._commit(batch)
                for turn in turns:
                    turn.writes += 1
            return True

        return self._with_retries(attempt, event="limits_release_claim", job_id=job_id, project_id=project_id)

    def active_jobs(self, project_id: uuid.UUID) -> list[uuid.UUID]:
        """Job ids holding an unexpired lease in the project (one read)."""
        (snap,) = self._guard(lambda: self._read(self._slots.document(str(project_id))))
        now = to_epoch(self._clock())
        return sorted(uuid.UUID(k) for k, expires in _times(snap, "leases").items() if expires > now)

    def holdings(self, kind: HoldingKind, *, offset: int, limit: int) -> HoldingsPage:
        """One query: the documents whose `leasesUntil` (`keysUntil`) lies ahead, ordered by it. The field
        is the latest expiry the document's map held when last rewritten: a bound, as a release deletes a
        map entry without lowering it (such a document may come back with nothing held)."""
        now = to_epoch(self._clock())
        collection, bound = (self._slots, "leasesUntil") if kind == "lease" else (self._rates, "keysUntil")
        query = collection.where(filter=firestore.FieldFilter(bound, ">", now)).order_by(bound)
        snaps = self._guard(
            lambda: list(query.offset(offset).limit(limit).get(retry=None, timeout=self._timeout("read")))
        )
        found: list[Holding] = []
        for snap in snaps:
            owner = uuid.UUID(snap.id)
            entries: list[tuple[str, float, str | None]]
            if kind == "lease":
                entries = [(j, t, None) for j, t in _times(snap, "leases").items()]
            else:
                entries = [(j, t, c) for c, (j, t) in _claims(snap).items()]
            found += [Holding(kind, owner, uuid.UUID(j), from_epoch(t), c) for j, t, c in sorted(entries) if t > now]
        return HoldingsPage(found, len(snaps))

    def drop(self, holding: Holding) -> bool:
        """A lease: one field delete. A claim: as `release_claim` (only while the job holds it)."""
        if holding.kind == "claim":
            assert holding.claim is not None
            return self._drop_claim(holding.owner, None, holding.job_id, holding.claim)
        self.release_slot(project_id=holding.owner, job_id=holding.job_id)
        return True

    def forget_user(self, user_id: uuid.UUID) -> None:
        """Delete the user's rate document (erasure). Idempotent: deleting an absent document succeeds."""
        ref = self._rates.document(str(user_id))
        self._guard(lambda: ref.delete(retry=None, timeout=self._call_timeout_s))

    # ------------------------------------------------------------ plumbing

    def _writes(self, paths: list[str]) -> tuple[int, ...]:
        """How many commits this process has made to each document so far (0 if none it remembers)."""
        with self._turns_lock:
            return tuple(turn.writes if (turn := self._turns.get(path)) else 0 for path in paths)

    @contextmanager
    def _turn(self, paths: list[str]) -> Iterator[list[_Turn]]:
        """This process's turn to write the documents (sorted paths: locks always taken in one order)."""
        with self._turns_lock:
            turns = []
            for path in paths:
                turn = self._turns.get(path)
                if turn is None:
                    turn = self._turns[path] = _Turn()
                    while len(self._turns) > _MAX_TURN_LOCKS:  # forget the least recently used (unheld) ones
                        oldest, old = next(iter(self._turns.items()))
                        if old.lock.locked():
                            break
                        del self._turns[oldest]  # a forgotten count reads as a change: a fresh read, no harm
                self._turns.move_to_end(path)
                turns.append(turn)
        with ExitStack() as stack:
            for turn in turns:
                stack.enter_context(turn.lock)
            yield turns

    def _read(self, *refs: Any) -> list[Any]:
        """Read the documents in one BatchGetDocuments call (one snapshot), in the order asked."""
        found = self._client.get_all(list(refs), retry=None, timeout=self._timeout("read"))
        snaps = {s.reference.path: s for s in found}
        self._warm["read"].set()
        return [snaps.get(ref.path) for ref in refs]

    def _delete_fields(self, *targets: tuple[Any, dict[str, str]]) -> None:
        """One commit deleting `field.key` for each {field: key} of each document; a merge-set, so absent
        documents are fine."""
        batch = self._client.batch()
        for ref, fields in targets:
            batch.set(ref, {field: {key: firestore.DELETE_FIELD} for field, key in fields.items()}, merge=True)
        self._commit(batch)

    def _commit(self, batch: Any) -> None:
        try:
            batch.commit(retry=None, timeout=self._timeout("commit"))
        except _LOST_RACE as exc:
            self._warm["commit"].set()  # Firestore answered: the call path is warm
            raise _Retry from exc
        self._warm["commit"].set()

    def _guard(self, call: Callable[[], T]) -> T:
        try:
            return call()
        except _UNREACHABLE as exc:
            raise Unavailable("the limits store is unavailable; retry shortly") from exc

    def _with_retries(
        self, attempt: Callable[[], T], *, event: str, job_id: uuid.UUID, project_id: uuid.UUID | None
    ) -> T:
        """Run `attempt` until it wins its race, with full-jitter pauses, within attempts and time budgets."""
        started = time.monotonic()
        deadline = started + self._retry_budget_s
        tries = 0
        while tries < self._max_attempts:
            tries += 1
            try:
                return self._guard(attempt)
            except _Retry:
                pass
            except Unavailable as exc:
                cause = exc.__cause__
                _log.warning(
                    "limits store unreachable",
                    extra={
                        "event": f"{event}_unavailable",
                        "jobId": str(job_id),
                        "projectId": str(project_id),
                        "errorType": type(cause).__name__ if cause is not None else "Unavailable",
                        "warm": self.warm,
                        "durationMs": round((time.monotonic() - started) * 1000),
                    },
                )
                raise
            pause = random.uniform(0, min(_BACKOFF_CAP_S, _BACKOFF_BASE_S * 2**tries))
            if time.monotonic() + pause >= deadline:
                break
            time.sleep(pause)
        _log.warning(
            "limits contention retry budget exhausted",
            extra={
                "event": f"{event}_contended",
                "jobId": str(job_id),
                "projectId": str(project_id),
                "attempts": tries,
                "durationMs": round((time.monotonic() - started) * 1000),
            },
        )
        raise Unavailable("too many concurrent requests; retry shortly")

    # ------------------------------------------------------------ warm-up

    @property
    def warm(self) -> bool:
        """Whether a read and a commit have both succeeded (every call now gets `call_timeout_s`)."""
        return all(event.is_set() for event in self._warm.values())

    def wait_warm(self, timeout_s: float) -> bool:
        end = time.monotonic() + timeout_s
        return all(event.wait(max(0.0, end - time.monotonic())) for event in self._warm.values())

    def warm_up(self) -> None:
        """Open the channel and warm both kinds of call: one read of an absent document, one empty commit
        (it writes nothing). A failure is logged, never raised: the first real call simply warms up."""
        with warming(
            "limits_warmed_up",
            "limits_warm_up_failed",
            done="limits store warmed up",
            failed="limits store warm-up failed",
        ):
            self._read(self._slots.document("warm-up"))
            self._commit(self._client.batch())

    def warm_up_in_background(self) -> threading.Thread:
        """Warm up without delaying start-up or the first answer (a daemon thread)."""
        thread = threading.Thread(target=self.warm_up, name="firestore-warm-up", daemon=True)
        thread.start()
        return thread

    def _timeout(self, kind: str) -> float:
        return self._call_timeout_s if self._warm[kind].is_set() else self._first_call_timeout_s


def _reading_of(reading: LimitsReading | None, user_id: uuid.UUID, project_id: uuid.UUID) -> _Read | None:
    if reading is None or (reading.user_id, reading.project_id) != (user_id, project_id):
        return None
    return reading.documents if isinstance(reading.documents, _Read) else None


def _write_if_unchanged(batch: Any, snap: Any, ref: Any, data: dict[str, Any]) -> None:
    """Add a write that fails the whole commit if the document changed since `snap` was read."""
    if snap is not None and snap.exists:
        batch.update(ref, data, option=firestore.Client.write_option(last_update_time=snap.update_time))
    else:
        batch.create(ref, data)


def _times(snap: Any, field: str) -> dict[str, float]:
    if snap is None or not snap.exists:
        return {}
    value = (snap.to_dict() or {}).get(field) or {}
    return {str(k): float(v) for k, v in value.items()}


def _counts(snap: Any, field: str) -> dict[str, int]:
    if snap is None or not snap.exists:
        return {}
    value = (snap.to_dict() or {}).get(field) or {}
    return {str(k): int(v) for k, v in value.items()}


def _claims(snap: Any) -> dict[str, tuple[str, float]]:
    if snap is None or not snap.exists:
        return {}
    value = (snap.to_dict() or {}).get("keys") or {}
    return {str(k): (str(c["jobId"]), float(c["expiresAt"])) for k, c in value.items() if isinstance(c, dict)}


def _leases_fields(leases: dict[str, float]) -> dict[str, Any]:
    """A slot document's fields: the leases, and the latest expiry among them (`holdings` queries it)."""
    return {"leases": leases, "leasesUntil": max(leases.values(), default=0.0)}


def _keys_fields(claims: dict[str, tuple[str, float]]) -> dict[str, Any]:
    """A rate document's claim fields: the claims, and the latest expiry among them."""
    keys = {k: {"jobId": j, "expiresAt": t} for k, (j, t) in claims.items()}
    return {"keys": keys, "keysUntil": max((t for _, t in claims.values()), default=0.0)}
