"""gcloud-tasks-emulator 0.6.2 (PyPI, a third party's Cloud Tasks emulator) for tests, run from its own
venv (`make tasks-emulator`: it needs protobuf < 5 and google-cloud-tasks < 3).

What it does as Cloud Tasks does (read from its server.py): accepts CreateTask over gRPC with the real
`google.cloud.tasks.v2` protos, dispatches HTTP-target tasks to their URL with their method, body and
headers plus `X-CloudTasks-TaskName`, `-QueueName`, `-TaskRetryCount` and `-TaskExecutionCount`, holds a
task until its `schedule_time`, and redelivers a task answered 4xx/5xx. Where it differs: one task at a
time per queue, redelivery at once (no backoff) and without limit, no GetTask, DeleteTask, OIDC tokens,
ALREADY_EXISTS or dispatch deadlines (tests/support/fake_cloudtasks.py covers those).
A missing venv fails the test with the command that installs it.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BINARY = ROOT / ".venv-tasks-emulator" / "bin" / "gcloud-tasks-emulator"


class TasksEmulator:
    def __init__(self, queue_path: str) -> None:
        if not BINARY.exists():
            raise RuntimeError(f"{BINARY} is missing: run `make tasks-emulator` (PyPI gcloud-tasks-emulator 0.6.2)")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.queue_path = queue_path
        self.log_path = Path(tempfile.mkstemp(prefix="tasks-emulator-", suffix=".log")[1])
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [str(BINARY), "start", "-p", str(self.port), "-d", queue_path],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + 30
        while not self._listening():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"gcloud-tasks-emulator did not start:\n{self.log()[-2000:]}")
            time.sleep(0.05)

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _listening(self) -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")
        return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
