"""VertexGenerator: the real google-genai client against a local generateContent server."""

from __future__ import annotations

import base64
import dataclasses
import random
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from google import genai
from google.genai import types
from google.oauth2.credentials import Credentials

from nano_banana.adapters.generator_vertex import VertexGenerator
from nano_banana.domain import GenerationRequest, InlineImage, ModelUsage, Turn
from nano_banana.errors import ContentBlocked, GenerationFailed
from nano_banana.retry import Backoff
from tests.support import vertex_server as vs
from tests.support.devserver import png_bytes

pytestmark = pytest.mark.vertex
FAST = Backoff(base_s=0.05, cap_s=0.2)


@pytest.fixture
def server() -> Iterator[vs.VertexServer]:
    s = vs.VertexServer()
    yield s
    s.stop()


def generator(
    server: vs.VertexServer, model: str = "gemini-2.5-flash-image", inline_max_bytes: int = 7_000_000
) -> VertexGenerator:
    def factory() -> genai.Client:
        return genai.Client(
            vertexai=True,
            project="test-project",
            location="global",
            credentials=Credentials(token="test-token"),  # type: ignore[no-untyped-call]
            http_options=types.HttpOptions(base_url=server.url, retry_options=types.HttpRetryOptions(attempts=1)),
        )

    return VertexGenerator(
        factory,
        model,
        clock=lambda: datetime.now(UTC),
        rng=random.Random(1),
        backoff=FAST,
        inline_max_bytes=inline_max_bytes,
    )


def request(n: int = 2, history: tuple[Turn, ...] = (), aspect: str | None = "16:9") -> GenerationRequest:
    return GenerationRequest(uuid.uuid4(), "make it golden hour", png_bytes(), "image/png", n, aspect, history)


def soon(seconds: float = 10) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


def test_images_come_back_and_the_sdk_sent_what_we_meant(server: vs.VertexServer) -> None:
    history = (Turn("turn the sky orange"), Turn("now add birds"))
    result = generator(server).generate(request(2, history), deadline=soon())
    assert [(i.mime_type, i.width, i.height) for i in result.images] == [("image/png", 64, 36)] * 2
    assert result.note is None
    assert result.usage == ModelUsage(prompt_tokens=268, output_tokens=2 * 1290, total_tokens=268 + 2 * 1290)
    (sent,) = server.requests
    assert sent["match"] == {
        "version": "v1beta1",
        "project": "test-project",
        "location": "global",
        "model": "gemini-2.5-flash-image",
    }
    assert sent["headers"]["Authorization"] == "Bearer test-token"
    body = sent["body"]
    contents = body["contents"]
    assert [c["role"] for c in contents] == ["user", "user", "user"]
    assert [p["text"] for c in contents[:2] for p in c["parts"]] == ["turn the sky orange", "now add birds"]
    last = contents[-1]["parts"]
    data = last[0]["inlineData"]["data"]
    assert base64.urlsafe_b64decode(data + "=" * (-len(data) % 4)) == png_bytes()
    assert last[0]["inlineData"].get("mimeType", last[0]["inlineData"].get("mime_type")) == "image/png"
    assert last[1]["text"] == "make it golden hour"
    config = body["generationConfig"]
    assert config["candidateCount"] == 2
    assert config["responseModalities"] == ["IMAGE"]
    assert config["imageConfig"] == {"aspectRatio": "16:9"}


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (vs.safety_block, "The image was blocked."),
        (vs.prompt_block, "Prompt blocked."),
        (lambda: vs.text_only("I can't edit faces."), "I can't edit faces."),
    ],
    ids=["finish-reason", "prompt-feedback", "text-only"],
)
def test_blocks_are_content_blocked_not_errors(server: vs.VertexServer, answer: object, message: str) -> None:
    server.script = [answer]  # type: ignore[list-item]
    with pytest.raises(ContentBlocked) as info:
        generator(server).generate(request(), deadline=soon())
    assert message in info.value.message
    assert len(server.requests) == 1, "a block is not retried"


def test_transient_errors_retry_then_succeed(server: vs.VertexServer) -> None:
    server.script = [lambda: vs.error(429), lambda: vs.error(503), lambda: vs.images(2)]
    result = generator(server).generate(request(), deadline=soon())
    assert len(result.images) == 2
    assert len(server.requests) == 3


def test_persistent_500s_fail_within_the_deadline(server: vs.VertexServer) -> None:
    server.script = [lambda: vs.error(500, "backend exploded key=AIzaSECRET")]
    started = time.monotonic()
    with pytest.raises(GenerationFailed) as info:
        generator(server).generate(request(), deadline=soon(3))
    assert time.monotonic() - started < 3.5
    assert len(server.requests) >= 3
    assert "AIzaSECRET" not in info.value.message


def test_a_client_error_is_not_retried(server: vs.VertexServer) -> None:
    server.script = [lambda: vs.error(400, "image too small, see https://x.example/doc?token=abc")]
    with pytest.raises(GenerationFailed) as info:
        generator(server).generate(request(), deadline=soon())
    assert len(server.requests) == 1
    assert "token=abc" not in info.value.message
    assert "image too small" in info.value.message


def test_a_slow_model_is_cut_off_at_the_deadline(server: vs.VertexServer) -> None:
    server.delay_s = 5
    started = time.monotonic()
    with pytest.raises(GenerationFailed):
        generator(server).generate(request(), deadline=soon(2.5))
    assert time.monotonic() - started < 4, "the call timeout follows the remaining time"


def test_fewer_images_than_asked_succeed_with_a_note(server: vs.VertexServer) -> None:
    server.script = [lambda: vs.images(1)]
    result = generator(server).generate(request(3), deadline=soon())
    assert len(result.images) == 1
    assert result.note == "1 of 3 variants came back."


def test_single_candidate_models_get_parallel_calls(server: vs.VertexServer) -> None:
    server.script = [lambda: vs.images(1)]
    result = generator(server, "gemini-3-pro-image-preview").generate(request(3), deadline=soon())
    assert len(result.images) == 3
    assert len(server.requests) == 3
    assert result.usage == ModelUsage(3 * 268, 3 * 1290, 3 * (268 + 1290)), "the three calls' usageMetadata summed"
    assert {r["body"]["generationConfig"]["candidateCount"] for r in server.requests} == {1}


def test_parallel_calls_work_inside_a_running_event_loop(server: vs.VertexServer) -> None:
    import asyncio

    server.script = [lambda: vs.images(1)]

    async def inside() -> int:
        gen = generator(server, "gemini-3-pro-image-preview")
        return len(gen.generate(request(2), deadline=soon()).images)

    results: list[int] = []
    # A fresh thread, so this test's own loop can run whatever the test runner's thread already has.
    worker = threading.Thread(target=lambda: results.append(asyncio.run(inside())))
    worker.start()
    worker.join(30)
    assert results == [2]


def test_the_client_is_created_once_lazily(server: vs.VertexServer) -> None:
    made = []

    def factory() -> genai.Client:
        made.append(1)
        return genai.Client(
            vertexai=True,
            project="p",
            location="global",
            credentials=Credentials(token="t"),
            http_options=types.HttpOptions(base_url=server.url),
        )  # type: ignore[no-untyped-call]

    gen = VertexGenerator(factory, "gemini-2.5-flash-image", clock=lambda: datetime.now(UTC), backoff=FAST)
    assert made == []
    gen.generate(request(1), deadline=soon())
    gen.generate(request(1), deadline=soon())
    assert made == [1]


def test_generate_entry_point_imports_nothing_heavy() -> None:
    """Importing the entry points loads no client library: each adapter is imported when the runtime is
    built, and google.genai on the first job. (The time itself is bench/coldstart.py's to measure.)"""
    heavy = ("google.genai", "google.cloud.firestore", "google.cloud.tasks_v2", "grpc", "storage3", "psycopg", "PIL")
    code = (
        f"import sys, main, nano_banana.tasks, nano_banana.usecases; print([m for m in {heavy!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


def test_a_sideways_photo_reaches_the_model_upright(server: vs.VertexServer) -> None:
    """A phone photo stored 96x64 with EXIF orientation 6 (displayed 64x96) is sent as 64x96 pixels."""
    import io

    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    Image.new("RGB", (96, 64), (10, 200, 30)).save(buf, "JPEG", exif=exif)
    sideways = GenerationRequest(uuid.uuid4(), "brighter", buf.getvalue(), "image/jpeg", 1, None, ())
    generator(server).generate(sideways, deadline=soon())
    with Image.open(io.BytesIO(sent_image(server))) as img:
        assert img.size == (64, 96)
        assert img.format == "JPEG"
        assert img.getexif().get(0x0112, 1) == 1


def sent_image(server: vs.VertexServer) -> bytes:
    inline = server.requests[-1]["body"]["contents"][-1]["parts"][0]["inlineData"]
    return base64.urlsafe_b64decode(inline["data"] + "=" * (-len(inline["data"]) % 4))


@pytest.mark.parametrize(("fmt", "mode", "sent_format"), [("JPEG", "RGB", "JPEG"), ("PNG", "RGBA", "PNG")])
def test_an_image_over_the_inline_limit_is_sent_smaller(
    server: vs.VertexServer, fmt: str, mode: str, sent_format: str
) -> None:
    """Vertex AI takes 7 MB inline and we accept 10 MB: larger inputs are re-encoded to fit (here with a
    200 kB limit), same aspect ratio, transparency kept as PNG."""
    import io
    import os

    from PIL import Image

    noise = Image.frombytes(mode, (600, 400), os.urandom(600 * 400 * len(mode)))
    buf = io.BytesIO()
    noise.save(buf, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    big = buf.getvalue()
    assert len(big) > 250_000
    mime = f"image/{fmt.lower()}"
    generator(server, inline_max_bytes=200_000).generate(
        GenerationRequest(uuid.uuid4(), "brighter", big, mime, 1, None, ()), deadline=soon()
    )
    sent = sent_image(server)
    assert len(sent) <= 200_000
    with Image.open(io.BytesIO(sent)) as img:
        assert img.format == sent_format
        assert abs(img.width / img.height - 1.5) < 0.02
        assert img.width < 600
        assert ("A" in img.mode) == (mode == "RGBA")


def _decoded(part: dict[str, object]) -> bytes:
    blob = part["inlineData"]
    assert isinstance(blob, dict)
    data = str(blob["data"])
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


def test_references_follow_the_input_before_the_prompt_and_the_size_is_sent(server: vs.VertexServer) -> None:
    server.script = [lambda: vs.images(1)]
    logo, style = png_bytes(color=(0, 0, 255)), png_bytes(color=(0, 255, 0))
    asked = dataclasses.replace(
        request(1),
        model="gemini-3-pro-image-preview",
        resolution="2K",
        references=(InlineImage(logo, "image/png"), InlineImage(style, "image/png")),
    )
    # The generator's own model is the default; the request's model is the one called.
    assert len(generator(server).generate(asked, deadline=soon()).images) == 1
    (sent,) = server.requests
    assert sent["refusal"] is None
    assert sent["match"]["model"] == "gemini-3-pro-image-preview"
    parts = sent["body"]["contents"][-1]["parts"]
    assert [_decoded(p) for p in parts[:3]] == [png_bytes(), logo, style]
    assert parts[3] == {"text": "make it golden hour"}
    assert sent["body"]["generationConfig"]["imageConfig"] == {"aspectRatio": "16:9", "imageSize": "2K"}


def test_a_model_without_sizes_is_sent_none(server: vs.VertexServer) -> None:
    asked = dataclasses.replace(request(2, aspect=None), model="gemini-2.5-flash-image", resolution="1K")
    assert len(generator(server).generate(asked, deadline=soon()).images) == 2
    (sent,) = server.requests
    assert sent["refusal"] is None
    assert "imageConfig" not in sent["body"]["generationConfig"]


def test_the_stand_in_refuses_what_vertex_refuses(server: vs.VertexServer) -> None:
    """Too many images for the model, and an imageSize for a model without sizes: 400, not retried."""
    refs = tuple(InlineImage(png_bytes(color=(i, 0, 0)), "image/png") for i in range(3))
    too_many = dataclasses.replace(request(1), model="gemini-2.5-flash-image", references=refs)
    with pytest.raises(GenerationFailed) as info:
        generator(server).generate(too_many, deadline=soon())
    assert "(400)" in info.value.message
    assert "at most 3" in info.value.message
    client = generator(server).client
    with pytest.raises(genai.errors.ClientError) as refused:
        client.models.generate_content(
            model="gemini-2.5-flash-image",
            contents="a banana",
            config=types.GenerateContentConfig(image_config=types.ImageConfig(image_size="2K")),
        )
    assert refused.value.code == 400
    assert [r["refusal"] is not None for r in server.requests] == [True, True]
    assert "does not support imageConfig.imageSize" in str(server.requests[-1]["refusal"])
    # Within the limits both pass: 3 images for Flash, a size for Pro.
    server.script = [lambda: vs.images(1)]
    assert generator(server).generate(dataclasses.replace(too_many, references=refs[:2]), deadline=soon()).images
    assert client.models.generate_content(
        model="gemini-3-pro-image-preview",
        contents="a banana",
        config=types.GenerateContentConfig(image_config=types.ImageConfig(image_size="4K")),
    ).candidates
