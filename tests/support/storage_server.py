"""A local server speaking the Supabase Storage REST API that storage3 uses (one process, in memory)."""

from __future__ import annotations

import json
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse


@dataclass
class StorageServer:
    service_key: str
    bucket: str = "pip-ai-images"
    objects: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    fail_next: int = 0  # answer this many requests with 500
    delay_s: float = 0.0
    calls: list[tuple[str, str]] = field(default_factory=list)
    written: dict[str, float] = field(default_factory=dict)  # key -> epoch of its last write; tests may backdate

    def __post_init__(self) -> None:
        self._tokens: dict[str, tuple[str, str, float]] = {}  # token -> (method, key, expires)
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out as two writes: no 40 ms delayed-ACK stall

            def _send(self, status: int, body: Any, content_type: str = "application/json") -> None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _error(self, status: int, code: str, message: str) -> None:
                self._send(status, {"statusCode": str(status), "error": code, "message": message})

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length", "0")))

            def _authorized(self) -> bool:
                return (
                    self.headers.get("apikey") == outer.service_key
                    and self.headers.get("Authorization") == f"Bearer {outer.service_key}"
                )

            def _handle(self, method: str) -> None:
                url = urlparse(self.path)
                path = unquote(url.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                body = self._body()
                outer.calls.append((method, path))
                time.sleep(outer.delay_s)
                with outer._lock:
                    if outer.fail_next > 0:
                        outer.fail_next -= 1
                        self._error(500, "InternalError", "injected failure")
                        return
                prefix = "/storage/v1/"
                if not path.startswith(prefix):
                    self._error(404, "not_found", "no route")
                    return
                route = path[len(prefix) :]
                b = outer.bucket
                # Token-authorised routes (signed URLs) need no key.
                if route.startswith(f"object/sign/{b}/") and method == "GET":
                    self._signed_get(route[len(f"object/sign/{b}/") :], query.get("token", ""))
                    return
                if route.startswith(f"object/upload/sign/{b}/") and method == "PUT":
                    self._signed_put(route[len(f"object/upload/sign/{b}/") :], query.get("token", ""), body)
                    return
                if not self._authorized():
                    self._error(403, "Unauthorized", "invalid signature")
                    return
                if route == f"bucket/{b}" and method == "GET":
                    self._send(200, {"id": b, "name": b, "public": False})
                elif route == f"object/sign/{b}" and method == "POST":
                    # Bulk signing (storage-api's signURLs): 200 with a per-path error for missing objects.
                    request = json.loads(body)
                    expires = float(request["expiresIn"])
                    missing = "Either the object does not exist or you do not have access to it"
                    self._send(
                        200,
                        [
                            {
                                "error": None,
                                "path": key,
                                "signedURL": f"/object/sign/{b}/{key}?token={outer._token('GET', key, expires)}",
                            }
                            if key in outer.objects
                            else {"error": missing, "path": key, "signedURL": None}
                            for key in request["paths"]
                        ],
                    )
                elif route.startswith(f"object/sign/{b}/") and method == "POST":
                    key = route[len(f"object/sign/{b}/") :]
                    if key not in outer.objects:
                        self._error(400, "not_found", "Object not found")
                        return
                    expires = float(json.loads(body)["expiresIn"])
                    token = outer._token("GET", key, expires)
                    self._send(200, {"signedURL": f"/object/sign/{b}/{key}?token={token}"})
                elif route.startswith(f"object/upload/sign/{b}/") and method == "POST":
                    key = route[len(f"object/upload/sign/{b}/") :]
                    token = outer._token("PUT", key, 7200)
                    self._send(200, {"url": f"/object/upload/sign/{b}/{key}?token={token}", "token": token})
                elif route.startswith(f"object/info/{b}/") and method == "GET":
                    key = route[len(f"object/info/{b}/") :]
                    if key not in outer.objects:
                        self._error(404, "not_found", "Object not found")
                        return
                    data, ctype = outer.objects[key]
                    self._send(
                        200,
                        {
                            "name": key,
                            "size": len(data),
                            "content_type": ctype,
                            "metadata": {"size": len(data), "mimetype": ctype},
                        },
                    )
                elif route == f"object/list/{b}" and method == "POST":
                    self._send(200, outer._list(json.loads(body)))
                elif route == f"object/{b}" and method == "DELETE":
                    removed = [
                        {"name": p} for p in json.loads(body)["prefixes"] if outer.objects.pop(p, None) is not None
                    ]
                    self._send(200, removed)
                elif route.startswith(f"object/{b}/") and method in ("POST", "PUT"):
                    key = route[len(f"object/{b}/") :]
                    if method == "POST" and key in outer.objects and self.headers.get("x-upsert") != "true":
                        self._error(400, "Duplicate", "The resource already exists")
                        return
                    data, ctype = _multipart_file(self.headers.get("Content-Type", ""), body)
                    outer.objects[key] = (data, ctype)
                    outer.written[key] = time.time()
                    self._send(200, {"Key": f"{b}/{key}", "Id": str(uuid.uuid4())})
                elif route.startswith(f"object/{b}/") and method == "GET":
                    key = route[len(f"object/{b}/") :]
                    if key not in outer.objects:
                        self._error(400, "not_found", "Object not found")
                        return
                    data, ctype = outer.objects[key]
                    self._send(200, data, ctype)
                else:
                    self._error(404, "not_found", f"no route {method} {route}")

            def _signed_get(self, key: str, token: str) -> None:
                if not outer._valid(token, "GET", key):
                    self._error(400, "InvalidJWT", "invalid or expired token")
                    return
                data, ctype = outer.objects[key]
                self._send(200, data, ctype)

            def _signed_put(self, key: str, token: str, body: bytes) -> None:
                if not outer._valid(token, "PUT", key):
                    self._error(400, "InvalidJWT", "invalid or expired token")
                    return
                outer.objects[key] = (body, self.headers.get("Content-Type", "application/octet-stream"))
                outer.written[key] = time.time()
                self._send(200, {"Key": f"{outer.bucket}/{key}"})

            def do_GET(self) -> None:
                self._handle("GET")

            def do_POST(self) -> None:
                self._handle("POST")

            def do_PUT(self) -> None:
                self._handle("PUT")

            def do_DELETE(self) -> None:
                self._handle("DELETE")

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def _token(self, method: str, key: str, ttl_s: float) -> str:
        token = secrets.token_urlsafe(16)
        self._tokens[token] = (method, key, time.time() + ttl_s)
        return token

    def _valid(self, token: str, method: str, key: str) -> bool:
        found = self._tokens.get(token)
        return bool(
            found
            and found[0] == method
            and found[1] == key
            and found[2] > time.time()
            and (method == "PUT" or key in self.objects)
        )

    def _list(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        folder = body.get("prefix", "").strip("/")
        base = f"{folder}/" if folder else ""
        names: dict[str, dict[str, Any]] = {}
        for key, (data, ctype) in sorted(self.objects.items()):
            if not key.startswith(base):
                continue
            rest = key[len(base) :]
            head, sep, _ = rest.partition("/")
            # storage-api v1.70.6 (`object/list`): a folder has only its name (id, timestamps and metadata
            # null, as supabase-kt's BucketItem documents); an object has ISO-8601 `created_at`/`updated_at`.
            if sep:
                names.setdefault(
                    head, {"name": head, "id": None, "updated_at": None, "created_at": None, "metadata": None}
                )
            else:
                stamp = datetime.fromtimestamp(self.written.get(key, time.time()), UTC).isoformat()
                names[head] = {
                    "name": head,
                    "id": str(uuid.uuid5(uuid.NAMESPACE_URL, key)),
                    "updated_at": stamp.replace("+00:00", "Z"),
                    "created_at": stamp.replace("+00:00", "Z"),
                    "metadata": {"size": len(data), "mimetype": ctype},
                }
        entries = list(names.values())
        offset, limit = int(body.get("offset", 0)), int(body.get("limit", 100))
        return entries[offset : offset + limit]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        self._server.shutdown()


def _multipart_file(content_type: str, body: bytes) -> tuple[bytes, str]:
    message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    for part in message.iter_parts():
        if part.get_param("name", header="content-disposition") == "file":
            payload = part.get_payload(decode=True)
            return (payload if isinstance(payload, bytes) else b""), part.get_content_type()
    raise ValueError("no file part")
