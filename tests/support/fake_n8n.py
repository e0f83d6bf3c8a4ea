"""A local HTTP server playing the n8n processor workflow, for the callback tests.

It answers like infra/n8n/nano-banana-processor.json does in n8n 1.123.0 (tests/n8n runs that file in
real n8n): 401 `{"error": "invalid_signature"}` unless one of the offered v1 signatures matches one of
its keys, else 202 `{"accepted": true, "jobId": <the job>}`, then it works and calls back signed with
every key it has.
"""

from __future__ import annotations

import io
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
from PIL import Image

from nano_banana import webhooks
from nano_banana.errors import InvalidSignature


def png(color: tuple[int, int, int], size: tuple[int, int] = (48, 32)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


@dataclass
class FakeN8n:
    """Modes: good, fail, never, down, empty (an empty 200, as the old workflow answered without taking
    the job). `received` keeps each verified request payload. `secret` may be a comma-separated list."""

    secret: str
    mode: str = "good"
    callback_delay_s: float = 0.0
    received: list[dict[str, Any]] = field(default_factory=list)
    rejected: int = 0
    callbacks: list[tuple[bytes, dict[str, str], int]] = field(default_factory=list)
    downloaded: list[bytes] = field(default_factory=list)
    # Reported as the callback's optional `usage` (what the model used) when set.
    usage: dict[str, int] | None = None

    def __post_init__(self) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                try:
                    webhooks.verify(raw, dict(self.headers), outer.keys, tolerance_s=300, now=datetime.now(UTC))
                except InvalidSignature:
                    outer.rejected += 1
                    self._answer(401, {"error": "invalid_signature"})
                    return
                if outer.mode == "down":
                    self.send_response(500)
                    self.end_headers()
                    return
                payload = json.loads(raw)
                outer.received.append(payload)
                if outer.mode == "empty":
                    self.send_response(200)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self._answer(202, {"accepted": True, "jobId": payload["jobId"]})
                if outer.mode != "never":
                    threading.Thread(target=outer.process, args=(payload,), daemon=True).start()

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def keys(self) -> list[str]:
        return [k.strip() for k in self.secret.split(",") if k.strip()]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/webhook/pip-ai-nano-banana"

    def process(self, payload: dict[str, Any]) -> None:
        """What the workflow does: fetch the input, 'generate', upload, call back signed."""
        time.sleep(self.callback_delay_s)
        self.downloaded.append(httpx.get(payload["inputUrl"], timeout=10).content)
        if self.mode == "fail":
            self.call_back(
                payload["callbackUrl"],
                {
                    "jobId": payload["jobId"],
                    "status": "failed",
                    "error": {"code": "content_blocked", "message": "the model refused"},
                    **({"usage": self.usage} if self.usage is not None else {}),
                },
            )
            return
        variants = []
        for index, url in enumerate(payload["uploadUrls"]):
            data = png((40 * index, 200, 90))
            httpx.put(url, content=data, headers={"Content-Type": "image/png"}, timeout=10).raise_for_status()
            variants.append({"path": f"{payload['outputPrefix']}{index}.png", "mimeType": "image/png"})
        body = {"jobId": payload["jobId"], "status": "succeeded", "variants": variants}
        self.call_back(payload["callbackUrl"], body | ({"usage": self.usage} if self.usage is not None else {}))

    def call_back(self, url: str, body: dict[str, Any], **sign_kwargs: Any) -> httpx.Response:
        """POST a callback signed like the workflow signs it: one v1 signature per key, one id and stamp."""
        raw = json.dumps(body).encode()
        sign_kwargs.setdefault("msg_id", f"msg_{uuid.uuid4().hex}")
        sign_kwargs.setdefault("now", datetime.now(UTC))
        signed = [webhooks.sign(raw, key, **sign_kwargs) for key in self.keys]
        headers = {
            "Content-Type": "application/json",
            **signed[0],
            "webhook-signature": " ".join(h["webhook-signature"] for h in signed),
        }
        response = httpx.post(url, content=raw, headers=headers, timeout=30)
        self.callbacks.append((raw, headers, response.status_code))
        return response

    def stop(self) -> None:
        self._server.shutdown()
