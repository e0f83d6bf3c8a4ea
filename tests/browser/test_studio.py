"""The studio page in a real browser: the whole flow, guardrails, limits, cancel, timeout, small screens."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import BrowserContext, Page, expect

from tests.support.devserver import DevServer

pytestmark = pytest.mark.browser
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
Start = Callable[..., DevServer]


def photo(tmp_path: Path, name: str = "photo.jpg", size: tuple[int, int] = (640, 480), fmt: str = "JPEG") -> Path:
    img = Image.new("RGB", size, (40, 120, 200))
    for x in range(0, size[0], 40):
        for y in range(0, size[1], 40):
            img.putpixel((x, y), (255, 255, 255))
    buf = io.BytesIO()
    img.save(buf, fmt)
    path = tmp_path / name
    path.write_bytes(buf.getvalue())
    return path


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"studio-{name}.png"), full_page=True)


def open_studio(page: Page, server: DevServer) -> None:
    page.goto(server.url + "/")
    expect(page.get_by_test_id("who")).to_contain_text("Dev user")


def create(page: Page, file: Path, prompt: str = "Make it golden hour", variants: str = "2") -> None:
    page.get_by_test_id("file").set_input_files(str(file))
    page.get_by_test_id("prompt").fill(prompt)
    page.get_by_test_id("variants").select_option(variants)
    page.get_by_test_id("submit").click()


def test_full_flow(page: Page, context: BrowserContext, dev_server_factory: Start, tmp_path: Path) -> None:
    server = dev_server_factory(NANO_BANANA_PREVIEW_DELAY_MS="600")
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
    open_studio(page, server)
    shot(page, "1-empty")
    create(page, photo(tmp_path), "Turn the sky orange")
    job = page.get_by_test_id("job").first
    expect(job.get_by_test_id("status")).to_have_text("running", timeout=10_000)
    shot(page, "2-running")
    expect(job.get_by_test_id("status")).to_have_text("succeeded", timeout=15_000)
    expect(job.get_by_test_id("variant")).to_have_count(2)
    for img in job.locator("img").all():
        assert img.get_attribute("alt")
    job.get_by_test_id("variant").first.click()
    expect(page.get_by_test_id("detail")).to_be_visible()
    expect(page.get_by_test_id("message")).to_have_count(2)
    shot(page, "3-variant")
    page.get_by_test_id("refine-prompt").fill("Now add a few birds")
    page.get_by_test_id("refine-submit").click()
    expect(page.get_by_test_id("job")).to_have_count(2, timeout=10_000)
    expect(page.get_by_test_id("job").first.get_by_test_id("status")).to_have_text("succeeded", timeout=15_000)
    expect(page.get_by_test_id("message")).to_have_count(4, timeout=10_000)
    roles = page.get_by_test_id("message").evaluate_all("els => els.map(e => e.dataset.role)")
    assert roles == ["user", "assistant", "user", "assistant"]
    slider = page.get_by_test_id("slider")
    slider.fill("20")
    assert "20%" in page.locator("#after-wrap").evaluate("e => e.style.clipPath")
    slider.focus()
    page.keyboard.press("ArrowRight")
    assert "21%" in page.locator("#after-wrap").evaluate("e => e.style.clipPath"), "the slider works from the keyboard"
    page.get_by_test_id("copy-compare").click()
    expect(page.get_by_test_id("block-json")).to_contain_text('"type": "image_compare"')
    block = json.loads(page.get_by_test_id("block-json").inner_text())
    assert block["props"]["layout"] == "slider"
    assert json.loads(page.evaluate("navigator.clipboard.readText()")) == block
    page.get_by_test_id("toggle-layout").click()
    page.get_by_test_id("copy-image").click()
    expect(page.get_by_test_id("block-json")).to_contain_text('"type": "image"')
    shot(page, "4-thread-and-blocks")


def test_oversized_file_is_refused_before_upload(page: Page, dev_server_factory: Start, tmp_path: Path) -> None:
    server = dev_server_factory(NANO_BANANA_MAX_FILE_BYTES="20000")
    open_studio(page, server)
    expect(page.get_by_test_id("guard")).to_contain_text("up to 20 KB")
    noise = tmp_path / "big.png"
    Image.frombytes("RGB", (300, 300), os.urandom(300 * 300 * 3)).save(noise, "PNG")
    page.get_by_test_id("file").set_input_files(str(noise))
    expect(page.get_by_test_id("form-error")).to_contain_text("the limit is")
    page.get_by_test_id("prompt").fill("x")
    page.get_by_test_id("submit").click()
    expect(page.get_by_test_id("form-error")).to_contain_text("Choose a JPEG, PNG or WebP photo first")
    expect(page.get_by_test_id("job")).to_have_count(0)
    shot(page, "5-too-large")


def test_wrong_type_is_refused_whatever_its_name(page: Page, dev_server_factory: Start, tmp_path: Path) -> None:
    server = dev_server_factory()
    open_studio(page, server)
    page.get_by_test_id("file").set_input_files(str(photo(tmp_path, "not-really.png", (50, 50), "GIF")))
    expect(page.get_by_test_id("form-error")).to_contain_text("not a JPEG, PNG or WebP")


def test_rate_limit_is_explained_with_the_wait(page: Page, dev_server_factory: Start, tmp_path: Path) -> None:
    server = dev_server_factory(NANO_BANANA_RATE_PER_HOUR="1")
    open_studio(page, server)
    create(page, photo(tmp_path))
    expect(page.get_by_test_id("job")).to_have_count(1)
    create(page, photo(tmp_path, "second.jpg"))
    expect(page.get_by_test_id("form-error")).to_contain_text("limit of 1 jobs per hour")
    expect(page.get_by_test_id("form-error")).to_contain_text("The next slot opens in")
    expect(page.get_by_test_id("job")).to_have_count(1)
    shot(page, "6-rate-limited")


def test_cancel(page: Page, dev_server_factory: Start, tmp_path: Path) -> None:
    server = dev_server_factory(NANO_BANANA_PREVIEW_DELAY_MS="5000")
    open_studio(page, server)
    create(page, photo(tmp_path))
    job = page.get_by_test_id("job").first
    expect(job.get_by_test_id("elapsed")).to_contain_text("of 5 min")
    job.get_by_test_id("cancel").click()
    expect(job.get_by_test_id("status")).to_have_text("canceled")
    expect(job.get_by_test_id("job-error")).to_have_text("Canceled.")
    shot(page, "7-canceled")


def test_timeout_is_explained(page: Page, dev_server_factory: Start, tmp_path: Path) -> None:
    server = dev_server_factory(NANO_BANANA_TIMEOUT_S="2", NANO_BANANA_PREVIEW_DELAY_MS="4000")
    open_studio(page, server)
    create(page, photo(tmp_path))
    job = page.get_by_test_id("job").first
    expect(job.get_by_test_id("status")).to_have_text("failed", timeout=10_000)
    expect(job.get_by_test_id("job-error")).to_contain_text("took longer than 2 s")
    shot(page, "8-timeout")


def test_small_screens_do_not_overflow(page: Page, dev_server_factory: Start, tmp_path: Path) -> None:
    server = dev_server_factory()
    page.set_viewport_size({"width": 390, "height": 844})
    open_studio(page, server)
    create(page, photo(tmp_path), "A long prompt " * 12)
    expect(page.get_by_test_id("job").first.get_by_test_id("status")).to_have_text("succeeded", timeout=15_000)
    page.get_by_test_id("variant").first.click()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    shot(page, "9-mobile")
