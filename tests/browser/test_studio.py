"""The studio page in Debian's Chromium against `nano-banana dev`: the whole flow, the guardrails before
upload, limits and failures in plain words, cancel, and a 390 px screen."""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from playwright.sync_api import BrowserContext, Page, Request, expect

from tests.support.browser import (  # noqa: F401
    browser_context_args,
    browser_type_launch_args,
    create,
    drop_file,
    fill_and_create,
    images_without_alt,
    open_studio,
    overflowing,
    photo,
    shot,
)
from tests.support.devserver import DevServer

pytestmark = pytest.mark.browser
Start = Callable[..., DevServer]


def job_posts(page: Page) -> list[str]:
    """Record every POST /jobs the page makes from now on."""
    posts: list[str] = []

    def seen(request: Request) -> None:
        if request.method == "POST" and request.url.split("?")[0].endswith("/api/nano-banana/jobs"):
            posts.append(request.url)

    page.on("request", seen)
    return posts


def jobs_in_project(server: DevServer) -> int:
    """The dev project's jobs, read over the API (the page signs in as the same dev user)."""
    s = server.session()
    r = server.client.get("/api/nano-banana/jobs", params={"projectId": s.project_id, "limit": 100}, headers=s.headers)
    r.raise_for_status()
    return len(r.json()["jobs"])


def clip_of_after(page: Page) -> str:
    clip: str = page.get_by_test_id("after").locator("xpath=..").evaluate("e => getComputedStyle(e).clipPath")
    return clip


def test_full_flow(page: Page, context: BrowserContext, dev_server_factory: Start, tmp_path: Path) -> None:
    server = dev_server_factory(NANO_BANANA_PREVIEW_DELAY_MS="700")
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
    open_studio(page, server.url)
    expect(page.get_by_test_id("empty")).to_be_visible()
    shot(page, "1-empty")

    # upload by drag and drop, then create
    drop_file(page, photo(tmp_path), "image/jpeg")
    expect(page.get_by_test_id("preview")).to_have_attribute("alt", "Chosen photo: photo.jpg")
    fill_and_create(page, "Turn the sky orange", variants="2", aspect="4:3")
    job = page.get_by_test_id("job").first
    expect(job.get_by_test_id("status")).to_have_text(re.compile("queued|running"))
    expect(job.get_by_test_id("elapsed")).to_contain_text("of 5 min")
    expect(job.get_by_test_id("progress")).to_be_visible()
    shot(page, "2-running")

    # variants appear live (EventSource), each with alt text
    expect(job.get_by_test_id("status")).to_have_text("succeeded", timeout=15_000)
    expect(job).to_have_attribute("data-via", "event")
    expect(job.get_by_test_id("variant")).to_have_count(2)
    expect(job.get_by_test_id("cancel")).to_have_count(0)
    assert images_without_alt(page) == []

    # open a variant: compare view and its thread
    job.get_by_test_id("variant").first.click()
    expect(page.get_by_test_id("detail")).to_be_visible()
    expect(job.get_by_test_id("variant").first).to_have_attribute("aria-current", "true")
    expect(page.get_by_test_id("message")).to_have_count(2)
    expect(page.get_by_test_id("before")).to_have_js_property("complete", True)
    shot(page, "3-variant")

    # refine: a new job in the same thread; the thread grows live to two turns
    page.get_by_test_id("refine-prompt").fill("Now add a few birds")
    page.get_by_test_id("refine-prompt").press("Enter")
    expect(page.get_by_test_id("job")).to_have_count(2, timeout=10_000)
    refinement = page.get_by_test_id("job").first
    expect(refinement).to_contain_text("Refinement")
    expect(refinement.get_by_test_id("status")).to_have_text("succeeded", timeout=15_000)
    messages = page.get_by_test_id("message")
    expect(messages).to_have_count(4)
    expect(messages.nth(3)).to_contain_text("succeeded")
    expect(messages.nth(3).get_by_test_id("thread-variant")).to_have_count(2)
    assert messages.evaluate_all("els => els.map(e => e.dataset.role)") == ["user", "assistant", "user", "assistant"]
    expect(messages.nth(2)).to_contain_text("Now add a few birds")

    # the compare slider moves, by pointer and by keyboard
    slider = page.get_by_test_id("slider")
    slider.fill("20")
    assert "20%" in clip_of_after(page)
    slider.focus()
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    assert "22%" in clip_of_after(page), "the slider works from the keyboard"
    expect(slider).to_have_attribute("aria-valuetext", "22% before, 78% after")
    slider.fill("50")

    # block JSON: shown in the <pre> and on the clipboard
    page.get_by_test_id("copy-compare").click()
    expect(page.get_by_test_id("copied")).to_have_text("Compare block JSON copied to the clipboard.")
    block = json.loads(page.get_by_test_id("block-json").inner_text())
    assert block["type"] == "image_compare"
    assert block["props"]["layout"] == "slider"
    assert block["props"]["initialPosition"] == 50
    assert block["props"]["before"]["storagePath"].startswith("inputs/")
    assert block["props"]["after"]["storagePath"].startswith("jobs/")
    assert json.loads(page.evaluate("navigator.clipboard.readText()")) == block
    page.get_by_test_id("refine-prompt").blur()
    shot(page, "4-thread-and-blocks")

    page.get_by_test_id("toggle-layout").click()
    expect(page.get_by_test_id("toggle-layout")).to_have_attribute("aria-pressed", "true")
    expect(page.get_by_test_id("slider")).to_be_hidden()
    page.get_by_test_id("copy-compare").click()
    expect(page.get_by_test_id("block-json")).to_contain_text('"layout": "side_by_side"')
    page.get_by_test_id("copy-image").click()
    expect(page.get_by_test_id("copied")).to_have_text("Image block JSON copied to the clipboard.")
    image_block = json.loads(page.get_by_test_id("block-json").inner_text())
    assert image_block["type"] == "image"
    assert image_block["props"]["alt"]
    assert json.loads(page.evaluate("navigator.clipboard.readText()")) == image_block
    shot(page, "5-side-by-side")

    # a reload shows the same gallery (newest first), read back from the API
    page.reload()
    open_studio(page, server.url)
    expect(page.get_by_test_id("job")).to_have_count(2)
    expect(page.get_by_test_id("job").first).to_contain_text("Now add a few birds")
    page.keyboard.press("Escape")
    assert images_without_alt(page) == []


def test_oversized_file_is_refused_before_upload(page: Page, dev_server_factory: Start, tmp_path: Path) -> None:
    server = dev_server_factory(NANO_BANANA_MAX_FILE_BYTES="20000")
    open_studio(page, server.url)
    expect(page.get_by_test_id("guard")).to_contain_text("up to 20 KB")
    posts = job_posts(page)
    noise = tmp_path / "big.png"
    Image.frombytes("RGB", (300, 300), os.urandom(300 * 300 * 3)).save(noise, "PNG")
    page.get_by_test_id("file").set_input_files(str(noise))
    expect(page.get_by_test_id("form-error")).to_contain_text(re.compile(r"That file is \d+ KB; the limit is 20 KB"))
    expect(page.get_by_test_id("preview")).to_be_hidden()
    fill_and_create(page, "Make it brighter")
    expect(page.get_by_test_id("form-error")).to_contain_text("the limit is 20 KB")
    shot(page, "6-too-large")
    assert posts == [], "nothing was uploaded"
    expect(page.get_by_test_id("job")).to_have_count(0)
    assert jobs_in_project(server) == 0


def test_wrong_type_is_refused_whatever_its_name(page: Page, dev_server_factory: Start, tmp_path: Path) -> None:
    server = dev_server_factory()
    open_studio(page, server.url)
    posts = job_posts(page)
    gif = photo(tmp_path, "holiday.png", (50, 50), "GIF")
    # keyboard only: the "choose a file" button opens the picker with Enter. (Chromium's filechooser event over
    # CDP is known to go missing now and then, so the test catches the input's click instead of the dialog.)
    page.evaluate(
        "document.getElementById('file').addEventListener('click', (e) => { window.pickerOpened = true; e.preventDefault(); })"
    )
    page.get_by_test_id("choose").focus()
    page.keyboard.press("Enter")
    page.wait_for_function("window.pickerOpened === true")
    page.get_by_test_id("file").set_input_files(str(gif))
    expect(page.get_by_test_id("form-error")).to_contain_text(
        "“holiday.png” is not a JPEG, PNG or WebP image, whatever its name says"
    )
    fill_and_create(page, "Make it brighter")
    expect(page.get_by_test_id("form-error")).to_contain_text("not a JPEG, PNG or WebP image")
    assert posts == []
    assert jobs_in_project(server) == 0
    # a real PNG then goes through
    create(page, photo(tmp_path, "real.png", fmt="PNG"))
    expect(page.get_by_test_id("job")).to_have_count(1)
    expect(page.get_by_test_id("form-error")).to_be_hidden()


def test_rate_limit_is_explained_with_the_wait(page: Page, dev_server_factory: Start, tmp_path: Path) -> None:
    server = dev_server_factory(NANO_BANANA_RATE_PER_HOUR="1")
    open_studio(page, server.url)
    expect(page.get_by_test_id("guard")).to_contain_text("1 job per hour")
    create(page, photo(tmp_path))
    expect(page.get_by_test_id("job")).to_have_count(1)
    create(page, photo(tmp_path, "second.jpg"), "Another one")
    error = page.get_by_test_id("form-error")
    expect(error).to_contain_text("You have reached the limit of 1 job per hour.")
    expect(error).to_contain_text(re.compile(r"The next slot opens in (1 h|59 min|60 min)"))
    expect(page.get_by_test_id("job")).to_have_count(1)
    assert jobs_in_project(server) == 1
    shot(page, "7-rate-limited")


def test_cancel_and_the_concurrency_limit(page: Page, dev_server_factory: Start, tmp_path: Path) -> None:
    server = dev_server_factory(NANO_BANANA_PREVIEW_DELAY_MS="5000", NANO_BANANA_MAX_ACTIVE_PER_PROJECT="1")
    open_studio(page, server.url)
    create(page, photo(tmp_path), "Slow one")
    job = page.get_by_test_id("job").first
    expect(job.get_by_test_id("status")).to_have_text(re.compile("queued|running"))
    expect(job.get_by_test_id("elapsed")).to_contain_text(re.compile(r"(Queued|Generating) · \d s of 5 min"))
    create(page, photo(tmp_path, "second.jpg"), "One too many")
    expect(page.get_by_test_id("form-error")).to_contain_text(
        "This project already has 1 job in progress, the most it can run at once"
    )
    expect(page.get_by_test_id("job")).to_have_count(1)
    shot(page, "8-concurrency-limited")
    job.get_by_test_id("cancel").focus()
    page.keyboard.press("Enter")
    expect(job.get_by_test_id("status")).to_have_text("canceled")
    expect(job.get_by_test_id("job-error")).to_have_text("Canceled.")
    expect(job.get_by_test_id("cancel")).to_have_count(0)
    expect(job.get_by_test_id("progress")).to_have_count(0)
    shot(page, "9-canceled")
    # the slot is free again
    fill_and_create(page, "Now there is room")
    expect(page.get_by_test_id("job")).to_have_count(2)
    expect(page.get_by_test_id("form-error")).to_be_hidden()


def test_timeout_is_explained(page: Page, dev_server_factory: Start, tmp_path: Path) -> None:
    server = dev_server_factory(NANO_BANANA_TIMEOUT_S="2", NANO_BANANA_PREVIEW_DELAY_MS="4000")
    open_studio(page, server.url)
    create(page, photo(tmp_path), "Too slow")
    job = page.get_by_test_id("job").first
    expect(job.get_by_test_id("elapsed")).to_contain_text("of 2 s")
    expect(job.get_by_test_id("status")).to_have_text("failed", timeout=10_000)
    expect(job.get_by_test_id("job-error")).to_contain_text("Timed out: it took longer than 2 s")
    shot(page, "10-timeout")


def test_small_screens_and_older_jobs(page: Page, dev_server_factory: Start, tmp_path: Path) -> None:
    server = dev_server_factory(NANO_BANANA_RATE_PER_HOUR="1000", NANO_BANANA_MAX_ACTIVE_PER_PROJECT="100")
    s = server.session()
    seeded = [server.create_job(s, prompt=f"Older job {i}", variant_count=1).json()["jobId"] for i in range(14)]
    for job_id in seeded:
        server.wait_for(s, job_id, {"succeeded"})
    page.set_viewport_size({"width": 390, "height": 844})
    open_studio(page, server.url)

    # the gallery pages through older jobs with the API's cursor, newest first
    expect(page.get_by_test_id("job")).to_have_count(12)
    expect(page.get_by_test_id("job").first).to_contain_text("Older job 13")
    page.get_by_test_id("more").click()
    expect(page.get_by_test_id("job")).to_have_count(14)
    expect(page.get_by_test_id("job").last).to_contain_text("Older job 0")
    expect(page.get_by_test_id("more")).to_be_hidden()
    assert overflowing(page) == []

    create(page, photo(tmp_path), "A long prompt " * 12 + "with_a_very_long_unbroken_word_" * 3)
    expect(page.get_by_test_id("job")).to_have_count(15)
    expect(page.get_by_test_id("job").first.get_by_test_id("status")).to_have_text("succeeded", timeout=15_000)
    page.get_by_test_id("variant").first.click()
    expect(page.get_by_test_id("message")).to_have_count(2)
    page.get_by_test_id("copy-compare").click()
    expect(page.get_by_test_id("block-json")).to_be_visible()
    assert overflowing(page) == []
    page.get_by_test_id("detail").screenshot(path=str(shot(page, "11-mobile").with_name("studio-12-mobile-detail.png")))
    page.get_by_test_id("toggle-layout").click()
    assert overflowing(page) == []


BOXES = """() => Object.fromEntries(["compare", "before", "after", "after-badge"].map((id) => {
    const node = document.getElementById(id) || document.querySelector(`[data-testid="${id}"]`);
    const r = node.getBoundingClientRect();
    return [id, [r.x, r.y, r.width, r.height]];
}))"""


def close(a: Sequence[float], b: Sequence[float]) -> bool:
    return all(abs(x - y) <= 1.5 for x, y in zip(a, b, strict=True))


def overlap(a: Sequence[float], b: Sequence[float]) -> float:
    """The area two boxes (x, y, width, height) share."""
    w = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    h = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    return max(0.0, w) * max(0.0, h)


def open_latest_variant(page: Page) -> dict[str, Any]:
    job = page.get_by_test_id("job").first
    expect(job.get_by_test_id("status")).to_have_text("succeeded", timeout=15_000)
    job.get_by_test_id("variant").first.click()
    for image in ("before", "after"):
        expect(page.get_by_test_id(image)).to_have_js_property("complete", True)
    page.wait_for_function("() => document.getElementById('after').naturalWidth > 0")
    shown: dict[str, Any] = page.evaluate(BOXES)
    return shown


def scene(png: bytes) -> Image.Image:
    """The middle of a rendered picture in grey, small: away from the preview generator's tinted border
    (1/40 of a side) and its label strip (the bottom 1/9), which only the after has."""
    img = Image.open(io.BytesIO(png)).convert("L")
    w, h = img.size
    return img.crop((int(w * 0.06), int(h * 0.06), int(w * 0.94), int(h * 0.82))).resize((48, 32))


def likeness(a: Image.Image, b: Image.Image) -> float:
    """Pearson correlation of two grey pictures of one size: 1.0 when one is the other tinted (the preview
    generator blends a colour over the scene), far lower when the scene moved or changed scale."""
    xs, ys = a.tobytes(), b.tobytes()
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    cov = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    vx = sum((x - mx) ** 2 for x in xs)
    vy = sum((y - my) ** 2 for y in ys)
    return cov / (vx * vy) ** 0.5


HIDE_OVERLAYS = "() => document.querySelector('#compare .divider').style.visibility = 'hidden'"


def rendered_pair(page: Page) -> tuple[bytes, bytes]:
    """What the browser draws of the before and of the after: the slider at 100 % (all before) and at 0 %
    (all after) in one frame, or the two panes side by side."""
    frame = page.get_by_test_id("compare")
    if "side" in (frame.get_attribute("class") or ""):
        return page.locator("#compare .before").screenshot(), page.locator("#compare .after").screenshot()
    shots = []
    for pos in ("100%", "0%"):
        page.evaluate("(pos) => document.getElementById('compare').style.setProperty('--pos', pos)", pos)
        shots.append(frame.screenshot())
    return shots[0], shots[1]


@pytest.mark.parametrize(("aspect", "output"), [("16:9", (640, 360)), ("9:16", (270, 480)), ("", (640, 480))])
def test_before_and_after_line_up_whatever_their_sizes(
    page: Page, dev_server_factory: Start, tmp_path: Path, aspect: str, output: tuple[int, int]
) -> None:
    """A model asked for another aspect ratio returns a centred crop of the scene (the preview generator
    does the same); the frame takes the output's shape and shows the before as that same centred crop, so
    the hill and the sun stay put across the divider. Compared on the pixels Chromium drew, not on boxes:
    the old view (the before letterboxed in the frame) scored 0.45 (16:9) and 0.15 (9:16) here."""
    server = dev_server_factory()
    page.set_viewport_size({"width": 1280, "height": 900})
    open_studio(page, server.url)
    page.get_by_test_id("file").set_input_files(str(photo(tmp_path, size=(640, 480))))
    fill_and_create(page, "Line them up", variants="1", aspect=aspect)
    boxes = open_latest_variant(page)
    fx, fy, fw, fh = boxes["compare"]
    assert abs(fw / fh - output[0] / output[1]) < 0.01, "the frame has the output's aspect ratio"
    assert close(boxes["after"], (fx, fy, fw, fh))
    assert close(boxes["before"], (fx, fy, fw, fh))
    assert overlap(boxes["after-badge"], boxes["compare"]) == 0, "the badges sit above the picture"
    page.evaluate(HIDE_OVERLAYS)
    before, after = rendered_pair(page)
    assert likeness(scene(before), scene(after)) > 0.95, "the picture lines up across the divider"
    shot(page, f"13-compare-{aspect.replace(':', 'x') or 'same'}")

    page.get_by_test_id("toggle-layout").click()
    before, after = rendered_pair(page)
    assert likeness(scene(before), scene(after)) > 0.95, "and side by side"


def test_compare_view_at_390_px_and_no_missing_icon(page: Page, dev_server_factory: Start, tmp_path: Path) -> None:
    """On a phone the "After" badge covered part of the picture; and every load asked for /favicon.ico
    and got a 404 (the page now declares an empty icon)."""
    failed: list[str] = []
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    server = dev_server_factory()
    page.set_viewport_size({"width": 390, "height": 844})
    open_studio(page, server.url)
    page.get_by_test_id("file").set_input_files(str(photo(tmp_path, size=(640, 480))))
    fill_and_create(page, "Phone", variants="1", aspect="16:9")
    boxes = open_latest_variant(page)
    assert overlap(boxes["after-badge"], boxes["after"]) == 0
    page.get_by_test_id("toggle-layout").click()
    assert overlap(page.evaluate(BOXES)["after-badge"], page.evaluate(BOXES)["after"]) == 0
    assert overflowing(page) == []
    page.wait_for_timeout(300)
    assert failed == []
    assert page.locator("link[rel=icon]").get_attribute("href") == "data:,"
