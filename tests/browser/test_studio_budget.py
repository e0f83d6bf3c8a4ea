"""The studio shows the month's images against the project's budget under the form, and says in plain
words why a creation past the budget is refused (Debian's Chromium against `nano-banana dev`)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

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


def test_the_months_images_and_a_budget_refusal_in_plain_words(
    page: Page, dev_server_factory: Start, tmp_path: Path
) -> None:
    server = dev_server_factory(NANO_BANANA_PROJECT_MONTHLY_IMAGES="2", NANO_BANANA_MAX_ACTIVE_PER_PROJECT="5")
    open_studio(page, server.url)
    budget = page.get_by_test_id("budget")
    expect(budget).to_contain_text(re.compile(r"This month: 0 images of 2 \(2 left until \w+ 1\)"))
    create(page, photo(tmp_path), variants="2")
    job = page.get_by_test_id("job").first
    expect(job.get_by_test_id("status")).to_have_text("succeeded")
    expect(budget).to_contain_text("This month: 2 images of 2 (0 left")
    create(page, photo(tmp_path, "second.jpg"), "One more", variants="1")
    error = page.get_by_test_id("form-error")
    expect(error).to_contain_text("This project has used its 2 images for this month (2 made)")
    expect(error).to_contain_text(re.compile(r"It can make more from \w+ 1;"))
    expect(page.get_by_test_id("job")).to_have_count(1)
    shot(page, "budget-exceeded")


def test_without_a_budget_the_month_is_counted_all_the_same(
    page: Page, dev_server_factory: Start, tmp_path: Path
) -> None:
    server = dev_server_factory()
    open_studio(page, server.url)
    create(page, photo(tmp_path), variants="1")
    expect(page.get_by_test_id("job").first.get_by_test_id("status")).to_have_text("succeeded")
    expect(page.get_by_test_id("budget")).to_have_text("This month: 1 image. This project has no monthly limit.")
