"""GET /usage: the query it takes and the body it answers (docs/usage.md)."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

from flask import Request, Response
from pydantic import Field

from nano_banana.http.api import Api
from nano_banana.http.bodies import _Body, validated
from nano_banana.http.rendering import _iso, json_response
from nano_banana.ports import UsageBucket
from nano_banana.usecases.usage import ProjectUsage, project_usage


class UsageQuery(_Body):
    project_id: uuid.UUID = Field(alias="projectId")
    first: date | None = Field(None, alias="from", description="first UTC day (YYYY-MM-DD)")
    last: date | None = Field(None, alias="to", description="last UTC day, included")


def _bucket(bucket: UsageBucket) -> dict[str, Any]:
    return {
        "jobs": {"total": bucket.jobs, **bucket.by_status},
        "images": bucket.images,
        "tokens": {"prompt": bucket.prompt_tokens, "output": bucket.output_tokens, "total": bucket.total_tokens},
        "totalMs": {
            "p50": round(bucket.p50_ms) if bucket.p50_ms is not None else None,
            "p95": round(bucket.p95_ms) if bucket.p95_ms is not None else None,
        },
    }


def render_usage(usage: ProjectUsage) -> dict[str, Any]:
    budget = usage.budget
    return {
        "projectId": str(usage.project_id),
        "from": usage.first.isoformat(),
        "to": usage.last.isoformat(),
        "totals": _bucket(usage.totals),
        "days": [{"date": b.day.isoformat() if b.day else None, **_bucket(b)} for b in usage.days],
        "budget": {
            "month": budget.month,
            "limit": budget.limit,
            "used": budget.used,
            "reserved": budget.reserved,
            "remaining": max(0, budget.limit - budget.counted) if budget.limit is not None else None,
            "resetsAt": _iso(usage.resets_at),
        },
    }


def get_usage(api: Api, request: Request, _: dict[str, str]) -> Response:
    user_id = api.verifier.user_id(request.headers.get("Authorization"))
    query = validated(UsageQuery, request.args.to_dict())
    return json_response(render_usage(project_usage(api.services, user_id, query.project_id, query.first, query.last)))
