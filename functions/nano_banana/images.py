"""Image guardrails: the type comes from magic bytes and a real decode, never the name or client MIME."""

from __future__ import annotations

import io
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image

from nano_banana.errors import FileTooLarge, InvalidRequest, Unavailable, UnsupportedMediaType

ACCEPTED = ("image/jpeg", "image/png", "image/webp")
ORIENTATION = 0x0112  # the EXIF tag: 1 upright, 2-8 mirrored and/or turned (5-8 by a quarter)
_PIL_FORMAT = {"image/jpeg": "JPEG", "image/png": "PNG", "image/webp": "WEBP"}


@dataclass(frozen=True, slots=True)
class ImageInfo:
    mime_type: str
    width: int
    height: int
    bytes: int


class MemoryBudget:
    """Bytes one process may hold at once for some purpose, shared by its concurrent requests. Holders
    wait for their share (then answer 503 `unavailable`); a share larger than the whole budget waits
    until it can run alone. Two budgets exist, always taken in this order, so waiting cannot deadlock:
    request bodies being uploaded (a multipart body is held in memory, at most the file cap), then
    decoded pixels (a 50 MP PNG decodes to ~200 MB; forty such decodes at once would kill an instance)."""

    def __init__(self, capacity_bytes: int, *, wait_s: float = 10.0, purpose: str = "images") -> None:
        self.capacity = capacity_bytes
        self.wait_s = wait_s
        self.purpose = purpose
        self.in_use = 0
        self.peak = 0  # the most ever held at once (benchmarks, tests)
        self._cond = threading.Condition()

    @contextmanager
    def hold(self, nbytes: int) -> Iterator[None]:
        share = max(0, min(nbytes, self.capacity))
        with self._cond:
            if not self._cond.wait_for(lambda: self.in_use + share <= self.capacity, self.wait_s):
                raise Unavailable(
                    f"the server is busy with other {self.purpose}; retry shortly",
                    details={"reason": f"{self.purpose.replace(' ', '_')}_memory"},
                )
            self.in_use += share
            self.peak = max(self.peak, self.in_use)
        try:
            yield
        finally:
            with self._cond:
                self.in_use -= share
                self._cond.notify_all()


MIB = 1024 * 1024


class _Budgets:
    """The process's two budgets (replaced whole by configure_budgets)."""

    uploads = MemoryBudget(192 * MIB, purpose="uploads")
    decodes = MemoryBudget(256 * MIB, purpose="image decodes")


def configure_budgets(*, upload_bytes: int, decode_bytes: int) -> None:
    """Size the process's budgets (bootstrap does, from NANO_BANANA_UPLOAD_MEMORY_MB and
    NANO_BANANA_DECODE_MEMORY_MB)."""
    _Budgets.uploads = MemoryBudget(upload_bytes, purpose="uploads")
    _Budgets.decodes = MemoryBudget(decode_bytes, purpose="image decodes")


def upload_budget() -> MemoryBudget:
    return _Budgets.uploads


def decode_budget() -> MemoryBudget:
    return _Budgets.decodes


def _decoded_bytes(mode: str, width: int, height: int) -> int:
    """What Pillow allocates for the decoded image: 1 byte per pixel for 1/L/P, 2 for 16-bit grey, else 4
    (Pillow keeps RGB in 32-bit pixels), plus a little for the decoder's own buffers."""
    per_pixel = 1 if mode in ("1", "L", "P") else 2 if mode.startswith("I;16") else 4
    return width * height * per_pixel + 1024 * 1024


def sniff(data: bytes) -> str | None:
    """The MIME type the magic bytes claim, if it is one we accept."""
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def inspect_image(data: bytes, *, max_bytes: int, max_pixels: int) -> ImageInfo:
    """Validate an upload completely: size, magic bytes, header dimensions, then a full decode."""
    from PIL import Image

    if len(data) > max_bytes:
        raise FileTooLarge.image(max_bytes)
    if not data:
        raise InvalidRequest("image is empty", details={"field": "image"})
    mime = sniff(data)
    if mime is None:
        raise UnsupportedMediaType(
            "image must be JPEG, PNG or WebP (judged by its content)", details={"accepted": list(ACCEPTED)}
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=[_PIL_FORMAT[mime]])
            width, height = img.size
            if width < 1 or height < 1:
                raise InvalidRequest("image has no pixels", details={"field": "image"})
            if width * height > max_pixels:
                raise FileTooLarge(
                    f"image has {width * height} pixels; the limit is {max_pixels}",
                    details={"width": width, "height": height, "maxPixels": max_pixels},
                )
            # Report the size as displayed: browsers apply the EXIF orientation, and 5-8 (quarter turns)
            # swap width and height for the builder's blocks.
            turned = img.getexif().get(ORIENTATION) in (5, 6, 7, 8)
            if mime == "image/jpeg":
                img.draft("RGB", (max(1, width // 8), max(1, height // 8)))  # decode cheaply, still end to end
            with _Budgets.decodes.hold(_decoded_bytes(img.mode, *img.size)):  # img.size is the draft's for JPEG
                try:
                    img.load()
                finally:
                    img.close()  # frees the pixels before the budget is given back
    except (FileTooLarge, InvalidRequest, Unavailable):
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise FileTooLarge("image has too many pixels", details={"maxPixels": max_pixels}) from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidRequest(
            "image could not be decoded (truncated or corrupt)", details={"field": "image", "reason": "undecodable"}
        ) from exc
    if turned:
        width, height = height, width
    return ImageInfo(mime_type=mime, width=width, height=height, bytes=len(data))


_SAVE_OPTIONS: dict[str, dict[str, object]] = {
    "image/jpeg": {"quality": 92},
    "image/png": {"optimize": False},
    "image/webp": {"quality": 92},
}


def for_model(data: bytes, mime: str, *, max_bytes: int) -> tuple[bytes, str]:
    """The image as a model should get it inline: upright (EXIF orientation applied to the pixels, since a
    model may ignore the tag) and within its inline size limit (Vertex AI takes 7 MB inline; we accept 10 MB
    uploads), re-encoded smaller when over it: JPEG, or PNG when there is transparency, long edge shrunk
    by a quarter at a time. Returned unchanged, without decoding, when already upright and small enough."""
    from PIL import Image, ImageOps

    with Image.open(io.BytesIO(data)) as img:
        upright = img.getexif().get(ORIENTATION, 1) in (None, 1)
        if upright and len(data) <= max_bytes:
            return data, mime
        turned = ImageOps.exif_transpose(img)
    if len(data) <= max_bytes and mime in _SAVE_OPTIONS:
        return _encode(turned, mime), mime
    alpha = turned.mode in ("RGBA", "LA", "PA") or "transparency" in turned.info
    out_mime = "image/png" if alpha else "image/jpeg"
    edge = max(turned.size)
    while True:
        scale = min(1.0, edge / max(turned.size))
        size = (max(1, round(turned.width * scale)), max(1, round(turned.height * scale)))
        candidate = turned if size == turned.size else turned.resize(size, Image.Resampling.LANCZOS)
        encoded = _encode(candidate, out_mime)
        if len(encoded) <= max_bytes or edge <= 256:
            return encoded, out_mime
        edge = int(edge * 0.75)


def _encode(img: Image.Image, mime: str) -> bytes:
    if mime == "image/jpeg" and img.mode not in ("RGB", "L", "CMYK"):
        img = img.convert("RGB")
    buf = io.BytesIO()
    img.save(buf, format=_PIL_FORMAT[mime], **_SAVE_OPTIONS[mime])
    return buf.getvalue()
