"""A small in-process Cloud Tasks: the real gRPC service surface, HTTP dispatch, and OIDC tokens.

`FakeCloudTasks` serves `google.cloud.tasks.v2.CloudTasks` (CreateTask, GetTask, DeleteTask, ListTasks)
on 127.0.0.1 with the google-cloud-tasks package's own message types, so the real `CloudTasksClient`
talks to it over the wire. A background thread POSTs due HTTP tasks to their URL with their headers
and body, like Cloud Tasks: 2xx completes the task, anything else is retried with a short backoff.
A used name is refused (ALREADY_EXISTS) while its task exists and for `tombstone_s` (1 h) after it ran,
failed for good or was deleted, then may be used again: the CreateTask reference (google.cloud.tasks_v2
CreateTaskRequest, "Task De-duplication": a queue created with Cloud Tasks refuses the name for ~1 hour
after the original task was deleted or executed). Tasks with an `oidc_token` carry `Authorization: Bearer <RS256 ID token>` signed by a test key whose
certificate is served at `certs_url` (Google's v1 certs format), so `task_auth` can verify for real.

Also here: `TaskReceiver`, a local HTTP server that records what it is sent.
Fixtures: `fake_cloudtasks`, `task_receiver` (import them explicitly, `# noqa: F401`).
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
import httpx
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from google.cloud import tasks_v2
from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport
from google.protobuf import empty_pb2

SERVICE = "google.cloud.tasks.v2.CloudTasks"
ISSUER = "https://accounts.google.com"
MIN_DEADLINE = dt.timedelta(seconds=15)
MAX_DEADLINE = dt.timedelta(minutes=30)
DEFAULT_DEADLINE = dt.timedelta(minutes=10)


# ---------------------------------------------------------------- signing key


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_pem: bytes
    cert_pem: str


_KEY_LOCK = threading.Lock()
_KEY: SigningKey | None = None


def new_signing_key() -> SigningKey:
    """An RSA key with a self-signed certificate (Google's v1 certs endpoint serves certificates)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake-cloudtasks-oidc")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return SigningKey(
        kid=uuid.uuid4().hex,
        private_pem=key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        cert_pem=cert.public_bytes(serialization.Encoding.PEM).decode(),
    )


def signing_key() -> SigningKey:
    """The session's key (generating one costs ~0.1 s)."""
    global _KEY  # noqa: PLW0603
    with _KEY_LOCK:
        if _KEY is None:
            _KEY = new_signing_key()
        return _KEY


def mint_id_token(
    *,
    audience: str,
    email: str,
    email_verified: bool = True,
    lifetime_s: int = 3600,
    issued_at: float | None = None,
    key: SigningKey | None = None,
    issuer: str = ISSUER,
) -> str:
    """An ID token shaped like the ones Google issues for a service account."""
    key = key or signing_key()
    iat = int(issued_at if issued_at is not None else time.time())
    claims = {
        "iss": issuer,
        "aud": audience,
        "azp": "1234567890",
        "sub": "1234567890",
        "email": email,
        "email_verified": email_verified,
        "iat": iat,
        "exp": iat + lifetime_s,
    }
    return jwt.encode(claims, key.private_pem, algorithm="RS256", headers={"kid": key.kid})


class CertsServer:
    """Serves `{kid: certificate}` like https://www.googleapis.com/oauth2/v1/certs; counts fetches."""

    def __init__(self, key: SigningKey | None = None) -> None:
        self.key = key or signing_key()
        self.fetches = 0
        outer = self

        class _Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.fetches += 1
                body = json.dumps({outer.key.kid: outer.key.cert_pem}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Cache-Control", "public, max-age=600")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="certs", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/oauth2/v1/certs"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


# ---------------------------------------------------------------- the fake service


@dataclass
class DispatchAttempt:
    task_name: str
    url: str
    headers: dict[str, str]
    body: bytes
    status: int | None  # None: no answer (connection refused or past the dispatch deadline)
    at: float


@dataclass
class _Stored:
    task: tasks_v2.Task
    due: float
    attempts: int = 0
    state: str = "pending"  # pending | running | done | deleted | failed
    ended_at: float | None = None  # when it left pending/running: the start of its name's tombstone

    def end(self, state: str) -> None:
        self.state = state
        self.ended_at = time.time()


@dataclass
class FakeCloudTasks:
    """Start with `.start()`; drive with `.client()`; inspect `.calls` and `.attempts`."""

    max_attempts: int = 5
    min_backoff_s: float = 0.1
    tombstone_s: float = 3600.0
    calls: list[tuple[str, Any]] = field(default_factory=list)
    attempts: list[DispatchAttempt] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Condition()
        self._tasks: dict[str, _Stored] = {}
        self._stopping = False
        self._server: grpc.Server | None = None
        self._port = 0
        self._channels: list[grpc.Channel] = []
        self._workers = futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="fake-tasks-dispatch")
        self._http = httpx.Client()
        self._dispatcher = threading.Thread(target=self._dispatch_loop, name="fake-tasks", daemon=True)
        self.certs = CertsServer()

    # ------------------------------------------------------------ lifecycle

    def start(self) -> FakeCloudTasks:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="fake-tasks-rpc"))
        handlers = {
            "CreateTask": grpc.unary_unary_rpc_method_handler(
                self._create_task,
                request_deserializer=tasks_v2.CreateTaskRequest.deserialize,
                response_serializer=tasks_v2.Task.serialize,
            ),
            "GetTask": grpc.unary_unary_rpc_method_handler(
                self._get_task,
                request_deserializer=tasks_v2.GetTaskRequest.deserialize,
                response_serializer=tasks_v2.Task.serialize,
            ),
            "DeleteTask": grpc.unary_unary_rpc_method_handler(
                self._delete_task,
                request_deserializer=tasks_v2.DeleteTaskRequest.deserialize,
                response_serializer=empty_pb2.Empty.SerializeToString,
            ),
            "ListTasks": grpc.unary_unary_rpc_method_handler(
                self._list_tasks,
                request_deserializer=tasks_v2.ListTasksRequest.deserialize,
                response_serializer=tasks_v2.ListTasksResponse.serialize,
            ),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        self._port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self._server = server
        self._dispatcher.start()
        return self

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
        if self._server is not None:
            self._server.stop(grace=None).wait(timeout=5)
        self._dispatcher.join(timeout=5)
        self._workers.shutdown(wait=True, cancel_futures=True)
        for channel in self._channels:
            channel.close()
        self._http.close()
        self.certs.stop()

    @property
    def endpoint(self) -> str:
        """host:port, what NANO_BANANA_TASKS_ENDPOINT wants."""
        return f"127.0.0.1:{self._port}"

    @property
    def certs_url(self) -> str:
        return self.certs.url

    def client(self) -> tasks_v2.CloudTasksClient:
        """The real client over an insecure channel to this fake (closed at stop)."""
        channel = grpc.insecure_channel(self.endpoint)
        self._channels.append(channel)
        return tasks_v2.CloudTasksClient(transport=CloudTasksGrpcTransport(channel=channel))

    # ------------------------------------------------------------ inspection

    def methods(self) -> list[str]:
        with self._lock:
            return [method for method, _ in self.calls]

    def pending(self) -> list[str]:
        with self._lock:
            return sorted(name for name, s in self._tasks.items() if s.state in {"pending", "running"})

    def task(self, name: str) -> tasks_v2.Task:
        with self._lock:
            return self._tasks[name].task

    def wait_for(self, predicate: Callable[[], bool], timeout_s: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.02)
        return predicate()

    # ------------------------------------------------------------ RPCs

    def _create_task(self, request: tasks_v2.CreateTaskRequest, context: grpc.ServicerContext) -> tasks_v2.Task:
        with self._lock:
            self.calls.append(("CreateTask", request))
            task = tasks_v2.Task.deserialize(tasks_v2.Task.serialize(request.task))
            if not task.name:
                task.name = f"{request.parent}/tasks/{uuid.uuid4().int}"
            if not task.name.startswith(f"{request.parent}/tasks/"):
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "task name is not in the parent queue")
            if "dispatch_deadline" in task:
                deadline = task.dispatch_deadline
                if not MIN_DEADLINE <= deadline <= MAX_DEADLINE:
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT, "dispatch_deadline must be within [15s, 30m]")
            if not task.http_request.url.startswith(("http://", "https://")):
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "an HTTP task needs an http(s) URL")
            used = self._tasks.get(task.name)
            if used is not None and (used.ended_at is None or time.time() - used.ended_at < self.tombstone_s):
                context.abort(grpc.StatusCode.ALREADY_EXISTS, "Requested entity already exists")
            now = time.time()
            due = task.schedule_time.timestamp() if "schedule_time" in task else now
            task.create_time = dt.datetime.fromtimestamp(now, dt.UTC)
            task.schedule_time = dt.datetime.fromtimestamp(max(due, now), dt.UTC)
            self._tasks[task.name] = _Stored(task=task, due=due)
            self._lock.notify_all()
            return task

    def _get_task(self, request: tasks_v2.GetTaskRequest, context: grpc.ServicerContext) -> tasks_v2.Task:
        with self._lock:
            self.calls.append(("GetTask", request))
            stored = self._tasks.get(request.name)
            if stored is None or stored.state in {"done", "deleted", "failed"}:
                context.abort(grpc.StatusCode.NOT_FOUND, "Requested entity was not found.")
            return stored.task

    def _delete_task(self, request: tasks_v2.DeleteTaskRequest, context: grpc.ServicerContext) -> empty_pb2.Empty:
        with self._lock:
            self.calls.append(("DeleteTask", request))
            stored = self._tasks.get(request.name)
            if stored is None or stored.state in {"done", "deleted", "failed"}:
                context.abort(grpc.StatusCode.NOT_FOUND, "Requested entity was not found.")
            stored.end("deleted")
            return empty_pb2.Empty()

    def _list_tasks(
        self, request: tasks_v2.ListTasksRequest, context: grpc.ServicerContext
    ) -> tasks_v2.ListTasksResponse:
        with self._lock:
            self.calls.append(("ListTasks", request))
            live = [s.task for s in self._tasks.values() if s.state in {"pending", "running"}]
            return tasks_v2.ListTasksResponse(tasks=live)

    # ------------------------------------------------------------ dispatch

    def _dispatch_loop(self) -> None:
        while True:
            with self._lock:
                if self._stopping:
                    return
                now = time.time()
                due = [s for s in self._tasks.values() if s.state == "pending" and s.due <= now]
                for stored in due:
                    stored.state = "running"
                    stored.attempts += 1
                if not due:
                    upcoming = [s.due for s in self._tasks.values() if s.state == "pending"]
                    self._lock.wait(timeout=min([0.5, *(max(0.0, d - now) for d in upcoming)]))
                    continue
            for stored in due:
                self._workers.submit(self._attempt, stored)

    def _attempt(self, stored: _Stored) -> None:
        task = stored.task
        http = task.http_request
        headers = dict(http.headers)
        headers.update(
            {
                "User-Agent": "Google-Cloud-Tasks",
                "X-CloudTasks-QueueName": task.name.split("/queues/")[1].split("/")[0],
                "X-CloudTasks-TaskName": task.name.rsplit("/", 1)[1],
                "X-CloudTasks-TaskRetryCount": str(stored.attempts - 1),
                "X-CloudTasks-TaskExecutionCount": str(stored.attempts - 1),
                "X-CloudTasks-TaskETA": f"{stored.due:.6f}",
            }
        )
        if "oidc_token" in http:
            audience = http.oidc_token.audience or http.url
            headers["Authorization"] = "Bearer " + mint_id_token(
                audience=audience, email=http.oidc_token.service_account_email
            )
        deadline = task.dispatch_deadline if "dispatch_deadline" in task else DEFAULT_DEADLINE
        status: int | None
        try:
            response = self._http.request(
                tasks_v2.HttpMethod(http.http_method).name,
                http.url,
                headers=headers,
                content=bytes(http.body),
                timeout=deadline.total_seconds(),
            )
            status = response.status_code
        except httpx.HTTPError:
            status = None
        with self._lock:
            self.attempts.append(DispatchAttempt(task.name, http.url, headers, bytes(http.body), status, time.time()))
            if stored.state == "deleted":
                return
            if status is not None and 200 <= status < 300:
                stored.end("done")
            elif stored.attempts >= self.max_attempts or self._stopping:
                stored.end("failed")
            else:
                stored.state = "pending"
                stored.due = time.time() + self.min_backoff_s * 2 ** (stored.attempts - 1)
            self._lock.notify_all()


# ---------------------------------------------------------------- a receiver for dispatched tasks


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


class TaskReceiver:
    """Records every POST; answers `status_for(path, n)` (default 200), n counting that path's requests."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.status_for: Callable[[str, int], int] = lambda path, n: 200
        self._lock = threading.Lock()
        outer = self

        class _Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                with outer._lock:
                    outer.received.append(Received(self.path, dict(self.headers.items()), body, time.time()))
                    n = sum(1 for r in outer.received if r.path == self.path)
                status = outer.status_for(self.path, n)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="task-receiver", daemon=True
        )
        self._thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self.received)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


@pytest.fixture
def fake_cloudtasks() -> Iterator[FakeCloudTasks]:
    fake = FakeCloudTasks().start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def task_receiver() -> Iterator[TaskReceiver]:
    receiver = TaskReceiver()
    try:
        yield receiver
    finally:
        receiver.stop()
