"""Reads: one job, a project's jobs, a thread, and which stored paths a user may see."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Sequence

from nano_banana.domain import (
    Job,
    JobStatus,
    Message,
)
from nano_banana.errors import (
    NotFound,
)
from nano_banana.ports import (
    JobPage,
)
from nano_banana.usecases.services import Services, require_access

log = logging.getLogger("nano_banana")


def get_job(svc: Services, user_id: uuid.UUID, job_id: uuid.UUID) -> Job:
    job = svc.store.get_job(job_id, user_id=user_id)
    if job is None:
        raise NotFound("job not found", details={"jobId": str(job_id)})
    return job


_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


_OUTPUT_PATH = re.compile(rf"^jobs/({_UUID})/[A-Za-z0-9._/-]+$")  # the shape pip_ai_image_variants allows


_INPUT_PATH = re.compile(rf"^inputs/{_UUID}/[A-Za-z0-9._-]+$")


def visible_paths(svc: Services, user_id: uuid.UUID, paths: Sequence[str]) -> set[str]:
    """The stored images among `paths` the user may see: variants and inputs of their projects' jobs.
    Anything else (malformed, another project's, deleted) is simply not among them."""
    candidates: list[tuple[str, uuid.UUID | None]] = []
    for path in paths:
        if ".." in path:
            continue
        if match := _OUTPUT_PATH.match(path):
            candidates.append((path, uuid.UUID(match.group(1))))
        elif _INPUT_PATH.match(path):
            candidates.append((path, None))
    return svc.store.visible_paths(user_id, candidates)


def list_jobs(
    svc: Services,
    user_id: uuid.UUID,
    project_id: uuid.UUID,
    *,
    status: JobStatus | None,
    limit: int,
    cursor: str | None,
) -> JobPage:
    require_access(svc, project_id, user_id)
    return svc.store.list_jobs(project_id, status=status, limit=limit, cursor=cursor)


def original(svc: Services, job: Job) -> Job:
    """The first job of `job`'s thread (the job itself for a first turn): its input is the photo the thread
    began with, where a refinement's own input is the variant it refined. A job's ancestors outlive it
    (deleting a job deletes its refinements), so the chain is whole."""
    return next(iter(svc.store.thread_history(job)), job)


def thread(svc: Services, user_id: uuid.UUID, job_id: uuid.UUID) -> tuple[uuid.UUID, list[tuple[Message, Job]]]:
    job = get_job(svc, user_id, job_id)
    return job.thread_id, svc.store.messages(job.thread_id)
