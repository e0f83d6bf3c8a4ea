"""The service's side of the hand-off: only n8n's `{"accepted": true, "jobId": <this job>}` counts; the
request is signed with every configured key. No n8n process: an httpx transport plays the answers."""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from nano_banana import webhooks
from nano_banana.adapters.processor_n8n import N8nProcessor
from nano_banana.domain import GenerationRequest, InlineImage, Job, JobStatus
from nano_banana.errors import InvalidSignature, ProcessorUnavailable
from nano_banana.ports import ProcessorJob

pytestmark = [pytest.mark.unit, pytest.mark.callback]
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def _work(attempt: int = 2) -> ProcessorJob:
    job_id = uuid.uuid4()
    job = Job(
        id=job_id,
        project_id=uuid.uuid4(),
        user_id=uuid.uuid4(),
        thread_id=job_id,
        parent_job_id=None,
        source_variant_id=None,
        prompt="brighter",
        input_path="inputs/u/x.png",
        input_mime_type="image/png",
        input_width=4,
        input_height=4,
        status=JobStatus.running,
        error_code=None,
        error_message=None,
        variant_count=1,
        aspect_ratio=None,
        model="gemini-2.5-flash-image",
        attempt=attempt,
        created_at=NOW,
        started_at=NOW,
        finished_at=None,
        deadline_at=NOW + timedelta(minutes=5),
        updated_at=NOW,
    )
    request = GenerationRequest(job_id, "brighter", b"png", "image/png", 1, None)
    return ProcessorJob(job, request, "http://s/in", f"jobs/{job_id}/{attempt}/", ("http://s/up0",), "http://s/cb")


def _processor(
    answer: Callable[[httpx.Request], httpx.Response], keys: list[str], seen: list[httpx.Request]
) -> N8nProcessor:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answer(request)

    clock = iter(NOW + timedelta(seconds=i) for i in range(10_000))
    return N8nProcessor(
        "http://n8n/webhook/pip-ai-nano-banana",
        keys,
        clock=lambda: next(clock),
        base_backoff_s=0.0,
        client=httpx.Client(transport=httpx.MockTransport(handler)),
    )


def _accept(request: httpx.Request) -> httpx.Response:
    return httpx.Response(202, json={"accepted": True, "jobId": json.loads(request.content)["jobId"]})


def test_an_accepted_hand_off_is_signed_with_every_key_and_names_the_attempt() -> None:
    seen: list[httpx.Request] = []
    work = _work(attempt=2)
    _processor(_accept, ["new-key", "old-key"], seen).submit(work, deadline=work.job.deadline_at)
    (request,) = seen
    assert json.loads(request.content)["attempt"] == 2
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    stamp = datetime.fromtimestamp(int(request.headers["webhook-timestamp"]), tz=UTC)
    for keys in (["old-key"], ["new-key"]):  # n8n holding either key alone verifies it
        webhooks.verify(request.content, dict(request.headers), keys, tolerance_s=300, now=stamp)
    with pytest.raises(InvalidSignature):
        webhooks.verify(request.content, dict(request.headers), ["other"], tolerance_s=300, now=stamp)


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(200),
        httpx.Response(200, text="Workflow was started"),
        httpx.Response(202, json={"accepted": True, "jobId": str(uuid.uuid4())}),
        httpx.Response(202, json={"accepted": False}),
        httpx.Response(401, json={"error": "invalid_signature"}),
    ],
    ids=["empty-200", "not-json", "another-job", "not-accepted", "401"],
)
def test_anything_but_accepting_this_job_is_retried_then_processor_unavailable(answer: httpx.Response) -> None:
    seen: list[httpx.Request] = []
    work = _work()
    processor = _processor(lambda _: answer, ["k"], seen)
    with pytest.raises(ProcessorUnavailable):
        processor.submit(work, deadline=NOW + timedelta(seconds=20))
    assert len(seen) > 1, "retried while the deadline allowed"


def test_a_refusal_then_acceptance_is_a_hand_off() -> None:
    seen: list[httpx.Request] = []
    answers = iter([httpx.Response(200)])
    work = _work()
    processor = _processor(lambda r: next(answers, None) or _accept(r), ["k"], seen)
    processor.submit(work, deadline=work.job.deadline_at)
    assert len(seen) == 2


@pytest.mark.parametrize(
    ("model", "size"), [("gemini-3-pro-image-preview", "2K"), ("gemini-2.5-flash-image", None)], ids=["pro", "flash"]
)
def test_the_hand_off_names_the_model_the_size_and_the_references(model: str, size: str | None) -> None:
    seen: list[httpx.Request] = []
    work = _work()
    refs = (InlineImage(b"logo", "image/png"), InlineImage(b"style", "image/jpeg"))
    request = dataclasses.replace(work.request, model=model, resolution="2K", references=refs)
    work = dataclasses.replace(work, request=request, reference_urls=("http://s/ref0", "http://s/ref1"))
    _processor(_accept, ["key"], seen).submit(work, deadline=work.job.deadline_at)
    body = json.loads(seen[0].content)
    assert (body["model"], body["imageSize"]) == (model, size), "Flash takes no imageSize"
    assert body["references"] == [
        {"url": "http://s/ref0", "mimeType": "image/png"},
        {"url": "http://s/ref1", "mimeType": "image/jpeg"},
    ]
