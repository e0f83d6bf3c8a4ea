"""What a caller asks a creation for, and what it gets back."""

from __future__ import annotations

import hashlib
import logging
import uuid
from dataclasses import dataclass

from nano_banana.domain import (
    Job,
    Reference,
)
from nano_banana.images import ImageInfo

log = logging.getLogger("nano_banana")


@dataclass(frozen=True, slots=True)
class ImageUpload:
    data: bytes
    info: ImageInfo


@dataclass(frozen=True, slots=True)
class CreateJob:
    project_id: uuid.UUID
    prompt: str
    variant_count: int
    aspect_ratio: str | None
    upload: ImageUpload | None = None
    input_path: str | None = None
    idempotency_key: str | None = None
    webhook_url: str | None = None
    webhook_events: tuple[str, ...] | None = None
    # None: the first allowed model / the model's default size.
    model: str | None = None
    resolution: str | None = None
    # Reference images: sent as files (multipart) or named by path (JSON), never both.
    references: tuple[ImageUpload, ...] = ()
    reference_paths: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Inspected:
    """What reading a JSON creation's inputPath and referencePaths learnt: their types and sizes."""

    input: ImageInfo
    references: tuple[Reference, ...]


@dataclass(frozen=True, slots=True)
class Refine:
    job_id: uuid.UUID
    variant_id: uuid.UUID
    prompt: str
    idempotency_key: str | None = None
    webhook_url: str | None = None
    webhook_events: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class Created:
    job: Job
    message_id: uuid.UUID | None
    replayed: bool


def request_hash(*parts: object) -> str:
    """Fingerprint of a creation request, to tell an idempotent retry from a key reused for another body."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part if isinstance(part, bytes) else str(part).encode())
        digest.update(b"\x1f")
    return digest.hexdigest()
