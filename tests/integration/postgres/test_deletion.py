"""Deleting jobs, retention, orphan cleanup and erasure: the use cases on real Postgres (embedded)."""

from __future__ import annotations

import dataclasses
import io
import threading
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from PIL import Image

from nano_banana import usecases
from nano_banana.adapters.generator_preview import PreviewGenerator
from nano_banana.adapters.limits_memory import MemoryLimits
from nano_banana.adapters.postgres import PostgresJobStore
from nano_banana.domain import Job, VariantUpload, job_prefix, output_path
from nano_banana.embedded_pg import EmbeddedPostgres
from nano_banana.errors import Forbidden, NotFound, Unavailable
from nano_banana.images import inspect_image
from nano_banana.settings import Settings
from nano_banana.usecases import idempotency
from tests.contract.test_limits import FakeClock
from tests.support.memory_blobs import MemoryBlobStore
from tests.support.new_jobs import new_job
from tests.support.recording_queue import RecordingQueue

pytestmark = pytest.mark.postgres


@pytest.fixture(autouse=True)
def _clean_lifecycle_tables(embedded_pg: EmbeddedPostgres) -> None:
    with psycopg.connect(embedded_pg.uri, autocommit=True) as conn:
        conn.execute("truncate pip_ai_blob_purges, pip_ai_sweep_cursors")


def services(store: PostgresJobStore, clock: FakeClock | None = None, **settings: Any) -> usecases.Services:
    clock = clock or FakeClock(datetime.now(UTC))
    generator = PreviewGenerator(0, 10**7)
    return usecases.Services(
        settings=Settings(**settings),
        store=store,
        limits=MemoryLimits(1000, 100, clock),
        queue=RecordingQueue(),
        blobs=MemoryBlobStore(),
        generator_factory=lambda: generator,
        processor_factory=None,
        clock=clock,
    )


def blobs(svc: usecases.Services) -> MemoryBlobStore:
    assert isinstance(svc.blobs, MemoryBlobStore)
    return svc.blobs


def member(svc: usecases.Services, project: uuid.UUID | None = None) -> tuple[uuid.UUID, uuid.UUID]:
    user, project = uuid.uuid4(), project or uuid.uuid4()
    svc.store.add_member(project, user)
    return user, project


def png() -> usecases.ImageUpload:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (10, 20, 30)).save(buf, "PNG")
    data = buf.getvalue()
    return usecases.ImageUpload(data, inspect_image(data, max_bytes=10**6, max_pixels=10**6))


def queued(svc: usecases.Services, user: uuid.UUID, project: uuid.UUID) -> Job:
    return usecases.create_job(svc, user, usecases.CreateJob(project, "edit", 2, None, upload=png())).job


def succeeded(svc: usecases.Services, user: uuid.UUID, project: uuid.UUID) -> Job:
    done = usecases.run_generation(svc, queued(svc, user, project).id)
    assert done is not None
    assert done.status.value == "succeeded"
    return done


def refined(svc: usecases.Services, user: uuid.UUID, parent: Job, variant: int = 0) -> Job:
    created = usecases.refine(svc, user, usecases.Refine(parent.id, parent.variants[variant].id, "more"))
    done = usecases.run_generation(svc, created.job.id)
    assert done is not None
    return done


def paths_of(job: Job) -> set[str]:
    return {job.input_path, *(v.storage_path for v in job.variants)}


def count(embedded_pg: EmbeddedPostgres, table: str, job_ids: list[uuid.UUID]) -> int:
    column = "id" if table == "pip_ai_image_jobs" else "job_id"
    with psycopg.connect(embedded_pg.uri) as conn:
        row = conn.execute(f"select count(*) from {table} where {column} = any(%s)", (job_ids,)).fetchone()  # type: ignore[arg-type]
    assert row is not None
    return int(row[0])


def test_delete_a_succeeded_job_removes_rows_and_every_blob(
    pg_store: PostgresJobStore, embedded_pg: EmbeddedPostgres
) -> None:
    svc = services(pg_store)
    user, project = member(svc)
    job = succeeded(svc, user, project)
    other_user, _ = member(svc, project)
    other = succeeded(svc, other_user, project)
    # An earlier crashed attempt's output: "outputs of every attempt" go too.
    blobs(svc).put(output_path(job.id, 0, 0, "image/png"), b"stale", "image/png")
    before = set(blobs(svc).objects)

    deletion = usecases.delete_job(svc, user, job.id)

    assert deletion.job_ids == [job.id]
    assert set(deletion.blobs) == paths_of(job) | {output_path(job.id, 0, 0, "image/png")}
    assert set(blobs(svc).objects) == before - set(deletion.blobs)
    for table in ("pip_ai_image_jobs", "pip_ai_image_variants", "pip_ai_image_messages"):
        assert count(embedded_pg, table, [job.id]) == 0, table
    assert pg_store.due_purges(svc.clock(), 10) == [], "the purge finished"
    # A worker of the job might still be alive: its prefix is looked at once more after the deadline.
    assert pg_store.due_purges(svc.clock() + timedelta(days=1), 10) == [job_prefix(job.id)]
    assert pg_store.get_job(other.id) == other, "another user's job is untouched"
    assert paths_of(other) <= set(blobs(svc).objects)
    assert usecases.visible_paths(svc, user, sorted(paths_of(job))) == set(), "signed-urls: notFound"
    with pytest.raises(NotFound):
        usecases.delete_job(svc, user, job.id)


def test_only_the_creator_may_delete(pg_store: PostgresJobStore) -> None:
    svc = services(pg_store)
    user, project = member(svc)
    colleague, _ = member(svc, project)
    job = succeeded(svc, user, project)
    with pytest.raises(Forbidden):
        usecases.delete_job(svc, colleague, job.id)
    with pytest.raises(NotFound):
        usecases.delete_job(svc, uuid.uuid4(), job.id)
    assert pg_store.get_job(job.id) is not None
    assert paths_of(job) <= set(blobs(svc).objects)


def test_a_deleted_jobs_idempotency_key_can_be_used_again_at_once(
    pg_store: PostgresJobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key's claim lives as long as the job's lease; deleting the job frees it, so the same key
    creates a new job instead of waiting for a row that will never appear (KEY_WAIT_S, then 503)."""
    monkeypatch.setattr(idempotency, "KEY_WAIT_S", 0.5)  # were the claim still held: 503 after 0.5 s
    svc = services(pg_store)
    user, project = member(svc)
    command = usecases.CreateJob(project, "edit", 2, None, upload=png(), idempotency_key="key-reused")
    first = usecases.create_job(svc, user, command).job
    usecases.delete_job(svc, user, first.id)
    again = usecases.create_job(svc, user, command)
    assert not again.replayed
    assert again.job.id != first.id
    assert usecases.create_job(svc, user, command).job.id == again.job.id, "and that key now names the new job"


def test_deleting_the_middle_of_a_three_turn_thread_keeps_the_root(pg_store: PostgresJobStore) -> None:
    svc = services(pg_store)
    user, project = member(svc)
    colleague, _ = member(svc, project)
    first = succeeded(svc, user, project)
    second = refined(svc, user, first, variant=1)
    third = refined(svc, colleague, second)  # another member's refinement goes with its parent
    sibling = refined(svc, user, first)

    deletion = usecases.delete_job(svc, user, second.id)

    assert sorted(deletion.job_ids) == sorted([second.id, third.id])
    assert pg_store.get_job(second.id) is None
    assert pg_store.get_job(third.id) is None
    assert pg_store.get_job(first.id) == first
    # The root keeps every image, including the variant the deleted refinement was made from.
    assert second.input_path == first.variants[1].storage_path
    assert paths_of(first) | paths_of(sibling) <= set(blobs(svc).objects)
    assert not blobs(svc).list(job_prefix(second.id))
    assert not blobs(svc).list(job_prefix(third.id))
    assert [m.job_id for m, _ in pg_store.messages(first.id)] == [first.id, first.id, sibling.id, sibling.id]


def test_deleting_a_running_job_frees_its_slot_and_discards_the_late_result(pg_store: PostgresJobStore) -> None:
    svc = services(pg_store)
    user, project = member(svc)
    job = queued(svc, user, project)
    claimed = pg_store.claim_for_generation(job.id, svc.clock())
    assert claimed is not None
    assert svc.limits.active_jobs(project) == [job.id]

    usecases.delete_job(svc, user, job.id)
    assert svc.limits.active_jobs(project) == [], "the slot is free at once"
    assert not any(t.job_id == job.id for t in svc.queue.pending("expire"))  # type: ignore[attr-defined]

    # The worker was still generating: it uploads, then loses the final transition to a missing row.
    uploads = []
    for i in range(2):
        path = output_path(job.id, claimed.attempt, i, "image/png")
        blobs(svc).put(path, b"late", "image/png")
        uploads.append(VariantUpload(i, path, "image/png", 4, 4, 4))
    assert usecases.complete_job(svc, claimed, claimed.attempt, uploads, None) is None
    assert pg_store.get_job(job.id) is None, "never resurrected"
    assert blobs(svc).list(job_prefix(job.id)) == []
    assert usecases.run_generation(svc, job.id) is None  # a redelivered generate task finds nothing
    assert blobs(svc).objects == {}


def test_a_worker_that_dies_after_uploading_is_cleaned_after_the_deadline(pg_store: PostgresJobStore) -> None:
    clock = FakeClock(datetime.now(UTC))
    svc = services(pg_store, clock)
    user, project = member(svc)
    job = queued(svc, user, project)
    usecases.delete_job(svc, user, job.id)
    blobs(svc).put(output_path(job.id, 1, 0, "image/png"), b"late", "image/png")  # and then it crashed
    usecases.sweep(svc)
    assert blobs(svc).list(job_prefix(job.id)) != [], "not before the job's deadline"
    clock.advance(seconds=svc.settings.timeout_s + 300)
    usecases.sweep(svc)
    assert blobs(svc).objects == {}
    assert pg_store.due_purges(clock() + timedelta(days=1), 10) == []


def test_concurrent_delete_and_completion_leave_nothing(pg_store: PostgresJobStore) -> None:
    svc = services(pg_store)
    user, project = member(svc)
    outcomes: dict[str, int] = {"completed_first": 0, "deleted_first": 0}
    for i in range(12):
        job = queued(svc, user, project)
        claimed = pg_store.claim_for_generation(job.id, svc.clock())
        assert claimed is not None
        uploads = []
        for index in range(2):
            path = output_path(job.id, claimed.attempt, index, "image/png")
            blobs(svc).put(path, b"img", "image/png")
            uploads.append(VariantUpload(index, path, "image/png", 4, 4, 3))
        barrier = threading.Barrier(2)
        results: dict[str, Any] = {}

        def complete(
            claimed: Job = claimed,
            uploads: list[VariantUpload] = uploads,
            r: dict[str, Any] = results,
            barrier: threading.Barrier = barrier,
            pause: float = i * 0.004,
        ) -> None:
            barrier.wait()
            time.sleep(pause)  # spreads the completion across the deletion's steps (read, cancel, delete)
            r["done"] = usecases.complete_job(svc, claimed, claimed.attempt, uploads, None)

        def delete(
            job_id: uuid.UUID = job.id, r: dict[str, Any] = results, barrier: threading.Barrier = barrier
        ) -> None:
            barrier.wait()
            r["deleted"] = usecases.delete_job(svc, user, job_id)

        threads = [threading.Thread(target=complete), threading.Thread(target=delete)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert results["deleted"].job_ids == [job.id]
        outcomes["completed_first" if results["done"] is not None else "deleted_first"] += 1
        assert pg_store.get_job(job.id) is None
        assert blobs(svc).list(job_prefix(job.id)) == []
        assert svc.limits.active_jobs(project) == []
    print(f"\n12 delete/complete races: {outcomes}")
    assert blobs(svc).objects == {}
    assert pg_store.user_jobs(user) == []


def test_two_deletions_of_one_job_at_once_delete_it_once(pg_store: PostgresJobStore) -> None:
    svc = services(pg_store)
    user, project = member(svc)
    for _ in range(5):
        job = succeeded(svc, user, project)
        barrier = threading.Barrier(2)

        def attempt(job_id: uuid.UUID = job.id, barrier: threading.Barrier = barrier) -> object:
            barrier.wait()
            try:
                return usecases.delete_job(svc, user, job_id).job_ids
            except NotFound:
                return "not_found"

        with ThreadPoolExecutor(2) as pool:
            outcomes = list(pool.map(lambda _: attempt(), range(2)))
        assert sorted(map(str, outcomes)) == sorted([str([job.id]), "not_found"]), outcomes
    assert blobs(svc).objects == {}


def test_a_crash_between_the_rows_and_the_blobs_is_finished_by_the_sweep(pg_store: PostgresJobStore) -> None:
    clock = FakeClock(datetime.now(UTC))
    svc = services(pg_store, clock)
    user, project = member(svc)
    job = succeeded(svc, user, project)
    # The transaction commits, then the process dies before deleting blobs.
    pg_store.delete_jobs([job.id], now=svc.clock(), late_uploads_s=60)
    assert paths_of(job) <= set(blobs(svc).objects)
    usecases.sweep(svc)
    assert blobs(svc).objects == {}
    assert pg_store.due_purges(clock(), 10) == []
    assert pg_store.due_purges(clock() + timedelta(seconds=svc.settings.timeout_s + 61), 10) == [job_prefix(job.id)], (
        "the second look at the outputs, once no worker of the job can be alive, stays recorded"
    )


class FlakyBlobs(MemoryBlobStore):
    """Storage that refuses deletions while `down` (an outage in the middle of a deletion)."""

    down = False

    def delete(self, paths: Sequence[str]) -> None:
        if self.down:
            raise Unavailable("storage failed to delete")
        super().delete(paths)


def test_a_storage_outage_during_a_deletion_leaves_the_blobs_to_the_sweep(pg_store: PostgresJobStore) -> None:
    svc = dataclasses.replace(services(pg_store), blobs=FlakyBlobs())
    user, project = member(svc)
    job = succeeded(svc, user, project)
    flaky = blobs(svc)
    assert isinstance(flaky, FlakyBlobs)
    flaky.down = True
    deletion = usecases.delete_job(svc, user, job.id)
    assert (deletion.job_ids, deletion.deferred) == ([job.id], True), "the deletion stands"
    assert pg_store.get_job(job.id) is None
    assert paths_of(job) <= set(flaky.objects)
    usecases.sweep(svc)
    assert paths_of(job) <= set(flaky.objects), "still down: still recorded"
    flaky.down = False
    usecases.sweep(svc)
    assert flaky.objects == {}


def backdate(embedded_pg: EmbeddedPostgres, job_ids: list[uuid.UUID], days: float) -> None:
    with psycopg.connect(embedded_pg.uri, autocommit=True) as conn:
        conn.execute(
            "update pip_ai_image_jobs set created_at = created_at - make_interval(days => %s),"
            " finished_at = finished_at - make_interval(days => %s) where id = any(%s)",
            (days, days, job_ids),
        )


def test_retention_deletes_whole_old_threads_in_bounded_batches(
    pg_store: PostgresJobStore, embedded_pg: EmbeddedPostgres
) -> None:
    clock = FakeClock(datetime.now(UTC))
    svc = services(pg_store, clock, NANO_BANANA_RETENTION_DAYS=30, NANO_BANANA_RETENTION_BATCH=3)
    user, project = member(svc)
    old = [succeeded(svc, user, project) for _ in range(3)]
    old_child = refined(svc, user, old[0])
    for age, job in zip((45, 44, 43), old, strict=True):
        backdate(embedded_pg, [job.id], age)
    backdate(embedded_pg, [old_child.id], 42)
    revived_root = succeeded(svc, user, project)  # an old thread with a recent turn is kept whole
    recent_turn = refined(svc, user, revived_root)
    backdate(embedded_pg, [revived_root.id], 60)
    fresh = succeeded(svc, user, project)
    stuck = queued(svc, user, project)  # not finished: never retained away
    backdate(embedded_pg, [stuck.id], 50)

    assert usecases.apply_retention(services(pg_store, clock)) == 0, "unset: keep everything"
    assert usecases.apply_retention(svc) == 3, "the two oldest threads (3 jobs); a third would pass the batch"
    assert [pg_store.get_job(j.id) for j in (old[0], old_child, old[1])] == [None, None, None]
    assert pg_store.get_job(old[2].id) is not None
    assert usecases.sweep(svc) == 0
    assert pg_store.get_job(old[2].id) is None
    kept = {revived_root.id, recent_turn.id, fresh.id, stuck.id}
    assert set(pg_store.user_jobs(user)) == kept
    assert all(not blobs(svc).list(job_prefix(j.id)) for j in (*old, old_child))
    clock.advance(days=31)  # now everything finished is old; the queued job still is not finished
    assert usecases.apply_retention(svc) == 3
    assert pg_store.user_jobs(user) == [stuck.id]


def test_a_thread_longer_than_the_batch_still_goes_whole(
    pg_store: PostgresJobStore, embedded_pg: EmbeddedPostgres
) -> None:
    svc = services(pg_store, NANO_BANANA_RETENTION_DAYS=1, NANO_BANANA_RETENTION_BATCH=1)
    user, project = member(svc)
    root = succeeded(svc, user, project)
    child = refined(svc, user, root)
    other = succeeded(svc, user, project)
    backdate(embedded_pg, [root.id, child.id, other.id], 5)
    assert usecases.apply_retention(svc) == 2, "never half a thread, and never stuck behind a long one"
    assert usecases.apply_retention(svc) == 1
    assert pg_store.user_jobs(user) == []


def test_orphan_inputs_older_than_the_grace_period_are_deleted(pg_store: PostgresJobStore) -> None:
    clock = FakeClock(datetime.now(UTC))
    svc = services(pg_store, clock, NANO_BANANA_ORPHAN_BATCH=2)
    store = blobs(svc)
    users = [member(svc) for _ in range(3)]
    jobs = [succeeded(svc, u, p) for u, p in users]
    orphans = [f"inputs/{u}/{uuid.uuid4()}.png" for u, _ in users]
    young = f"inputs/{users[0][0]}/{uuid.uuid4()}.png"
    for path in [*orphans, young]:
        store.put(path, b"upload", "image/png")
    for path in [*orphans, *(j.input_path for j in jobs)]:
        store.written[path] -= timedelta(hours=2)

    assert usecases.delete_orphan_inputs(svc) == 2, "two user folders per run"
    assert usecases.delete_orphan_inputs(svc) == 1, "the next run resumes after them"
    assert not any(p in store.objects for p in orphans)
    assert young in store.objects, "within the grace period: a creation may still be under way"
    assert all(j.input_path in store.objects for j in jobs), "referenced inputs stay"

    store.written[young] -= timedelta(hours=2)
    assert usecases.delete_orphan_inputs(svc) == 0, "after a full pass the scan rests for the grace period"
    clock.advance(hours=1)
    assert usecases.delete_orphan_inputs(svc) + usecases.delete_orphan_inputs(svc) == 1, "then a new pass"
    assert young not in store.objects


def test_stray_outputs_of_ended_or_deleted_jobs_are_deleted_and_referenced_ones_never(
    pg_store: PostgresJobStore,
) -> None:
    """Objects under `jobs/{id}/` are derived too (issue 24): past the grace period, what no row references
    in the folder of a job that ended or has no row goes (a late upload, a clean-up that failed); a
    running job's folder is its worker's; a variant stays, also one another job uses after its own job
    was deleted."""
    clock = FakeClock(datetime.now(UTC))
    svc = services(pg_store, clock)
    store = blobs(svc)
    user, project = member(svc)
    done = succeeded(svc, user, project)
    used = succeeded(svc, user, project)
    reuse = usecases.CreateJob(project, "reuse", 1, None, input_path=used.variants[0].storage_path)
    user_of_used = usecases.create_job(svc, user, reuse).job
    usecases.delete_job(svc, user, used.id)  # its variant 0 stays: user_of_used's input
    running = queued(svc, user, project)
    assert pg_store.claim_for_generation(running.id, clock()) is not None
    strays = [f"jobs/{done.id}/1/late.png", f"jobs/{uuid.uuid4()}/1/0.png", f"jobs/{used.id}/9/0.png"]
    in_progress = f"jobs/{running.id}/1/0.png"
    for path in [*strays, in_progress]:
        store.put(path, b"img", "image/png")
    young = f"jobs/{done.id}/2/young.png"
    store.put(young, b"img", "image/png")
    for path in store.objects:
        if path != young:
            store.written[path] -= timedelta(hours=2)

    deleted = usecases.delete_orphan_outputs(svc)
    assert deleted == len(strays)
    assert not any(p in store.objects for p in strays)
    assert {in_progress, young, user_of_used.input_path, *(v.storage_path for v in done.variants)} <= set(store.objects)


def test_an_input_still_used_by_another_job_outlives_a_deletion(pg_store: PostgresJobStore) -> None:
    svc = services(pg_store)
    user, project = member(svc)
    first = succeeded(svc, user, project)
    again = usecases.create_job(svc, user, usecases.CreateJob(project, "again", 1, None, input_path=first.input_path))
    usecases.delete_job(svc, user, first.id)
    assert first.input_path in blobs(svc).objects
    usecases.delete_job(svc, user, again.job.id)
    assert first.input_path not in blobs(svc).objects, "the last job using it took it along"


def test_receipts_are_pruned_by_age(pg_store: PostgresJobStore) -> None:
    clock = FakeClock(datetime.now(UTC))
    svc = services(pg_store, clock)

    def claim() -> str:
        now = clock()
        return pg_store.claim_webhook("msg_1", now=now, stale_before=now - timedelta(seconds=30))

    assert claim() == "claimed"
    pg_store.settle_webhook("msg_1")
    usecases.prune_receipts(svc)
    assert claim() == "applied", "still inside the replay window"
    clock.advance(seconds=2 * svc.settings.callback_tolerance_s + 301)
    usecases.sweep(svc)
    assert claim() == "claimed", "past it: forgotten"


def test_erase_user_takes_their_jobs_derived_jobs_uploads_and_rate_window(pg_store: PostgresJobStore) -> None:
    svc = services(pg_store)
    user, project = member(svc)
    colleague, _ = member(svc, project)
    mine = succeeded(svc, user, project)
    their_refinement = refined(svc, colleague, mine)
    # Another member made a job in a thread of their own from my variant, by path.
    from_my_variant = usecases.create_job(
        svc,
        colleague,
        usecases.CreateJob(project, "reuse", 1, None, input_path=mine.variants[0].storage_path),
    ).job
    theirs = succeeded(svc, colleague, project)
    stray_upload = f"inputs/{user}/{uuid.uuid4()}.png"
    blobs(svc).put(stray_upload, b"upload", "image/png")
    blobs(svc).written[stray_upload] = svc.clock() - timedelta(hours=1)  # a failed creation's, long ago
    expected_jobs = {mine.id, their_refinement.id, from_my_variant.id}
    expected_blobs = paths_of(mine) | paths_of(their_refinement) | {stray_upload}
    snapshot = dict(blobs(svc).objects)

    dry = usecases.erase_user(svc, user, dry_run=True)
    assert (set(dry.job_ids), set(dry.blobs)) == (expected_jobs, expected_blobs)
    assert blobs(svc).objects == snapshot, "a dry run changes nothing"
    assert set(pg_store.user_jobs(user)) == {mine.id}
    assert svc.limits.active_jobs(project) == [from_my_variant.id]

    erased = usecases.erase_user(svc, user)
    assert (set(erased.job_ids), set(erased.blobs)) == (expected_jobs, expected_blobs)
    assert all(pg_store.get_job(j) is None for j in expected_jobs)
    assert svc.limits.active_jobs(project) == [], "the active derived job was canceled, its slot freed"
    assert not any(p.startswith(f"inputs/{user}/") for p in blobs(svc).objects)
    assert pg_store.get_job(theirs.id) == theirs
    assert paths_of(theirs) <= set(blobs(svc).objects)
    # The rate window is gone: the user may create rate_per_hour jobs again.
    assert isinstance(svc.limits, MemoryLimits)
    assert str(user) not in str(svc.limits._admits)

    again = usecases.erase_user(svc, user)
    assert (again.job_ids, again.blobs) == ([], [])


def test_erasure_leaves_a_fresh_upload_to_its_second_pass(pg_store: PostgresJobStore) -> None:
    """An upload younger than CREATION_GRACE may be a creation's in flight, whose row the gate cannot see
    yet (simulation seed 9174: erase-user racing the user's own creation left its job without its input).
    The first pass keeps it; the recorded second pass deletes it unless a job was inserted with it."""
    clock = FakeClock(datetime.now(UTC))
    svc = services(pg_store, clock)
    user, project = member(svc)
    in_flight = f"inputs/{user}/{uuid.uuid4()}.png"
    abandoned = f"inputs/{user}/{uuid.uuid4()}.png"
    for path in (in_flight, abandoned):
        blobs(svc).put(path, b"upload", "image/png")
        blobs(svc).written[path] = clock()
    erased = usecases.erase_user(svc, user)
    assert erased.blobs == []
    assert {in_flight, abandoned} <= set(blobs(svc).objects), "too young the first time"
    # The multipart creation that uploaded `in_flight` inserts its job after the erasure's first pass.
    job = pg_store.create_job(new_job(project, user, input_path=in_flight))
    assert job is not None
    clock.advance(seconds=(usecases.LEASE_GRACE + usecases.LATE_UPLOAD_GRACE).total_seconds() + 1)
    assert usecases.finish_purges(svc) == 1
    assert abandoned not in blobs(svc).objects, "the second pass deleted what no job took"
    assert in_flight in blobs(svc).objects, "the gate kept the job's input"
    assert pg_store.get_job(job.id) is not None


def test_retention_keeps_a_thread_a_refinement_joined_after_it_was_read(
    pg_store: PostgresJobStore, embedded_pg: EmbeddedPostgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 24 finding 2 (lost job). Interleaving: retention reads the old thread as expired
    (`expired_threads`), a refinement is created in it (202 answered), then retention's delete runs.
    Before: the delete canceled the new refinement and deleted it with its thread. Now the locked delete
    re-checks the cutoff and keeps the thread."""
    svc = services(pg_store, NANO_BANANA_RETENTION_DAYS=30)
    user, project = member(svc)
    root = succeeded(svc, user, project)
    backdate(embedded_pg, [root.id], 45)
    read_expired = pg_store.expired_threads
    joined: list[Job] = []

    def expired_then_refined(before: datetime, limit: int) -> list[uuid.UUID]:
        roots = read_expired(before, limit)
        assert roots == [root.id]
        refinement = usecases.refine(svc, user, usecases.Refine(root.id, root.variants[0].id, "one more"))
        joined.append(refinement.job)
        return roots

    monkeypatch.setattr(pg_store, "expired_threads", expired_then_refined)
    assert usecases.apply_retention(svc) == 0
    (refinement,) = joined
    kept = pg_store.get_job(refinement.id)
    assert kept is not None, "the answered refinement was deleted"
    assert kept.status.value == "queued"
    assert pg_store.get_job(root.id) is not None
    assert paths_of(root) <= set(blobs(svc).objects)


def test_erasure_locks_every_thread_it_reaches_so_a_racing_refinement_goes_too(
    pg_store: PostgresJobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 24 suspicion (proven): erase-user locked only the threads of the user's own jobs. A colleague
    refines, in their own thread, a job made from the user's variant; its insert is in flight while the
    erasure deletes. Before: the refinement survived with parent_job_id null (its parent deleted under
    it). Now the erasure locks every thread its subtree reaches and reads the subtree again."""
    svc = services(pg_store)
    user, project = member(svc)
    colleague, _ = member(svc, project)
    mine = succeeded(svc, user, project)
    made = usecases.create_job(
        svc, colleague, usecases.CreateJob(project, "reuse", 1, None, input_path=mine.variants[0].storage_path)
    ).job
    derived = usecases.run_generation(svc, made.id)
    assert derived is not None
    inserted, go = threading.Event(), threading.Event()
    run = pg_store._run

    def pausing_run(conn: Any, name: str, params: dict[str, Any]) -> Any:
        rows = run(conn, name, params)
        if name == "create_job" and params.get("parent_job_id") == derived.id:
            inserted.set()
            go.wait(10)  # the refinement's transaction stays open, its thread lock held
        return rows

    monkeypatch.setattr(pg_store, "_run", pausing_run)
    with ThreadPoolExecutor(2) as pool:
        refining = pool.submit(
            usecases.refine, svc, colleague, usecases.Refine(derived.id, derived.variants[0].id, "again")
        )
        assert inserted.wait(10)
        erasing = pool.submit(usecases.erase_user, svc, user)
        time.sleep(0.5)  # the erasure reaches its delete while the refinement is uncommitted
        go.set()
        refinement = refining.result(30).job
        erased = erasing.result(30)
    assert {mine.id, derived.id, refinement.id} <= set(erased.job_ids)
    assert pg_store.get_job(refinement.id) is None, "the racing refinement survived its erased parent"
