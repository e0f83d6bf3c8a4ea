"""CORS for the builder's page, which lives on another origin than the API and sends Authorization."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.devserver import DevServer

pytestmark = pytest.mark.e2e
BUILDER = "https://builder.example.com"
ROOT = Path(__file__).resolve().parents[2]


def test_the_builders_origin_is_preflighted_and_answered(dev_server_factory: Callable[..., DevServer]) -> None:
    server = dev_server_factory(
        NANO_BANANA_CORS_ORIGINS=f"{BUILDER}, http://localhost:3000", NANO_BANANA_RATE_PER_HOUR="1"
    )
    s = server.session()
    preflight = server.client.options(
        "/api/nano-banana/jobs",
        headers={
            "Origin": BUILDER,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, idempotency-key",
        },
    )
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == BUILDER
    assert set(preflight.headers["Access-Control-Allow-Methods"].split(", ")) == {"GET", "POST", "DELETE"}
    assert {h.strip().lower() for h in preflight.headers["Access-Control-Allow-Headers"].split(",")} >= {
        "authorization",
        "content-type",
        "idempotency-key",
    }
    assert "Origin" in preflight.headers["Vary"]

    # The actual calls carry the grant, and a 429's Retry-After is readable by the page.
    headers = {"Origin": BUILDER}
    assert server.create_job(s, headers=headers).headers["Access-Control-Allow-Origin"] == BUILDER
    limited = server.create_job(s, headers=headers)
    assert limited.status_code == 429
    assert limited.headers["Access-Control-Allow-Origin"] == BUILDER
    assert "Retry-After" in limited.headers["Access-Control-Expose-Headers"]
    listed = server.client.get(
        "/api/nano-banana/jobs", params={"projectId": s.project_id}, headers={**s.headers, **headers}
    )
    assert listed.headers["Access-Control-Allow-Origin"] == BUILDER
    assert "Origin" in listed.headers["Vary"]

    # Any other origin gets no grant (the browser then refuses to hand the response to the page).
    for other in ("https://evil.example.com", "https://builder.example.com.evil.net", "null"):
        r = server.client.options(
            "/api/nano-banana/jobs", headers={"Origin": other, "Access-Control-Request-Method": "POST"}
        )
        assert "Access-Control-Allow-Origin" not in r.headers, other
        r = server.client.get("/api/nano-banana/config", headers={"Origin": other})
        assert r.status_code == 200
        assert "Access-Control-Allow-Origin" not in r.headers, other


def test_no_cross_origin_access_unless_configured(dev_server: DevServer) -> None:
    server_options = dev_server.client.options(
        "/api/nano-banana/jobs", headers={"Origin": BUILDER, "Access-Control-Request-Method": "POST"}
    )
    assert "Access-Control-Allow-Origin" not in server_options.headers
    r = dev_server.client.get("/api/nano-banana/config", headers={"Origin": BUILDER})
    assert "Access-Control-Allow-Origin" not in r.headers


def test_an_origin_that_is_not_one_refuses_to_start(dev_server_factory: Callable[..., DevServer]) -> None:
    with pytest.raises(RuntimeError, match="not an origin"):
        dev_server_factory(NANO_BANANA_CORS_ORIGINS="https://builder.example.com/path")


PROBE = """
import json, sys
from functions_framework import create_app
client = create_app(target="api", source="functions/main.py").test_client()
r = client.options("/api/nano-banana/jobs", headers={"Origin": sys.argv[1], "Access-Control-Request-Method": "POST"})
print(json.dumps({"status": r.status_code, "allow": r.headers.get("Access-Control-Allow-Origin")}))
sys.modules["main"].runtime().close()  # the module the framework loaded: stop its embedded Postgres
"""


def test_the_functions_framework_hands_preflights_to_the_api(tmp_path: Path) -> None:
    """What the deployed `api` function does: the Functions Framework routes OPTIONS to it."""
    env = {**os.environ, "NANO_BANANA_DATA_DIR": str(tmp_path), "NANO_BANANA_CORS_ORIGINS": BUILDER}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, BUILDER],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"status": 204, "allow": BUILDER}
