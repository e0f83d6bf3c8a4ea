"""ImageGenerator on Vertex AI's Gemini image model ("Nano Banana") through google-genai.

Imported only when NANO_BANANA_GENERATOR=vertex, and the client is created on the first job, so the
`api` function never pays for google.genai. Every call's timeout is the job's remaining time; 429, 5xx,
timeouts and connection errors retry with full-jitter backoff while time remains; safety blocks and
text-only answers become ContentBlocked rather than errors.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
import httpx2
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from nano_banana.domain import GeneratedImage, GenerationRequest, GenerationResult, ModelUsage
from nano_banana.errors import ContentBlocked, GenerationFailed
from nano_banana.images import for_model
from nano_banana.log import redact
from nano_banana.models import ModelCapabilities, capabilities, image_size
from nano_banana.ports import Clock
from nano_banana.retry import Backoff

if TYPE_CHECKING:
    from nano_banana.settings import Settings

log = logging.getLogger("nano_banana")
T = TypeVar("T")

BLOCKED_FINISH_REASONS = frozenset(
    {
        "SAFETY",
        "IMAGE_SAFETY",
        "PROHIBITED_CONTENT",
        "IMAGE_PROHIBITED_CONTENT",
        "BLOCKLIST",
        "SPII",
        "RECITATION",
        "IMAGE_RECITATION",
    }
)
RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
# google-genai 3.x speaks httpx2; older transports raise httpx errors. Both mean "try again".
TIMEOUTS = (httpx.TimeoutException, httpx2.TimeoutException)
TRANSPORT_ERRORS = (httpx.TransportError, httpx2.TransportError)
DEFAULT_BACKOFF = Backoff(base_s=1.0, cap_s=20.0)
MIN_CALL_S = 1.0  # below this much remaining time a call cannot succeed; stop instead


def client_factory(settings: Settings) -> Callable[[], genai.Client]:
    """The production client: Vertex AI with Application Default Credentials."""

    def make() -> genai.Client:
        options = types.HttpOptions(base_url=settings.vertex_base_url, retry_options=types.HttpRetryOptions(attempts=1))
        return genai.Client(
            vertexai=True, project=settings.gcp_project, location=settings.vertex_location, http_options=options
        )

    return make


def _clean(text: str) -> str:
    """The provider's message without anything secret: tokens, keys, query strings."""
    text = redact(text)
    text = re.sub(r"(https?://[^\s?\"']+)\?[^\s\"']*", r"\1", text)
    return text[:500]


class VertexGenerator:
    def __init__(
        self,
        client_factory: Callable[[], genai.Client],
        model: str,
        *,
        clock: Clock,
        rng: random.Random | None = None,
        backoff: Backoff = DEFAULT_BACKOFF,
        max_pixels: int = 50_000_000,
        inline_max_bytes: int = 7_000_000,
    ) -> None:
        self._factory = client_factory
        self._client: genai.Client | None = None
        self._lock = threading.Lock()
        self._model = model
        self._clock = clock
        self._rng = rng or random.Random()
        self._backoff = backoff
        self._max_pixels = max_pixels
        self._inline_max_bytes = inline_max_bytes

    @property
    def client(self) -> genai.Client:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._factory()
        return self._client

    # ------------------------------------------------------------ request

    def _model_of(self, request: GenerationRequest) -> tuple[str, ModelCapabilities | None]:
        name = request.model or self._model
        return name, capabilities(name)

    def contents(self, request: GenerationRequest) -> list[types.Content]:
        """Multi-turn contents: each earlier prompt of the thread, then the input image, the references in
        their order and the new prompt. Images go upright (EXIF orientation applied to the pixels): the
        model must see what the user sees; each within the model's inline limit."""
        _, caps = self._model_of(request)
        limit = min(self._inline_max_bytes, caps.inline_max_bytes) if caps else self._inline_max_bytes
        turns: list[types.Content] = []
        for turn in request.history:
            parts = [types.Part.from_text(text=turn.prompt)]
            if turn.image is not None and turn.image_mime:
                parts.insert(0, self._image_part(turn.image, turn.image_mime, limit))
            turns.append(types.Content(role="user", parts=parts))
        final = [
            self._image_part(request.image, request.image_mime, limit),
            *(self._image_part(ref.data, ref.mime_type, limit) for ref in request.references),
            types.Part.from_text(text=request.prompt),
        ]
        turns.append(types.Content(role="user", parts=final))
        return turns

    def _image_part(self, data: bytes, mime: str, max_bytes: int) -> types.Part:
        """Inline image data, upright and within the model's inline limit (re-encoded smaller if over)."""
        data, mime = for_model(data, mime, max_bytes=max_bytes)
        return types.Part.from_bytes(data=data, mime_type=mime)

    def _config(self, request: GenerationRequest, candidates: int, timeout_s: float) -> types.GenerateContentConfig:
        """The call's config: `imageConfig.imageSize` only for a model that takes it (models.py), since
        Vertex refuses it for one that does not."""
        size = image_size(self._model_of(request)[0], request.resolution)
        image = types.ImageConfig(aspect_ratio=request.aspect_ratio, image_size=size)
        return types.GenerateContentConfig(
            response_modalities=["IMAGE"],
            candidate_count=candidates,
            image_config=image if request.aspect_ratio or size else None,
            http_options=types.HttpOptions(timeout=max(1000, int(timeout_s * 1000))),
        )

    # ------------------------------------------------------------ calls with retries

    def _remaining(self, deadline: datetime) -> float:
        return (deadline - self._clock()).total_seconds()

    def _before_call(self, deadline: datetime) -> float:
        """The time this call may take; GenerationFailed when too little of the deadline is left."""
        remaining = self._remaining(deadline)
        if remaining < MIN_CALL_S:
            raise GenerationFailed("the model did not answer before the job's deadline")
        return remaining

    def _after_failure(self, exc: Exception, attempt: int, deadline: datetime) -> float:
        """The backoff before the next attempt, or GenerationFailed when a retry cannot help or fit."""
        if isinstance(exc, genai_errors.APIError):
            if exc.code not in RETRYABLE_STATUS:
                raise GenerationFailed(
                    f"the model refused the request ({exc.code}): {_clean(exc.message or '')}"
                ) from exc
            reason = f"{exc.code} {_clean(exc.message or '')}"
        elif isinstance(exc, TIMEOUTS):
            reason = "timeout"
        elif isinstance(exc, TRANSPORT_ERRORS):
            reason = f"connection error ({type(exc).__name__})"
        else:
            raise exc
        delay = self._backoff.delay(attempt, self._rng)
        if self._remaining(deadline) - delay < MIN_CALL_S:
            raise GenerationFailed(f"the model kept failing until the deadline: {reason}") from exc
        log.warning(
            "model call retried",
            extra={"event": "vertex_retry", "attempt": attempt, "reason": reason, "delayMs": round(delay * 1000)},
        )
        return delay

    def _call(self, request: GenerationRequest, candidates: int, deadline: datetime) -> types.GenerateContentResponse:
        contents = self.contents(request)
        for attempt in itertools.count(1):
            remaining = self._before_call(deadline)
            try:
                return self.client.models.generate_content(
                    model=self._model_of(request)[0],
                    contents=contents,
                    config=self._config(request, candidates, remaining),
                )
            except (genai_errors.APIError, *TIMEOUTS, *TRANSPORT_ERRORS) as exc:
                time.sleep(self._after_failure(exc, attempt, deadline))
        raise AssertionError("unreachable")  # pragma: no cover

    async def _call_async(self, request: GenerationRequest, deadline: datetime) -> types.GenerateContentResponse:
        contents = self.contents(request)
        for attempt in itertools.count(1):
            remaining = self._before_call(deadline)
            try:
                return await self.client.aio.models.generate_content(
                    model=self._model_of(request)[0], contents=contents, config=self._config(request, 1, remaining)
                )
            except (genai_errors.APIError, *TIMEOUTS, *TRANSPORT_ERRORS) as exc:
                await asyncio.sleep(self._after_failure(exc, attempt, deadline))
        raise AssertionError("unreachable")  # pragma: no cover

    async def _gather(
        self, request: GenerationRequest, deadline: datetime
    ) -> list[types.GenerateContentResponse | BaseException]:
        calls = [self._call_async(request, deadline) for _ in range(request.variant_count)]
        return list(await asyncio.gather(*calls, return_exceptions=True))

    # ------------------------------------------------------------ the port

    def generate(self, request: GenerationRequest, *, deadline: datetime) -> GenerationResult:
        _, caps = self._model_of(request)
        if caps is not None and caps.candidates_per_call < request.variant_count:
            results = _run_coroutine(self._gather(request, deadline))
            responses = [r for r in results if isinstance(r, types.GenerateContentResponse)]
            if not responses:
                first = results[0]
                raise first if isinstance(first, Exception) else GenerationFailed("the model failed")
        else:
            responses = [self._call(request, request.variant_count, deadline)]
        images, texts, blocked = self._read(responses)
        if not images:
            if blocked or texts:
                raise ContentBlocked(
                    _clean(" ".join(texts)) or f"the model blocked the request ({', '.join(sorted(blocked))})"
                )
            raise GenerationFailed("the model returned no image")
        images = images[: request.variant_count]
        note = None
        if len(images) < request.variant_count:
            note = f"{len(images)} of {request.variant_count} variants came back."
        return GenerationResult(images=tuple(images), note=note, usage=_usage(responses))

    def _read(self, responses: list[types.GenerateContentResponse]) -> tuple[list[GeneratedImage], list[str], set[str]]:
        from PIL import Image

        images: list[GeneratedImage] = []
        texts: list[str] = []
        blocked: set[str] = set()
        for response in responses:
            feedback = response.prompt_feedback
            if feedback is not None and feedback.block_reason is not None:
                blocked.add(str(_name(feedback.block_reason)))
                if feedback.block_reason_message:
                    texts.append(feedback.block_reason_message)
            for candidate in response.candidates or []:
                reason = _name(candidate.finish_reason)
                if reason in BLOCKED_FINISH_REASONS:
                    blocked.add(reason)
                if candidate.finish_message:
                    texts.append(candidate.finish_message)
                for part in (candidate.content.parts or []) if candidate.content else []:
                    if part.inline_data is not None and part.inline_data.data:
                        data = part.inline_data.data
                        try:
                            Image.MAX_IMAGE_PIXELS = self._max_pixels
                            with Image.open(io.BytesIO(data)) as img:
                                img.load()
                                fmt = (img.format or "PNG").upper()
                                width, height = img.size
                        except Exception:
                            log.warning("model returned an undecodable image", extra={"event": "vertex_bad_image"})
                            continue
                        mime = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}.get(fmt)
                        if mime is None:
                            continue
                        images.append(GeneratedImage(data=data, mime_type=mime, width=width, height=height))
                    elif part.text:
                        texts.append(part.text)
        return images, texts, blocked


def _usage(responses: list[types.GenerateContentResponse]) -> ModelUsage:
    """The responses' `usageMetadata` summed (one call per variant on single-candidate models): prompt,
    output (candidates) and total tokens; None for a count no response reported."""
    metas = [r.usage_metadata for r in responses if r.usage_metadata is not None]

    def summed(name: str) -> int | None:
        counts = [int(value) for m in metas if (value := getattr(m, name)) is not None]
        return sum(counts) if counts else None

    return ModelUsage(
        prompt_tokens=summed("prompt_token_count"),
        output_tokens=summed("candidates_token_count"),
        total_tokens=summed("total_token_count"),
    )


def _run_coroutine(coro: Coroutine[Any, Any, T]) -> T:
    """asyncio.run, also from a thread whose event loop is already running (then on a helper thread)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="vertex-aio") as pool:
        return pool.submit(asyncio.run, coro).result()


def _name(value: Any) -> str:
    return str(getattr(value, "value", value) or "")
