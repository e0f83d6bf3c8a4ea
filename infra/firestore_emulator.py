"""Start and stop Google's Firestore emulator (the Debian package's jar) for tests and local runs.

Module use:  handle = start(); os.environ["FIRESTORE_EMULATOR_HOST"] = handle.host; ...; handle.wipe(); handle.stop()
CLI use:     python infra/firestore_emulator.py start [--port N]   (foreground; Ctrl-C stops it)
             python infra/firestore_emulator.py jar                (prints the jar path, or fails)
             python infra/firestore_emulator.py wipe HOST [--project P]
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE = "google-cloud-cli-firestore-emulator"
DEFAULT_JAR = Path("/usr/lib/google-cloud-sdk/platform/cloud-firestore-emulator/cloud-firestore-emulator.jar")
MAIN_CLASS = "com.google.cloud.datastore.emulator.firestore.CloudFirestore"
DEFAULT_PROJECT = "demo-nano-banana"
INSTALL_HINT = f"the Firestore emulator is not installed: run `apt-get install {PACKAGE}` (it needs Java 17)"


class EmulatorMissing(RuntimeError):
    """The emulator jar or Java is absent: tests must fail with this, never skip."""


def find_jar() -> Path:
    """The emulator jar, as the Debian package lists it (falling back to its usual path)."""
    if shutil.which("dpkg"):
        listing = subprocess.run(["dpkg", "-L", PACKAGE], capture_output=True, text=True, check=False, timeout=30)
        for line in listing.stdout.splitlines():
            if line.endswith(".jar") and Path(line).is_file():
                return Path(line)
    if DEFAULT_JAR.is_file():
        return DEFAULT_JAR
    raise EmulatorMissing(INSTALL_HINT)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Emulator:
    """A running emulator process; `host` is what FIRESTORE_EMULATOR_HOST wants."""

    process: subprocess.Popen[bytes]
    port: int
    project: str
    log_path: Path
    _stopped: bool = field(default=False, repr=False)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def wipe(self, project: str | None = None) -> None:
        """Delete every document of the project's default database."""
        wipe(self.host, project or self.project)

    def stop(self) -> None:
        """Terminate the emulator (and kill it if it does not exit within 10 s). Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def log_tail(self, chars: int = 2000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-chars:]
        return ""


def wipe(host: str, project: str = DEFAULT_PROJECT) -> None:
    """Delete every document of a (loopback) emulator's default database."""
    if host.rpartition(":")[0] not in {"127.0.0.1", "localhost"}:
        raise ValueError("only a loopback emulator may be wiped")
    url = f"http://{host}/emulator/v1/projects/{project}/databases/(default)/documents"
    with urllib.request.urlopen(urllib.request.Request(url, method="DELETE"), timeout=10) as response:
        response.read()


def _answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def start(*, port: int | None = None, project: str = DEFAULT_PROJECT, timeout_s: float = 60.0) -> Emulator:
    """Start the emulator on 127.0.0.1 and return once it answers HTTP."""
    jar = find_jar()
    java = shutil.which("java")
    if java is None:
        raise EmulatorMissing(f"java is not on PATH; {INSTALL_HINT}")
    port = port or _free_port()
    log_path = Path(tempfile.mkstemp(prefix="firestore-emulator-", suffix=".log")[1])
    command = [
        java,
        "-Duser.language=en",
        "-cp",
        str(jar),
        MAIN_CLASS,
        "start",
        "--host=127.0.0.1",
        f"--port={port}",
        f"--project_id={project}",
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    emulator = Emulator(process=process, port=port, project=project, log_path=log_path)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the Firestore emulator exited with {process.returncode}:\n{emulator.log_tail()}")
        if _answers(port):
            return emulator
        time.sleep(0.1)
    emulator.stop()
    raise RuntimeError(f"the Firestore emulator did not answer within {timeout_s:.0f} s:\n{emulator.log_tail()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("start", help="run the emulator in the foreground")
    run.add_argument("--port", type=int, default=None)
    run.add_argument("--project", default=DEFAULT_PROJECT)
    commands.add_parser("jar", help="print the jar path")
    wipe = commands.add_parser("wipe", help="delete every document")
    wipe.add_argument("host", help="host:port")
    wipe.add_argument("--project", default=DEFAULT_PROJECT)
    args = parser.parse_args(argv)
    try:
        if args.command == "jar":
            print(find_jar())
            return 0
        if args.command == "wipe":
            wipe(args.host, args.project)
            return 0
        emulator = start(port=args.port, project=args.project)
    except EmulatorMissing as exc:
        print(exc, file=sys.stderr)
        return 2
    print(f"export FIRESTORE_EMULATOR_HOST={emulator.host}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: emulator.stop())
    try:
        while emulator.process.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
