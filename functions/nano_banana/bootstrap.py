"""The one composition root: builds every adapter from settings and hands them to the use cases.

Adapters are imported only when selected, and the generator is created on first use, so the `api`
entry point never imports google.genai. The Firestore limits and the Cloud Tasks queue are built on
first use too (nano_banana.deferred), so an `api` instance answering GETs never imports them; the entry
points warm them (`Runtime.warm_up_writes`) in the background, never inside `build()`.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from nano_banana import images, usecases
from nano_banana import log as logs
from nano_banana.auth import TokenVerifier
from nano_banana.deferred import DeferredLimits, DeferredQueue, Once
from nano_banana.http import Api
from nano_banana.ports import (
    BlobStore,
    Clock,
    ImageGenerator,
    JobStore,
    Limits,
    Processor,
    Task,
    TaskHandler,
    TaskQueue,
)
from nano_banana.settings import Settings
from nano_banana.signing import UrlSigner
from nano_banana.tickets import StreamTickets

_log = logging.getLogger("nano_banana")


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Runtime:
    """Everything one process serves with; `close()` releases pools, threads and the embedded server."""

    settings: Settings
    services: usecases.Services
    api: Api
    _warm_ups: set[str] = field(default_factory=set, repr=False)
    _warm_ups_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def close(self) -> None:
        with self._warm_ups_lock:
            self._warm_ups.add("closed")  # no warm-up starts after this
        self.services.close()

    def warm_up_reads(self) -> None:
        """In the background, once: what any first request waits for besides Postgres (whose pool opens
        its first connection by itself): the JWKS keys and a connection to Storage."""
        self._start_once("reads", self._warm_reads)

    def warm_up_writes(self) -> None:
        """In the background, once: build the Firestore limits and the Cloud Tasks queue (their imports,
        clients and channels) and warm them, so a first job does not pay for it. The `api` entry point
        calls this when a write begins and after its first answer, never before a GET's answer."""
        self._start_once("writes", self._warm_writes)

    def _start_once(self, name: str, target: Callable[[], None]) -> None:
        if not self.settings.warm_up:
            return
        with self._warm_ups_lock:
            if name in self._warm_ups or "closed" in self._warm_ups:
                return
            self._warm_ups.add(name)
        threading.Thread(target=target, name=f"warm-up-{name}", daemon=True).start()

    def _warm_reads(self) -> None:
        self.api.verifier.prefetch()
        if (warm_up := getattr(self.services.blobs, "warm_up", None)) is not None:
            warm_up()

    def _warm_writes(self) -> None:
        warm_up_clients(self.services.limits, self.services.queue)


def warm_up_clients(*ports: object) -> list[threading.Thread]:
    """Build deferred adapters now and warm each one that can be; Firestore's warm-up runs in a thread of
    its own (returned). Nothing raises: the first call that needs an adapter builds it again and reports
    its error."""
    started = time.monotonic()
    try:
        built = [port.prepare() if isinstance(port, DeferredLimits | DeferredQueue) else port for port in ports]
    except Exception as exc:
        _log.warning(
            "could not build the limits or queue client ahead of need",
            extra={
                "event": "write_clients_build_failed",
                "errorType": type(exc).__name__,
                "durationMs": round((time.monotonic() - started) * 1000),
            },
        )
        return []
    if any(isinstance(port, DeferredLimits | DeferredQueue) for port in ports):
        _log.info(
            "limits and queue clients built",
            extra={"event": "write_clients_built", "durationMs": round((time.monotonic() - started) * 1000)},
        )
    threads: list[threading.Thread] = []
    for adapter in built:
        if (in_background := getattr(adapter, "warm_up_in_background", None)) is not None:
            threads.append(in_background())
        elif (warm_up := getattr(adapter, "warm_up", None)) is not None:
            warm_up()
    return threads


def blob_signing_key(settings: Settings) -> bytes:
    return hmac.new(
        settings.jwt_secret.get_secret_value().encode(), b"nano-banana/local-blobs", hashlib.sha256
    ).digest()


def build_store(settings: Settings, closers: list[Callable[[], None]], extras: dict[str, Any]) -> JobStore:
    from nano_banana.adapters.postgres import PostgresJobStore

    if settings.database_url is not None:
        conninfo = settings.database_url.get_secret_value()
    else:
        from nano_banana.embedded_pg import EmbeddedPostgres
        from nano_banana.migrations import apply_migrations

        pg = EmbeddedPostgres(settings.data_dir / "postgres")
        extras["embedded_postgres"] = pg
        conninfo = pg.uri
        apply_migrations(conninfo)
    listen = settings.listen_database_url.get_secret_value() if settings.listen_database_url is not None else None
    store = PostgresJobStore(
        conninfo,
        connect_timeout_s=settings.db_connect_timeout_s,
        max_size=settings.db_pool_max,
        listen_conninfo=listen,
    )
    closers.append(store.close)
    return store


def build_limits(settings: Settings, clock: Clock) -> Limits:
    """The selected adapter, cold: `Runtime.warm_up_writes` warms Firestore's channel in the background."""
    if settings.limits == "firestore":
        from google.cloud import firestore

        from nano_banana.adapters.limits_firestore import FirestoreLimits

        client = firestore.Client(project=settings.gcp_project, database=settings.firestore_database)
        return FirestoreLimits(
            client, settings.firestore_collection_prefix, settings.rate_per_hour, settings.max_active_per_project, clock
        )
    from nano_banana.adapters.limits_memory import MemoryLimits

    return MemoryLimits(settings.rate_per_hour, settings.max_active_per_project, clock)


def build_queue(settings: Settings, clock: Clock, closers: list[Callable[[], None]]) -> TaskQueue:
    if settings.queue == "cloudtasks":
        from google.cloud import tasks_v2

        from nano_banana.adapters.queue_cloudtasks import CloudTasksQueue

        if settings.tasks_endpoint:  # a local CloudTasks server (tests); production uses Google's endpoint
            import grpc
            from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport

            channel = grpc.insecure_channel(settings.tasks_endpoint)
            closers.append(channel.close)
            client = tasks_v2.CloudTasksClient(transport=CloudTasksGrpcTransport(channel=channel))
        else:
            client = tasks_v2.CloudTasksClient()
        queue_path = client.queue_path(settings.gcp_project or "local", settings.gcp_location, settings.tasks_queue)
        return CloudTasksQueue(
            client,
            queue_path,
            str(settings.generate_url),
            str(settings.expire_url),
            settings.tasks_service_account,
            settings.task_oidc_audience,
            clock,
        )
    from nano_banana.adapters.queue_inline import InlineQueue

    queue = InlineQueue(None, clock)
    closers.insert(0, queue.close)
    return queue


def build_blobs(settings: Settings, clock: Clock) -> BlobStore:
    if settings.storage == "supabase":
        from nano_banana.adapters.blobs_supabase import SupabaseBlobStore

        assert settings.supabase_url is not None
        assert settings.supabase_service_key is not None
        return SupabaseBlobStore(
            settings.supabase_url, settings.supabase_service_key.get_secret_value(), settings.bucket, timeout_s=10.0
        )
    from nano_banana.adapters.blobs_local import LocalBlobStore

    return LocalBlobStore(settings.data_dir / "blobs", settings.base_url, blob_signing_key(settings), clock)


def build_generator(settings: Settings, clock: Clock) -> ImageGenerator:
    if settings.generator == "vertex":
        from nano_banana.adapters.generator_vertex import VertexGenerator, client_factory

        return VertexGenerator(
            client_factory(settings),
            settings.model,
            clock=clock,
            max_pixels=settings.max_pixels,
            inline_max_bytes=settings.vertex_inline_max_bytes,
        )
    from nano_banana.adapters.generator_preview import PreviewGenerator

    return PreviewGenerator(settings.preview_delay_ms, settings.max_pixels)


def build_processor(settings: Settings, clock: Clock) -> Processor:
    from nano_banana.adapters.processor_n8n import N8nProcessor

    assert settings.n8n_webhook_url is not None
    return N8nProcessor(settings.n8n_webhook_url, settings.callback_secrets, clock=clock)


def dispatch(services: usecases.Services, task: Task, *, first_delivery: bool = False) -> None:
    """What an in-process queue delivers to: the same use cases the task entry points call, told what
    Cloud Tasks' X-CloudTasks-TaskRetryCount tells them (a first delivery's generate task that finds no row
    yet raises, so the queue delivers it again and it stays pending meanwhile, as with Cloud Tasks)."""
    if task.kind == "generate":
        usecases.run_generation(services, task.job_id, retry_if_missing=first_delivery)
    else:
        usecases.expire_job(services, task.job_id)


def task_handler(services: usecases.Services) -> TaskHandler:
    """The handler an in-process queue calls with each delivery and its retry count."""
    return lambda task, retries: dispatch(services, task, first_delivery=retries == 0)


def build(settings: Settings, *, clock: Clock = utc_now) -> Runtime:
    """Wire every adapter the settings select. Tests call this with their own settings and clock."""
    logs.configure(settings.log_level)
    images.configure_budgets(
        upload_bytes=settings.upload_memory_mb * images.MIB, decode_bytes=settings.decode_memory_mb * images.MIB
    )
    closers: list[Callable[[], None]] = []
    extras: dict[str, Any] = {}
    store = build_store(settings, closers, extras)
    queue: TaskQueue = (
        DeferredQueue(lambda: build_queue(settings, clock, closers))
        if settings.queue == "cloudtasks"
        else build_queue(settings, clock, closers)
    )
    limits: Limits = (
        DeferredLimits(lambda: build_limits(settings, clock))
        if settings.limits == "firestore"
        else build_limits(settings, clock)
    )
    generator = Once(lambda: build_generator(settings, clock)) if settings.generator != "n8n" else None
    processor = Once(lambda: build_processor(settings, clock)) if settings.generator == "n8n" else None
    services = usecases.Services(
        settings=settings,
        store=store,
        limits=limits,
        queue=queue,
        blobs=build_blobs(settings, clock),
        generator_factory=generator.get if generator else None,
        processor_factory=processor.get if processor else None,
        clock=clock,
        extras=extras,
        closers=closers,
    )
    if (bind := getattr(queue, "bind", None)) is not None:
        bind(task_handler(services))
    if "embedded_postgres" in extras:
        closers.append(extras["embedded_postgres"].stop)  # last: after the pool closed
    verifier = TokenVerifier(
        secret=settings.jwt_secret.get_secret_value(), audience=settings.jwt_audience, jwks_url=settings.jwks_url
    )
    return Runtime(
        settings=settings,
        services=services,
        api=Api(
            services=services,
            verifier=verifier,
            tickets=StreamTickets(settings.jwt_secret.get_secret_value()),
            signer=UrlSigner(services.blobs, ttl_s=settings.signed_url_ttl_s, clock=services.clock),
        ),
    )
