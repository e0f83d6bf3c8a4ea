"""The monthly image budget through the use cases on real Postgres: the per-project override table, the
reservation given back by a rolled-back creation, the settlement when a job ends, and `budget_threshold`."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from nano_banana import usecases
from nano_banana.adapters.postgres import PostgresJobStore
from nano_banana.domain import JobStatus, ModelUsage, VariantUpload
from nano_banana.embedded_pg import EmbeddedPostgres
from nano_banana.errors import BudgetExceeded, Unavailable
from nano_banana.ports import BudgetUse, DeletedJob, UsageBucket
from nano_banana.usecases import deleting, finishing
from tests.integration.postgres.test_creation import Stack, _png

pytestmark = pytest.mark.postgres


def _month() -> str:
    return datetime.now(UTC).strftime("%Y-%m")


def _budgeted(pg_store: PostgresJobStore, default: int) -> Stack:
    stack = Stack(pg_store)
    stack.svc.settings = stack.svc.settings.model_copy(update={"project_monthly_images": default})
    return stack


def _set_budget(embedded_pg: EmbeddedPostgres, project: uuid.UUID, images: int) -> None:
    with psycopg.connect(embedded_pg.uri, autocommit=True) as conn:
        conn.execute(
            "insert into pip_ai_project_budgets (project_id, monthly_images) values (%s, %s)"
            " on conflict (project_id) do update set monthly_images = excluded.monthly_images",
            (project, images),
        )


def _usage(stack: Stack) -> BudgetUse:
    return stack.limits.month_usage(stack.project, datetime.now(UTC))


def test_the_default_budget_refuses_what_would_pass_it(pg_store: PostgresJobStore) -> None:
    stack = _budgeted(pg_store, 4)
    stack.create()
    stack.create()
    with pytest.raises(BudgetExceeded) as refused:
        stack.create()
    assert refused.value.details | {"retryAfterSeconds": 0} == {
        "limit": 4,
        "used": 0,
        "reserved": 4,
        "month": _month(),
        "retryAfterSeconds": 0,
    }
    assert len(stack.store.user_jobs(stack.user)) == 2
    assert len(stack.inputs()) == 2, "the refused creation's upload is deleted"


def test_a_project_row_overrides_the_default(pg_store: PostgresJobStore, embedded_pg: EmbeddedPostgres) -> None:
    stack = _budgeted(pg_store, 100)
    _set_budget(embedded_pg, stack.project, 2)
    stack.create()
    with pytest.raises(BudgetExceeded):
        stack.create()
    other = _budgeted(pg_store, 2)
    _set_budget(embedded_pg, other.project, 0)  # 0: no budget for this project
    for _ in range(3):
        other.create()
    assert _usage(other).reserved == 6, "counted all the same"


def test_a_rolled_back_creation_gives_its_images_back(pg_store: PostgresJobStore) -> None:
    stack = _budgeted(pg_store, 2)
    stack.queue.fail_next = Unavailable("the queue is down")
    with pytest.raises(Unavailable):
        stack.create()
    assert _usage(stack) == BudgetUse(_month(), used=0, reserved=0)
    stack.create()  # both images are there to take


def test_an_ended_job_settles_to_the_images_it_stored(pg_store: PostgresJobStore) -> None:
    stack = _budgeted(pg_store, 4)
    half = stack.create().job
    failed = stack.create().job
    claimed = stack.store.claim_for_generation(half.id, datetime.now(UTC))
    assert claimed is not None
    path = f"jobs/{half.id}/1/0.png"
    stack.blobs.put(path, _png(), "image/png")
    done = finishing.complete_job(
        stack.svc, claimed, claimed.attempt, [VariantUpload(0, path, "image/png", 8, 8, 10)], "1 of 2"
    )
    assert done is not None
    assert finishing.fail_job(stack.svc, failed, "generation_failed", "the model failed") is not None
    assert _usage(stack) == BudgetUse(_month(), used=1, reserved=0)
    stack.create()  # 1 used + 2: fits in 4
    with pytest.raises(BudgetExceeded):
        stack.create()


def test_budget_threshold_is_logged_at_80_and_100_percent(
    pg_store: PostgresJobStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="nano_banana")
    stack = _budgeted(pg_store, 4)
    stack.create()  # 2 of 4: 50 %
    assert [r for r in caplog.records if getattr(r, "event", None) == "budget_threshold"] == []
    stack.create()  # 4 of 4: past 80 % and at 100 %
    with pytest.raises(BudgetExceeded):
        stack.create()  # refused: nothing more logged
    crossed = [vars(r) for r in caplog.records if getattr(r, "event", None) == "budget_threshold"]
    assert [(e["percent"], e["limit"], e["used"], e["reserved"]) for e in crossed] == [(80, 4, 0, 4), (100, 4, 0, 4)]
    assert {e["projectId"] for e in crossed} == {str(stack.project)}


def test_usage_days_agree_with_the_rows(pg_store: PostgresJobStore, embedded_pg: EmbeddedPostgres) -> None:
    """Jobs on two UTC days (created_at moved back a day for some), ended in each way: the buckets count
    them by status, sum their images and tokens, and the totals bucket covers the range."""
    stack = _budgeted(pg_store, 0)
    half = stack.create().job
    failed = stack.create().job
    stack.create()  # stays queued
    claimed = stack.store.claim_for_generation(half.id, datetime.now(UTC))
    assert claimed is not None
    path = f"jobs/{half.id}/1/0.png"
    stack.blobs.put(path, _png(), "image/png")
    used = ModelUsage(prompt_tokens=268, output_tokens=1290, total_tokens=1558, generation_ms=900)
    finishing.complete_job(
        stack.svc, claimed, claimed.attempt, [VariantUpload(0, path, "image/png", 8, 8, 10)], None, usage=used
    )
    finishing.fail_job(stack.svc, failed, "generation_failed", "x", usage=ModelUsage(prompt_tokens=268))
    with psycopg.connect(embedded_pg.uri, autocommit=True) as conn:
        conn.execute(
            "update pip_ai_image_jobs set created_at = created_at - interval '1 day' where id = %s", (failed.id,)
        )
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    buckets = stack.store.usage_days(stack.project, today - timedelta(days=3), today + timedelta(days=1))
    by_day = {b.day: b for b in buckets}
    assert set(by_day) == {today.date(), (today - timedelta(days=1)).date(), None}
    now, before, total = by_day[today.date()], by_day[(today - timedelta(days=1)).date()], by_day[None]
    assert (now.jobs, now.by_status["succeeded"], now.by_status["queued"], now.images) == (2, 1, 1, 1)
    assert (now.prompt_tokens, now.output_tokens, now.total_tokens) == (268, 1290, 1558)
    assert (before.jobs, before.by_status["failed"], before.images, before.prompt_tokens) == (1, 1, 0, 268)
    assert (total.jobs, total.images, total.prompt_tokens) == (3, 1, 536)
    assert now.p50_ms is not None
    assert now.p50_ms == now.p95_ms, "one job ended that day"
    assert total.p50_ms is not None
    assert stack.store.usage_days(stack.project, today + timedelta(days=1), today + timedelta(days=2)) == [
        UsageBucket(
            None, 0, dict.fromkeys(["queued", "running", "succeeded", "failed", "canceled"], 0), 0, 0, 0, 0, None, None
        )
    ], "an empty range: only the (empty) totals"


def test_a_job_deleted_while_active_gives_its_images_back(pg_store: PostgresJobStore) -> None:
    """A deleted job stored nothing: whether the deletion canceled it (its terminal transition settles) or
    found it still active (a refinement created after the cancel step), its images come back."""
    stack = _budgeted(pg_store, 4)
    canceled = stack.create().job
    raced = stack.create().job
    assert _usage(stack).reserved == 4
    usecases.delete_job(stack.svc, stack.user, canceled.id)
    assert _usage(stack) == BudgetUse(_month(), used=0, reserved=2)
    gone = DeletedJob(raced.id, raced.project_id, raced.user_id, JobStatus.queued, raced.input_path, raced.deadline_at)
    deleting._release_deleted(stack.svc, gone)
    assert _usage(stack) == BudgetUse(_month(), used=0, reserved=0)
