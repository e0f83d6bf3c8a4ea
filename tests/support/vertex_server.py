"""A local server speaking Vertex AI's generateContent REST API, scripted per test, recording requests."""

from __future__ import annotations

import base64
import io
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from PIL import Image

PATH = re.compile(
    r"^/(?P<version>v1|v1beta1)/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)"
    r"/publishers/google/models/(?P<model>[^/:]+):generateContent$"
)

Answer = tuple[int, dict[str, Any]]


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
    return 200, {"candidates": candidates, "usageMetadata": {"promptTokenCount": 10}}


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
class VertexServer:
    """`script` answers requests in order (the last entry repeats); `delay_s` slows each answer."""

    script: list[Callable[[], Answer]] = field(default_factory=lambda: [lambda: images(2)])
    delay_s: float = 0.0
    requests: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        outer = self
        self._lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                match = PATH.match(self.path.split("?")[0])
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with outer._lock:
                    n = len(outer.requests)
                    outer.requests.append(
                        {
                            "path": self.path,
                            "match": match.groupdict() if match else None,
                            "headers": dict(self.headers),
                            "body": json.loads(raw or b"{}"),
                        }
                    )
                    answer = outer.script[min(n, len(outer.script) - 1)]
                if match is None:
                    status, body = error(404, "no such route")
                else:
                    time.sleep(outer.delay_s)
                    status, body = answer()
                data = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        self._server.shutdown()
