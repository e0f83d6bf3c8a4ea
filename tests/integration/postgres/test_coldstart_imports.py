"""The `api` entry point never imports google.genai, even when the generator is Vertex."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.postgres
ROOT = Path(__file__).resolve().parents[3]

PROBE = """
import json, sys, time
t = time.perf_counter()
import main
import_s = time.perf_counter() - t
clients = ("psycopg", "grpc", "google.cloud.firestore", "google.cloud.tasks_v2", "storage3", "PIL", "google.genai")
at_import = sorted(m for m in clients if m in sys.modules)
from werkzeug.test import EnvironBuilder
from flask import Request
env = EnvironBuilder(path="/api/nano-banana/config", method="GET").get_environ()
response = main.api(Request(env))
heavy = sorted(m for m in ("google.genai", "google.cloud.aiplatform", "vertexai") if m in sys.modules)
print(json.dumps({"status": response.status_code, "heavy": heavy, "at_import": at_import, "import_s": import_s}))
main.runtime().close()
"""


def test_api_serves_without_importing_the_model_sdk(tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "NANO_BANANA_DATA_DIR": str(tmp_path),
        "NANO_BANANA_GENERATOR": "vertex",
        "GOOGLE_CLOUD_PROJECT": "test-project",
        "PYTHONPATH": str(ROOT / "functions"),
    }
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["status"] == 200
    assert result["heavy"] == []
    # Importing main is deferred work only: no client library loads until the runtime is built (the
    # time it takes is bench/coldstart.py's to measure, not a test's).
    assert result["at_import"] == [], result
