"""Adversarial review of de2f8b8/7cc5362 (the creation's FOR KEY SHARE holds against a deletion's FOR UPDATE
locks). Each test fails on main as of f217d1a (see the docstrings for the interleaving)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from nano_banana import usecases
from nano_banana.adapters.postgres import PostgresJobStore
from nano_banana.domain import VariantUpload
from nano_banana.errors import InvalidRequest, NotFound
from nano_banana.images import inspect_image
from nano_banana.usecases.deleting import finish_purges
from tests.integration.postgres.test_creation import Stack, _png, make_stack

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
