"""Completion webhooks on real Postgres (issue 27): the delivery is recorded by the transition's own statement,
handed to a `webhook` task, signed so that the official `standardwebhooks` verifier accepts it (a rotated
secret too), retried with the same webhook-id, refused for addresses that resolve privately, stopped by 410,
swept when its task never ran, and deleted with its job. A local receiver stands for the builder's server."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from PIL import Image
from pydantic import SecretStr
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from nano_banana import usecases
from nano_banana.adapters.limits_memory import MemoryLimits
from nano_banana.adapters.postgres import PostgresJobStore
from nano_banana.adapters.webhook_sender import WebhookSender
from nano_banana.domain import Job, VariantUpload, webhook_id
from nano_banana.embedded_pg import EmbeddedPostgres
from nano_banana.errors import IdempotencyConflict, TransientError, WebhookUrlInvalid
from nano_banana.http import job_renderer
from nano_banana.images import inspect_image
from nano_banana.settings import Settings
from nano_banana.usecases import notifying
from tests.support.memory_blobs import MemoryBlobStore
from tests.support.recording_queue import RecordingQueue
from tests.support.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.postgres

OLD_SECRET = "whsec_b2xkLXNlY3JldC1vbGQtc2VjcmV0LW9sZA=="
NEW_SECRET = "whsec_bmV3LXNlY3JldC1uZXctc2VjcmV0LW5ldw=="


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (9, 8, 7)).save(buf, "PNG")
    return buf.getvalue()


class Stack:
    def __init__(self, store: PostgresJobStore, *, resolve_to: list[str] | None = None) -> None:
        self.store = store
        self.user, self.project = uuid.uuid4(), uuid.uuid4()
        self.queue = RecordingQueue()
        self.blobs = MemoryBlobStore()
        settings = Settings(webhook_signing_secrets_list=SecretStr(f"{OLD_SECRET},{NEW_SECRET}"))
        resolver = (lambda _host, _port: list(resolve_to)) if resolve_to is not None else None
        sender = WebhookSender(notifying.policy(settings), **({"resolver": resolver} if resolver else {}))
        self.svc = usecases.Services(
            settings=settings,
            store=store,
            limits=MemoryLimits(100, 10, lambda: datetime.now(UTC)),
            queue=self.queue,
            blobs=self.blobs,
            generator_factory=None,
            processor_factory=None,
            clock=lambda: datetime.now(UTC),
            webhooks=sender,
        )
        store.add_member(self.project, self.user)

    def create(self, url: str | None, events: tuple[str, ...] | None = None, key: str | None = None) -> Job:
        data = _png()
        upload = usecases.ImageUpload(data, inspect_image(data, max_bytes=10**6, max_pixels=10**6))
        command = usecases.CreateJob(
            self.project, "golden hour", 1, None, upload=upload, idempotency_key=key, webhook_url=url,
            webhook_events=events,
        )  # fmt: skip
        return usecases.create_job(self.svc, self.user, command).job

    def succeed(self, job: Job) -> Job:
        claimed = self.store.claim_for_generation(job.id, datetime.now(UTC))
        assert claimed is not None
        path = f"jobs/{job.id}/1/0.png"
        self.blobs.put(path, _png(), "image/png")
        done = usecases.complete_job(
            self.svc, claimed, claimed.attempt, [VariantUpload(0, path, "image/png", 8, 8, 9)], None
        )
        assert done is not None
        return done

    def deliver(self, job: Job, event: str = "succeeded") -> None:
        usecases.deliver_webhook(self.svc, job.id, event, render=job_renderer(self.svc))

    def delivery(self, job: Job, event: str = "succeeded") -> Any:
        current = self.store.get_job(job.id)
        assert current is not None
        assert current.webhook is not None
        return next(d for d in current.webhook.deliveries if d.event == event)


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver()
    yield server
    server.stop()


def test_the_succeeded_delivery_is_recorded_with_the_transition_and_verifies_with_either_secret(
    pg_store: PostgresJobStore, receiver: WebhookReceiver
) -> None:
    stack = Stack(pg_store)
    job = stack.create(f"{receiver.base_url}/hooks/nano")
    assert job.webhook is not None
    assert job.webhook.events == ("succeeded", "failed", "canceled")
    done = stack.succeed(job)

    delivery = stack.delivery(done)
    assert (delivery.state, delivery.attempts) == ("pending", 0), "recorded by complete's own statement"
    webhook_tasks = [t for t in stack.queue.tasks.values() if t.kind == "webhook"]
    assert [(t.job_id, t.event) for t in webhook_tasks] == [(job.id, "succeeded")], "handed over by `ended`"

    stack.deliver(done)
    (got,) = receiver.wait_for(1)
    assert got.path == "/hooks/nano"
    assert got.headers["webhook-id"] == webhook_id(job.id, "succeeded")
    assert len(got.headers["webhook-signature"].split(" ")) == 2, "every configured secret signs"
    for secret in (OLD_SECRET, NEW_SECRET):  # the receiver may hold either side of a rotation
        payload = Webhook(secret).verify(got.body, got.headers)
        assert payload["type"] == "job.succeeded"
        assert payload["data"]["id"] == str(job.id)
        assert payload["data"]["status"] == "succeeded"
        assert payload["data"]["variants"][0]["url"], "variants carry signed URLs"
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + "A" * 32).verify(got.body, got.headers)

    settled = stack.delivery(done)
    assert (settled.state, settled.attempts, settled.last_status) == ("delivered", 1, 200)
    assert settled.delivered_at is not None
    stack.deliver(done)  # a redelivered task finds the delivery settled: nothing is sent again
    assert len(receiver.received) == 1


def test_a_receiver_answering_500_twice_then_200_gets_one_event_with_one_webhook_id(
    pg_store: PostgresJobStore,
) -> None:
    receiver = WebhookReceiver(statuses=(500, 500))
    try:
        stack = Stack(pg_store)
        done = stack.succeed(stack.create(f"{receiver.base_url}/h"))
        for _ in range(2):
            with pytest.raises(TransientError):
                stack.deliver(done)
        stack.deliver(done)
        received = receiver.wait_for(3)
    finally:
        receiver.stop()
    assert {r.headers["webhook-id"] for r in received} == {webhook_id(done.id, "succeeded")}
    assert {json.loads(r.body)["type"] for r in received} == {"job.succeeded"}
    delivery = stack.delivery(done)
    assert (delivery.state, delivery.attempts, delivery.last_status) == ("delivered", 3, 200)


def test_a_name_resolving_to_loopback_is_refused_at_delivery_and_not_retried(pg_store: PostgresJobStore) -> None:
    stack = Stack(pg_store, resolve_to=["93.184.215.14", "127.0.0.1"])  # one private address is enough
    done = stack.succeed(stack.create("https://hooks.builder.example/nano"))
    stack.deliver(done)  # no TransientError: a refusal is final
    delivery = stack.delivery(done)
    assert (delivery.state, delivery.attempts, delivery.last_status) == ("refused", 1, None)
    assert delivery.reason == "refused: loopback"


def test_a_redirect_to_a_private_address_is_not_followed(pg_store: PostgresJobStore) -> None:
    receiver = WebhookReceiver(statuses=(302,), headers={"Location": "http://10.0.0.1/internal"})
    try:
        stack = Stack(pg_store)
        done = stack.succeed(stack.create(f"{receiver.base_url}/h"))
        with pytest.raises(TransientError):
            stack.deliver(done)
        assert len(receiver.received) == 1
    finally:
        receiver.stop()
    delivery = stack.delivery(done)
    assert (delivery.state, delivery.last_status) == ("pending", 302), "a 3xx is a failed attempt, retried"


def test_410_stops_retrying(pg_store: PostgresJobStore) -> None:
    receiver = WebhookReceiver(statuses=(410,))
    try:
        stack = Stack(pg_store)
        done = stack.succeed(stack.create(f"{receiver.base_url}/h"))
        stack.deliver(done)
    finally:
        receiver.stop()
    assert stack.delivery(done).state == "gone"


def test_an_attempt_failing_past_the_retry_window_gives_up(
    pg_store: PostgresJobStore, embedded_pg: EmbeddedPostgres
) -> None:
    receiver = WebhookReceiver(statuses=(503,))
    try:
        stack = Stack(pg_store)
        done = stack.succeed(stack.create(f"{receiver.base_url}/h"))
        with psycopg.connect(embedded_pg.uri, autocommit=True) as conn:
            conn.execute(
                "update pip_ai_webhook_deliveries set created_at = now() - interval '25 hours' where job_id = %s",
                (done.id,),
            )
        stack.deliver(done)  # no TransientError: the queue stops too
    finally:
        receiver.stop()
    assert (stack.delivery(done).state, stack.delivery(done).last_status) == ("failed", 503)


def test_only_the_events_asked_for_are_recorded_and_running_is_one_delivery(
    pg_store: PostgresJobStore, receiver: WebhookReceiver
) -> None:
    stack = Stack(pg_store)
    job = stack.create(f"{receiver.base_url}/h", events=("running", "canceled"))
    for _ in range(2):  # a redelivered generate task claims again: still one `running` delivery
        assert pg_store.claim_for_generation(job.id, datetime.now(UTC)) is not None
    usecases.cancel_job(stack.svc, stack.user, job.id)
    current = pg_store.get_job(job.id)
    assert current is not None
    assert current.webhook is not None
    assert sorted(d.event for d in current.webhook.deliveries) == ["canceled", "running"]
    plain = stack.create(None)
    stack.succeed(plain)
    shown = pg_store.get_job(plain.id)
    assert shown is not None
    assert shown.webhook is None


def test_the_sweep_hands_over_a_delivery_whose_task_never_ran_and_deletion_takes_it_along(
    pg_store: PostgresJobStore, embedded_pg: EmbeddedPostgres, receiver: WebhookReceiver
) -> None:
    stack = Stack(pg_store)
    done = stack.succeed(stack.create(f"{receiver.base_url}/h"))
    stack.queue.tasks.clear()  # the enqueue after the transition was lost
    assert notifying.hand_over_unsent(stack.svc) == 0, "too young: its own task may still come"
    with psycopg.connect(embedded_pg.uri, autocommit=True) as conn:
        conn.execute(
            "update pip_ai_webhook_deliveries set created_at = now() - interval '2 minutes' where job_id = %s",
            (done.id,),
        )
    assert notifying.hand_over_unsent(stack.svc) == 1
    assert [(t.kind, t.event) for t in stack.queue.tasks.values()] == [("webhook", "succeeded")]
    assert notifying.hand_over_unsent(stack.svc) == 0, "the same task name: a second enqueue is harmless"

    usecases.delete_job(stack.svc, stack.user, done.id)
    with psycopg.connect(embedded_pg.uri, autocommit=True) as conn:
        left = conn.execute("select count(*) from pip_ai_webhook_deliveries where job_id = %s", (done.id,)).fetchone()
    assert left == (0,)


def test_the_webhook_is_part_of_the_idempotency_fingerprint(
    pg_store: PostgresJobStore, receiver: WebhookReceiver
) -> None:
    stack = Stack(pg_store)
    first = stack.create(f"{receiver.base_url}/a", key="k-1")
    assert stack.create(f"{receiver.base_url}/a", key="k-1").id == first.id
    with pytest.raises(IdempotencyConflict):
        stack.create(f"{receiver.base_url}/b", key="k-1")
    with pytest.raises(IdempotencyConflict):
        stack.create(None, key="k-1")


def test_a_refused_url_creates_nothing(pg_store: PostgresJobStore) -> None:
    stack = Stack(pg_store)
    for url in ("http://169.254.169.254/", "https://user:pass@hooks.example.com/", "ftp://hooks.example.com/"):
        with pytest.raises(WebhookUrlInvalid):
            stack.create(url)
    with pytest.raises(WebhookUrlInvalid):
        stack.create(None, events=("succeeded",))
    assert pg_store.user_jobs(stack.user) == []
    assert stack.blobs.objects == {}
    assert stack.queue.tasks == {}


def test_production_sends_no_webhooks_without_signing_secrets(pg_store: PostgresJobStore) -> None:
    stack = Stack(pg_store)
    assert Settings().webhook_signing_secrets, "make dev signs with its development secret"
    production = Settings(database_url=SecretStr("postgresql://db.example/x"), jwt_secret=SecretStr("s" * 40))
    assert production.webhook_signing_secrets == []
    assert production.webhook_http_hosts == frozenset(), "no http receivers in production unless listed"
    stack.svc.settings = production
    with pytest.raises(WebhookUrlInvalid) as refused:
        stack.create("https://hooks.example.com/")
    assert refused.value.details["reason"] == "not_configured"
    assert pg_store.user_jobs(stack.user) == []
