"""The generate step runs its independent round trips side by side (issue 18): the N output uploads, the
input download with the thread history, and the end-of-job slot release, expire-task delete and output
listing. Barriers make it structural: a barrier only opens when all its parties are inside at once, so
calls made one after another break it (after its timeout) instead of passing."""

from __future__ import annotations

import io
import threading
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime

import pytest
from PIL import Image

from nano_banana import usecases
from nano_banana.adapters.limits_memory import MemoryLimits
from nano_banana.adapters.postgres import PostgresJobStore
from nano_banana.domain import GeneratedImage, GenerationRequest, GenerationResult, Job, job_prefix, output_path
from nano_banana.embedded_pg import EmbeddedPostgres
from nano_banana.errors import TransientError, Unavailable
from nano_banana.images import inspect_image
from nano_banana.ports import task_name
from nano_banana.settings import Settings
from tests.support.memory_blobs import MemoryBlobStore
from tests.support.recording_queue import RecordingQueue

pytestmark = pytest.mark.postgres
WAIT_S = 5  # how long a barrier waits for its other parties before it breaks


def now() -> datetime:
    return datetime.now(UTC)


def png(color: tuple[int, int, int] = (10, 20, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), color).save(buf, "PNG")
    return buf.getvalue()


class InstantGenerator:
    def generate(self, request: GenerationRequest, *, deadline: datetime) -> GenerationResult:
        data = png((200, 100, 0))
        return GenerationResult(tuple(GeneratedImage(data, "image/png", 40, 30) for _ in range(request.variant_count)))


class Gate:
    """Calls that must be in flight together: `enter` returns only once `parties` calls are inside."""

    def __init__(self, parties: int) -> None:
        self.barrier = threading.Barrier(parties, timeout=WAIT_S)
        self.passed: list[str] = []
        self.armed = True
        self._lock = threading.Lock()

    def enter(self, name: str) -> None:
        if not self.armed:
            return
        self.barrier.wait()  # BrokenBarrierError when the others never came
        with self._lock:
            self.passed.append(name)


class GatedBlobs(MemoryBlobStore):
    """Output uploads, output listings and input downloads pass through gates (when one is set)."""

    def __init__(self) -> None:
        super().__init__()
        self.uploads: Gate | None = None
        self.listing: Gate | None = None
        self.download: Gate | None = None
        self.refuse: set[str] = set()  # output paths whose upload fails (Unavailable) at once
        self.attempted: list[str] = []

    def put(self, path: str, data: bytes, content_type: str) -> None:
        if path.startswith("jobs/"):
            with self._lock:
                self.attempted.append(path)
            if path in self.refuse:
                raise Unavailable("storage refused the upload")
            if self.uploads is not None:
                self.uploads.enter(path)
        super().put(path, data, content_type)

    def list(self, prefix: str) -> list[str]:
        if self.listing is not None and prefix.startswith("jobs/"):
            self.listing.enter("list outputs")
        return super().list(prefix)

    def get(self, path: str, *, max_bytes: int) -> bytes:
        if self.download is not None:
            self.download.enter("download input")
        return super().get(path, max_bytes=max_bytes)


class GatedLimits(MemoryLimits):
    gate: Gate | None = None

    def release_slot(self, *, project_id: uuid.UUID, job_id: uuid.UUID) -> None:
        if self.gate is not None:
            self.gate.enter("release slot")
        super().release_slot(project_id=project_id, job_id=job_id)


class GatedQueue(RecordingQueue):
    gate: Gate | None = None

    def delete(self, kind: str, job_id: uuid.UUID) -> None:  # type: ignore[override]
        if self.gate is not None:
            self.gate.enter(f"delete {kind} task")
        super().delete(kind, job_id)  # type: ignore[arg-type]


class GatedStore(PostgresJobStore):
    gate: Gate | None = None

    def thread_history(self, job: Job) -> list[Job]:
        if self.gate is not None:
            self.gate.enter("thread history")
        return super().thread_history(job)


@pytest.fixture
def store(pg_store: PostgresJobStore, embedded_pg: EmbeddedPostgres) -> Iterator[GatedStore]:
    """A store on the freshly truncated tables of `pg_store`, with a gate on the thread history."""
    gated = GatedStore(embedded_pg.uri, max_size=8)
    yield gated
    gated.close()


def services(store: PostgresJobStore) -> usecases.Services:
    generator = InstantGenerator()
    return usecases.Services(
        settings=Settings(),
        store=store,
        limits=GatedLimits(1000, 100, now),
        queue=GatedQueue(),
        blobs=GatedBlobs(),
        generator_factory=lambda: generator,
        processor_factory=None,
        clock=now,
    )


def queued(svc: usecases.Services, variants: int) -> Job:
    user, project = uuid.uuid4(), uuid.uuid4()
    svc.store.add_member(project, user)
    data = png()
    upload = usecases.ImageUpload(data, inspect_image(data, max_bytes=10**6, max_pixels=10**6))
    return usecases.create_job(svc, user, usecases.CreateJob(project, "edit", variants, None, upload=upload)).job


def blobs(svc: usecases.Services) -> GatedBlobs:
    assert isinstance(svc.blobs, GatedBlobs)
    return svc.blobs


def outputs(svc: usecases.Services, job: Job) -> Sequence[str]:
    return MemoryBlobStore.list(blobs(svc), job_prefix(job.id))


def test_the_variant_uploads_run_at_once(store: GatedStore) -> None:
    svc = services(store)
    job = queued(svc, 4)
    blobs(svc).uploads = Gate(4)
    done = usecases.run_generation(svc, job.id)
    assert done is not None
    assert done.status.value == "succeeded"
    assert sorted(v.storage_path for v in done.variants) == sorted(blobs(svc).uploads.passed)  # type: ignore[union-attr]
    assert len(done.variants) == 4
    assert sorted(outputs(svc, job)) == sorted(v.storage_path for v in done.variants)


def test_a_failed_upload_deletes_every_output_and_the_redelivery_succeeds(store: GatedStore) -> None:
    svc = services(store)
    job = queued(svc, 3)
    first = [output_path(job.id, 1, i, "image/png") for i in range(3)]
    blobs(svc).refuse = {first[0]}
    blobs(svc).uploads = Gate(2)  # the other two are uploaded, side by side, whatever the first did
    with pytest.raises(TransientError):
        usecases.run_generation(svc, job.id)
    assert sorted(blobs(svc).attempted) == first
    assert sorted(blobs(svc).uploads.passed) == first[1:]  # type: ignore[union-attr]
    assert outputs(svc, job) == [], "what was uploaded is deleted once every upload has ended"
    running = svc.store.get_job(job.id)
    assert running is not None
    assert running.status.value == "running", "a storage outage is retried (503), not a failed job"
    assert running.variants == ()

    blobs(svc).refuse, blobs(svc).uploads = set(), None
    done = usecases.run_generation(svc, job.id)
    assert done is not None
    assert done.status.value == "succeeded"
    assert sorted(outputs(svc, job)) == sorted(v.storage_path for v in done.variants)
    assert len(done.variants) == 3


def test_the_end_of_a_job_releases_drops_and_lists_at_once(store: GatedStore) -> None:
    svc = services(store)
    job = queued(svc, 2)
    gate = Gate(3)
    limits, queue = svc.limits, svc.queue
    assert isinstance(limits, GatedLimits)
    assert isinstance(queue, GatedQueue)
    limits.gate = queue.gate = blobs(svc).listing = gate
    done = usecases.run_generation(svc, job.id)
    assert done is not None
    assert done.status.value == "succeeded"
    assert sorted(gate.passed) == ["delete expire task", "list outputs", "release slot"]
    assert limits.active_jobs(job.project_id) == []
    assert task_name("expire", job.id) in queue.deleted


def test_a_canceled_job_releases_drops_and_deletes_its_outputs_at_once(store: GatedStore) -> None:
    svc = services(store)
    job = queued(svc, 2)
    stray = f"{job_prefix(job.id)}1/0.png"  # a worker's upload before the cancel
    blobs(svc).put(stray, png(), "image/png")
    gate = Gate(3)
    limits, queue = svc.limits, svc.queue
    assert isinstance(limits, GatedLimits)
    assert isinstance(queue, GatedQueue)
    limits.gate = queue.gate = blobs(svc).listing = gate
    canceled = usecases.cancel_job(svc, job.user_id, job.id)
    assert canceled.status.value == "canceled"
    assert sorted(gate.passed) == ["delete expire task", "list outputs", "release slot"]
    assert outputs(svc, job) == []
    assert limits.active_jobs(job.project_id) == []


def test_a_refinement_reads_its_input_and_its_thread_at_once(store: GatedStore) -> None:
    svc = services(store)
    parent = usecases.run_generation(svc, queued(svc, 2).id)
    assert parent is not None
    assert parent.status.value == "succeeded"
    created = usecases.refine(svc, parent.user_id, usecases.Refine(parent.id, parent.variants[0].id, "more"))
    gate = Gate(2)
    store.gate = blobs(svc).download = gate
    done = usecases.run_generation(svc, created.job.id)
    assert done is not None
    assert done.status.value == "succeeded"
    assert sorted(gate.passed) == ["download input", "thread history"]
