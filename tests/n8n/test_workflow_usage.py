"""The shipped n8n workflow reports what the model used (Vertex usageMetadata) with its result, and the
service records it on the job: tokens on a success, on a block where the model said, none where it did not."""

from __future__ import annotations

import pytest

from tests.n8n.test_workflow_in_n8n import _run
from tests.support.devserver import DevServer
from tests.support.vertex_server import IMAGE_TOKENS, PROMPT_TOKENS, VertexServer, images, safety_block

pytestmark = pytest.mark.n8n


def test_a_success_reports_the_models_tokens(service: DevServer, vertex: VertexServer) -> None:
    vertex.script = [lambda: images(2)]
    s = service.session()
    job = _run(service, s, variant_count=2)
    assert job["status"] == "succeeded", job
    assert job["usage"] | {"model": None} == {
        "model": None,
        "images": 2,
        "promptTokens": PROMPT_TOKENS,
        "outputTokens": 2 * IMAGE_TOKENS,
        "totalTokens": PROMPT_TOKENS + 2 * IMAGE_TOKENS,
    }


def test_a_block_without_usage_metadata_reports_no_tokens(service: DevServer, vertex: VertexServer) -> None:
    vertex.script = [safety_block]
    s = service.session()
    job = _run(service, s)
    assert (job["status"], job["errorCode"]) == ("failed", "content_blocked")
    assert (job["usage"]["images"], job["usage"]["totalTokens"]) == (0, None)
