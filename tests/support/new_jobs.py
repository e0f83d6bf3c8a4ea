"""`new_job`: a NewJob with plausible defaults, for tests and benches that insert rows directly."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from nano_banana.domain import NewJob


def new_job(project: uuid.UUID, user: uuid.UUID, **overrides: Any) -> NewJob:
    """A root job of `user` in `project` (its own thread), due in 5 minutes; any field can be overridden."""
    job_id = overrides.pop("id", uuid.uuid4())
    fields: dict[str, Any] = {
        "id": job_id,
        "project_id": project,
        "user_id": user,
        "thread_id": job_id,
        "parent_job_id": None,
        "source_variant_id": None,
        "prompt": "make it pop",
        "input_path": f"inputs/{user}/{uuid.uuid4()}.png",
        "input_mime_type": "image/png",
        "input_width": 64,
        "input_height": 48,
        "variant_count": 2,
        "aspect_ratio": None,
        "model": "preview",
        "idempotency_key": None,
        "request_hash": None,
        "deadline_at": datetime.now(UTC) + timedelta(minutes=5),
    }
    fields.update(overrides)
    return NewJob(**fields)
