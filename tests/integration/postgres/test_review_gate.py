"""Adversarial review of issue 24's fixes: where blob deletion's gate meets a creation in flight. Each test
fails on main as of 145028f (see the docstrings for the interleaving)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from nano_banana import usecases
from nano_banana.adapters.postgres import PostgresJobStore
from nano_banana.errors import NotFound
from tests.integration.postgres.test_creation import Stack, make_stack

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
