"""bootstrap's build_limits / build_queue, from settings, drive the real adapters against local servers."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from google.cloud import firestore

from infra.firestore_emulator import Emulator
from nano_banana.adapters.limits_firestore import FirestoreLimits
from nano_banana.adapters.queue_cloudtasks import CloudTasksQueue
from nano_banana.bootstrap import build_limits, build_queue
from nano_banana.errors import RateLimited
from nano_banana.ports import Task
from nano_banana.settings import Settings
from nano_banana.task_auth import verify_task_request
from tests.support.fake_cloudtasks import FakeCloudTasks, TaskReceiver, fake_cloudtasks, task_receiver  # noqa: F401
from tests.support.firestore import firestore_client, firestore_emulator  # noqa: F401


def _now() -> datetime:
    return datetime.now(UTC)


@pytest.mark.firestore
def test_firestore_limits_from_settings(
    firestore_emulator: Emulator,  # noqa: F811
    firestore_client: firestore.Client,  # noqa: F811
) -> None:
    settings = Settings(
        limits="firestore", gcp_project=firestore_emulator.project, rate_per_hour=1, firestore_collection_prefix="wired"
    )
    limits = build_limits(settings, _now)
    assert isinstance(limits, FirestoreLimits)
    user = uuid.uuid4()
    limits.reserve(
        user_id=user, project_id=uuid.uuid4(), job_id=uuid.uuid4(), lease_expires_at=_now() + timedelta(minutes=5)
    )
    with pytest.raises(RateLimited):
        limits.reserve(
            user_id=user, project_id=uuid.uuid4(), job_id=uuid.uuid4(), lease_expires_at=_now() + timedelta(minutes=5)
        )
    assert firestore_client.collection("wired_rate").document(str(user)).get().exists


@pytest.mark.cloudtasks
def test_cloudtasks_queue_from_settings(fake_cloudtasks: FakeCloudTasks, task_receiver: TaskReceiver) -> None:  # noqa: F811
    settings = Settings(
        queue="cloudtasks",
        tasks_endpoint=fake_cloudtasks.endpoint,
        gcp_project="demo-nano-banana",
        generate_url=task_receiver.url("/generate"),
        expire_url=task_receiver.url("/expire"),
        tasks_service_account="tasks@demo-nano-banana.iam.gserviceaccount.com",
        task_oidc_certs_url=fake_cloudtasks.certs_url,
    )
    closers: list[Callable[[], None]] = []
    queue = build_queue(settings, _now, closers)
    assert isinstance(queue, CloudTasksQueue)
    job = uuid.uuid4()
    queue.enqueue(Task(kind="generate", job_id=job, dispatch_deadline_s=330))
    assert fake_cloudtasks.wait_for(lambda: len(task_receiver.snapshot()) == 1)
    (got,) = task_receiver.snapshot()
    assert json.loads(got.body) == {"jobId": str(job)}
    verify_task_request(
        got.headers["Authorization"],
        audience=str(settings.generate_url),
        service_account=str(settings.tasks_service_account),
        certs_url=settings.task_oidc_certs_url,
    )
    (create,) = [req for method, req in fake_cloudtasks.calls if method == "CreateTask"]
    assert create.parent == "projects/demo-nano-banana/locations/us-central1/queues/nano-banana"
    for close in closers:
        close()
