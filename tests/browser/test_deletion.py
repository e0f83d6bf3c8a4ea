"""Deleting from the studio (Debian's Chromium against `nano-banana dev`): a job's delete button and the
thread view's, each behind a confirmation dialog that works from the keyboard."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.browser.test_studio import jobs_in_project
from tests.support.browser import (  # noqa: F401
    browser_context_args,
    browser_type_launch_args,
    create,
    open_studio,
    photo,
    shot,
)
from tests.support.devserver import DevServer

pytestmark = pytest.mark.browser
Start = Callable[..., DevServer]


def succeeded_with_refinement(page: Page, tmp_path: Path, prompt: str) -> None:
    """Create a job, open its first variant, refine it; both end succeeded."""
    before = page.get_by_test_id("job").count()
    create(page, photo(tmp_path, f"{uuid.uuid4().hex[:6]}.jpg"), prompt, variants="1")
    expect(page.get_by_test_id("job")).to_have_count(before + 1)
    root = page.get_by_test_id("job").first
    expect(root.get_by_test_id("status")).to_have_text("succeeded", timeout=15_000)
    root.get_by_test_id("variant").first.click()
    expect(page.get_by_test_id("message")).to_have_count(2)
    page.get_by_test_id("refine-prompt").fill(f"{prompt}, refined")
    page.get_by_test_id("refine-prompt").press("Enter")
    expect(page.get_by_test_id("job")).to_have_count(before + 2, timeout=10_000)
    expect(page.get_by_test_id("job").first.get_by_test_id("status")).to_have_text("succeeded", timeout=15_000)
    expect(page.get_by_test_id("message")).to_have_count(4)


def test_delete_a_job_from_the_keyboard(page: Page, dev_server_factory: Start, tmp_path: Path) -> None:
    server = dev_server_factory(NANO_BANANA_PREVIEW_DELAY_MS="200")
    open_studio(page, server.url)
    succeeded_with_refinement(page, tmp_path, "Paint the door red")
    root = page.get_by_test_id("job").nth(1)
    dialog = page.get_by_test_id("delete-dialog")

    # Escape keeps the job, and the focus returns to the button that opened the dialog.
    root.get_by_test_id("delete").focus()
    page.keyboard.press("Enter")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("Paint the door red")
    expect(page.get_by_test_id("keep-job")).to_be_focused()
    shot(page, "delete-confirm")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(root.get_by_test_id("delete")).to_be_focused()
    expect(page.get_by_test_id("job")).to_have_count(2)
    assert jobs_in_project(server) == 2

    # Enter, Tab to "Delete", Enter: the job and its refinement go, the detail view with them.
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("keep-job")).to_be_focused()
    page.keyboard.press("Tab")
    expect(page.get_by_test_id("confirm-delete")).to_be_focused()
    page.keyboard.press("Enter")
    expect(dialog).to_be_hidden()
    expect(page.get_by_test_id("job")).to_have_count(0)
    expect(page.get_by_test_id("empty")).to_be_visible()
    expect(page.get_by_test_id("detail")).to_be_hidden()
    expect(page.locator("#live")).to_have_text("Deleted 2 jobs.")
    expect(page.locator("#gallery-title")).to_be_focused()
    assert jobs_in_project(server) == 0


def test_delete_a_turn_from_the_thread_view(page: Page, dev_server_factory: Start, tmp_path: Path) -> None:
    server = dev_server_factory(NANO_BANANA_PREVIEW_DELAY_MS="200")
    open_studio(page, server.url)
    succeeded_with_refinement(page, tmp_path, "Add a porch light")
    # The detail view shows the root's variant and the thread of two turns; delete the second turn there.
    turns = page.get_by_test_id("thread-delete")
    expect(turns).to_have_count(2)
    turns.nth(1).click()
    expect(page.get_by_test_id("delete-dialog")).to_contain_text("Add a porch light, refined")
    page.get_by_test_id("confirm-delete").click()
    expect(page.get_by_test_id("message")).to_have_count(2)
    expect(page.get_by_test_id("detail")).to_be_visible()
    expect(page.get_by_test_id("job")).to_have_count(1)
    expect(page.get_by_test_id("job").first).not_to_contain_text("Refinement")
    assert jobs_in_project(server) == 1

    # Someone else's job shows no delete button (the API would answer 403).
    s = server.session()
    other = server.token_for(uuid.uuid4(), uuid.UUID(s.project_id))
    job_id = server.create_job(other).json()["jobId"]
    server.wait_for(other, job_id, {"succeeded"})
    page.reload()
    open_studio(page, server.url)
    expect(page.get_by_test_id("job")).to_have_count(2)
    expect(page.locator(f"#job-{job_id}").get_by_test_id("delete")).to_have_count(0)
    expect(page.get_by_test_id("delete")).to_have_count(1)
