"""JobStore on Postgres (Supabase in production, the embedded server locally) via psycopg 3."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, cast

import psycopg
from psycopg import errors as pg_errors
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from nano_banana.adapters.pg_notify import JobChangeListener, session_conninfo
from nano_banana.adapters.postgres_rows import (
    Row,
    assistant_text_success,
    decode_cursor,
    encode_cursor,
    inserted,
    job_of,
    owed,
    queries,
    source_gone,
    usage_params,
    variant_of,
)
from nano_banana.domain import (
    ACTIVE,
    Job,
    JobStatus,
    Message,
    ModelUsage,
    NewJob,
    Role,
    Variant,
    VariantUpload,
    job_prefix,
    sources_for,
)
from nano_banana.errors import InvalidRequest, Unavailable
from nano_banana.ports import DeletedJob, JobPage, ReceiptClaim, UsageBucket


class _NewThreads(Exception):
    """A deletion's subtree reached threads it has not locked: start again with them."""

    def __init__(self, threads: set[uuid.UUID]) -> None:
        super().__init__(f"{len(threads)} new threads")
        self.threads = threads


class PostgresJobStore:
    """The JobStore port. Autocommit connections: each statement below is its own transaction
    unless wrapped in `_transaction`. Counts statements sent (round trips) for benchmarks."""

    def __init__(
        self,
        conninfo: str,
        *,
        connect_timeout_s: float = 3.0,
        max_size: int = 5,
        listen_conninfo: str | None = None,
    ) -> None:
        self._conninfo = conninfo
        self._connect_timeout_s = connect_timeout_s
        self.listener = JobChangeListener(
            listen_conninfo or session_conninfo(conninfo), connect_timeout_s=connect_timeout_s
        )
        self._pool = ConnectionPool(
            conninfo,
            min_size=1,
            max_size=max_size,
            timeout=connect_timeout_s,
            reconnect_timeout=60,
            kwargs={
                "autocommit": True,
                "prepare_threshold": None,  # Supabase's transaction pooler cannot keep prepared statements
                "connect_timeout": max(1, round(connect_timeout_s)),
                "row_factory": dict_row,
            },
            open=False,
            name="nano-banana",
        )
        self._pool.open(wait=False)
        self._lock = threading.Lock()
        self.round_trips = 0

    def close(self) -> None:
        self.listener.close()
        self._pool.close()

    # ------------------------------------------------------------ plumbing

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Row]]:
        try:
            with self._pool.connection() as conn:
                yield cast("psycopg.Connection[Row]", conn)
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            # After an outage every idle connection is dead: have the pool test them all now, so one
            # request fails instead of one per pooled connection.
            self._pool.check()
            raise Unavailable("the database is unavailable; retry shortly") from exc
        except PoolTimeout as exc:
            raise Unavailable("the database is unavailable; retry shortly") from exc

    def _count(self) -> None:
        with self._lock:
            self.round_trips += 1

    def _run(self, conn: psycopg.Connection[Row], name: str, params: dict[str, Any]) -> list[Row]:
        self._count()
        cur = conn.execute(queries()[name], params)
        return cur.fetchall() if cur.description else []

    def _query(self, name: str, params: dict[str, Any]) -> list[Row]:
        with self._connection() as conn:
            return self._run(conn, name, params)

    def _one_job(self, name: str, params: dict[str, Any]) -> Job | None:
        rows = self._query(name, params)
        return job_of(rows[0]) if rows else None

    # ------------------------------------------------------------ access

    def ping(self) -> None:
        self._query("ping", {})

    def can_access(self, project_id: uuid.UUID, user_id: uuid.UUID) -> bool:
        rows = self._query("can_access", {"project_id": project_id, "user_id": user_id})
        return bool(rows and rows[0]["ok"])

    def add_member(self, project_id: uuid.UUID, user_id: uuid.UUID) -> None:
        self._query("add_member", {"project_id": project_id, "user_id": user_id})

    def usage_days(self, project_id: uuid.UUID, start: datetime, end: datetime) -> list[UsageBucket]:
        rows = self._query("usage_days", {"project_id": project_id, "start": start, "end": end})
        return [
            UsageBucket(
                day=r["day"],
                jobs=int(r["jobs"]),
                by_status={s.value: int(r[s.value]) for s in JobStatus},
                images=int(r["images"]),
                prompt_tokens=int(r["prompt_tokens"]),
                output_tokens=int(r["output_tokens"]),
                total_tokens=int(r["total_tokens"]),
                p50_ms=float(r["p50_ms"]) if r["p50_ms"] is not None else None,
                p95_ms=float(r["p95_ms"]) if r["p95_ms"] is not None else None,
            )
            for r in rows
        ]

    def project_budget(self, project_id: uuid.UUID) -> int | None:
        rows = self._query("project_budget", {"project_id": project_id})
        return int(rows[0]["monthly_images"]) if rows else None

    # ------------------------------------------------------------ jobs

    def _new_job_params(self, new: NewJob) -> dict[str, Any]:
        return {
            "id": new.id,
            "project_id": new.project_id,
            "user_id": new.user_id,
            "thread_id": new.thread_id,
            "parent_job_id": new.parent_job_id,
            "source_variant_id": new.source_variant_id,
            "prompt": new.prompt,
            "input_path": new.input_path,
            "input_mime_type": new.input_mime_type,
            "input_width": new.input_width,
            "input_height": new.input_height,
            "variant_count": new.variant_count,
            "aspect_ratio": new.aspect_ratio,
            "model": new.model,
            "idempotency_key": new.idempotency_key,
            "request_hash": new.request_hash,
            "deadline_at": new.deadline_at,
            "message_id": new.message_id,
            "webhook_url": new.webhook_url,
            "webhook_events": list(new.webhook_events),
            "resolution": new.resolution,
            # Variants named as references (not the job's own uploaded ones): create_job locks them.
            "reference_variants": list(
                dict.fromkeys(
                    r.path
                    for r in new.references
                    if r.path.startswith("jobs/") and not r.path.startswith(job_prefix(new.id))
                )
            ),
            # Uploads it borrows (an inputPath's, referencePaths'): create_job holds them through their rows.
            "input_borrowed": new.input_borrowed and new.input_path.startswith("inputs/"),
            "uploads": [
                *([new.input_path] if new.input_borrowed and new.input_path.startswith("inputs/") else []),
                *(r.path for r in new.references if r.path.startswith("inputs/")),
            ],
            "reference_uploads": [r.path for r in new.references if r.path.startswith("inputs/")],
            "reference_images": json.dumps(
                [
                    {"path": r.path, "mime_type": r.mime_type, "width": r.width, "height": r.height, "bytes": r.bytes}
                    for r in new.references
                ]
            ),
        }

    def create_job(self, new: NewJob) -> Job | None:
        with self._refusals(new):
            return inserted(new, self._query("create_job", self._new_job_params(new)))

    def discard_queued(self, job_id: uuid.UUID) -> bool:
        return bool(self._query("discard_queued", {"id": job_id}))

    def mark_replayed(self, job_id: uuid.UUID) -> Job | None:
        return self._one_job("mark_replayed", {"id": job_id})

    @contextmanager
    def _refusals(self, new: NewJob) -> Iterator[None]:
        """An insert the database refused for good (a constraint: nothing was written, a retry cannot help)
        is a definite answer, never an outcome unknown: a gone parent job or variant is NotFound, a row
        that breaks a check is InvalidRequest."""
        try:
            yield
        except pg_errors.ForeignKeyViolation as exc:
            raise source_gone(new) from exc
        except pg_errors.IntegrityError as exc:  # check, not-null, unique (outside the key's ON CONFLICT)
            constraint = exc.diag.constraint_name or type(exc).__name__
            raise InvalidRequest("the job was refused by the database", details={"constraint": constraint}) from exc

    def create_refinement(self, new: NewJob, *, max_turns: int) -> Job | int | None:
        """Insert a refinement job unless the thread already has max_turns jobs (then return the count).
        One transaction, serialised per thread by an advisory lock."""
        with self._refusals(new), self._connection() as conn, conn.transaction():
            self._run(conn, "lock_thread", {"thread_id": new.thread_id})
            turns = int(self._run(conn, "thread_turns", {"thread_id": new.thread_id})[0]["turns"])
            if turns >= max_turns:
                return turns
            return inserted(new, self._run(conn, "create_job", self._new_job_params(new)))

    def variant_in_project(self, storage_path: str, project_id: uuid.UUID) -> Variant | None:
        rows = self._query("variant_in_project", {"path": storage_path, "project_id": project_id})
        return variant_of(rows[0]) if rows else None

    def visible_paths(self, user_id: uuid.UUID, paths: Sequence[tuple[str, uuid.UUID | None]]) -> set[str]:
        if not paths:
            return set()
        params = {"paths": [p for p, _ in paths], "job_ids": [j for _, j in paths], "user_id": user_id}
        return {row["path"] for row in self._query("visible_paths", params)}

    def find_by_idempotency_key(self, user_id: uuid.UUID, key: str) -> tuple[Job, str | None] | None:
        rows = self._query("find_by_idempotency_key", {"user_id": user_id, "key": key})
        return (job_of(rows[0]), rows[0]["request_hash"]) if rows else None

    def get_job(self, job_id: uuid.UUID, *, user_id: uuid.UUID | None = None) -> Job | None:
        if user_id is None:
            return self._one_job("get_job", {"id": job_id})
        return self._one_job("get_job_for_user", {"id": job_id, "user_id": user_id})

    def list_jobs(self, project_id: uuid.UUID, *, status: JobStatus | None, limit: int, cursor: str | None) -> JobPage:
        after_created, after_id = decode_cursor(cursor) if cursor else (None, None)
        rows = self._query(
            "list_jobs",
            {
                "project_id": project_id,
                "status": status.value if status else None,
                "after_created": after_created,
                "after_id": after_id,
                "limit": limit + 1,
            },
        )
        jobs = [job_of(r) for r in rows[:limit]]
        return JobPage(jobs=jobs, next_cursor=encode_cursor(jobs[-1]) if len(rows) > limit else None)

    def claim_for_generation(self, job_id: uuid.UUID, now: datetime) -> Job | None:
        from_statuses = [s.value for s in sources_for(JobStatus.running)]
        params = {"id": job_id, "from_statuses": from_statuses, "now": now, **owed(job_id, JobStatus.running)}
        return self._one_job("claim_for_generation", params)

    def thread_history(self, job: Job) -> list[Job]:
        if job.parent_job_id is None:
            return []
        return [job_of(r) for r in self._query("thread_history", {"id": job.id})]

    def complete(
        self,
        job_id: uuid.UUID,
        attempt: int,
        uploads: Sequence[VariantUpload],
        note: str | None,
        *,
        now: datetime,
        receipt: str | None = None,
        usage: ModelUsage | None = None,
    ) -> Job | None:
        rows_in = [
            {
                "id": str(uuid.uuid4()),
                "index": u.index,
                "storage_path": u.storage_path,
                "mime_type": u.mime_type,
                "width": u.width,
                "height": u.height,
                "bytes": u.bytes,
            }
            for u in sorted(uploads, key=lambda u: u.index)
        ]
        params = {
            "id": job_id,
            "attempt": attempt,
            "note": note,
            "now": now,
            "uploads": json.dumps(rows_in),
            "content": assistant_text_success(len(rows_in), note),
            "first_variant_id": rows_in[0]["id"] if rows_in else None,
            "receipt": receipt,
            **owed(job_id, JobStatus.succeeded),
            **usage_params(usage),
        }
        return self._one_job("complete", params)

    def fail(
        self,
        job_id: uuid.UUID,
        *,
        code: str,
        message: str,
        from_statuses: Sequence[JobStatus],
        attempt: int | None = None,
        now: datetime | None = None,
        only_if_past_deadline: bool = False,
        receipt: str | None = None,
        usage: ModelUsage | None = None,
    ) -> Job | None:
        params = {
            "id": job_id,
            "code": code,
            "message": message[:2000],
            "from_statuses": [s.value for s in from_statuses],
            "attempt": attempt,
            "now": now,
            "only_if_past_deadline": only_if_past_deadline,
            "content": f"Sorry, this one failed ({code}): {message[:500]}",
            "receipt": receipt,
            **owed(job_id, JobStatus.failed),
            **usage_params(usage),
        }
        return self._one_job("fail", params)

    def cancel(self, job_id: uuid.UUID) -> Job | None:
        params = {
            "id": job_id,
            "from_statuses": [s.value for s in ACTIVE],
            "content": "Canceled.",
            **owed(job_id, JobStatus.canceled),
        }
        return self._one_job("cancel", params)

    def overdue_jobs(self, now: datetime, limit: int) -> list[uuid.UUID]:
        return [r["id"] for r in self._query("overdue_jobs", {"now": now, "limit": limit})]

    def stale_queued_jobs(self, now: datetime, deadline_before: datetime, limit: int) -> list[Job]:
        params = {"now": now, "deadline_before": deadline_before, "limit": limit}
        return [job_of(r) for r in self._query("stale_queued_jobs", params)]

    def job_statuses(self, job_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, JobStatus]:
        if not job_ids:
            return {}
        return {r["id"]: JobStatus(r["status"]) for r in self._query("job_statuses", {"ids": list(job_ids)})}

    def messages(self, thread_id: uuid.UUID) -> list[tuple[Message, Job]]:
        out: list[tuple[Message, Job]] = []
        for row in self._query("thread_messages", {"thread_id": thread_id}):
            message = Message(
                id=row["message_id"],
                thread_id=row["message_thread_id"],
                job_id=row["message_job_id"],
                project_id=row["message_project_id"],
                user_id=row["message_user_id"],
                role=Role(row["role"]),
                content=row["content"],
                variant_id=row["variant_id"],
                created_at=row["message_created_at"],
            )
            out.append((message, job_of(row)))
        return out

    def claim_webhook(self, webhook_id: str, *, now: datetime, stale_before: datetime) -> ReceiptClaim:
        params = {"webhook_id": webhook_id, "now": now, "stale_before": stale_before}
        rows = self._query("claim_webhook", params)
        return cast("ReceiptClaim", rows[0]["outcome"]) if rows else "processing"

    def settle_webhook(self, webhook_id: str) -> None:
        self._query("settle_webhook", {"webhook_id": webhook_id})

    def release_webhook(self, webhook_id: str, *, claimed_at: datetime) -> None:
        self._query("release_webhook", {"webhook_id": webhook_id, "claimed_at": claimed_at})

    def prune_webhooks(self, before: datetime) -> None:
        self._query("prune_webhooks", {"before": before})

    # ------------------------------------------------------------ outbound webhooks

    def record_webhook_attempt(
        self, job_id: uuid.UUID, event: str, *, state: str, status: int | None, reason: str | None, now: datetime
    ) -> bool:
        params = {
            "job_id": job_id,
            "delivery_event": event,
            "state": state,
            "status": status,
            "reason": reason[:500] if reason else None,
            "now": now,
        }
        return bool(self._query("record_webhook_attempt", params))

    def unsent_webhooks(self, *, before: datetime, after: datetime, limit: int) -> list[tuple[uuid.UUID, str]]:
        rows = self._query("unsent_webhooks", {"before": before, "after": after, "limit": limit})
        return [(r["job_id"], r["event"]) for r in rows]

    # ------------------------------------------------------------ deletion, retention, purges

    def job_subtree(self, job_ids: Sequence[uuid.UUID], *, by_input: bool = False) -> list[Job]:
        return [job_of(r) for r in self._query("job_subtree", {"ids": list(job_ids), "by_input": by_input})]

    def delete_jobs(
        self,
        job_ids: Sequence[uuid.UUID],
        *,
        now: datetime,
        by_input: bool = False,
        late_uploads_s: float,
        extra_purges: Sequence[str] = (),
        expired_before: datetime | None = None,
    ) -> list[DeletedJob]:
        """One transaction: take the refinement locks of every thread the subtree reaches (a refinement
        racing us either lands first and is deleted with its parent, or finds its parent gone), then lock
        the subtree's rows and variants FOR UPDATE (a job being made from one of them lands first and joins
        the subtree, or finds it gone); read again until no job or thread joined. Then re-check retention's
        cutoff under the locks, delete and record purges."""
        ids = list(job_ids)
        threads: set[uuid.UUID] = set()
        with self._connection() as conn:
            while True:  # an attempt; a thread found after any lock was taken starts it again
                try:
                    with conn.transaction():
                        rows = self._delete_locked(
                            conn,
                            ids,
                            threads,
                            by_input=by_input,
                            now=now,
                            late_uploads_s=late_uploads_s,
                            extra_purges=extra_purges,
                            expired_before=expired_before,
                        )
                    break
                except _NewThreads as found:
                    threads |= found.threads
        return [
            DeletedJob(
                id=r["id"],
                project_id=r["project_id"],
                user_id=r["user_id"],
                status=JobStatus(r["status"]),
                input_path=r["input_path"],
                deadline_at=r["deadline_at"],
                idempotency_key=r["idempotency_key"],
            )
            for r in rows
        ]

    def _delete_locked(
        self,
        conn: psycopg.Connection[Row],
        ids: list[uuid.UUID],
        threads: set[uuid.UUID],
        *,
        by_input: bool,
        now: datetime,
        late_uploads_s: float,
        extra_purges: Sequence[str],
        expired_before: datetime | None,
    ) -> list[Row]:
        """One attempt of delete_jobs: every thread lock first, in id order (a refinement takes its thread's
        lock before its variants, so no thread lock is ever taken while holding a row lock), then the rows'."""
        for thread_id in sorted(threads):
            self._run(conn, "lock_thread", {"thread_id": thread_id})
        held, jobs = bool(threads), set[uuid.UUID]()
        while True:
            rows = self._run(conn, "subtree_threads", {"ids": ids, "by_input": by_input})
            if new_threads := {r["thread_id"] for r in rows} - threads:
                if held:
                    raise _NewThreads(new_threads)  # rolls back: released, then all taken again in order
                for thread_id in sorted(new_threads):  # nothing held yet: take them now, in order
                    self._run(conn, "lock_thread", {"thread_id": thread_id})
                threads |= new_threads
                held = True
                continue
            if not (new_jobs := {r["id"] for r in rows} - jobs):
                break
            self._run(conn, "lock_jobs", {"ids": sorted(new_jobs)})
            jobs.update(new_jobs)
        if expired_before is not None:
            ids = [r["id"] for r in self._run(conn, "still_expired", {"ids": ids, "before": expired_before})]
        params = {"ids": ids, "by_input": by_input, "now": now, "late_s": late_uploads_s, "extra": list(extra_purges)}
        return self._run(conn, "delete_jobs", params)

    def referenced_paths(self, paths: Sequence[str], *, excluding: Sequence[uuid.UUID] = ()) -> set[str]:
        if not paths:
            return set()
        rows = self._query("referenced_paths", {"paths": list(paths), "excluding": list(excluding)})
        return {row["path"] for row in rows}

    def due_purges(self, now: datetime, limit: int) -> list[str]:
        return [r["path"] for r in self._query("due_purges", {"now": now, "limit": limit})]

    def finish_purges(self, paths: Sequence[str], now: datetime) -> None:
        if paths:
            self._query("finish_purges", {"paths": list(paths), "now": now})

    def expired_threads(self, before: datetime, limit: int) -> list[uuid.UUID]:
        return [r["id"] for r in self._query("expired_threads", {"before": before, "limit": limit})]

    def user_jobs(self, user_id: uuid.UUID) -> list[uuid.UUID]:
        return [r["id"] for r in self._query("user_jobs", {"user_id": user_id})]

    def sweep_cursor(self, name: str) -> tuple[int, datetime | None]:
        rows = self._query("sweep_cursor", {"name": name})
        return (int(rows[0]["position"]), rows[0]["updated_at"]) if rows else (0, None)

    def set_sweep_cursor(self, name: str, position: int, at: datetime) -> None:
        self._query("set_sweep_cursor", {"name": name, "position": position, "at": at})

    # ------------------------------------------------------------ change notifications

    def wait_for_change(self, job_id: uuid.UUID, timeout_s: float, heartbeat_s: float = 15.0) -> Iterator[bool]:
        """Yield True once subscribed to the process's shared LISTEN connection (a change may have landed
        between the caller's read and now), then True when this job changed (or may have: the listener
        reconnected) and False every heartbeat_s of silence, until timeout_s passes."""
        end = time.monotonic() + timeout_s
        sub = self.listener.subscribe(str(job_id))
        try:
            yield True
            while (remaining := end - time.monotonic()) > 0:
                yield sub.wait(min(remaining, heartbeat_s))
        finally:
            self.listener.unsubscribe(sub)
