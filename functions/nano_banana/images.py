"""Image guardrails: the type comes from magic bytes and a real decode, never the name or client MIME."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from nano_banana.errors import FileTooLarge, InvalidRequest, UnsupportedMediaType

ACCEPTED = ("image/jpeg", "image/png", "image/webp")
_PIL_FORMAT = {"image/jpeg": "JPEG", "image/png": "PNG", "image/webp": "WEBP"}


@dataclass(frozen=True, slots=True)
class ImageInfo:
    mime_type: str
    width: int
    height: int
    bytes: int


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
        raise FileTooLarge(f"image is larger than {max_bytes} bytes", details={"maxBytes": max_bytes})
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
            if mime == "image/jpeg":
                img.draft("RGB", (max(1, width // 8), max(1, height // 8)))  # decode cheaply, still end to end
            img.load()
    except (FileTooLarge, InvalidRequest):
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise FileTooLarge("image has too many pixels", details={"maxPixels": max_pixels}) from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidRequest(
            "image could not be decoded (truncated or corrupt)", details={"field": "image", "reason": "undecodable"}
        ) from exc
    return ImageInfo(mime_type=mime, width=width, height=height, bytes=len(data))
