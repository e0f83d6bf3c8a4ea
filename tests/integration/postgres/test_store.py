"""The Postgres JobStore against the real embedded server: CAS races have exactly one winner."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from nano_banana.adapters.postgres import PostgresJobStore
from nano_banana.domain import ACTIVE, JobStatus, Reference, VariantUpload, output_path, reference_path
from nano_banana.embedded_pg import EmbeddedPostgres
from nano_banana.errors import NotFound
from tests.support.new_jobs import new_job

pytestmark = pytest.mark.postgres


def now() -> datetime:
    return datetime.now(UTC)


def uploads(job_id: uuid.UUID, attempt: int, n: int = 2) -> list[VariantUpload]:
    return [
        VariantUpload(i, output_path(job_id, attempt, i, "image/png"), "image/png", 64, 48, 100 + i) for i in range(n)
    ]


def race(n: int, fn: Callable[[int], Any]) -> list[Any]:
    barrier = threading.Barrier(n)

    def run(i: int) -> Any:
        barrier.wait()
        return fn(i)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(run, range(n)))


def test_create_writes_job_and_user_message_in_one_statement(pg_store: PostgresJobStore) -> None:
    project, user = uuid.uuid4(), uuid.uuid4()
    before = pg_store.round_trips
    job = pg_store.create_job(new_job(project, user))
    assert pg_store.round_trips - before == 1
    assert job is not None
    assert job.status is JobStatus.queued
    assert job.attempt == 0
    ((message, message_job),) = pg_store.messages(job.thread_id)
    assert message.role.value == "user"
    assert message.content == "make it pop"
    assert message_job.id == job.id


def test_idempotency_key_is_unique_per_user(pg_store: PostgresJobStore) -> None:
    project, user = uuid.uuid4(), uuid.uuid4()
    first = pg_store.create_job(new_job(project, user, idempotency_key="k1", request_hash="h1"))
    assert first is not None
    assert pg_store.create_job(new_job(project, user, idempotency_key="k1", request_hash="h2")) is None
    found = pg_store.find_by_idempotency_key(user, "k1")
    assert found is not None
    assert found[0].id == first.id
    assert found[1] == "h1"
    # Another user may use the same key.
    assert pg_store.create_job(new_job(project, uuid.uuid4(), idempotency_key="k1")) is not None


def test_concurrent_identical_idempotent_creates_insert_one_job(pg_store: PostgresJobStore) -> None:
    project, user = uuid.uuid4(), uuid.uuid4()
    results = race(8, lambda i: pg_store.create_job(new_job(project, user, idempotency_key="same", request_hash="h")))
    assert sum(r is not None for r in results) == 1


def test_discard_queued_removes_only_a_still_queued_job_with_its_message(pg_store: PostgresJobStore) -> None:
    project, user = uuid.uuid4(), uuid.uuid4()
    job = pg_store.create_job(new_job(project, user, idempotency_key="k-discard", request_hash="h"))
    assert job is not None
    assert pg_store.discard_queued(job.id)
    assert pg_store.get_job(job.id) is None
    assert pg_store.messages(job.thread_id) == []
    assert not pg_store.discard_queued(job.id), "a second discard finds nothing"
    assert pg_store.find_by_idempotency_key(user, "k-discard") is None
    assert pg_store.create_job(new_job(project, user, idempotency_key="k-discard", request_hash="h")) is not None
    claimed = pg_store.create_job(new_job(project, user))
    assert claimed is not None
    assert pg_store.claim_for_generation(claimed.id, now()) is not None
    assert not pg_store.discard_queued(claimed.id), "a job a task claimed is not discarded"
    assert pg_store.get_job(claimed.id) is not None


def test_cancel_race_has_exactly_one_winner(pg_store: PostgresJobStore) -> None:
    job = pg_store.create_job(new_job(uuid.uuid4(), uuid.uuid4()))
    assert job is not None
    results = race(12, lambda i: pg_store.cancel(job.id))
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    assert winners[0].status is JobStatus.canceled
    assert winners[0].finished_at is not None
    roles = [m.role.value for m, _ in pg_store.messages(job.thread_id)]
    assert roles == ["user", "assistant"]


def test_complete_cancel_expire_race_one_terminal_state(pg_store: PostgresJobStore) -> None:
    for _ in range(5):
        job = pg_store.create_job(new_job(uuid.uuid4(), uuid.uuid4(), deadline_at=now() + timedelta(seconds=30)))
        assert job is not None
        claimed = pg_store.claim_for_generation(job.id, now())
        assert claimed is not None
        assert claimed.attempt == 1

        def step(i: int, job: Any = job) -> Any:
            if i % 3 == 0:
                return pg_store.complete(job.id, 1, uploads(job.id, 1), None, now=now())
            if i % 3 == 1:
                return pg_store.cancel(job.id)
            return pg_store.fail(job.id, code="timeout", message="t", from_statuses=list(ACTIVE))

        results = race(9, step)
        winners = [r for r in results if r is not None]
        assert len(winners) == 1
        final = pg_store.get_job(job.id)
        assert final is not None
        assert final.status is winners[0].status
        assert final.terminal
        assert len(final.variants) == (2 if final.status is JobStatus.succeeded else 0)
        assistant = [m for m, _ in pg_store.messages(job.thread_id) if m.role.value == "assistant"]
        assert len(assistant) == 1


def test_terminal_states_never_change(pg_store: PostgresJobStore) -> None:
    job = pg_store.create_job(new_job(uuid.uuid4(), uuid.uuid4()))
    assert job is not None
    assert pg_store.claim_for_generation(job.id, now()) is not None
    assert pg_store.complete(job.id, 1, uploads(job.id, 1), None, now=now()) is not None
    assert pg_store.cancel(job.id) is None
    assert pg_store.fail(job.id, code="timeout", message="x", from_statuses=list(ACTIVE)) is None
    assert pg_store.claim_for_generation(job.id, now()) is None
    assert pg_store.complete(job.id, 1, uploads(job.id, 1), None, now=now()) is None
    final = pg_store.get_job(job.id)
    assert final is not None
    assert final.status is JobStatus.succeeded
    assert len(final.variants) == 2


def test_a_superseded_attempt_cannot_complete(pg_store: PostgresJobStore) -> None:
    job = pg_store.create_job(new_job(uuid.uuid4(), uuid.uuid4()))
    assert job is not None
    first = pg_store.claim_for_generation(job.id, now())
    second = pg_store.claim_for_generation(job.id, now())  # redelivery re-claims
    assert first is not None
    assert second is not None
    assert (first.attempt, second.attempt) == (1, 2)
    assert pg_store.complete(job.id, 1, uploads(job.id, 1), None, now=now()) is None
    done = pg_store.complete(job.id, 2, uploads(job.id, 2), None, now=now())
    assert done is not None
    assert all("/2/" in v.storage_path for v in done.variants)


def test_no_claim_or_completion_after_the_deadline(pg_store: PostgresJobStore) -> None:
    job = pg_store.create_job(new_job(uuid.uuid4(), uuid.uuid4(), deadline_at=now() + timedelta(seconds=5)))
    assert job is not None
    assert pg_store.claim_for_generation(job.id, now()) is not None
    later = now() + timedelta(seconds=6)
    assert pg_store.complete(job.id, 1, uploads(job.id, 1), None, now=later) is None
    assert pg_store.claim_for_generation(job.id, later) is None
    assert (
        pg_store.fail(
            job.id, code="timeout", message="x", from_statuses=list(ACTIVE), now=now(), only_if_past_deadline=True
        )
        is None
    )
    expired = pg_store.fail(
        job.id, code="timeout", message="x", from_statuses=list(ACTIVE), now=later, only_if_past_deadline=True
    )
    assert expired is not None
    assert expired.error_code == "timeout"
    assert pg_store.overdue_jobs(later, 10) == []


def test_overdue_lists_only_active_jobs_past_deadline(pg_store: PostgresJobStore) -> None:
    project, user = uuid.uuid4(), uuid.uuid4()
    late = pg_store.create_job(new_job(project, user, deadline_at=now() - timedelta(seconds=1)))
    pg_store.create_job(new_job(project, user))
    done = pg_store.create_job(new_job(project, user, deadline_at=now() - timedelta(seconds=1)))
    assert late is not None
    assert done is not None
    pg_store.cancel(done.id)
    assert pg_store.overdue_jobs(now(), 10) == [late.id]


def test_list_pagination_is_stable_and_newest_first(pg_store: PostgresJobStore) -> None:
    project, user = uuid.uuid4(), uuid.uuid4()
    ids = []
    for _ in range(7):
        job = pg_store.create_job(new_job(project, user))
        assert job is not None
        ids.append(job.id)
    pg_store.create_job(new_job(uuid.uuid4(), user))  # another project's job never shows
    seen, cursor = [], None
    while True:
        page = pg_store.list_jobs(project, status=None, limit=3, cursor=cursor)
        seen += [j.id for j in page.jobs]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == list(reversed(ids))
    assert [j.id for j in pg_store.list_jobs(project, status=JobStatus.canceled, limit=10, cursor=None).jobs] == []


def test_thread_history_follows_parents(pg_store: PostgresJobStore) -> None:
    project, user = uuid.uuid4(), uuid.uuid4()
    root = pg_store.create_job(new_job(project, user, prompt="turn one"))
    assert root is not None
    child_id = uuid.uuid4()
    child = pg_store.create_job(
        new_job(project, user, id=child_id, thread_id=root.id, parent_job_id=root.id, prompt="turn two")
    )
    assert child is not None
    grandchild = pg_store.create_job(
        new_job(project, user, thread_id=root.id, parent_job_id=child.id, prompt="turn three")
    )
    assert grandchild is not None
    assert [j.prompt for j in pg_store.thread_history(grandchild)] == ["turn one", "turn two"]
    assert pg_store.thread_history(root) == []


def test_refinement_turn_limit_holds_under_races(pg_store: PostgresJobStore) -> None:
    project, user = uuid.uuid4(), uuid.uuid4()
    root = pg_store.create_job(new_job(project, user))
    assert root is not None
    results = race(
        6,
        lambda i: pg_store.create_refinement(
            new_job(project, user, thread_id=root.id, parent_job_id=root.id), max_turns=3
        ),
    )
    created = [r for r in results if r is not None and not isinstance(r, int)]
    refused = [r for r in results if isinstance(r, int)]
    assert len(created) == 2
    assert len(refused) == 4
    assert all(r == 3 for r in refused)


def test_webhook_receipts_deduplicate(pg_store: PostgresJobStore) -> None:
    t = now()
    fresh = {"now": t, "stale_before": t - timedelta(seconds=30)}
    assert pg_store.claim_webhook("msg_1", **fresh) == "claimed"
    assert pg_store.claim_webhook("msg_1", **fresh) == "processing"
    results = race(6, lambda i: pg_store.claim_webhook("msg_2", **fresh))
    assert results.count("claimed") == 1
    assert set(results) <= {"claimed", "processing"}
    # A claim older than the TTL (its delivery died) is taken over; a released one is claimed anew.
    later = {"now": t + timedelta(seconds=31), "stale_before": t + timedelta(seconds=1)}
    assert pg_store.claim_webhook("msg_1", **later) == "claimed"
    assert pg_store.claim_webhook("msg_1", **later) == "processing"
    pg_store.release_webhook("msg_1", claimed_at=t)  # the dead delivery's late release: not its claim anymore
    assert pg_store.claim_webhook("msg_1", **later) == "processing"
    pg_store.release_webhook("msg_1", claimed_at=later["now"])
    assert pg_store.claim_webhook("msg_1", **fresh) == "claimed"
    pg_store.settle_webhook("msg_1")
    pg_store.release_webhook("msg_1", claimed_at=t)  # an applied receipt is never forgotten
    assert pg_store.claim_webhook("msg_1", **later) == "applied"


def test_a_transition_applies_its_receipt_in_the_same_transaction(pg_store: PostgresJobStore) -> None:
    t = now()
    fresh = {"now": t, "stale_before": t - timedelta(seconds=30)}
    job = pg_store.create_job(new_job(uuid.uuid4(), uuid.uuid4()))
    assert job is not None
    claimed = pg_store.claim_for_generation(job.id, t)
    assert claimed is not None
    for webhook_id in ("msg_ok", "msg_lost"):
        assert pg_store.claim_webhook(webhook_id, **fresh) == "claimed"
    assert pg_store.complete(job.id, 1, uploads(job.id, 1), None, now=t, receipt="msg_ok") is not None
    assert pg_store.complete(job.id, 1, uploads(job.id, 1), None, now=t, receipt="msg_lost") is None
    pg_store.release_webhook("msg_ok", claimed_at=t)
    pg_store.release_webhook("msg_lost", claimed_at=t)
    assert pg_store.claim_webhook("msg_ok", **fresh) == "applied"
    assert pg_store.claim_webhook("msg_lost", **fresh) == "claimed", "a lost CAS applied nothing"
    other = pg_store.create_job(new_job(uuid.uuid4(), uuid.uuid4()))
    assert other is not None
    assert pg_store.claim_webhook("msg_fail", **fresh) == "claimed"
    failed = pg_store.fail(other.id, code="generation_failed", message="x", from_statuses=ACTIVE, receipt="msg_fail")
    assert failed is not None
    assert pg_store.claim_webhook("msg_fail", **fresh) == "applied"


def test_changes_are_notified(pg_store: PostgresJobStore) -> None:
    job = pg_store.create_job(new_job(uuid.uuid4(), uuid.uuid4()))
    assert job is not None
    seen: list[float] = []

    beats: list[bool] = []

    def listen() -> None:
        events = pg_store.wait_for_change(job.id, 5, heartbeat_s=0.1)
        assert next(events) is True, "the first yield says: listening, re-read now"
        for changed in events:
            if not changed:
                beats.append(changed)
                continue
            seen.append(1)
            return

    listener = threading.Thread(target=listen)
    listener.start()
    import time

    time.sleep(0.3)
    pg_store.create_job(new_job(uuid.uuid4(), uuid.uuid4()))  # another job's change is not ours
    pg_store.cancel(job.id)
    listener.join(6)
    assert seen == [1]
    assert beats, "silence produces heartbeats"


def test_a_change_before_listen_is_not_lost(pg_store: PostgresJobStore) -> None:
    """A reader that read the job, then subscribes, must see a change made in between (the SSE race)."""
    job = pg_store.create_job(new_job(uuid.uuid4(), uuid.uuid4()))
    assert job is not None
    events = pg_store.wait_for_change(job.id, 2, heartbeat_s=0.1)
    pg_store.cancel(job.id)  # lands after the caller's read, before LISTEN (the generator has not run)
    assert next(events) is True
    latest = pg_store.get_job(job.id)
    assert latest is not None
    assert latest.status == "canceled"


def test_access_function_and_row_level_security(pg_store: PostgresJobStore, embedded_pg: EmbeddedPostgres) -> None:
    project, member, stranger = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    pg_store.add_member(project, member)
    assert pg_store.can_access(project, member)
    assert not pg_store.can_access(project, stranger)
    job = pg_store.create_job(new_job(project, member))
    assert job is not None
    assert pg_store.get_job(job.id, user_id=stranger) is None
    assert pg_store.get_job(job.id, user_id=member) is not None
    with psycopg.connect(embedded_pg.uri) as conn:
        for user, expected in ((member, 1), (stranger, 0)):
            with conn.transaction():
                conn.execute("set local role authenticated")
                conn.execute("select set_config('request.jwt.claim.sub', %s, true)", (str(user),))
                jobs = conn.execute("select count(*) from pip_ai_image_jobs").fetchone()
                messages = conn.execute("select count(*) from pip_ai_image_messages").fetchone()
                assert jobs is not None
                assert messages is not None
                assert (jobs[0], messages[0]) == (expected, expected)
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute("update pip_ai_image_jobs set status = 'canceled'")


def test_schema_rejects_bad_rows(pg_store: PostgresJobStore, embedded_pg: EmbeddedPostgres) -> None:
    job = pg_store.create_job(new_job(uuid.uuid4(), uuid.uuid4()))
    assert job is not None
    with psycopg.connect(embedded_pg.uri, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("update pip_ai_image_jobs set status = 'done' where id = %s", (job.id,))
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("update pip_ai_image_jobs set input_path = 'inputs/../etc/passwd' where id = %s", (job.id,))
        with pytest.raises(psycopg.errors.CheckViolation):  # terminal without finished_at
            conn.execute("update pip_ai_image_jobs set status = 'canceled' where id = %s", (job.id,))


def test_migrations_apply_once(embedded_pg: EmbeddedPostgres) -> None:
    from nano_banana.migrations import apply_migrations, migration_files

    assert apply_migrations(embedded_pg.uri) == []
    with psycopg.connect(embedded_pg.uri) as conn:
        row = conn.execute("select count(*) from nano_banana_schema_migrations").fetchone()
    assert row is not None
    assert row[0] == len(migration_files())


def _listener_backends(embedded_pg: EmbeddedPostgres) -> list[int]:
    with psycopg.connect(embedded_pg.uri, autocommit=True) as conn:
        rows = conn.execute(
            "select pid from pg_stat_activity where application_name = 'nano-banana-listener'"
        ).fetchall()
    return [r[0] for r in rows]


def test_streams_share_one_listening_connection(pg_store: PostgresJobStore, embedded_pg: EmbeddedPostgres) -> None:
    """Ten open streams cost the database one backend, and a change wakes only its own job's stream."""
    jobs = [pg_store.create_job(new_job(uuid.uuid4(), uuid.uuid4())) for _ in range(10)]
    streams = [pg_store.wait_for_change(j.id, 10, heartbeat_s=0.3) for j in jobs if j is not None]
    assert [next(s) for s in streams] == [True] * 10
    assert len(_listener_backends(embedded_pg)) == 1
    assert pg_store.listener.connections == 1
    pg_store.cancel(jobs[3].id)  # type: ignore[union-attr]
    assert next(streams[3]) is True
    assert next(streams[4]) is False, "another job's change does not wake this stream"
    for s in streams:
        s.close()
    assert pg_store.listener.connections == 1


def test_listener_reconnects_and_wakes_streams(pg_store: PostgresJobStore, embedded_pg: EmbeddedPostgres) -> None:
    """The shared connection dies: every stream is woken to re-read, and later changes still arrive."""
    job = pg_store.create_job(new_job(uuid.uuid4(), uuid.uuid4()))
    assert job is not None
    events = pg_store.wait_for_change(job.id, 20, heartbeat_s=0.5)
    assert next(events) is True
    [pid] = _listener_backends(embedded_pg)
    with psycopg.connect(embedded_pg.uri, autocommit=True) as conn:
        conn.execute("select pg_terminate_backend(%s)", (pid,))
    woke = [next(events) for _ in range(12)]  # up to ~6 s of heartbeats
    assert True in woke, "the reconnect rings every stream"
    assert pg_store.listener.connections == 2
    assert len(_listener_backends(embedded_pg)) == 1
    pg_store.cancel(job.id)
    assert True in [next(events) for _ in range(4)]
    events.close()


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (
            "postgresql://postgres.ref:pw@aws-0-eu-west-1.pooler.supabase.com:6543/postgres",
            "postgresql://postgres.ref:pw@aws-0-eu-west-1.pooler.supabase.com:5432/postgres",
        ),
        (
            "postgres://postgres.ref:pw@aws-0-eu-west-1.pooler.supabase.com:5432/postgres?sslmode=require",
            "postgres://postgres.ref:pw@aws-0-eu-west-1.pooler.supabase.com:5432/postgres?sslmode=require",
        ),
        ("postgresql://u:p@db.example.com:6543/app", "postgresql://u:p@db.example.com:6543/app"),
        ("host=/tmp port=6543 dbname=postgres", "host=/tmp port=6543 dbname=postgres"),
    ],
)
def test_event_streams_listen_through_a_session_capable_url(given: str, expected: str) -> None:
    from nano_banana.adapters.pg_notify import session_conninfo

    assert session_conninfo(given) == expected


def test_references_are_stored_read_back_kept_and_a_deleted_variant_refused(pg_store: PostgresJobStore) -> None:
    project, user = uuid.uuid4(), uuid.uuid4()
    source = pg_store.create_job(new_job(project, user))
    assert source is not None
    assert pg_store.claim_for_generation(source.id, now()) is not None
    done = pg_store.complete(source.id, 1, uploads(source.id, 1), None, now=now())
    assert done is not None
    variant = done.variants[0].storage_path
    job_id = uuid.uuid4()
    own = Reference(reference_path(job_id, 0, "image/png"), "image/png", 20, 10, 99)
    named = Reference(variant, "image/png", 64, 48, 100)
    job = pg_store.create_job(new_job(project, user, id=job_id, resolution="2K", references=(own, named)))
    assert job is not None
    assert (job.resolution, job.references) == ("2K", (own, named))
    got = pg_store.get_job(job_id)
    assert got is not None
    assert got.references == (own, named)
    # A blob a job names as a reference is kept by every deletion path (the gate reads referenced_paths).
    assert pg_store.referenced_paths([variant, own.path, "jobs/x/1/0.png"], excluding=[source.id]) == {
        variant,
        own.path,
    }
    # A variant that no longer exists (deleted while the job was being created) refuses the insert.
    gone = Reference(f"jobs/{uuid.uuid4()}/1/0.png", "image/png", 64, 48, 100)
    refused = new_job(project, user, references=(gone,))
    with pytest.raises(NotFound) as info:
        pg_store.create_job(refused)
    assert info.value.details == {"field": "referencePaths"}
    assert pg_store.get_job(refused.id) is None
