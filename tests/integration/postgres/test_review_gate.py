"""Adversarial review of issue 24's fixes: where blob deletion's gate meets a creation in flight. Each test
fails on main as of 145028f (see the docstrings for the interleaving)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest

from nano_banana import usecases
from nano_banana.adapters.postgres import PostgresJobStore, queries
from nano_banana.errors import NotFound
from nano_banana.settings import Settings
from nano_banana.usecases.deleting import apply_retention
from tests.integration.postgres.test_creation import Stack, make_stack
from tests.support.new_jobs import new_job

pytestmark = pytest.mark.postgres


@pytest.fixture
def stack(pg_store: PostgresJobStore) -> Iterator[Stack]:
    made = make_stack(pg_store)
    yield made
    made.limits.release.set()
    made.blobs.release_puts.set()


def test_an_upload_input_path_purged_between_validation_and_insert_leaves_no_job_without_its_input(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Job A was created from an upload (inputs/{user}/x.png). A new job B names that upload as its
    inputPath (allowed: the caller's own upload). B reads the input (validation passes), then A is deleted
    before B's insert: the deletion's purge asks the gate, no committed row references the upload yet, the
    blob is deleted. B's insert then goes ahead (the FOR KEY SHARE source check covers only `jobs/` paths)
    and B is answered 202 with an input that no longer exists: it can only fail input_unavailable. The
    variant case of the same race is refused 404 (test_an_input_path_whose_variant_is_deleted_before_the_
    insert_is_refused); an upload path must be too, or its blob kept."""
    first = stack.create().job
    upload = first.input_path
    assert upload.startswith(f"inputs/{stack.user}/")
    real_insert = stack.store.create_job

    def deleted_first(new: Any) -> Any:
        if new.id != first.id and new.input_path == upload:
            usecases.delete_job(stack.svc, stack.user, first.id)
        return real_insert(new)

    monkeypatch.setattr(stack.store, "create_job", deleted_first)
    try:
        made = stack.create_from(upload)
    except NotFound:
        assert stack.store.user_jobs(stack.user) == [], "refused: nothing kept"
        return
    assert stack.store.get_job(made.job.id) is not None
    assert upload in stack.blobs.objects, "a job answered 202 references its input, so the input must exist"


def test_erasure_racing_a_job_made_from_the_users_variant_leaves_neither_the_job_nor_the_image(
    stack: Stack, embedded_pg: Any
) -> None:
    """erase-user deletes "jobs made from their variants, whoever made them". Another member V's job B,
    made from user U's variant by inputPath, is being inserted (its statement holds the variant row FOR KEY
    SHARE, not committed yet) when `erase-user U` runs its delete. The delete statement's subtree was read
    in a snapshot without B; its cascade to the variant waits for B's lock, then goes ahead once B commits.
    Observed: B survives, still naming U's variant as its input, and the gate keeps U's image in Storage
    for good (B references it). Neither serial order allows that: B first -> erased with U; erasure first ->
    B's insert is refused (the variant row is gone)."""
    parent, _ = stack.succeeded_job()
    job = stack.store.get_job(parent)
    assert job is not None
    path = job.variants[0].storage_path
    other = uuid.uuid4()
    stack.store.add_member(stack.project, other)
    made_from_it = new_job(stack.project, other, input_path=path)
    with psycopg.connect(embedded_pg.uri) as conn, ThreadPoolExecutor(1) as pool:
        conn.execute(queries()["create_job"], stack.store._new_job_params(made_from_it))  # uncommitted
        erasure = pool.submit(usecases.erase_user, stack.svc, stack.user)
        time.sleep(0.5)
        assert not erasure.done(), "the erasure's delete waits for B's lock on the variant row"
        conn.commit()
        erased = erasure.result(timeout=10)
    assert parent in erased.job_ids
    survivor = stack.store.get_job(made_from_it.id)
    assert survivor is None, f"a job made from the erased user's variant survived, its input {path}"
    assert path not in stack.blobs.objects, "the erased user's image is still in Storage"


def test_retention_racing_a_job_made_from_an_expired_threads_upload_keeps_that_jobs_input(
    stack: Stack, embedded_pg: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The retention side of the first test (simulation seeds 7031, 7095, 7158 at --fault-rate 0.12: an
    input "deleted by ... sweep"). Job A finished two days ago (retention: one day); a new job B names A's
    upload as its inputPath and has read it when the sweep's retention deletes A's thread and purges the
    upload (no committed row references it yet); B is then inserted and answered 202 with its input gone."""
    first = stack.create().job
    upload = first.input_path
    with psycopg.connect(embedded_pg.uri, autocommit=True) as conn:
        conn.execute(
            "update pip_ai_image_jobs set status = 'failed', error_code = 'generation_failed',"
            " created_at = now() - interval '2 days', finished_at = now() - interval '2 days' where id = %s",
            (first.id,),
        )
    stack.svc.settings = Settings(NANO_BANANA_RETENTION_DAYS=1)
    real_insert = stack.store.create_job
    retained: list[int] = []

    def sweep_first(new: Any) -> Any:
        if new.input_path == upload and new.id != first.id:
            retained.append(apply_retention(stack.svc))
        return real_insert(new)

    monkeypatch.setattr(stack.store, "create_job", sweep_first)
    try:
        made = stack.create_from(upload)
    except NotFound:
        assert stack.store.user_jobs(stack.user) == [], "refused: nothing kept"
        return
    assert retained == [1], "retention deleted A's thread meanwhile"
    assert stack.store.get_job(made.job.id) is not None
    assert upload in stack.blobs.objects, "a job answered 202 references its input, so the input must exist"


def test_a_reference_path_naming_an_upload_purged_before_the_insert_is_refused(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The referencePaths side of the first test: B names A's upload as a reference image (its input is
    another job's upload that stays); A is deleted between B's validation and insert. B is refused 404 on
    referencePaths, nothing of it kept, the kept job's input untouched."""
    first = stack.create().job
    kept = stack.create().job
    upload = first.input_path
    real_insert = stack.store.create_job

    def deleted_first(new: Any) -> Any:
        if new.id not in (first.id, kept.id):
            usecases.delete_job(stack.svc, stack.user, first.id)
        return real_insert(new)

    monkeypatch.setattr(stack.store, "create_job", deleted_first)
    command = usecases.CreateJob(stack.project, "again", 1, None, input_path=kept.input_path, reference_paths=(upload,))
    with pytest.raises(NotFound) as refused:
        usecases.create_job(stack.svc, stack.user, command)
    assert refused.value.details["field"] == "referencePaths"
    assert stack.store.user_jobs(stack.user) == [kept.id], "refused: nothing kept"
    assert kept.input_path in stack.blobs.objects


def test_an_upload_held_by_a_creation_in_flight_makes_its_deletion_wait_and_keep_it(
    stack: Stack, embedded_pg: Any
) -> None:
    """B names A's upload as inputPath; its insert holds A's row FOR KEY SHARE (not committed) when A is
    deleted: the deletion waits for B, and its purge then sees B's reference and keeps the upload."""
    first = stack.create().job
    upload = first.input_path
    borrower = new_job(stack.project, stack.user, input_path=upload, input_borrowed=True)
    with psycopg.connect(embedded_pg.uri) as conn, ThreadPoolExecutor(1) as pool:
        rows = conn.execute(queries()["create_job"], stack.store._new_job_params(borrower)).fetchall()
        assert [r[0] for r in rows] == [borrower.id], "inserted (not committed yet)"
        deletion = pool.submit(usecases.delete_job, stack.svc, stack.user, first.id)
        time.sleep(0.5)
        assert not deletion.done(), "the deletion of the row B holds waits for B"
        conn.commit()
        deletion.result(timeout=10)
    assert stack.store.get_job(first.id) is None
    assert stack.store.get_job(borrower.id) is not None
    assert upload in stack.blobs.objects, "B references the upload: the purge keeps it"


def test_erasure_racing_a_job_made_from_the_users_own_upload_leaves_neither(stack: Stack, embedded_pg: Any) -> None:
    """erase-user while the user's job B, made from their upload by inputPath, is being inserted (holding
    the upload's job row FOR KEY SHARE): the erasure waits, then finds B (same upload) and deletes it too;
    the upload goes."""
    first = stack.create().job
    upload = first.input_path
    borrower = new_job(stack.project, stack.user, input_path=upload, input_borrowed=True)
    with psycopg.connect(embedded_pg.uri) as conn, ThreadPoolExecutor(1) as pool:
        conn.execute(queries()["create_job"], stack.store._new_job_params(borrower))  # uncommitted
        erasure = pool.submit(usecases.erase_user, stack.svc, stack.user)
        time.sleep(0.5)
        assert not erasure.done(), "the erasure waits for B's lock on A's row"
        conn.commit()
        erased = erasure.result(timeout=10)
    assert set(erased.job_ids) == {first.id, borrower.id}
    assert stack.store.user_jobs(stack.user) == []
    assert upload not in stack.blobs.objects
