"""What a first run from the README tripped on (issue 26), over HTTP against the dev server: the banner's
dev-token command works as printed, the concurrency limit's Retry-After is a short poll, and errors say
what is wrong in words that agree with their details."""

from __future__ import annotations

import re
import subprocess
import uuid
from collections.abc import Callable

import pytest

from tests.support.devserver import BIN, DevServer, Session, png_bytes, png_of_size
from tests.support.openapi import validate_error

pytestmark = pytest.mark.e2e


def test_the_banners_dev_token_command_mints_a_token_the_server_accepts(dev_server: DevServer) -> None:
    """The banner used to print `nano-banana dev-token …` without the data directory; run from anywhere,
    that wrote the membership into another database and the server answered 403."""
    printed = re.search(
        r"A token for curl: (NANO_BANANA_DATA_DIR=(\S+) \.venv/bin/nano-banana dev-token)", dev_server.logs()
    )
    assert printed, dev_server.logs()[-2000:]
    assert printed.group(2) == str(dev_server.data_dir.resolve())
    user, project = uuid.uuid4(), uuid.uuid4()
    env = {k: v for k, v in dev_server.env.items() if k != "NANO_BANANA_DATA_DIR"}
    env["NANO_BANANA_DATA_DIR"] = printed.group(2)  # what the printed prefix sets
    out = subprocess.run(
        [str(BIN / "nano-banana"), "dev-token", "--user", str(user), "--project", str(project)],
        env=env,
        cwd="/",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    s = Session(out.stdout.strip(), str(user), str(project))
    assert dev_server.create_job(s).status_code == 202


def test_concurrency_limited_says_to_poll_soon(dev_server_factory: Callable[..., DevServer]) -> None:
    """It said Retry-After: 360 (the lease) though the running job ended 150 ms later."""
    server = dev_server_factory(NANO_BANANA_MAX_ACTIVE_PER_PROJECT="1", NANO_BANANA_PREVIEW_DELAY_MS="3000")
    s = server.session()
    first = server.create_job(s)
    assert first.status_code == 202
    busy = server.create_job(s)
    assert busy.status_code == 429
    validate_error(busy.json(), "concurrency_limited")
    assert busy.headers["Retry-After"] == "5"
    assert busy.headers["RateLimit-Reset"] == "5"
    details = busy.json()["error"]["details"]
    assert details["retryAfterSeconds"] == 5
    assert 300 < details["slotFreeBySeconds"] <= 360, "the lease's own bound: deadline + 60 s"
    assert "a slot frees the moment one of them ends" in busy.json()["error"]["message"]
    server.wait_for(s, first.json()["jobId"], {"succeeded"})
    assert server.create_job(s).status_code == 202, "the slot is free the moment the job ended"


def test_error_messages_say_what_is_wrong(dev_server: DevServer) -> None:
    s = dev_server.session()
    limit = 10 * 1024 * 1024

    # 413: the message names the number details.maxBytes holds (it said 10551296, the body cap)
    too_big = dev_server.create_job(s, image=png_of_size(limit + 1))
    assert too_big.status_code == 413
    validate_error(too_big.json(), "file_too_large")
    error = too_big.json()["error"]
    assert error["details"]["maxBytes"] == limit
    assert f"{limit} bytes (10 MiB)" in error["message"]
    body = dev_server.client.post(
        "/api/nano-banana/jobs",
        content=b"x" * (4 * limit),  # past the image, the references' 20 MiB and the form's room
        headers={**s.headers, "Content-Type": "multipart/form-data; boundary=b"},
    )
    assert body.status_code == 413
    assert f"{limit} bytes" in body.json()["error"]["message"]
    assert body.json()["error"]["details"]["maxBytes"] == limit
    assert 4 * limit > body.json()["error"]["details"]["maxBodyBytes"] > 3 * limit

    # 422: which field (it said only "the request is not valid")
    job = dev_server.create_job(s, image=png_bytes())
    job_id = job.json()["jobId"]
    dev_server.wait_for(s, job_id, {"succeeded"})
    blocks = dev_server.client.get(f"/api/nano-banana/jobs/{job_id}/blocks", headers=s.headers)
    assert blocks.status_code == 422
    validate_error(blocks.json(), "invalid_request")
    assert blocks.json()["error"]["message"] == "the request is not valid: variantId: field required"

    # 409: in words ("job is succeeded; it can no longer be canceled")
    cancel = dev_server.client.post(f"/api/nano-banana/jobs/{job_id}/cancel", headers=s.headers)
    assert cancel.status_code == 409
    validate_error(cancel.json(), "invalid_transition")
    assert cancel.json()["error"]["message"] == (
        "the job has already succeeded; only a queued or running job can be canceled"
    )
    assert cancel.json()["error"]["details"]["status"] == "succeeded"
