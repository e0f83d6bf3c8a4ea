"""One function per thing a user (or the platform) can do, one room per concern. Ports in, domain objects out.

Rooms (the import graph points down this list): services, commands, idempotency, admitting, creating, reading,
finishing, generating, deleting, sweeping. Callers use the names re-exported here (tests that tune a room's
waits patch the room itself: `idempotency.KEY_WAIT_S`, `generating.ROW_WAIT_S`)."""

from __future__ import annotations

from nano_banana.usecases.commands import Created, CreateJob, ImageUpload, Refine, request_hash
from nano_banana.usecases.creating import create_job, refine
from nano_banana.usecases.deleting import (
    LATE_UPLOAD_GRACE,
    PURGE_BATCH,
    Deletion,
    Erasure,
    apply_retention,
    delete_job,
    erase_user,
    finish_purges,
)
from nano_banana.usecases.finishing import cancel_job, complete_job, discard_outputs, expire_job, fail_job
from nano_banana.usecases.generating import UploadGrant, grant_uploads, run_generation
from nano_banana.usecases.reading import get_job, list_jobs, original, thread, visible_paths
from nano_banana.usecases.services import CREATION_GRACE, LEASE_GRACE, Services
from nano_banana.usecases.sweeping import (
    RECEIPT_MARGIN,
    REQUEUE_ROUND_S,
    delete_orphan_inputs,
    delete_orphan_outputs,
    prune_receipts,
    sweep,
)

__all__ = [
    "CREATION_GRACE",
    "LATE_UPLOAD_GRACE",
    "LEASE_GRACE",
    "PURGE_BATCH",
    "RECEIPT_MARGIN",
    "REQUEUE_ROUND_S",
    "CreateJob",
    "Created",
    "Deletion",
    "Erasure",
    "ImageUpload",
    "Refine",
    "Services",
    "UploadGrant",
    "apply_retention",
    "cancel_job",
    "complete_job",
    "create_job",
    "delete_job",
    "delete_orphan_inputs",
    "delete_orphan_outputs",
    "discard_outputs",
    "erase_user",
    "expire_job",
    "fail_job",
    "finish_purges",
    "get_job",
    "grant_uploads",
    "list_jobs",
    "original",
    "prune_receipts",
    "refine",
    "request_hash",
    "run_generation",
    "sweep",
    "thread",
    "visible_paths",
]
