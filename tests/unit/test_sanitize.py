"""Uploaded images lose their metadata and trailing bytes, never their pixels or orientation."""

from __future__ import annotations

import functools
import io
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageCms

from nano_banana.errors import InvalidRequest
from nano_banana.sanitize import ORIENTATION, strip_metadata

pytestmark = pytest.mark.unit

GPS_IFD = 0x8825
ARTIST = 0x013B
ZIP = b"PK\x03\x04" + b"\x14\x00" * 20 + b"secret.txt"


def picture() -> Image.Image:
    grey = Image.linear_gradient("L").resize((96, 64))
    return Image.merge("RGB", (grey, grey.transpose(Image.Transpose.FLIP_LEFT_RIGHT), grey.point(lambda v: 255 - v)))


def exif(orientation: int | None = 6) -> Image.Exif:
    e = Image.Exif()
    e[ARTIST] = "Jane Doe"
    if orientation is not None:
        e[ORIENTATION] = orientation
    e.get_ifd(GPS_IFD).update({1: "N", 2: (48.0, 51.0, 29.0), 3: "E", 4: (2.0, 17.0, 40.0)})
    return e


@functools.cache
def icc() -> bytes:
    """One sRGB profile for the whole module (a profile carries its creation time to the second)."""
    return bytes(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())


def encode(fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    picture().save(buf, fmt, **params)
    return buf.getvalue()


def pixels(data: bytes) -> bytes:
    with Image.open(io.BytesIO(data)) as img:
        return img.convert("RGB").tobytes()


def metadata(data: bytes) -> tuple[dict[int, object], dict[str, object]]:
    with Image.open(io.BytesIO(data)) as img:
        return dict(img.getexif()), dict(img.info)


def stripped(original: bytes, mime: str, orientation: int) -> tuple[bytes, dict[str, object]]:
    """Strip original + an appended ZIP; check what every format must keep and lose; return the result."""
    assert b"Jane Doe" in original
    clean = strip_metadata(original + ZIP, mime)
    assert pixels(clean) == pixels(original), "no re-encoding"
    tags, info = metadata(clean)
    assert tags == {ORIENTATION: orientation}
    assert info.get("icc_profile") == icc()
    assert b"Jane Doe" not in clean
    assert b"PK\x03\x04" not in clean
    return clean, info


@pytest.mark.parametrize("progressive", [False, True])
def test_jpeg_keeps_pixels_colour_and_orientation_only(progressive: bool) -> None:
    original = encode(
        "JPEG", quality=90, exif=exif(), icc_profile=icc(), comment=b"shot at home", progressive=progressive
    )
    clean, info = stripped(original, "image/jpeg", 6)
    assert "comment" not in info
    assert clean.endswith(b"\xff\xd9")
    assert len(clean) < len(original)


def test_png_keeps_pixels_colour_and_orientation_only() -> None:
    from PIL import PngImagePlugin

    text = PngImagePlugin.PngInfo()
    text.add_text("Author", "Jane Doe")
    text.add_itxt("Location", "48.85N 2.29E", zip=True)
    original = encode("PNG", exif=exif(8), icc_profile=icc(), pnginfo=text)
    clean, info = stripped(original, "image/png", 8)
    assert "Author" not in info
    assert "Location" not in info
    assert clean.endswith(b"IEND\xaeB`\x82")


@pytest.mark.parametrize("lossless", [True, False])
def test_webp_keeps_pixels_colour_and_orientation_only(lossless: bool) -> None:
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><dc:creator>Jane Doe</dc:creator></x:xmpmeta>'
    original = encode("WEBP", lossless=lossless, exif=exif(3), icc_profile=icc(), xmp=xmp)
    clean, info = stripped(original, "image/webp", 3)
    assert "xmp" not in info
    assert struct.unpack("<I", clean[4:8])[0] == len(clean) - 8


@pytest.mark.parametrize(("fmt", "mime"), [("JPEG", "image/jpeg"), ("PNG", "image/png"), ("WEBP", "image/webp")])
def test_upright_images_carry_no_exif_at_all(fmt: str, mime: str) -> None:
    original = encode(fmt, exif=exif(orientation=None))
    clean = strip_metadata(original, mime)
    assert metadata(clean)[0] == {}
    for marker in (b"Exif", b"eXIf", b"EXIF"):
        assert marker not in clean
    assert pixels(clean) == pixels(original)


@pytest.mark.parametrize(("fmt", "mime"), [("JPEG", "image/jpeg"), ("PNG", "image/png"), ("WEBP", "image/webp")])
def test_truncated_containers_are_422(fmt: str, mime: str) -> None:
    original = encode(fmt)
    with pytest.raises(InvalidRequest):
        strip_metadata(original[: len(original) // 2], mime)


@pytest.mark.security
@settings(max_examples=300, deadline=None)
@given(
    fmt=st.sampled_from([("JPEG", "image/jpeg"), ("PNG", "image/png"), ("WEBP", "image/webp")]),
    position=st.floats(0, 1, exclude_max=True),
    value=st.integers(0, 255),
    cut=st.booleans(),
)
def test_any_damaged_file_is_cleaned_or_refused_never_crashes(
    fmt: tuple[str, str], position: float, value: int, cut: bool
) -> None:
    data = bytearray(_ORIGINALS[fmt[0]])
    at = int(position * len(data))
    if cut:
        del data[at:]
    else:
        data[at] = value
    try:
        clean = strip_metadata(bytes(data), fmt[1])
    except InvalidRequest:
        return
    assert len(clean) <= len(data) + 64  # at most the minimal EXIF is added


_ORIGINALS = {
    "JPEG": encode("JPEG", exif=exif(), comment=b"c"),
    "PNG": encode("PNG", exif=exif()),
    "WEBP": encode("WEBP", exif=exif()),
}


@pytest.mark.parametrize(("orientation", "size"), [(1, (96, 64)), (3, (96, 64)), (6, (64, 96)), (8, (64, 96))])
def test_reported_size_is_the_displayed_size(orientation: int, size: tuple[int, int]) -> None:
    from nano_banana.images import inspect_image

    data = strip_metadata(encode("JPEG", exif=exif(orientation)), "image/jpeg")
    info = inspect_image(data, max_bytes=10**7, max_pixels=10**7)
    assert (info.width, info.height) == size
