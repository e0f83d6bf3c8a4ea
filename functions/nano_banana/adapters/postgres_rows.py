"""Postgres rows as domain objects and back: the named queries of queries.sql, row mapping, list cursors."""

from __future__ import annotations

import base64
import json
import re
import uuid
from datetime import datetime
from functools import cache
from importlib import resources
from typing import Any

from nano_banana.domain import (
    Job,
    JobStatus,
    ModelUsage,
    NewJob,
    Reference,
    Variant,
    Webhook,
    WebhookDelivery,
    webhook_id,
)
from nano_banana.errors import InvalidRequest, NotFound

Row = dict[str, Any]


@cache
def queries() -> dict[str, str]:
    """The named queries of queries.sql, with the {job_columns} and {subtree} fragments expanded."""
    text = resources.files("nano_banana.adapters").joinpath("queries.sql").read_text()
    blocks = re.split(r"^-- name: (\w+)\n", text, flags=re.MULTILINE)
    named = {name: body.strip() for name, body in zip(blocks[1::2], blocks[2::2], strict=True)}
    fragments = {
        name: "\n".join(line for line in named.pop(name).splitlines() if not line.startswith("--"))
        for name in ("webhook_columns", "job_columns", "record_webhook", "subtree")
    }
    fragments["job_columns"] = fragments["job_columns"].replace("{webhook_columns}", fragments["webhook_columns"])

    def expand(body: str) -> str:
        for name, fragment in fragments.items():
            body = body.replace("{" + name + "}", fragment)
        return body

    return {name: expand(body) for name, body in named.items()}


def as_uuid(value: Any) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


def as_ts(value: Any) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


def variant_of(v: dict[str, Any]) -> Variant:
    return Variant(
        id=as_uuid(v["id"]),
        job_id=as_uuid(v["job_id"]),
        index=int(v["index"]),
        storage_path=str(v["storage_path"]),
        mime_type=str(v["mime_type"]),
        width=int(v["width"]),
        height=int(v["height"]),
        bytes=int(v["bytes"]),
        created_at=as_ts(v["created_at"]),
    )


def delivery_of(d: dict[str, Any]) -> WebhookDelivery:
    return WebhookDelivery(
        event=str(d["event"]),
        state=str(d["state"]),
        attempts=int(d["attempts"]),
        last_status=int(d["last_status"]) if d["last_status"] is not None else None,
        delivered_at=as_ts(d["delivered_at"]) if d["delivered_at"] is not None else None,
        reason=d["reason"],
        created_at=as_ts(d["created_at"]),
    )


def webhook_of(row: Row) -> Webhook | None:
    if not row.get("webhook_url"):
        return None
    deliveries = row.get("webhook_deliveries") or []
    if isinstance(deliveries, str):
        deliveries = json.loads(deliveries)
    return Webhook(
        url=row["webhook_url"],
        events=tuple(row.get("webhook_events") or ()),
        deliveries=tuple(delivery_of(d) for d in deliveries),
    )


def usage_params(usage: ModelUsage | None) -> dict[str, int | None]:
    used = usage or ModelUsage()
    return {
        "prompt_tokens": used.prompt_tokens,
        "output_tokens": used.output_tokens,
        "total_tokens": used.total_tokens,
        "generation_ms": used.generation_ms,
    }


def job_of(row: Row) -> Job:
    variants = row.get("variants") or []
    if isinstance(variants, str):
        variants = json.loads(variants)
    return Job(
        webhook=webhook_of(row),
        id=row["id"],
        project_id=row["project_id"],
        user_id=row["user_id"],
        thread_id=row["thread_id"],
        parent_job_id=row["parent_job_id"],
        source_variant_id=row["source_variant_id"],
        prompt=row["prompt"],
        input_path=row["input_path"],
        input_mime_type=row["input_mime_type"],
        input_width=row["input_width"],
        input_height=row["input_height"],
        status=JobStatus(row["status"]),
        error_code=row["error_code"],
        error_message=row["error_message"],
        variant_count=row["variant_count"],
        aspect_ratio=row["aspect_ratio"],
        model=row["model"],
        attempt=row["attempt"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        deadline_at=row["deadline_at"],
        updated_at=row["updated_at"],
        note=row.get("note"),
        variants=tuple(variant_of(v) for v in variants),
        resolution=row.get("resolution"),
        references=tuple(
            Reference(str(r["path"]), str(r["mime_type"]), int(r["width"]), int(r["height"]), int(r["bytes"]))
            for r in row.get("reference_images") or ()
        ),
        usage=ModelUsage(
            row.get("prompt_tokens"), row.get("output_tokens"), row.get("total_tokens"), row.get("generation_ms")
        ),
    )


def owed(job_id: uuid.UUID, status: JobStatus) -> dict[str, str]:
    """The `record_webhook` fragment's parameters: the delivery a transition into `status` owes."""
    return {"webhook_event": status.value, "webhook_id": webhook_id(job_id, status.value)}


def source_gone(new: NewJob) -> NotFound:
    """The job, variant or upload a new job is made from was deleted while it was being created."""
    if new.parent_job_id is not None:
        return NotFound("job not found", details={"jobId": str(new.parent_job_id)})
    return NotFound("the image inputPath names was deleted", details={"field": "inputPath"})


def inserted(new: NewJob, rows: list[Row]) -> Job | None:
    """create_job's one row: the job; None when the key's job exists; NotFound when its source is gone."""
    if rows and rows[0]["id"] is not None:
        return job_of(rows[0])
    if rows and not rows[0]["source_found"]:
        raise source_gone(new)
    if rows and rows[0].get("references_found") is False:
        raise NotFound("an image referencePaths names was deleted", details={"field": "referencePaths"})
    return None


def encode_cursor(job: Job) -> str:
    raw = json.dumps([job.created_at.isoformat(), str(job.id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, job_id = json.loads(raw)
        return datetime.fromisoformat(created), uuid.UUID(job_id)
    except (ValueError, TypeError) as exc:
        raise InvalidRequest("cursor is not valid", details={"field": "cursor"}) from exc


def assistant_text_success(count: int, note: str | None) -> str:
    plural = "variant" if count == 1 else "variants"
    return f"Here {'is' if count == 1 else 'are'} {count} {plural}." + (f" {note}" if note else "")
