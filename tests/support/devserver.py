"""Start `nano-banana dev` as a subprocess on a free port with its own data dir, and talk to it."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def png_bytes(width: int = 64, height: int = 48, color: tuple[int, int, int] = (200, 120, 40)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, "PNG")
    return buf.getvalue()


def png_of_size(size: int) -> bytes:
    """A valid PNG padded to exactly `size` bytes with an ancillary tEXt chunk."""
    import struct
    import zlib

    base = png_bytes(32, 32)
    data = b"Comment\x00" + b"x" * (size - len(base) - 12 - 8)
    chunk = struct.pack(">I", len(data)) + b"tEXt" + data + struct.pack(">I", zlib.crc32(b"tEXt" + data) & 0xFFFFFFFF)
    return base[:-12] + chunk + base[-12:]


@dataclass
class Session:
    token: str
    user_id: str
    project_id: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass
class DevServer:
    url: str
    data_dir: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    log_path: Path
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.Client(base_url=self.url, timeout=30)

    @property
    def api(self) -> str:
        return f"{self.url}/api/nano-banana"

    def session(self) -> Session:
        r = self.client.post("/api/nano-banana/dev/session")
        r.raise_for_status()
        body = r.json()
        return Session(body["token"], body["userId"], body["projectId"])

    def token_for(self, user_id: uuid.UUID, project_id: uuid.UUID | None = None) -> Session:
        """A token for any user (membership added via the dev-token CLI when a project is given)."""
        import jwt

        from nano_banana.settings import DEV_JWT_SECRET

        if project_id is not None:
            subprocess.run(
                [str(BIN / "nano-banana"), "dev-token", "--user", str(user_id), "--project", str(project_id)],
                env=self.env,
                check=True,
                capture_output=True,
                timeout=60,
            )
        now = int(time.time())
        token = jwt.encode(
            {"sub": str(user_id), "aud": "authenticated", "exp": now + 3600, "iat": now},
            DEV_JWT_SECRET,
            algorithm="HS256",
        )
        return Session(token, str(user_id), str(project_id) if project_id else "")

    def create_job(
        self,
        s: Session,
        *,
        image: bytes | None = None,
        prompt: str = "make it brighter",
        variant_count: int | None = 2,
        aspect_ratio: str | None = None,
        project_id: str | None = None,
        headers: dict[str, str] | None = None,
        filename: str = "photo.png",
    ) -> httpx.Response:
        data: dict[str, str] = {"projectId": project_id or s.project_id, "prompt": prompt}
        if variant_count is not None:
            data["variantCount"] = str(variant_count)
        if aspect_ratio:
            data["aspectRatio"] = aspect_ratio
        files = {"image": (filename, image if image is not None else png_bytes(), "image/png")}
        return self.client.post(
            "/api/nano-banana/jobs", data=data, files=files, headers={**s.headers, **(headers or {})}
        )

    def job(self, s: Session, job_id: str) -> dict[str, Any]:
        r = self.client.get(f"/api/nano-banana/jobs/{job_id}", headers=s.headers)
        r.raise_for_status()
        body: dict[str, Any] = r.json()
        return body

    def job_count(self, s: Session) -> int:
        """How many jobs the session's project has (the first 100)."""
        r = self.client.get(
            "/api/nano-banana/jobs", params={"projectId": s.project_id, "limit": 100}, headers=s.headers
        )
        r.raise_for_status()
        return len(r.json()["jobs"])

    def wait_for(self, s: Session, job_id: str, statuses: set[str], timeout_s: float = 20) -> dict[str, Any]:
        end = time.monotonic() + timeout_s
        while True:
            job = self.job(s, job_id)
            if job["status"] in statuses:
                return job
            if time.monotonic() > end:
                raise AssertionError(f"job {job_id} stayed {job['status']}, wanted {statuses}")
            time.sleep(0.05)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """Ctrl-C, as a developer would; a server that does not stop in time is killed, and then its
        embedded Postgres (which a killed process cannot stop) is stopped here."""
        from nano_banana.embedded_pg import stop_if_running

        self.client.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        stop_if_running(self.data_dir / "postgres")


def start_dev_server(tmp: Path, env_overrides: dict[str, str] | None = None, *, timeout_s: float = 60) -> DevServer:
    port = int((env_overrides or {}).get("PORT") or free_port())
    data_dir = tmp / f"data-{port}"
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("NANO_BANANA_", "N8N_", "SUPABASE_"))},
        "PORT": str(port),
        "NANO_BANANA_DATA_DIR": str(data_dir),
        "NANO_BANANA_LOG_LEVEL": "INFO",
        **(env_overrides or {}),
    }
    log_path = data_dir / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(BIN / "nano-banana"), "dev"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT
        )
    server = DevServer(url=f"http://127.0.0.1:{port}", data_dir=data_dir, env=env, process=process, log_path=log_path)
    end = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"dev server exited with {process.returncode}:\n{server.logs()[-4000:]}")
        try:
            if httpx.get(f"{server.url}/healthz", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        if time.monotonic() > end:
            server.stop()
            raise RuntimeError(f"dev server did not become healthy:\n{server.logs()[-4000:]}")
        time.sleep(0.1)


@pytest.fixture(scope="session")
def dev_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    """One dev server on the embedded defaults for the whole session (fast generator, default limits
    raised so unrelated tests do not trip them; guardrail tests start their own)."""
    server = start_dev_server(
        tmp_path_factory.mktemp("dev"),
        {"NANO_BANANA_RATE_PER_HOUR": "100000", "NANO_BANANA_MAX_ACTIVE_PER_PROJECT": "1000"},
    )
    yield server
    server.stop()


@pytest.fixture
def dev_server_factory(tmp_path: Path) -> Iterator[Any]:
    """Start dev servers with custom settings; all are stopped at the end of the test."""
    started: list[DevServer] = []

    def start(**env: str) -> DevServer:
        server = start_dev_server(tmp_path, env)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
