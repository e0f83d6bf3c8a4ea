"""The simulated service: the real use cases over the real Postgres store and in-memory stand-ins, every
port wrapped for steps and faults, plus what the world remembers to judge the invariants by (which jobs
were answered 2xx, which rows went and why)."""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from nano_banana import usecases
from nano_banana.adapters.generator_preview import PreviewGenerator
from nano_banana.adapters.limits_memory import MemoryLimits
from nano_banana.adapters.postgres import PostgresJobStore
from nano_banana.domain import ACTIVE, JobStatus
from nano_banana.errors import GenerationFailed, ProcessorUnavailable, Unavailable
from nano_banana.ports import DeletedJob
from nano_banana.settings import Settings
from tests.simulation import database
from tests.simulation.adapters import SimBlobs, SimProcessor, SimQueue
from tests.simulation.faults import FaultPlan, Faulty
from tests.simulation.scheduler import Actor, Scheduler, SimExecutor

START = datetime(2030, 1, 1, tzinfo=UTC)
SECRET = "simulation-secret"
PROJECTS = (uuid.UUID(int=0xA1), uuid.UUID(int=0xA2))
USERS = (uuid.UUID(int=0xB1), uuid.UUID(int=0xB2), uuid.UUID(int=0xB3))
MEMBERS = {PROJECTS[0]: (USERS[0], USERS[1]), PROJECTS[1]: (USERS[1], USERS[2])}
RETENTION_DAYS = 1


def settings() -> Settings:
    return Settings(  # type: ignore[call-arg]
        NANO_BANANA_RATE_PER_HOUR=10,
        NANO_BANANA_MAX_ACTIVE_PER_PROJECT=2,
        NANO_BANANA_RETENTION_DAYS=RETENTION_DAYS,
        N8N_NANO_BANANA_SECRET=SECRET,
        NANO_BANANA_CALLBACK_CLAIM_TTL_S=30,
    )


@dataclass
class Move:
    """One actor the world started: what it does, for whom, on what."""

    kind: str
    user: uuid.UUID | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        parts = [self.kind] + ([f"user={str(self.user)[-2:]}"] if self.user else [])
        parts += [f"{k}={_short(v)}" for k, v in self.detail.items()]
        return " ".join(parts)


def _short(value: object) -> str:
    if isinstance(value, uuid.UUID):
        return str(value)[:8]
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass(frozen=True)
class Violation:
    invariant: int
    message: str
    step: int


class StoreSpy:
    """The real store, telling the world which rows a call removed (applied even if a fault then loses
    the answer), with the rows as they were just before, to judge whether the removal was allowed."""

    def __init__(self, store: PostgresJobStore, world: World) -> None:
        self._store = store
        self._world = world

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def delete_jobs(self, job_ids: Sequence[uuid.UUID], **kwargs: Any) -> list[DeletedJob]:
        before = self._world.rows()
        deleted = self._store.delete_jobs(job_ids, **kwargs)
        self._world.removed_rows([d.id for d in deleted], before, "delete_jobs")
        return deleted

    def create_job(self, new: Any) -> Any:
        self._world.inserting(new.id)
        return self._store.create_job(new)

    def create_refinement(self, new: Any, *, max_turns: int) -> Any:
        self._world.inserting(new.id)
        return self._store.create_refinement(new, max_turns=max_turns)

    def discard_queued(self, job_id: uuid.UUID) -> bool:
        before = self._world.rows()
        discarded = self._store.discard_queued(job_id)
        if discarded:
            self._world.removed_rows([job_id], before, "discard_queued")
        return discarded


class World:
    def __init__(
        self,
        seed: int,
        store: PostgresJobStore,
        conn: psycopg.Connection[Any],
        *,
        fault_rate: float = 0.05,
        processor: bool | None = None,
    ) -> None:
        self.seed = seed
        self.sched = Scheduler(seed, START)
        self.plan = FaultPlan(rate=fault_rate)
        self.conn = conn
        self.ids = random.Random(seed * 7919 + 1)
        self.processor_mode = self.sched.rng.random() < 0.5 if processor is None else processor
        self.settings = settings()
        self.raw_store = store
        self.limits = MemoryLimits(
            self.settings.rate_per_hour, self.settings.max_active_per_project, lambda: self.sched.now
        )
        self.queue = SimQueue(lambda: self.sched.now)
        self.blobs = SimBlobs(lambda: self.sched.now)
        self.processor = SimProcessor()
        generator = PreviewGenerator(0, self.settings.max_pixels)
        sched, plan = self.sched, self.plan

        def port(name: str, target: object, error: Callable[[], BaseException]) -> Any:
            return Faulty(name, target, sched, plan, error)

        db_down = lambda: Unavailable("the database is unavailable; retry shortly")  # noqa: E731
        faulty_generator = port("generator", generator, lambda: GenerationFailed("the model kept failing"))
        faulty_processor = port("processor", self.processor, lambda: ProcessorUnavailable("n8n is unreachable"))
        self.svc = usecases.Services(
            settings=self.settings,
            store=port("store", StoreSpy(store, self), db_down),
            limits=port("limits", self.limits, lambda: Unavailable("the limits store is unavailable")),
            queue=port("queue", self.queue, lambda: Unavailable("the task queue is unavailable")),
            blobs=port("blobs", self.blobs, lambda: Unavailable("storage is unavailable")),
            generator_factory=lambda: faulty_generator,
            processor_factory=(lambda: faulty_processor) if self.processor_mode else None,
            clock=lambda: self.sched.now,
            fanout=SimExecutor(self.sched),
            sleep=self.sched.sleep,
            monotonic=self.sched.monotonic,
        )
        self.moves: dict[int, Move] = {}  # root actor's number -> its move
        self.inserted: dict[int, list[uuid.UUID]] = {}  # root actor's number -> the job ids it tried to insert
        self.answered: dict[uuid.UUID, str] = {}
        self.removed: dict[uuid.UUID, str] = {}
        self.key_jobs: dict[tuple[uuid.UUID, str], uuid.UUID] = {}
        self.statuses: dict[uuid.UUID, str] = {}
        self.violations: list[Violation] = []
        self.webhooks = 0
        self._seen: set[str] = set()
        self.blobs.note = self._who
        self.sched.on_advance.append(lambda at: database.set_clock(self.conn, at))
        database.reset(conn, START)
        for project, members in MEMBERS.items():
            for user in members:
                store.add_member(project, user)

    # ------------------------------------------------------------ bookkeeping

    def violate(self, invariant: int, message: str, key: str | None = None) -> None:
        if (key := key or message) in self._seen:
            return
        self._seen.add(key)
        self.violations.append(Violation(invariant, message, self.sched.steps))
        self.sched.trace.append(f"  VIOLATION {invariant}: {message}")

    def start(
        self, move: Move, fn: Callable[[], Any], on_end: Callable[[Actor], None] | None = None, *, later: int = 0
    ) -> Actor:
        """Start a move's actor; `later`: it arrives once the others have made that many steps."""
        actor = self.sched.spawn(f"m{self.sched.spawned + 1}:{move.kind}", fn, later=later)
        self.moves[actor.number] = move
        if on_end is not None:
            actor.on_end.append(on_end)
        self.sched.trace.append(f"  start {actor.name}: {move.describe()}")
        return actor

    def _who(self) -> str:
        actor = self.sched.current()
        move = self.move_of(actor)
        return f"step {self.sched.steps} {actor.name if actor else 'world'} ({move.describe() if move else '?'})"

    def inserting(self, job_id: uuid.UUID) -> None:
        actor = self.sched.current()
        if actor is not None:
            self.inserted.setdefault(actor.root.number, []).append(job_id)

    def move_of(self, actor: Actor | None) -> Move | None:
        return None if actor is None else self.moves.get(actor.root.number)

    @contextmanager
    def cursor(self) -> Iterator[psycopg.Cursor[Any]]:
        with self.conn.cursor() as cur:
            yield cur

    def rows(self) -> dict[uuid.UUID, dict[str, Any]]:
        """Every job row, with its variants' paths (the world's own read: no step, no fault)."""
        with self.cursor() as cur:
            jobs = cur.execute(
                "select id, project_id, user_id, thread_id, parent_job_id, status, finished_at, deadline_at,"
                " created_at, input_path, idempotency_key from pip_ai_image_jobs"
            ).fetchall()
            variants = cur.execute("select job_id, storage_path from pip_ai_image_variants").fetchall()
        columns = [
            "id",
            "project_id",
            "user_id",
            "thread_id",
            "parent_job_id",
            "status",
            "finished_at",
            "deadline_at",
            "created_at",
            "input_path",
            "idempotency_key",
        ]
        out = {r[0]: {**dict(zip(columns, r, strict=True)), "variants": []} for r in jobs}
        for job_id, path in variants:
            if job_id in out:
                out[job_id]["variants"].append(path)
        return out

    def removed_rows(self, job_ids: Sequence[uuid.UUID], before: dict[uuid.UUID, dict[str, Any]], how: str) -> None:
        actor = self.sched.current()
        move = self.move_of(actor)
        for job_id in job_ids:
            reason = self._why_allowed(move, job_id, before, how)
            self.removed[job_id] = reason
            self.sched.trace.append(f"  removed {str(job_id)[:8]}: {reason}")
            if not reason.startswith("legit") and job_id in self.answered:
                self.violate(
                    1,
                    f"job {job_id} answered 2xx ({self.answered[job_id]}) was removed by "
                    f"{move.describe() if move else '?'} ({reason})",
                )

    def _why_allowed(
        self, move: Move | None, job_id: uuid.UUID, before: dict[uuid.UUID, dict[str, Any]], how: str
    ) -> str:
        row = before.get(job_id)
        if move is None or row is None:
            return "illegit: no move or no row"
        if how == "discard_queued":
            return "rollback" if move.kind in ("create", "refine") else f"illegit: {move.kind} discarded it"
        if move.kind == "delete":
            return (
                "legit: owner deletion"
                if job_id in _closure(before, {move.detail["job"]}, False)
                else ("illegit: not in the deleted job's subtree")
            )
        if move.kind == "erase":
            roots = {j for j, r in before.items() if r["user_id"] == move.user}
            return "legit: erasure" if job_id in _closure(before, roots, True) else "illegit: not the user's"
        if move.kind == "sweep":
            cutoff = self.sched.now - timedelta(days=RETENTION_DAYS)
            done = row["status"] not in {s.value for s in ACTIVE} and row["finished_at"] is not None
            if done and row["finished_at"] < cutoff:
                return "legit: retention"
            return f"illegit: retention deleted a {row['status']} job (finished {row['finished_at']}, cutoff {cutoff})"
        return f"illegit: {move.kind} deleted it"

    def answer(self, move: Move, job_id: uuid.UUID, how: str) -> None:
        """A request was answered 2xx with this job."""
        reason = self.removed.get(job_id)
        if reason is not None and not reason.startswith("legit"):
            self.violate(1, f"{move.describe()} answered 2xx ({how}) with job {job_id}, which was removed ({reason})")
        elif reason is None and job_id not in self.rows():
            self.violate(1, f"{move.describe()} answered 2xx ({how}) with job {job_id}, which does not exist")
        self.answered.setdefault(job_id, f"{how} by {move.describe()}")
        key = move.detail.get("key")
        if key is not None and move.user is not None:
            earlier = self.key_jobs.get((move.user, key))
            if earlier is not None and earlier != job_id and earlier not in self.removed:
                self.violate(5, f"Idempotency-Key {key!r} answered with {earlier} and then {job_id}")
            self.key_jobs[(move.user, key)] = job_id


def _closure(rows: dict[uuid.UUID, dict[str, Any]], roots: set[uuid.UUID], by_input: bool) -> set[uuid.UUID]:
    """The jobs made from `roots`: refinements (parent_job_id), and with by_input jobs whose input is a
    variant of one of them."""
    found = set(roots) & rows.keys()
    while True:
        paths = {p for j in found for p in rows[j]["variants"]}
        more = {
            j
            for j, r in rows.items()
            if j not in found and (r["parent_job_id"] in found or (by_input and r["input_path"] in paths))
        }
        if not more:
            return found
        found |= more


def active_statuses() -> set[str]:
    return {s.value for s in ACTIVE}


__all__ = ["JobStatus", "Move", "Violation", "World"]
