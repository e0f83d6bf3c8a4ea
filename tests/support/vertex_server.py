"""A local server speaking Vertex AI's generateContent REST API, scripted per test, recording requests.

It follows Vertex AI's `v1` REST surface (`projects.locations.publishers.models.generateContent`, the
GenerateContentRequest/Content/Part/Blob/GenerationConfig/ImageConfig messages as documented in the
Vertex AI REST reference, v1, 2025) and refuses what Vertex refuses, with Google's error shape
`{"error": {"code": 400, "message": ..., "status": "INVALID_ARGUMENT"}}`:
- an unknown field anywhere in the request: proto JSON parsing answers `Invalid JSON payload received.
  Unknown name "x" at 'contents[0].parts[0]': Cannot find field.` (the wording seen in public Vertex and
  Gemini API error reports, with a `google.rpc.BadRequest` field violation);
- no `contents`, a content without `parts`, or an `inlineData` part without `data` (Vertex: "Unable to
  submit request because it has an empty inlineData parameter..."): 400 INVALID_ARGUMENT.
- more images (inlineData parts, all contents together) than the model takes per prompt: 3 for Gemini 2.5
  Flash Image, 14 for Gemini 3 Pro Image Preview (Vertex AI "Image understanding", supported-models
  table: "Maximum images per prompt"); the message wording is ours;
- `imageConfig.imageSize` for a model without sizes (Gemini 2.5 Flash Image renders 1024 px only; the
  Vertex model page of Gemini 3 Pro Image lists 1K/2K/4K), or a size other than `1K`, `2K`, `4K`
  (google-genai 3.3.0 `types.ImageConfig.image_size`: "Supported values are `1K`, `2K`, `4K`"); the
  message wording is ours.
These figures are written here again, not imported from nano_banana/models.py, so a wrong table there
fails a test instead of agreeing with itself.
Field names are accepted in lowerCamelCase and in snake_case, as proto JSON parsing does. Every request is
recorded (also the refused ones, with `refusal` set); scripted answers go to the accepted ones in order.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from tests.support.http_stub import LocalServer, QuietHandler

PATH = re.compile(
    r"^/(?P<version>v1|v1beta1)/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)"
    r"/publishers/google/models/(?P<model>[^/:]+):generateContent$"
)

Answer = tuple[int, dict[str, Any]]

_REQUEST_FIELDS = {
    "contents", "systemInstruction", "tools", "toolConfig", "labels", "safetySettings", "generationConfig",
    "cachedContent", "modelArmorConfig",
}  # fmt: skip
_CONTENT_FIELDS = {"role", "parts"}
_PART_FIELDS = {
    "text", "inlineData", "fileData", "functionCall", "functionResponse", "executableCode",
    "codeExecutionResult", "thought", "thoughtSignature", "videoMetadata", "mediaResolution",
}  # fmt: skip
_BLOB_FIELDS = {"mimeType", "data", "displayName"}
_GENERATION_CONFIG_FIELDS = {
    "temperature", "topP", "topK", "candidateCount", "maxOutputTokens", "stopSequences", "responseLogprobs",
    "logprobs", "presencePenalty", "frequencyPenalty", "seed", "responseMimeType", "responseSchema",
    "responseJsonSchema", "routingConfig", "audioTimestamp", "responseModalities", "mediaResolution",
    "speechConfig", "thinkingConfig", "imageConfig", "enableAffectiveDialog", "modelSelectionConfig",
}  # fmt: skip
_IMAGE_CONFIG_FIELDS = {"aspectRatio", "imageSize", "personGeneration", "imageOutputOptions", "outputMimeType"}
# Per model (see the module docstring for the sources): images per prompt, and the imageSize values taken.
MAX_IMAGES = {"gemini-2.5-flash-image": 3, "gemini-3-pro-image-preview": 14}
IMAGE_SIZES = {"gemini-3-pro-image-preview": frozenset({"1K", "2K", "4K"})}


class InvalidArgument(Exception):
    """What Vertex answers 400 INVALID_ARGUMENT for; the message is Vertex's wording."""


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word[:1].upper() + word[1:] for word in rest)


def _fields(obj: Any, allowed: set[str], at: str) -> dict[str, Any]:
    """The object's fields under their camelCase names; an unknown one is Vertex's 'Unknown name' 400."""
    if not isinstance(obj, dict):
        raise InvalidArgument(f"Invalid JSON payload received. Expected an object at '{at}'.")
    out: dict[str, Any] = {}
    for key, value in obj.items():
        if _camel(key) not in allowed:
            where = f" at '{at}'" if at else ""
            raise InvalidArgument(f'Invalid JSON payload received. Unknown name "{key}"{where}: Cannot find field.')
        out[_camel(key)] = value
    return out


def validate_request(body: Any, model: str | None = None) -> None:
    """Raise InvalidArgument with Vertex's message when Vertex would refuse this GenerateContentRequest
    (sent to `model`: its limits apply when it is one of MAX_IMAGES)."""
    request = _fields(body, _REQUEST_FIELDS, "")
    contents = request.get("contents")
    if not contents:
        raise InvalidArgument("Unable to submit request because it has an empty contents field.")
    if not isinstance(contents, list):
        raise InvalidArgument("Invalid JSON payload received. Expected a list at 'contents'.")
    for i, raw_content in enumerate(contents):
        content = _fields(raw_content, _CONTENT_FIELDS, f"contents[{i}]")
        if not content.get("parts"):
            raise InvalidArgument("Unable to submit request because it must include at least one parts field.")
        for j, raw_part in enumerate(content["parts"]):
            part = _fields(raw_part, _PART_FIELDS, f"contents[{i}].parts[{j}]")
            if "inlineData" in part:
                blob = _fields(part["inlineData"], _BLOB_FIELDS, f"contents[{i}].parts[{j}].inline_data")
                if not blob.get("data"):
                    raise InvalidArgument(
                        "Unable to submit request because it has an empty inlineData parameter. "
                        "Add a value to the parameter and try again."
                    )
                if not blob.get("mimeType"):
                    raise InvalidArgument("Unable to submit request because it has an empty mimeType parameter.")
    config = _fields(request.get("generationConfig") or {}, _GENERATION_CONFIG_FIELDS, "generation_config")
    image_config = _fields(config.get("imageConfig") or {}, _IMAGE_CONFIG_FIELDS, "generation_config.image_config")
    if model in MAX_IMAGES:
        _check_model_limits(model, contents, image_config)


def _check_model_limits(model: str, contents: list[Any], image_config: dict[str, Any]) -> None:
    count = sum(
        1
        for content in contents
        for part in content.get("parts", [])
        if isinstance(part, dict) and ("inlineData" in part or "inline_data" in part)
    )
    if count > MAX_IMAGES[model]:
        raise InvalidArgument(
            f"Unable to submit request because it has {count} images; {model} accepts at most {MAX_IMAGES[model]}."
        )
    size = image_config.get("imageSize")
    if size is not None:
        if model not in IMAGE_SIZES:
            raise InvalidArgument(f"Unable to submit request because {model} does not support imageConfig.imageSize.")
        if size not in IMAGE_SIZES[model]:
            raise InvalidArgument(f"Invalid imageConfig.imageSize {size!r}; supported values are 1K, 2K and 4K.")


def invalid(message: str) -> Answer:
    return 400, {
        "error": {
            "code": 400,
            "message": message,
            "status": "INVALID_ARGUMENT",
            "details": [
                {"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": [{"description": message}]}
            ],
        }
    }


def png_b64(color: tuple[int, int, int], size: tuple[int, int]) -> str:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def images(n: int, size: tuple[int, int] = (64, 36)) -> Answer:
    candidates = [
        {
            "index": i,
            "finishReason": "STOP",
            "content": {
                "role": "model",
                "parts": [{"inlineData": {"mimeType": "image/png", "data": png_b64((60 * i, 100, 200), size)}}],
            },
        }
        for i in range(n)
    ]
    return 200, {"candidates": candidates, "usageMetadata": usage_metadata(n)}


PROMPT_TOKENS = 268  # a short text prompt (10) and one input image (258), as Vertex counts them
IMAGE_TOKENS = 1290  # per output image


def usage_metadata(n: int) -> dict[str, object]:
    """What Vertex reports with n images (GenerateContentResponseUsageMetadata, as JSON): the prompt's and
    the candidates' token counts, their total, and the breakdown by modality."""
    return {
        "promptTokenCount": PROMPT_TOKENS,
        "candidatesTokenCount": IMAGE_TOKENS * n,
        "totalTokenCount": PROMPT_TOKENS + IMAGE_TOKENS * n,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 10}, {"modality": "IMAGE", "tokenCount": 258}],
        "candidatesTokensDetails": [{"modality": "IMAGE", "tokenCount": IMAGE_TOKENS * n}],
        "trafficType": "ON_DEMAND",
    }


def safety_block() -> Answer:
    return 200, {
        "candidates": [{"index": 0, "finishReason": "IMAGE_SAFETY", "finishMessage": "The image was blocked."}]
    }


def prompt_block() -> Answer:
    return 200, {"promptFeedback": {"blockReason": "PROHIBITED_CONTENT", "blockReasonMessage": "Prompt blocked."}}


def text_only(text: str) -> Answer:
    return 200, {
        "candidates": [{"index": 0, "finishReason": "STOP", "content": {"role": "model", "parts": [{"text": text}]}}]
    }


def error(code: int, message: str = "try again") -> Answer:
    status = {400: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}.get(
        code, "UNKNOWN"
    )
    return code, {"error": {"code": code, "message": message, "status": status}}


@dataclass
class VertexServer(LocalServer):
    """`script` answers requests in order (the last entry repeats); `delay_s` slows each answer."""

    script: list[Callable[[], Answer]] = field(default_factory=lambda: [lambda: images(2)])
    delay_s: float = 0.0
    requests: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        outer = self
        self._lock = threading.Lock()

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                match = PATH.match(self.path.split("?")[0])
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                sent: Any = None
                refusal: str | None = None
                try:
                    sent = json.loads(raw or b"{}")
                    validate_request(sent, match.group("model") if match else None)
                except ValueError:
                    refusal = "Invalid JSON payload received."
                except InvalidArgument as exc:
                    refusal = str(exc)
                with outer._lock:
                    n = sum(1 for r in outer.requests if r["refusal"] is None)
                    outer.requests.append(
                        {
                            "path": self.path,
                            "match": match.groupdict() if match else None,
                            "headers": dict(self.headers),
                            "body": sent,
                            "refusal": refusal,
                        }
                    )
                    answer = outer.script[min(n, len(outer.script) - 1)]
                if match is None:
                    status, body = error(404, "no such route")
                elif refusal is not None:
                    status, body = invalid(refusal)
                else:
                    time.sleep(outer.delay_s)
                    status, body = answer()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.send_body(status, json.dumps(body).encode())

        self._serve(Handler)

    @property
    def url(self) -> str:
        return self.base_url
