"""The local Vertex server refuses what Vertex refuses (the old workflow's image-less request passed it)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.vertex_server import VertexServer

pytestmark = [pytest.mark.unit, pytest.mark.vertex]
PATH = "/v1/projects/p/locations/global/publishers/google/models/gemini-2.5-flash-image:generateContent"
PRO_PATH = PATH.replace("gemini-2.5-flash-image", "gemini-3-pro-image-preview")
IMAGE = {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}}


@pytest.fixture(scope="module")
def server() -> Iterator[VertexServer]:
    vertex = VertexServer()
    yield vertex
    vertex.stop()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"contents": [{"role": "user", "parts": [{"inlineData": {"mimeType": "image/png"}}, {"text": "x"}]}]},
            "empty inlineData",
        ),
        ({"contents": [{"role": "user", "parts": [IMAGE]}], "generationConfig": {"retry": 3}}, 'Unknown name "retry"'),
        (
            {"contents": [{"role": "user", "parts": [{"text": "x", "image": "y"}]}]},
            "Unknown name \"image\" at 'contents[0].parts[0]'",
        ),
        ({"generationConfig": {"candidateCount": 1}}, "empty contents"),
        ({"contents": [{"role": "user", "parts": []}]}, "at least one parts field"),
    ],
    ids=["inline-without-data", "unknown-config-field", "unknown-part-field", "no-contents", "no-parts"],
)
def test_invalid_requests_are_400_invalid_argument(server: VertexServer, body: dict[str, Any], message: str) -> None:
    answer = httpx.post(server.url + PATH, json=body)
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert (error["code"], error["status"]) == (400, "INVALID_ARGUMENT")
    assert message in error["message"]


def test_a_valid_request_in_snake_case_is_answered(server: VertexServer) -> None:
    body = {
        "contents": [{"role": "user", "parts": [{"inline_data": {"mime_type": "image/png", "data": "AA=="}}]}],
        "generation_config": {"response_modalities": ["IMAGE"], "image_config": {"aspect_ratio": "1:1"}},
    }
    assert httpx.post(server.url + PATH, json=body).status_code == 200


def _images(n: int, **config: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"contents": [{"role": "user", "parts": [*[IMAGE] * n, {"text": "x"}]}]}
    if config:
        body["generationConfig"] = {"imageConfig": config}
    return body


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        (PATH, _images(4), "4 images; gemini-2.5-flash-image accepts at most 3"),
        (PRO_PATH, _images(15), "15 images; gemini-3-pro-image-preview accepts at most 14"),
        (PATH, _images(1, imageSize="1K"), "gemini-2.5-flash-image does not support imageConfig.imageSize"),
        (PRO_PATH, _images(1, imageSize="8K"), "supported values are 1K, 2K and 4K"),
    ],
    ids=["flash-4-images", "pro-15-images", "flash-image-size", "pro-unknown-size"],
)
def test_model_limits_are_400_invalid_argument(
    server: VertexServer, path: str, body: dict[str, Any], message: str
) -> None:
    answer = httpx.post(server.url + path, json=body)
    assert answer.status_code == 400
    assert message in answer.json()["error"]["message"]


def test_within_the_model_limits_is_answered(server: VertexServer) -> None:
    assert httpx.post(server.url + PATH, json=_images(3)).status_code == 200
    assert httpx.post(server.url + PRO_PATH, json=_images(14, imageSize="4K")).status_code == 200
