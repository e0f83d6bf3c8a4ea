"""The ports a use case may touch (Services), and the small steps every room takes: tasks by name, slot
release, blob deletion through its one gate."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from nano_banana.errors import (
    Forbidden,
)
from nano_banana.ports import (
    BlobStore,
    Clock,
    ImageGenerator,
    JobStore,
    Limits,
    Processor,
    Task,
    TaskQueue,
)
from nano_banana.settings import Settings
from nano_banana.together import pool

log = logging.getLogger("nano_banana")


LEASE_GRACE = timedelta(seconds=60)


# Longer than any creation request runs after its reservation (reserve ‖ store the input, then insert ‖
# enqueue: each call bounded by its client's timeout and retry budget, seconds each): a lease or key claim
# whose job row is still missing this long after the admission belongs to a creation that is over.
CREATION_GRACE = timedelta(seconds=120)


@dataclass
class Services:
    """The ports a use case may touch, wired once by bootstrap.py."""

    settings: Settings
    store: JobStore
    limits: Limits
    queue: TaskQueue
    blobs: BlobStore
    # Built on first use (the Vertex client is heavy; the `api` function never needs it).
    generator_factory: Callable[[], ImageGenerator] | None
    processor_factory: Callable[[], Processor] | None
    clock: Clock
    extras: dict[str, object] = field(default_factory=dict)
    closers: list[Callable[[], None]] = field(default_factory=list)
    # Threads for round trips that do not depend on each other (nano_banana.together).
    fanout: Executor = field(default_factory=pool)

    @property
    def generator(self) -> ImageGenerator | None:
        return self.generator_factory() if self.generator_factory else None

    @property
    def processor(self) -> Processor | None:
        return self.processor_factory() if self.processor_factory else None

    def close(self) -> None:
        for close in self.closers:
            close()
        self.fanout.shutdown(wait=False, cancel_futures=True)


def require_access(svc: Services, project_id: uuid.UUID, user_id: uuid.UUID) -> None:
    if not svc.store.can_access(project_id, user_id):
        raise Forbidden("you are not a member of this project", details={"projectId": str(project_id)})


def expire_task(job_id: uuid.UUID, deadline_at: datetime) -> Task:
    return Task(kind="expire", job_id=job_id, schedule_at=deadline_at, dispatch_deadline_s=60)


def generate_task(svc: Services, job_id: uuid.UUID, deadline_at: datetime, replacement: int | None = None) -> Task:
    remaining = (deadline_at - svc.clock()).total_seconds()
    return Task(kind="generate", job_id=job_id, dispatch_deadline_s=max(15.0, remaining + 30), replacement=replacement)


def delete_unreferenced(svc: Services, paths: Sequence[str]) -> list[str]:
    """The one gate to blob deletion: delete those of `paths` no job row references (as its input or as
    a variant), read after the caller's own rows that referenced them are gone. An object a row still
    uses is never deleted, whoever names it. Returns the paths deleted; raises what the store or the
    blobs raise (nothing was deleted if the reference read failed)."""
    if not paths:
        return []
    keep = svc.store.referenced_paths(paths)
    doomed = [p for p in dict.fromkeys(paths) if p not in keep]
    if doomed:
        svc.blobs.delete(doomed)
    return doomed


def delete_quietly(svc: Services, paths: Sequence[str], job_id: uuid.UUID) -> None:
    """`delete_unreferenced`, a failure logged (the sweep's orphan passes delete what is left)."""
    try:
        delete_unreferenced(svc, paths)
    except Exception as exc:
        log.warning(
            "could not delete blobs",
            extra={"event": "blob_cleanup_failed", "jobId": str(job_id), "errorType": type(exc).__name__},
        )


def release_slot(svc: Services, project_id: uuid.UUID, job_id: uuid.UUID) -> bool:
    try:
        svc.limits.release_slot(project_id=project_id, job_id=job_id)
    except Exception:  # the sweep gives it back later; at worst the lease expires at deadline + grace
        log.exception("could not release a slot", extra={"event": "release_failed", "jobId": str(job_id)})
        return False
    return True
