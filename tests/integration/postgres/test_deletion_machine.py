"""The lifecycle state machine with deletions mixed in: a deleted job never comes back (whatever worker,
cancel, expire or sweep runs after it), leaves no row, message or blob, and holds no slot. Every other
invariant of the lifecycle keeps holding for the jobs that remain."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import invariant, rule, run_state_machine_as_test

from nano_banana import usecases
from nano_banana.adapters.postgres import PostgresJobStore
from nano_banana.errors import Forbidden, NotFound
from tests.integration.postgres.test_lifecycle_machine import USERS, Lifecycle

pytestmark = pytest.mark.postgres


class LifecycleWithDeletion(Lifecycle):
    def __init__(self) -> None:
        super().__init__()
        self.deleted: dict[uuid.UUID, str] = {}  # job id -> its input path
        self.images_of_deleted: dict[uuid.UUID, int] = {}  # project -> images its deleted jobs had stored

    @rule(job_id=Lifecycle.jobs, user=st.sampled_from(USERS))
    def delete(self, job_id: uuid.UUID, user: uuid.UUID) -> None:
        job = self.store.get_job(job_id)
        try:
            deletion = usecases.delete_job(self.svc, user, job_id)
        except Forbidden:
            assert job is not None
            assert job.user_id != user
            return
        except NotFound:
            assert job is None
            return
        assert job is not None
        assert deletion.job_ids == [job_id], "no refinements in this machine: exactly the job"
        self.deleted[job_id] = job.input_path
        if job.terminal:  # an active one was canceled by the deletion: it stored nothing
            self.images_of_deleted[job.project_id] = self.images_of_deleted.get(job.project_id, 0) + len(job.variants)
        self.created.remove(job_id)  # the lifecycle's own invariants now check the jobs that remain

    @invariant()
    def deleted_jobs_stay_gone(self) -> None:
        for job_id, input_path in self.deleted.items():
            assert self.store.get_job(job_id) is None, "never resurrected"
            assert self.store.messages(job_id) == []
            assert self.blobs.list(f"jobs/{job_id}/") == [], "no output of any attempt is left"
            assert input_path not in self.blobs.objects, "its upload went with it"


def test_deletions_interleaved_with_the_lifecycle(pg_store: PostgresJobStore) -> None:
    LifecycleWithDeletion.store = pg_store
    run_state_machine_as_test(
        LifecycleWithDeletion,
        settings=settings(
            max_examples=40, stateful_step_count=30, deadline=None, suppress_health_check=list(HealthCheck)
        ),
    )
