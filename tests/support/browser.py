"""Playwright on Debian's Chromium (never `playwright install`), and helpers for driving the studio page.

Import the fixtures into a test module explicitly:
`from tests.support.browser import browser_context_args, browser_type_launch_args  # noqa: F401`.
"""

from __future__ import annotations

import base64
import io
import shutil
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw
from playwright.sync_api import Page, expect

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    """pytest-playwright's launch arguments, pointed at Debian's chromium; fails (not skips) without it."""
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("Debian's chromium is missing: `make system-deps` installs it (apt-get install -y chromium)")
    return {**browser_type_launch_args, "executable_path": chromium, "args": CHROMIUM_FLAGS}


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args: dict[str, Any]) -> dict[str, Any]:
    return {**browser_context_args, "viewport": {"width": 1280, "height": 900}}


def photo_bytes(size: tuple[int, int] = (640, 480), fmt: str = "JPEG") -> bytes:
    """A small landscape: sky, sun, hills (so before/after screenshots read as photos)."""
    w, h = size
    img = Image.new("RGB", size, (110, 170, 225))
    draw = ImageDraw.Draw(img)
    for y in range(h // 2):
        shade = 225 - y * 60 // max(1, h // 2)
        draw.line([(0, y), (w, y)], fill=(110, 170, shade))
    draw.ellipse([w * 0.62, h * 0.12, w * 0.78, h * 0.12 + w * 0.16], fill=(255, 214, 90))
    draw.polygon(
        [(0, h * 0.7), (w * 0.3, h * 0.45), (w * 0.6, h * 0.68), (w, h * 0.5), (w, h), (0, h)], fill=(70, 130, 70)
    )
    draw.rectangle([0, h * 0.85, w, h], fill=(60, 100, 55))
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def photo(tmp_path: Path, name: str = "photo.jpg", size: tuple[int, int] = (640, 480), fmt: str = "JPEG") -> Path:
    path = tmp_path / name
    path.write_bytes(photo_bytes(size, fmt))
    return path


def shot(page: Page, name: str) -> Path:
    """A full-page screenshot under test-artifacts/ (git-ignored), to look at."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"studio-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def open_studio(page: Page, url: str) -> None:
    page.goto(url + "/")
    expect(page.get_by_test_id("who")).to_contain_text("Dev user")
    expect(page.locator("body")).to_have_attribute("data-ready", "true")


def drop_file(page: Page, path: Path, mime: str) -> None:
    """Drag a file onto the drop zone, as a person would from the desktop."""
    payload = base64.b64encode(path.read_bytes()).decode()
    transfer = page.evaluate_handle(
        """([b64, name, type]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], name, { type }));
            return dt;
        }""",
        [payload, path.name, mime],
    )
    page.get_by_test_id("drop").dispatch_event("dragenter", {"dataTransfer": transfer})
    page.get_by_test_id("drop").dispatch_event("drop", {"dataTransfer": transfer})


def fill_and_create(page: Page, prompt: str = "Make it golden hour", variants: str = "2", aspect: str = "") -> None:
    page.get_by_test_id("prompt").fill(prompt)
    page.get_by_test_id("variants").select_option(variants)
    page.get_by_test_id("aspect").select_option(aspect)
    page.get_by_test_id("submit").click()


def create(page: Page, file: Path, prompt: str = "Make it golden hour", variants: str = "2") -> None:
    """Pick a file with the file picker, then fill the form and press Create."""
    page.get_by_test_id("file").set_input_files(str(file))
    expect(page.get_by_test_id("preview")).to_be_visible()
    fill_and_create(page, prompt, variants)


def images_without_alt(page: Page) -> list[str]:
    result: list[str] = page.locator("img").evaluate_all(
        "els => els.filter(e => !(e.getAttribute('alt') || '').trim()).map(e => e.outerHTML)"
    )
    return result


def overflowing(page: Page) -> list[str]:
    """Visible elements whose box reaches past the viewport's right edge (so the page would scroll sideways)."""
    result: list[str] = page.evaluate(
        """() => {
            const width = document.documentElement.clientWidth, out = [];
            for (const e of document.querySelectorAll('body *')) {
                const r = e.getBoundingClientRect();
                if (r.width === 0 || r.height === 0 || e.closest('.visually-hidden, .skip')) continue;
                if (r.right > width + 0.5 || r.left < -0.5) out.push(`${e.tagName}#${e.id}.${e.className} ${r.left}-${r.right}`);
            }
            if (document.documentElement.scrollWidth > width) out.push(`scrollWidth ${document.documentElement.scrollWidth}`);
            return out;
        }"""
    )
    return result
