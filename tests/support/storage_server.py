"""A local server speaking the Supabase Storage REST API the way storage-api v1.70.6 answers it (one
process, in memory), for storage3 and for the processors' signed URLs.

What it copies, and where each behaviour comes from (github.com/supabase/storage at tag v1.70.6, and
the run against the real server recorded in issue 15):
- Errors (src/http/error-handler.ts, src/internal/errors/storage-error.ts, codes.ts): the body is
  `{"statusCode": "<code as a string>", "code", "error", "message"}`; the HTTP status is 500 only for
  statusCode "500" and 400 for every other error, 423/ResourceLocked and 503/LockTimeout included
  (`userStatusCode`). NoSuchKey renders `error: "not_found"`, NoSuchBucket `error: "Bucket not found"`,
  AccessDenied `error: "Unauthorized"`. Request validation (Fastify schema: `expiresIn` an integer ≥ 1,
  bulk `paths` 1..1000, MAX_OBJECTS_PER_REQUEST in src/storage/limits.ts) is 400 / InvalidRequest.
- Keys (src/storage/limits.ts VALID_OBJECT_KEY, checked by findObject and uploads): ASCII letters,
  digits and `_/!.*'() &$=@;:+,-` only; anything else is 400 InvalidKey. The regex admits `?`, but the
  real server was observed to refuse it, so this one does too.
- Auth (src/http/plugins/jwt.ts, routes/object/getObject.ts, getObjectInfo.ts): a bearer token that is
  not a valid JWT of the project is AccessDenied ("403") on every authenticated route except GET object
  and object info, which treat the caller as anon: on a private bucket that is NoSuchBucket ("404").
  The anon key is a valid JWT that row-level security hides everything from: object and info are
  NoSuchKey, the bucket NoSuchBucket, uploads AccessDenied ("new row violates row-level security
  policy", src/storage/database/errors.ts), list `[]`, delete 200 `[]`, bulk signing per-path errors.
- A missing bucket with the service key: GET/info NoSuchBucket, upload and upload signing "404"
  InvalidRequest "The related resource does not exist" (foreign key, database/errors.ts), single
  signing NoSuchKey, bulk signing 200 with per-path errors, list `[]`, delete 200.
- Signed URLs (src/storage/object.ts signObjectUrl/signObjectUrls/signUploadObjectUrl,
  verifyObjectSignature; src/internal/auth/jwt.ts): HS256 JWTs with `url` = "<bucket>/<key>" and
  `scope` "download" or "upload" (uploads also `upsert`); a bad or expired token is InvalidJWT, a token
  for another object or of the other scope InvalidSignature; a signed GET of a deleted object NoSuchKey.
- Upload URLs live UPLOAD_SIGNED_URL_EXPIRATION_TIME (src/config.ts, default 60 s) whatever the
  client asks (routes/object/getSignedUploadURL.ts): `upload_url_lifetime_s` here. A PUT to one is
  parsed as multipart when it is multipart (the file part's type is stored), else stored raw with its
  Content-Type or application/octet-stream (routes/object/uploadSignedObject.ts).

For failure tests: `fail_next` answers that many requests with 500 InternalError; `inject(...)` answers
any error on any route (e.g. 423 ResourceLocked while a lock is "held", or a gateway's HTTP 503).
"""

from __future__ import annotations

import json
import re
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

import jwt

VERSION = "storage-api v1.70.6"
MAX_OBJECTS_PER_REQUEST = 1000
_VALID_KEY = re.compile(r"^[A-Za-z0-9_/!.*'() &$=@;:+,-]+$")
_MISSING = "Either the object does not exist or you do not have access to it"


class StorageError(Exception):
    """One storage-api error: rendered as its body, sent with HTTP 500 for "500" and 400 otherwise."""

    def __init__(self, status: int, code: str, message: str, *, error: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.error = status, code, message, error or code

    @property
    def http_status(self) -> int:
        return 500 if self.status == 500 else 400

    def body(self) -> dict[str, str]:
        return {"statusCode": str(self.status), "code": self.code, "error": self.error, "message": self.message}


def no_such_key() -> StorageError:
    return StorageError(404, "NoSuchKey", "Object not found", error="not_found")


def no_such_bucket() -> StorageError:
    return StorageError(404, "NoSuchBucket", "Bucket not found", error="Bucket not found")


def access_denied(message: str) -> StorageError:
    return StorageError(403, "AccessDenied", message, error="Unauthorized")


@dataclass
class Injected:
    status: int
    code: str
    times: int
    route: str  # a substring of "<METHOD> <path after /storage/v1/>"; "" for any
    http_status: int | None  # None: as storage-api renders it (500 for "500", else 400)


@dataclass
class StorageServer:
    service_key: str
    bucket: str = "pip-ai-images"
    objects: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    fail_next: int = 0  # answer this many requests with 500
    delay_s: float = 0.0
    upload_url_lifetime_s: int = 60  # UPLOAD_SIGNED_URL_EXPIRATION_TIME
    calls: list[tuple[str, str]] = field(default_factory=list)
    written: dict[str, float] = field(default_factory=dict)  # key -> epoch of its last write; tests may backdate

    def __post_init__(self) -> None:
        self._jwt_secret = secrets.token_urlsafe(32)
        self.anon_key = jwt.encode({"role": "anon", "iss": "supabase"}, self._jwt_secret, algorithm="HS256")
        self._injected: list[Injected] = []
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

            def _handle(self, method: str) -> None:
                url = urlparse(self.path)
                path = unquote(url.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                outer.calls.append((method, path))
                time.sleep(outer.delay_s)
                try:
                    status, answer, content_type = outer._answer(
                        method, path, query, body, dict(self.headers.items()), self._bearer()
                    )
                except _Raw as raw:
                    self._send(raw.http_status, raw.body)
                    return
                except StorageError as exc:
                    self._send(exc.http_status, exc.body())
                    return
                self._send(status, answer, content_type)

            def _bearer(self) -> str:
                return re.sub(r"^Bearer\s+", "", self.headers.get("Authorization", ""), flags=re.IGNORECASE)

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

    # ------------------------------------------------------------ for tests

    def inject(
        self, status: int, code: str, *, times: int = 1, route: str = "", http_status: int | None = None
    ) -> None:
        """Answer the next `times` requests whose "<METHOD> <route>" contains `route` with this error
        (e.g. 423 ResourceLocked, 503 LockTimeout; http_status=503 for a gateway in front that is down)."""
        with self._lock:
            self._injected.append(Injected(status, code, times, route, http_status))

    def clear_injected(self) -> None:
        with self._lock:
            self._injected.clear()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        self._server.shutdown()

    # ------------------------------------------------------------ the API

    def _answer(
        self, method: str, path: str, query: dict[str, str], body: bytes, headers: dict[str, str], bearer: str
    ) -> tuple[int, Any, str]:
        prefix = "/storage/v1/"
        if not path.startswith(prefix):
            raise _route_not_found(method, path)
        route = path[len(prefix) :]
        self._fail_if_injected(f"{method} {route}")
        if method == "GET" and route.startswith("object/sign/"):
            return self._signed_get(route[len("object/sign/") :], query.get("token", ""))
        if method == "PUT" and route.startswith("object/upload/sign/"):
            return self._signed_put(route[len("object/upload/sign/") :], query.get("token", ""), body, headers)
        role = self._role(bearer)
        if method == "GET" and route.startswith("object/"):
            return self._read(route, role)
        if role is None:
            raise access_denied("Invalid Compact JWS")
        if method == "GET" and route.startswith("bucket/"):
            if role != "service" or route[len("bucket/") :] != self.bucket:
                raise no_such_bucket()
            return 200, {"id": self.bucket, "name": self.bucket, "public": False}, "application/json"
        if method == "POST" and route.startswith("object/sign/") and route.count("/") == 2:
            return 200, self._bulk_sign(route.split("/")[2], _json(body), role), "application/json"
        if method == "POST" and route.startswith("object/sign/"):
            bucket, key = _bucket_key(route[len("object/sign/") :])
            expires = _expires_in(_json(body))
            if role != "service" or bucket != self.bucket or key not in self.objects:
                raise no_such_key()
            return 200, {"signedURL": self._signed_url(bucket, key, expires)}, "application/json"
        if method == "POST" and route.startswith("object/upload/sign/"):
            bucket, key = _bucket_key(route[len("object/upload/sign/") :])
            self._may_write(bucket, role)
            token = self._token(
                {"url": f"{bucket}/{key}", "upsert": headers.get("x-upsert") == "true", "scope": "upload"},
                self.upload_url_lifetime_s,
            )
            return 200, {"url": f"/object/upload/sign/{bucket}/{key}?token={token}", "token": token}, "application/json"
        if method == "POST" and route.startswith("object/list/"):
            if role != "service" or route[len("object/list/") :] != self.bucket:
                return 200, [], "application/json"
            return 200, self._list(_json(body)), "application/json"
        if method == "DELETE" and route.startswith("object/") and route.count("/") == 1:
            prefixes = _json(body).get("prefixes", [])
            if role != "service" or route[len("object/") :] != self.bucket:
                return 200, [], "application/json"
            removed = [{"name": p} for p in prefixes if self.objects.pop(p, None) is not None]
            return 200, removed, "application/json"
        if method in ("POST", "PUT") and route.startswith("object/"):
            bucket, key = _bucket_key(route[len("object/") :])
            self._may_write(bucket, role)
            if method == "POST" and key in self.objects and headers.get("x-upsert") != "true":
                raise StorageError(409, "KeyAlreadyExists", "The resource already exists", error="Duplicate")
            self.objects[key] = _uploaded(headers.get("Content-Type", ""), body)
            self.written[key] = time.time()
            return 200, {"Key": f"{bucket}/{key}", "Id": str(uuid.uuid4())}, "application/json"
        raise _route_not_found(method, path)

    def _fail_if_injected(self, where: str) -> None:
        with self._lock:
            if self.fail_next > 0:
                self.fail_next -= 1
                raise StorageError(500, "InternalError", "injected failure", error="internal")
            for injected in self._injected:
                if injected.times > 0 and injected.route in where:
                    injected.times -= 1
                    error = StorageError(injected.status, injected.code, f"injected {injected.code}")
                    if injected.http_status is not None:
                        raise _Raw(injected.http_status, error.body())
                    raise error

    def _role(self, bearer: str) -> str | None:
        if bearer == self.service_key:
            return "service"
        if bearer == self.anon_key:
            return "anon"
        return None

    def _read(self, route: str, role: str | None) -> tuple[int, Any, str]:
        """GET object / object info: an unverifiable key is anon here (allowInvalidJwt)."""
        info = route.startswith("object/info/")
        rest = route[len("object/info/") :] if info else route[len("object/") :]
        if rest.startswith("authenticated/"):
            rest = rest[len("authenticated/") :]
        bucket, key = _bucket_key(rest)
        if bucket != self.bucket or role is None:
            raise no_such_bucket()  # private bucket: the anonymous caller may not see it
        if role != "service" or key not in self.objects:
            raise no_such_key()  # row-level security hides every row from the anon key
        data, ctype = self.objects[key]
        if not info:
            return 200, data, ctype
        meta = {"size": len(data), "mimetype": ctype}
        return 200, {"name": key, "size": len(data), "content_type": ctype, "metadata": meta}, "application/json"

    def _may_write(self, bucket: str, role: str) -> None:
        if role != "service":
            raise access_denied("new row violates row-level security policy")
        if bucket != self.bucket:
            raise StorageError(404, "InvalidRequest", "The related resource does not exist")

    def _bulk_sign(self, bucket: str, request: dict[str, Any], role: str) -> list[dict[str, Any]]:
        expires = _expires_in(request)
        paths = request.get("paths")
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise _invalid("body must have required property 'paths'")
        if not paths:
            raise _invalid("body/paths must NOT have fewer than 1 items")
        if len(paths) > MAX_OBJECTS_PER_REQUEST:
            raise _invalid(f"body/paths must NOT have more than {MAX_OBJECTS_PER_REQUEST} items")
        visible = role == "service" and bucket == self.bucket
        return [
            {"error": None, "path": key, "signedURL": self._signed_url(bucket, key, expires)}
            if visible and key in self.objects
            else {"error": _MISSING, "path": key, "signedURL": None}
            for key in paths
        ]

    def _signed_url(self, bucket: str, key: str, expires_s: int) -> str:
        token = self._token({"url": f"{bucket}/{key}", "scope": "download"}, expires_s)
        return f"/object/sign/{bucket}/{key}?token={token}"

    def _token(self, claims: dict[str, Any], ttl_s: int) -> str:
        now = int(time.time())
        return jwt.encode({**claims, "iat": now, "exp": now + ttl_s}, self._jwt_secret, algorithm="HS256")

    def _verified(self, token: str, bucket_and_key: str, scope: str) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(token, self._jwt_secret, algorithms=["HS256"])
        except jwt.ExpiredSignatureError as exc:
            raise StorageError(400, "InvalidJWT", '"exp" claim timestamp check failed') from exc
        except jwt.InvalidTokenError as exc:
            raise StorageError(400, "InvalidJWT", "signature verification failed") from exc
        if claims.get("scope") != scope:
            raise StorageError(400, "InvalidSignature", f"Token is not scoped for {scope}")
        if claims.get("url") != bucket_and_key:
            raise StorageError(400, "InvalidSignature", "Invalid signature")
        return claims

    def _signed_get(self, rest: str, token: str) -> tuple[int, Any, str]:
        self._verified(token, rest, "download")
        bucket, key = _bucket_key(rest)
        if bucket != self.bucket or key not in self.objects:
            raise no_such_key()
        data, ctype = self.objects[key]
        return 200, data, ctype

    def _signed_put(self, rest: str, token: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any, str]:
        claims = self._verified(token, rest, "upload")
        bucket, key = _bucket_key(rest)
        self._may_write(bucket, "service")
        if key in self.objects and not claims.get("upsert"):
            raise StorageError(409, "KeyAlreadyExists", "The resource already exists", error="Duplicate")
        self.objects[key] = _uploaded(headers.get("Content-Type", ""), body)
        self.written[key] = time.time()
        return 200, {"Key": f"{bucket}/{key}", "Id": str(uuid.uuid4())}, "application/json"

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


class _Raw(Exception):
    """An answer from something in front of storage-api (a gateway), sent with its own HTTP status."""

    def __init__(self, http_status: int, body: dict[str, str]) -> None:
        super().__init__(body["message"])
        self.http_status, self.body = http_status, body


def _route_not_found(method: str, path: str) -> _Raw:
    """src/http/not-found-handler.ts: a real HTTP 404."""
    message = f"Route {method}:{path} not found"
    return _Raw(404, {"statusCode": "404", "error": "Not Found", "message": message, "code": "InvalidRequest"})


def _invalid(message: str) -> StorageError:
    """Fastify's schema validation (FST_ERR_VALIDATION → InvalidRequest)."""
    return StorageError(400, "InvalidRequest", message, error="Bad Request")


def _bucket_key(rest: str) -> tuple[str, str]:
    bucket, _, key = rest.partition("/")
    if not key or not _VALID_KEY.match(key):
        raise StorageError(400, "InvalidKey", f"Invalid key: {key}")
    return bucket, key


def _json(body: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(body or b"{}")
    except ValueError as exc:
        raise _invalid("Body is not valid JSON") from exc
    if not isinstance(parsed, dict):
        raise _invalid("body must be object")
    return parsed


def _expires_in(request: dict[str, Any]) -> int:
    """`expiresIn`: an integer ≥ 1 (Fastify coerces the string storage3 sends)."""
    raw = request.get("expiresIn")
    if raw is None:
        raise _invalid("body must have required property 'expiresIn'")
    try:
        value = float(raw)
    except (TypeError, ValueError) as exc:
        raise _invalid("body/expiresIn must be integer") from exc
    if value != int(value):
        raise _invalid("body/expiresIn must be integer")
    if value < 1:
        raise _invalid("body/expiresIn must be >= 1")
    return int(value)


def _uploaded(content_type: str, body: bytes) -> tuple[bytes, str]:
    """The stored bytes and type: the file part of a multipart body, else the raw body."""
    if not content_type.startswith("multipart/form-data"):
        return body, content_type or "application/octet-stream"
    message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    for part in message.iter_parts():
        if part.get_filename() is not None or part.get_param("name", header="content-disposition") == "file":
            payload = part.get_payload(decode=True)
            return (payload if isinstance(payload, bytes) else b""), part.get_content_type()
    raise StorageError(400, "InvalidRequest", "No content provided")
