"""The generate use case with the Vertex generator (local server) and real Postgres."""

from __future__ import annotations

import io
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from PIL import Image

from nano_banana import usecases
from nano_banana.adapters.limits_memory import MemoryLimits
from nano_banana.adapters.postgres import PostgresJobStore
from nano_banana.images import inspect_image
from nano_banana.settings import Settings
from tests.integration.vertex_storage.test_vertex import generator
from tests.support import vertex_server as vs
from tests.support.memory_blobs import MemoryBlobStore
from tests.support.recording_queue import RecordingQueue

pytestmark = [pytest.mark.vertex, pytest.mark.postgres]


def now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture
def server() -> Iterator[vs.VertexServer]:
    s = vs.VertexServer()
    yield s
    s.stop()


def services(pg_store: PostgresJobStore, server: vs.VertexServer) -> usecases.Services:
    cfg = Settings(NANO_BANANA_GENERATOR="vertex", NANO_BANANA_TIMEOUT_S=20)
    gen = generator(server)
    return usecases.Services(
        settings=cfg,
        store=pg_store,
        limits=MemoryLimits(100, 10, now),
        queue=RecordingQueue(),
        blobs=MemoryBlobStore(),
        generator_factory=lambda: gen,
        processor_factory=None,
        clock=now,
    )


def create(svc: usecases.Services, n: int = 2) -> uuid.UUID:
    user, project = uuid.uuid4(), uuid.uuid4()
    svc.store.add_member(project, user)
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (1, 2, 3)).save(buf, "PNG")
    data = buf.getvalue()
    upload = usecases.ImageUpload(data, inspect_image(data, max_bytes=10**6, max_pixels=10**6))
    return usecases.create_job(svc, user, usecases.CreateJob(project, "edit", n, "4:3", upload=upload)).job.id


def test_success_partial_and_blocked(pg_store: PostgresJobStore, server: vs.VertexServer) -> None:
    svc = services(pg_store, server)
    server.script = [lambda: vs.images(3)]
    done = usecases.run_generation(svc, create(svc, 3))
    assert done is not None
    assert done.status.value == "succeeded"
    assert len(done.variants) == 3
    stored = svc.store.get_job(done.id)
    assert stored is not None
    assert (stored.usage.prompt_tokens, stored.usage.output_tokens, stored.usage.total_tokens) == (
        vs.PROMPT_TOKENS,
        3 * vs.IMAGE_TOKENS,
        vs.PROMPT_TOKENS + 3 * vs.IMAGE_TOKENS,
    )
    assert stored.usage.generation_ms is not None
    assert stored.usage.generation_ms >= 0
    server.script = [lambda: vs.images(1)]
    partial = usecases.run_generation(svc, create(svc, 2))
    assert partial is not None
    assert partial.note == "1 of 2 variants came back."
    server.script = [vs.safety_block]
    blocked = usecases.run_generation(svc, create(svc))
    assert blocked is not None
    assert (blocked.status.value, blocked.error_code) == ("failed", "content_blocked")
    assert blocked.usage.generation_ms is not None, "the time in the model is recorded on a failure too"
    assert blocked.usage.total_tokens is None
    assert svc.limits.active_jobs(blocked.project_id) == []


def test_cancel_while_the_model_works_leaves_nothing(pg_store: PostgresJobStore, server: vs.VertexServer) -> None:
    svc = services(pg_store, server)
    server.delay_s = 1.0
    job_id = create(svc)
    result: list[object] = []
    worker = threading.Thread(target=lambda: result.append(usecases.run_generation(svc, job_id)))
    worker.start()
    import time

    time.sleep(0.4)
    job = pg_store.get_job(job_id)
    assert job is not None
    usecases.cancel_job(svc, job.user_id, job_id)
    worker.join(10)
    assert result == [None], "the worker lost the final race"
    final = pg_store.get_job(job_id)
    assert final is not None
    assert final.status.value == "canceled"
    assert final.variants == ()
    assert svc.blobs.list(f"jobs/{job_id}/") == []
