"""docs/studio.png from a real run: a dev server, a 4:3 photo edited to 16:9 and refined once, the first
job's variant open in the aligned compare view with its block JSON and its two-turn thread, at 1280 px.

Every run writes test-artifacts/studio-readme.png; `NANO_BANANA_UPDATE_SCREENSHOT=1` also writes it to
docs/studio.png (what the README shows)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import Page, expect

from tests.support.browser import (  # noqa: F401
    browser_context_args,
    browser_type_launch_args,
    fill_and_create,
    open_studio,
    photo,
    shot,
)
from tests.support.devserver import ROOT, DevServer

pytestmark = pytest.mark.browser


def test_the_readme_screenshot(page: Page, dev_server_factory: Callable[..., DevServer], tmp_path: Path) -> None:
    server = dev_server_factory(NANO_BANANA_PREVIEW_DELAY_MS="300")
    page.set_viewport_size({"width": 1280, "height": 900})
    open_studio(page, server.url)
    page.get_by_test_id("file").set_input_files(str(photo(tmp_path, size=(1024, 768))))
    fill_and_create(page, "Golden hour over the hills", variants="2", aspect="16:9")
    first = page.get_by_test_id("job").first
    expect(first.get_by_test_id("status")).to_have_text("succeeded", timeout=15_000)
    first.get_by_test_id("variant").first.click()
    page.get_by_test_id("refine-prompt").fill("Now add a few birds")
    page.get_by_test_id("refine-prompt").press("Enter")
    expect(page.get_by_test_id("job")).to_have_count(2, timeout=10_000)
    expect(page.get_by_test_id("job").first.get_by_test_id("status")).to_have_text("succeeded", timeout=15_000)

    # back to the first job's variant: a 4:3 photo against its 16:9 edit, the thread's two turns
    page.get_by_test_id("job").nth(1).get_by_test_id("variant").first.click()
    expect(page.get_by_test_id("message")).to_have_count(4)
    for image in ("before", "after"):
        expect(page.get_by_test_id(image)).to_have_js_property("complete", True)
    page.get_by_test_id("copy-compare").click()
    expect(page.get_by_test_id("block-json")).to_contain_text('"image_compare"')  # fetched after the click
    block = json.loads(page.get_by_test_id("block-json").inner_text())
    assert block["type"] == "image_compare"
    assert (block["props"]["before"]["width"], block["props"]["before"]["height"]) == (1024, 768)
    assert (block["props"]["after"]["width"], block["props"]["after"]["height"]) == (1024, 576)
    frame = page.get_by_test_id("compare").bounding_box()
    assert frame is not None
    assert abs(frame["width"] / frame["height"] - 16 / 9) < 0.01
    page.get_by_test_id("refine-prompt").blur()
    page.evaluate("window.scrollTo(0, 0)")

    path = shot(page, "readme")
    with Image.open(path) as taken:
        assert taken.width == 1280
    if os.environ.get("NANO_BANANA_UPDATE_SCREENSHOT") == "1":
        shutil.copy(path, ROOT / "docs" / "studio.png")
