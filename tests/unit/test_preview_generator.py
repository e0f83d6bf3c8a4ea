"""The offline preview generator keeps the input's framing: its outputs have the input's size as shown
(EXIF orientation applied), or the centred crop of it to an asked aspect ratio, so a before/after view of
the local demo lines up exactly."""

from __future__ import annotations

import io
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from PIL import Image

from nano_banana.adapters.generator_preview import PreviewGenerator
from nano_banana.domain import GenerationRequest, InlineImage

pytestmark = pytest.mark.unit


def _jpeg(size: tuple[int, int], orientation: int = 1) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    Image.new("RGB", size, (90, 140, 200)).save(buf, "JPEG", exif=exif.tobytes())
    return buf.getvalue()


def _sizes(image: bytes, aspect: str | None = None) -> set[tuple[int, int]]:
    request = GenerationRequest(uuid.uuid4(), "warmer", image, "image/jpeg", 2, aspect)
    result = PreviewGenerator(0, 50_000_000).generate(request, deadline=datetime.now(UTC) + timedelta(minutes=1))
    found = set()
    for out in result.images:
        with Image.open(io.BytesIO(out.data)) as img:
            assert img.size == (out.width, out.height)
            found.add(img.size)
    return found


@pytest.mark.parametrize("size", [(640, 480), (2000, 1500), (1500, 2000), (333, 777), (4000, 90)])
def test_outputs_keep_the_inputs_size(size: tuple[int, int]) -> None:
    assert _sizes(_jpeg(size)) == {size}


def test_a_sideways_photo_keeps_its_size_as_displayed() -> None:
    assert _sizes(_jpeg((1600, 1200), orientation=6)) == {(1200, 1600)}


@pytest.mark.parametrize(
    ("size", "aspect", "expected"),
    [((2000, 1500), "16:9", (2000, 1125)), ((2000, 1500), "1:1", (1500, 1500)), ((640, 480), "9:16", (270, 480))],
)
def test_an_asked_aspect_ratio_crops_the_inputs_size(
    size: tuple[int, int], aspect: str, expected: tuple[int, int]
) -> None:
    assert _sizes(_jpeg(size), aspect) == {expected}


@pytest.mark.parametrize(
    ("resolution", "aspect", "size"),
    [("1K", None, (1024, 768)), ("2K", "16:9", (2048, 1152)), ("4K", "9:16", (2304, 4096))],
)
def test_an_asked_resolution_sets_the_long_edge(resolution: str, aspect: str | None, size: tuple[int, int]) -> None:
    request = GenerationRequest(
        uuid.uuid4(), "warmer", _jpeg((640, 480)), "image/jpeg", 1, aspect, resolution=resolution
    )
    (out,) = PreviewGenerator(0, 50_000_000).generate(request, deadline=datetime.now(UTC) + timedelta(minutes=1)).images
    assert (out.width, out.height) == size


def test_references_show_as_thumbnails_in_the_top_right_corner() -> None:
    def png(color: tuple[int, int, int]) -> InlineImage:
        buf = io.BytesIO()
        Image.new("RGB", (50, 50), color).save(buf, "PNG")
        return InlineImage(buf.getvalue(), "image/png")

    refs = (png((255, 0, 0)), png((0, 0, 255)))
    request = GenerationRequest(uuid.uuid4(), "warmer", _jpeg((1000, 500)), "image/jpeg", 1, None, references=refs)
    (out,) = PreviewGenerator(0, 50_000_000).generate(request, deadline=datetime.now(UTC) + timedelta(minutes=1)).images
    with Image.open(io.BytesIO(out.data)) as img:
        rgb = img.convert("RGB")
        edge = 500 // 5  # a fifth of the short edge; the first reference rightmost
        assert rgb.getpixel((1000 - 8 - edge // 2, 8 + edge // 2)) == (255, 0, 0)
        assert rgb.getpixel((1000 - 8 - edge - 8 - edge // 2, 8 + edge // 2)) == (0, 0, 255)
        assert rgb.getpixel((500, 400)) != (255, 0, 0), "the rest is the edit"
