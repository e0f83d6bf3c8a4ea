"""The offline preview generator: a visible, deterministic Pillow edit of the input per variant."""

from __future__ import annotations

import hashlib
import io
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from nano_banana.domain import GeneratedImage, GenerationRequest, GenerationResult
from nano_banana.errors import GenerationFailed
from nano_banana.models import LONG_EDGE

if TYPE_CHECKING:
    from PIL import Image

_TINTS = ((255, 170, 60), (80, 170, 255), (120, 220, 120), (230, 90, 200))
_MAX_SIDE = 1024
_ORIENTATION = 0x0112
_SIDEWAYS = {5, 6, 7, 8}  # EXIF orientations that swap width and height


def _ratio(aspect: str | None) -> float | None:
    if not aspect:
        return None
    w, h = aspect.split(":")
    return int(w) / int(h)


def _cropped(size: tuple[int, int], ratio: float | None) -> tuple[int, int, int, int]:
    """The centred box of `size` with aspect `ratio` (all of it when no ratio was asked for)."""
    w, h = size
    if ratio is None:
        return (0, 0, w, h)
    if w / h > ratio:
        new_w = max(1, round(h * ratio))
        return ((w - new_w) // 2, 0, (w - new_w) // 2 + new_w, h)
    new_h = max(1, round(w / ratio))
    return (0, (h - new_h) // 2, w, (h - new_h) // 2 + new_h)


def _box_size(box: tuple[int, int, int, int]) -> tuple[int, int]:
    return (box[2] - box[0], box[3] - box[1])


def _sized(size: tuple[int, int], resolution: str | None) -> tuple[int, int]:
    """`size` scaled so its long edge is the asked resolution's (as a model renders 1K/2K/4K); as it is
    when none was asked (like a model that keeps the input's framing)."""
    if resolution is None:
        return size
    scale = LONG_EDGE[resolution] / max(size)
    return (max(1, round(size[0] * scale)), max(1, round(size[1] * scale)))


def _thumbnail(data: bytes, target: tuple[int, int]) -> Image.Image:
    """A reference image as a thumbnail: a fifth of the output's short edge, upright, framed in white."""
    from PIL import Image, ImageOps

    edge = max(8, min(target) // 5)
    with Image.open(io.BytesIO(data)) as ref:
        ref.draft("RGB", (edge, edge))
        thumb = ImageOps.contain(ImageOps.exif_transpose(ref).convert("RGB"), (edge, edge))
    return ImageOps.expand(thumb, border=max(1, edge // 32), fill=(255, 255, 255))


def _thumbnails(canvas: Image.Image, thumbs: list[Image.Image]) -> None:
    """The references along the output's top-right corner, first rightmost, so the use of each shows."""
    margin = max(2, min(canvas.size) // 60)
    x = canvas.width - margin
    for thumb in thumbs:
        x -= thumb.width
        if x < 0:
            break
        canvas.paste(thumb, (x, margin))
        x -= margin


class PreviewGenerator:
    def __init__(self, delay_ms: int, max_pixels: int) -> None:
        self._delay_s = delay_ms / 1000
        self._max_pixels = max_pixels

    def generate(self, request: GenerationRequest, *, deadline: datetime) -> GenerationResult:
        if self._delay_s:
            remaining = (deadline - datetime.now(UTC)).total_seconds()
            time.sleep(max(0.0, min(self._delay_s, remaining)))
            if self._delay_s > remaining:
                raise GenerationFailed("the preview generator ran past the deadline")
        from PIL import Image, ImageDraw, ImageOps

        Image.MAX_IMAGE_PIXELS = self._max_pixels
        source = Image.open(io.BytesIO(request.image))
        # Like a model that keeps the framing: the output has the input's size as displayed (EXIF
        # orientation applied), cropped to the asked aspect ratio, so a before/after view lines up.
        # The edit itself is drawn on a copy at most _MAX_SIDE wide and scaled back up.
        displayed = source.size[::-1] if source.getexif().get(_ORIENTATION, 1) in _SIDEWAYS else source.size
        ratio = _ratio(request.aspect_ratio)
        target = _sized(_box_size(_cropped(displayed, ratio)), request.resolution)
        source.draft("RGB", (_MAX_SIDE, _MAX_SIDE))
        base = ImageOps.exif_transpose(source).convert("RGB")
        base.thumbnail((_MAX_SIDE, _MAX_SIDE))
        base = base.crop(_cropped(base.size, ratio))
        turn = len(request.history) + 1
        thumbs = [_thumbnail(ref.data, target) for ref in request.references]
        seed = hashlib.sha256(request.prompt.encode()).digest()
        images = []
        for index in range(request.variant_count):
            tint = _TINTS[(index + seed[0]) % len(_TINTS)]
            edited = Image.blend(base, Image.new("RGB", base.size, tint), 0.28)
            edited = ImageOps.expand(
                ImageOps.crop(edited, border=max(1, min(edited.size) // 40)),
                border=max(1, min(edited.size) // 40),
                fill=tint,
            )
            draw = ImageDraw.Draw(edited)
            label = f"variant {index + 1} · turn {turn}"
            prompt = request.prompt[:40]
            box_h = max(14, edited.height // 9)
            draw.rectangle((0, edited.height - box_h, edited.width, edited.height), fill=(0, 0, 0))
            draw.text((6, edited.height - box_h + 2), label, fill=(255, 255, 255))
            draw.text((6, edited.height - box_h // 2), prompt, fill=tint)
            if edited.size != target:
                edited = edited.resize(target, Image.Resampling.BICUBIC)
            _thumbnails(edited, thumbs)
            out = io.BytesIO()
            edited.save(out, "PNG", compress_level=1)  # fast: outputs as large as the input
            images.append(GeneratedImage(out.getvalue(), "image/png", edited.width, edited.height))
        return GenerationResult(images=tuple(images))
