"""A cold `api` instance on the production adapters answers GETs without importing Firestore or Cloud
Tasks (their clients are built on first use), and its first POST still reserves and enqueues.

In a fresh interpreter each time: what matters is what the process imported, so nothing may leak in from
this one. Against the embedded Postgres, the Firestore emulator, the fake Cloud Tasks server and the local
Storage server."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from nano_banana.adapters.postgres import PostgresJobStore
from nano_banana.auth import issue_dev_token
from nano_banana.embedded_pg import EmbeddedPostgres
from tests.support.devserver import png_bytes
from tests.support.fake_cloudtasks import FakeCloudTasks, TaskReceiver, fake_cloudtasks, task_receiver  # noqa: F401
from tests.support.firestore import Emulator, firestore_emulator  # noqa: F401
from tests.support.storage_server import StorageServer

pytestmark = [pytest.mark.postgres, pytest.mark.firestore, pytest.mark.cloudtasks]
ROOT = Path(__file__).resolve().parents[3]
SECRET = "a-test-secret-that-is-not-the-dev-one-0123456789"
KEY = "service-role-key-cold-api"

PROBE = r"""
import io, json, sys, uuid
import main
from flask import Request
from werkzeug.test import EnvironBuilder

WRITE_CLIENTS = ("google.cloud.firestore", "google.cloud.tasks_v2",
                 "nano_banana.adapters.limits_firestore", "nano_banana.adapters.queue_cloudtasks")
token, project, png_path, warm = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "true"
png = open(png_path, "rb").read()


def loaded():
    return sorted(m for m in WRITE_CLIENTS if m in sys.modules)


def call(method, path, **kw):
    env = EnvironBuilder(
        path="/api/nano-banana" + path, method=method, headers={"Authorization": "Bearer " + token}, **kw
    ).get_environ()
    response = main.api(Request(env))
    response.get_data()
    return response


out = {}
first = call("GET", "/jobs?projectId=" + project)
out["first_get"] = [first.status_code, loaded()]
first.close()  # the answer is sent: from here the write warm-up may start (when it is on)
if not warm:
    statuses = []
    for path in ("/config", "/healthz", "/jobs/" + str(uuid.uuid4()), "/jobs?projectId=" + project):
        r = call("GET", path)
        statuses.append(r.status_code)
        r.close()
    out["gets"] = [statuses, loaded()]
rt = main.runtime()
if warm:
    out["warm"] = rt.services.limits.prepare().wait_warm(60)
post = call("POST", "/jobs", data={"projectId": project, "prompt": "cold", "image": (io.BytesIO(png), "a.png", "image/png")})
out["post"] = [post.status_code, loaded()]
job = call("GET", "/jobs/" + post.get_json()["jobId"])
out["job"] = [job.status_code, job.get_json()["status"]]
print("PROBE " + json.dumps(out), flush=True)
rt.close()
"""


def _probe(
    tmp_path: Path,
    pg: EmbeddedPostgres,
    emulator: Emulator,
    fake: FakeCloudTasks,
    receiver: TaskReceiver,
    *,
    warm: bool,
) -> tuple[dict[str, Any], list[str]]:
    user, project = uuid.uuid4(), uuid.uuid4()
    store = PostgresJobStore(pg.uri)
    store.add_member(project, user)
    store.close()
    png = tmp_path / "a.png"
    png.write_bytes(png_bytes())
    storage = StorageServer(KEY)
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(ROOT / "functions"),
        "NANO_BANANA_DATABASE_URL": pg.uri,
        "NANO_BANANA_JWT_SECRET": SECRET,
        "NANO_BANANA_LIMITS": "firestore",
        "NANO_BANANA_QUEUE": "cloudtasks",
        "NANO_BANANA_STORAGE": "supabase",
        "NANO_BANANA_GENERATOR": "vertex",
        "SUPABASE_URL": storage.url,
        "SUPABASE_SERVICE_ROLE_KEY": KEY,
        "GOOGLE_CLOUD_PROJECT": emulator.project,
        "FIRESTORE_EMULATOR_HOST": emulator.host,
        "NANO_BANANA_TASKS_ENDPOINT": fake.endpoint,
        "NANO_BANANA_GENERATE_URL": receiver.url("/generate"),
        "NANO_BANANA_EXPIRE_URL": receiver.url("/expire"),
        "NANO_BANANA_WARM_UP": "true" if warm else "false",
    }
    token = issue_dev_token(SECRET, user)
    try:
        out = subprocess.run(
            [sys.executable, "-c", PROBE, token, str(project), str(png), str(warm).lower()],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
    finally:
        storage.stop()
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    (result,) = [json.loads(line.removeprefix("PROBE ")) for line in lines if line.startswith("PROBE ")]
    events = [json.loads(line).get("event", "") for line in lines if line.startswith("{")]
    return result, events


def test_gets_import_neither_firestore_nor_cloud_tasks_and_a_post_builds_them(
    tmp_path: Path,
    embedded_pg: EmbeddedPostgres,
    firestore_emulator: Emulator,  # noqa: F811
    fake_cloudtasks: FakeCloudTasks,  # noqa: F811
    task_receiver: TaskReceiver,  # noqa: F811
) -> None:
    result, events = _probe(tmp_path, embedded_pg, firestore_emulator, fake_cloudtasks, task_receiver, warm=False)
    # Before the deferral, building the runtime imported both: every GET paid for them.
    assert result["first_get"] == [200, []]
    assert result["gets"] == [[200, 200, 404, 200], []]
    status, loaded = result["post"]
    assert status == 202
    assert "google.cloud.firestore" in loaded
    assert "google.cloud.tasks_v2" in loaded
    assert result["job"] == [200, "queued"]
    assert fake_cloudtasks.methods().count("CreateTask") == 2, "the POST enqueued generate and expire"
    assert not any("warm" in event for event in events), "NANO_BANANA_WARM_UP=false warms nothing"


def test_after_the_first_answer_the_write_clients_are_warmed(
    tmp_path: Path,
    embedded_pg: EmbeddedPostgres,
    firestore_emulator: Emulator,  # noqa: F811
    fake_cloudtasks: FakeCloudTasks,  # noqa: F811
    task_receiver: TaskReceiver,  # noqa: F811
) -> None:
    result, events = _probe(tmp_path, embedded_pg, firestore_emulator, fake_cloudtasks, task_receiver, warm=True)
    assert result["first_get"] == [200, []], "the warm-up waits for the first answer"
    assert result["warm"] is True, "the Firestore warm-up read and commit succeeded"
    assert result["post"][0] == 202
    assert result["job"] == [200, "queued"]
    for event in ("storage_warmed_up", "write_clients_built", "limits_warmed_up", "queue_warmed_up"):
        assert event in events, (event, events)
    assert "GetTask" in fake_cloudtasks.methods(), "the queue warm-up asked for a task that does not exist"
