"""The studio's model and size selectors and reference images (issue 29), in Debian's Chromium."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Page, Request, expect

from tests.support.browser import (  # noqa: F401
    browser_context_args,
    browser_type_launch_args,
    fill_and_create,
    open_studio,
    photo,
)
from tests.support.devserver import DevServer

pytestmark = pytest.mark.browser
FLASH, PRO = "gemini-2.5-flash-image", "gemini-3-pro-image-preview"


def test_model_size_and_references(page: Page, dev_server_factory: Callable[..., DevServer], tmp_path: Path) -> None:
    server = dev_server_factory(NANO_BANANA_MODELS=f"{FLASH},{PRO}")
    posts: list[Request] = []
    page.on("request", lambda r: posts.append(r) if r.method == "POST" and r.url.endswith("/jobs") else None)
    open_studio(page, server.url)
    model, size = page.get_by_test_id("model"), page.get_by_test_id("resolution")
    expect(model).to_have_value(FLASH)
    assert size.locator("option").all_inner_texts() == ["Model default", "1K"]
    expect(page.get_by_test_id("refs-hint")).to_contain_text(f"Up to 2 for {FLASH}")
    refs = [str(photo(tmp_path, f"ref{i}.png", (80, 60), "PNG")) for i in range(3)]

    # Over the chosen model's limit: said before anything is sent.
    page.get_by_test_id("file").set_input_files(str(photo(tmp_path)))
    page.get_by_test_id("refs").set_input_files(refs)
    fill_and_create(page, "Put the logo on it", variants="1")
    expect(page.get_by_test_id("form-error")).to_contain_text(f"{FLASH} takes at most 2 reference images")
    assert posts == []

    # Pro takes them, at 2K; the job shows its model, size and references.
    model.select_option(PRO)
    assert size.locator("option").all_inner_texts() == ["Model default", "1K", "2K", "4K"]
    size.select_option("2K")
    page.get_by_test_id("submit").click()
    job = page.get_by_test_id("job").first
    expect(job.get_by_test_id("status")).to_have_text("succeeded", timeout=15_000)
    expect(job).to_contain_text(f"{PRO} 2K · 3 references")
    assert len(posts) == 1
    s = server.session()  # the page's dev user: the job as the API has it
    (made,) = server.client.get("/api/nano-banana/jobs", params={"projectId": s.project_id}, headers=s.headers).json()[
        "jobs"
    ]
    assert (made["model"], made["resolution"]) == (PRO, "2K")
    assert [(r["width"], r["height"]) for r in made["references"]] == [(80, 60)] * 3
