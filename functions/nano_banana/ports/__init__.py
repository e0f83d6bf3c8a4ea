"""The ports: what the use cases need from the outside world, as Protocols.

Each has a production adapter and an embedded twin in `nano_banana/adapters/`; `bootstrap.py`
picks one from settings. Contract suites in `tests/contract/` run against every implementation.
Adapters are called from several threads at once (a request's independent round trips run side by side,
`nano_banana.together`): each must be thread-safe (the Postgres pool, httpx under storage3, the gRPC
clients of Firestore and Cloud Tasks are; the in-process twins hold a lock).

One module per port family: limits, work (queue, generator, processor, webhooks), blobs, store."""

from __future__ import annotations

from nano_banana.ports.blobs import BlobInfo, BlobStore, FolderEntry
from nano_banana.ports.limits import (
    BudgetUse,
    Clock,
    Holding,
    HoldingKind,
    HoldingsPage,
    KeyClaimed,
    Limits,
    LimitsReading,
    Reservation,
)
from nano_banana.ports.store import DeletedJob, JobPage, JobStore, ReceiptClaim, UsageBucket
from nano_banana.ports.work import (
    ImageGenerator,
    Processor,
    ProcessorJob,
    Task,
    TaskHandler,
    TaskKind,
    TaskQueue,
    WebhookAnswer,
    WebhookPoster,
    task_name,
)

__all__ = [
    "BlobInfo",
    "BlobStore",
    "BudgetUse",
    "Clock",
    "DeletedJob",
    "FolderEntry",
    "Holding",
    "HoldingKind",
    "HoldingsPage",
    "ImageGenerator",
    "JobPage",
    "JobStore",
    "KeyClaimed",
    "Limits",
    "LimitsReading",
    "Processor",
    "ProcessorJob",
    "ReceiptClaim",
    "Reservation",
    "Task",
    "TaskHandler",
    "TaskKind",
    "TaskQueue",
    "UsageBucket",
    "WebhookAnswer",
    "WebhookPoster",
    "task_name",
]
