"""A page on another origin (the builder) calls the API in a real browser: allowed only when configured.

`http://localhost:PORT` and `http://127.0.0.1:PORT` are different origins to Chromium, so the dev server's
own pages on `localhost` play the builder, and its API on `127.0.0.1` is the cross-origin service.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page

from tests.support.browser import browser_context_args, browser_type_launch_args, photo_bytes  # noqa: F401
from tests.support.devserver import free_port, start_dev_server

pytestmark = pytest.mark.browser

CALLS = """async ([api, token, project, image]) => {
  const auth = { Authorization: `Bearer ${token}` };
  const listed = await fetch(`${api}/jobs?projectId=${project}`, { headers: auth });
  const form = new FormData();
  form.append("projectId", project);
  form.append("prompt", "from the builder");
  form.append("image", new Blob([Uint8Array.from(atob(image), (c) => c.charCodeAt(0))], { type: "image/jpeg" }), "p.jpg");
  const created = await fetch(`${api}/jobs`, {
    method: "POST", body: form, headers: { ...auth, "Idempotency-Key": crypto.randomUUID() },
  });
  const job = await created.json();
  const ticket = await (await fetch(`${api}/jobs/${job.jobId}/events-ticket`, { method: "POST", headers: auth })).json();
  const first = await new Promise((resolve, reject) => {
    const source = new EventSource(new URL(ticket.url, api).href);
    source.addEventListener("job", (e) => { source.close(); resolve(JSON.parse(e.data).id); });
    source.onerror = () => { source.close(); reject(new Error("stream refused")); };
  });
  return { listed: listed.status, created: created.status, location: created.headers.get("Location"),
           streamed: first === job.jobId };
}"""


def run_calls(page: Page, tmp_path: Path, cors: str | None) -> Any:
    import base64

    port = free_port()
    env = {"PORT": str(port), **({"NANO_BANANA_CORS_ORIGINS": cors.format(port=port)} if cors else {})}
    server = start_dev_server(tmp_path, env)
    try:
        s = server.session()
        page.goto(f"http://localhost:{port}/healthz")  # a page of the "builder" origin
        api = f"http://127.0.0.1:{port}/api/nano-banana"
        image = base64.b64encode(photo_bytes((64, 48))).decode()
        try:
            return page.evaluate(CALLS, [api, s.token, s.project_id, image])
        except Exception as exc:
            return str(exc)
    finally:
        server.stop()


def test_the_builders_origin_can_list_create_and_stream(page: Page, tmp_path: Path) -> None:
    result = run_calls(page, tmp_path, "http://localhost:{port}")
    assert isinstance(result, dict), result
    assert result["listed"] == 200
    assert result["created"] == 202
    assert result["location"].startswith("/api/nano-banana/jobs/"), "Location is exposed to the page"
    assert result["streamed"] is True


def test_an_origin_not_configured_is_refused_by_the_browser(page: Page, tmp_path: Path) -> None:
    result = run_calls(page, tmp_path, None)
    assert isinstance(result, str)
    assert "Failed to fetch" in result
