"""Adversarial review of de2f8b8/7cc5362 (the creation's FOR KEY SHARE holds against a deletion's FOR UPDATE
locks). Each test fails on main as of f217d1a (see the docstrings for the interleaving)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from nano_banana import usecases
from nano_banana.adapters.postgres import PostgresJobStore, queries
from nano_banana.domain import Reference, VariantUpload
from nano_banana.errors import InvalidRequest, NotFound
from nano_banana.images import inspect_image
from nano_banana.usecases.deleting import finish_purges
from tests.integration.postgres.test_creation import Stack, _png, make_stack
from tests.support.new_jobs import new_job

pytestmark = pytest.mark.postgres


@pytest.fixture
def stacks(pg_store: PostgresJobStore) -> Iterator[list[Stack]]:
    made: list[Stack] = []
    yield made
    for s in made:
        s.limits.release.set()
        s.blobs.release_puts.set()


def _variant(stack: Stack) -> tuple[uuid.UUID, uuid.UUID, str]:
    job_id, variant_id = stack.succeeded_job()
    job = stack.store.get_job(job_id)
    assert job is not None
    return job_id, variant_id, job.variants[0].storage_path


def test_a_creation_naming_two_variants_and_the_erasure_of_both_do_not_deadlock(
    pg_store: PostgresJobStore, stacks: list[Stack], embedded_pg: Any
) -> None:
    """User U has two finished jobs X and Y (variants Vx, Vy). A creation C names Vx as its inputPath and
    [Vw, Vy] as referencePaths (Vw: another user's job W, whose row a concurrent deletion of W holds FOR
    UPDATE for a moment). C's create_job locks Vx (source CTE) FOR KEY SHARE, then waits on Vw. Meanwhile
    `erase-user U` runs lock_jobs: X, Y FOR UPDATE, then the variants ordered by id: Vy (free), then Vx
    (held by C): it waits. W's deletion ends; C goes on to Vy, held by the erasure: a lock cycle, and
    Postgres aborts one of the two with DeadlockDetected (a 503 `Unavailable`). Expected: one waits for the
    other (the creation lands first and is erased, or is refused 404), neither fails. Fix: take the
    creation's variant/job locks in the same global order as lock_jobs (one locking select over all named
    variants ordered by id), or lock_jobs' variants in the creation's order."""
    other = make_stack(pg_store)
    stacks.append(other)
    _, w_variant, w_path = _variant(other)  # W, physically first
    for _ in range(40):
        stack = make_stack(pg_store)
        stacks.append(stack)
        a, b = _variant(stack), _variant(stack)
        y, x = sorted([a, b], key=lambda t: t[1])  # the erasure locks Vy before Vx
        if w_path < y[2]:  # C's refs scan meets Vw before Vy (by path, and by insertion order)
            break
    else:
        pytest.fail("no setup with the needed order")
    ref = lambda path: Reference(path, "image/png", 8, 8, 10)  # noqa: E731
    made = new_job(stack.project, stack.user, input_path=x[2], input_borrowed=True, references=(ref(w_path), ref(y[2])))
    with (
        psycopg.connect(embedded_pg.uri) as holder,
        psycopg.connect(embedded_pg.uri) as creator,
        ThreadPoolExecutor(2) as pool,
    ):
        holder.execute("select id from pip_ai_image_variants where id = %s for update", (w_variant,))
        creation = pool.submit(
            lambda: creator.execute(queries()["create_job"], stack.store._new_job_params(made)).fetchall()
        )
        time.sleep(0.4)
        assert not creation.done(), "C holds Vx and waits for Vw"
        erasure = pool.submit(usecases.erase_user, stack.svc, stack.user)
        time.sleep(0.4)
        assert not erasure.done(), "the erasure holds Vy and waits for Vx"
        holder.rollback()  # W's deletion gave up
        failures: list[str] = []
        try:
            creation.result(timeout=15)
            creator.commit()
        except Exception as exc:
            failures.append(f"creation: {type(exc).__name__} from {type(exc.__cause__).__name__}")
            creator.rollback()
        try:
            erased = erasure.result(timeout=15)
        except Exception as exc:
            failures.append(f"erasure: {type(exc).__name__} from {type(exc.__cause__).__name__}")
            erased = None
    assert failures == [], "a creation racing an erasure must wait or be refused, never deadlock"
    assert erased is not None
    assert {x[0], y[0]} <= set(erased.job_ids)
    assert stack.store.get_job(made.id) is None, "C is either refused or erased with the variants it names"


def test_erasure_leaves_no_image_of_the_user_that_another_members_job_names_as_a_reference(
    pg_store: PostgresJobStore, stacks: list[Stack]
) -> None:
    """erase-user deletes "everything of one user's: the jobs they created with every job made from them
    (refinements and jobs made from their variants, whoever made them)". Member V's job B names U's variant
    Vx (of U's job X) in referencePaths (allowed: a variant of this project), its input V's own upload.
    `erase-user U` follows jobs made from U's variants by inputPath only (subtree: input_path), not by
    reference: B survives, and the gate keeps Vx's blob (jobs/X/1/0.png) because B's reference_images name
    it; the sweep's purges ten minutes later (second passes included) keep it again. The erased user's
    image stays in Storage for good, its variant row gone. Expected: B is erased with U (like a job made
    from U's variant or upload by inputPath), and U's images go. Fix: the subtree's by_input step also
    follows reference_images (a job whose references name a tree job's variant or input upload)."""
    stack = make_stack(pg_store)
    stacks.append(stack)
    x, _, vx_path = _variant(stack)
    member = uuid.uuid4()
    stack.store.add_member(stack.project, member)
    data = _png()
    own = usecases.ImageUpload(data, inspect_image(data, max_bytes=10**6, max_pixels=10**6))
    mine = usecases.create_job(stack.svc, member, usecases.CreateJob(stack.project, "mine", 1, None, upload=own)).job
    command = usecases.CreateJob(
        stack.project, "with refs", 1, None, input_path=mine.input_path, reference_paths=(vx_path,)
    )
    made = usecases.create_job(stack.svc, member, command).job
    assert [r.path for r in made.references] == [vx_path]
    erased = usecases.erase_user(stack.svc, stack.user)
    assert x in erased.job_ids
    later = datetime.now(UTC) + timedelta(minutes=10)
    stack.svc.clock = lambda: later
    finish_purges(stack.svc)
    left = [p for p in (vx_path,) if p in stack.blobs.objects]
    assert left == [], f"the erased user's images are still in Storage, named by {made.id}'s references"


def test_a_variant_named_twice_in_reference_paths_is_not_refused_as_deleted(
    pg_store: PostgresJobStore, stacks: list[Stack]
) -> None:
    """POST /jobs with inputPath = a variant of X and referencePaths = [Vy, Vy] (the same existing variant
    twice: the body accepts it, nothing dedupes it). create_job's refs check compares count(distinct path)
    of the locked variants (1) with cardinality(reference_variants) (2), so references_found is false and
    the creation is refused 404 "an image referencePaths names was deleted" although nothing was deleted
    (the reservation undone, the client told a lie it may act on). Expected: the job is created (or a 400
    naming the duplicate). Fix: compare with the number of distinct names (`select count(distinct p) from
    unnest(...)`), or reject duplicates in _may_use with a 400."""
    stack = make_stack(pg_store)
    stacks.append(stack)
    _, _, vx_path = _variant(stack)
    _, _, vy_path = _variant(stack)
    command = usecases.CreateJob(
        stack.project, "twice", 1, None, input_path=vx_path, reference_paths=(vy_path, vy_path)
    )
    try:
        made = usecases.create_job(stack.svc, stack.user, command).job
    except NotFound as exc:
        pytest.fail(f"refused as deleted though {vy_path} exists: {exc} {exc.details}")
    except InvalidRequest:
        return
    assert stack.store.get_job(made.id) is not None


def _succeed(stack: Stack, job_id: uuid.UUID) -> tuple[uuid.UUID, uuid.UUID, str]:
    claimed = stack.store.claim_for_generation(job_id, datetime.now(UTC))
    assert claimed is not None
    path = f"jobs/{job_id}/1/0.png"
    stack.blobs.put(path, _png((1, 2, 3)), "image/png")
    done = stack.store.complete(
        job_id, claimed.attempt, [VariantUpload(0, path, "image/png", 8, 8, 10)], None, now=datetime.now(UTC)
    )
    assert done is not None
    stack.svc.limits.release_slot(project_id=stack.project, job_id=job_id)
    return job_id, done.variants[0].id, path


def test_a_creation_naming_a_job_and_its_refinements_variants_and_the_jobs_deletion_do_not_deadlock(
    pg_store: PostgresJobStore, stacks: list[Stack], embedded_pg: Any
) -> None:
    """The DELETE /jobs/{id} side of the first test: X and its refinement Y (one thread), finished. A
    creation C names Vx as inputPath and [Vw, Vy] as referencePaths (Vw held FOR UPDATE a moment by a
    deletion of another user's job W). C holds Vx, waits on Vw; DELETE /jobs/X takes the thread lock,
    lock_jobs X, Y, then the variants by id: Vy, then waits on Vx; W is released, C asks for Vy: a cycle,
    one side aborted with DeadlockDetected: the user's DELETE (or the creation) answers 503. Expected:
    one waits for the other. Fix: one lock order (by variant id) on both sides."""
    other = make_stack(pg_store)
    stacks.append(other)
    _, w_variant, w_path = _variant(other)
    for _ in range(40):
        stack = make_stack(pg_store)
        stacks.append(stack)
        root = _variant(stack)
        child = _succeed(stack, stack.refine(root[0], root[1], None).job.id)
        y, x = sorted([root, child], key=lambda t: t[1])
        if w_path < y[2]:
            break
    else:
        pytest.fail("no setup with the needed order")
    ref = lambda path: Reference(path, "image/png", 8, 8, 10)  # noqa: E731
    made = new_job(stack.project, stack.user, input_path=x[2], input_borrowed=True, references=(ref(w_path), ref(y[2])))
    with (
        psycopg.connect(embedded_pg.uri) as holder,
        psycopg.connect(embedded_pg.uri) as creator,
        ThreadPoolExecutor(2) as pool,
    ):
        holder.execute("select id from pip_ai_image_variants where id = %s for update", (w_variant,))
        creation = pool.submit(
            lambda: creator.execute(queries()["create_job"], stack.store._new_job_params(made)).fetchall()
        )
        time.sleep(0.4)
        assert not creation.done(), "C holds Vx and waits for Vw"
        deletion = pool.submit(usecases.delete_job, stack.svc, stack.user, root[0])
        time.sleep(0.4)
        assert not deletion.done(), "the deletion holds Vy and waits for Vx"
        holder.rollback()
        failures: list[str] = []
        try:
            creation.result(timeout=15)
            creator.commit()
        except Exception as exc:
            failures.append(f"creation: {type(exc).__name__} from {type(exc.__cause__).__name__}")
            creator.rollback()
        try:
            deleted = deletion.result(timeout=15)
        except Exception as exc:
            failures.append(f"DELETE /jobs: {type(exc).__name__} from {type(exc.__cause__).__name__}")
            deleted = None
    assert failures == [], "a creation racing a deletion must wait or be refused, never deadlock"
    assert deleted is not None
    assert {x[0], y[0]} <= set(deleted.job_ids)


def test_an_erasure_that_finds_a_new_thread_after_locking_rows_does_not_deadlock_with_its_refinement(
    pg_store: PostgresJobStore, stacks: list[Stack], embedded_pg: Any
) -> None:
    """delete_jobs takes thread locks, then row locks, and on its next pass the locks of threads that joined
    meanwhile: a thread lock after row locks, the opposite of a refinement's order (thread lock, then its
    variants FOR KEY SHARE). U has a finished job A (variant Va). Member M's job C, made from Va by
    inputPath, is being inserted (holds Va FOR KEY SHARE) when `erase-user U` reads its subtree (without C),
    locks A's thread, lock_jobs A and waits for Va. C commits; the erasure locks Va FOR UPDATE and re-reads:
    C joined, in its own thread T_C. Meanwhile a refinement R of C (after C finished, variant Vc) took T_C's
    lock and names Va as a reference: R waits for Va (the erasure), the erasure waits for T_C (R): a cycle,
    one aborted with DeadlockDetected (erase-user or the refinement fails, 503). Expected: one waits for
    the other. Fix: when a pass finds new threads, roll back to a savepoint before the row locks (or start
    over) and take all thread locks, in order, before any row lock."""
    stack = make_stack(pg_store)
    stacks.append(stack)
    a, _, va_path = _variant(stack)
    member = uuid.uuid4()
    stack.store.add_member(stack.project, member)
    c = new_job(stack.project, member, input_path=va_path)
    with (
        psycopg.connect(embedded_pg.uri) as creator,
        psycopg.connect(embedded_pg.uri) as refiner,
        ThreadPoolExecutor(2) as pool,
    ):
        creator.execute(queries()["create_job"], stack.store._new_job_params(c))  # uncommitted
        erasure = pool.submit(usecases.erase_user, stack.svc, stack.user)
        time.sleep(0.4)
        assert not erasure.done(), "the erasure waits for C's lock on Va"
        refiner.execute(queries()["lock_thread"], {"thread_id": c.id})  # R's create_refinement, first step
        creator.commit()
        time.sleep(0.3)
        assert not erasure.done(), "the erasure, holding Va, waits for T_C's lock"
        claimed = stack.store.claim_for_generation(c.id, datetime.now(UTC))
        assert claimed is not None
        vc_path = f"jobs/{c.id}/1/0.png"
        stack.blobs.put(vc_path, _png((1, 2, 3)), "image/png")
        done = stack.store.complete(
            c.id, claimed.attempt, [VariantUpload(0, vc_path, "image/png", 8, 8, 10)], None, now=datetime.now(UTC)
        )
        assert done is not None, "C finished (the erasure holds no lock on C yet)"
        r = new_job(
            stack.project,
            member,
            thread_id=c.id,
            parent_job_id=c.id,
            source_variant_id=done.variants[0].id,
            input_path=vc_path,
            references=(Reference(va_path, "image/png", 8, 8, 10),),
        )
        refinement = pool.submit(
            lambda: refiner.execute(queries()["create_job"], stack.store._new_job_params(r)).fetchall()
        )
        failures: list[str] = []
        try:
            refinement.result(timeout=15)
            refiner.commit()
        except Exception as exc:
            failures.append(f"refinement: {type(exc).__name__}")
            refiner.rollback()
        try:
            erased = erasure.result(timeout=15)
        except Exception as exc:
            failures.append(f"erasure: {type(exc).__name__} from {type(exc.__cause__).__name__}")
            erased = None
    assert failures == [], "a refinement racing an erasure must wait or be refused, never deadlock"
    assert erased is not None
    assert {a, c.id} <= set(erased.job_ids)
