"""The edge's parsers on their own: multipart streaming caps, image sniffing/decoding, JWT checks."""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import Callable

import jwt
import pytest
from PIL import Image

from nano_banana import images
from nano_banana.auth import TokenVerifier, issue_dev_token
from nano_banana.errors import BadRequest, FileTooLarge, InvalidRequest, Unauthenticated, UnsupportedMediaType
from nano_banana.images import inspect_image, sniff
from nano_banana.uploads import FIELD_MAX_BYTES, read_multipart

pytestmark = pytest.mark.unit

SECRET = "unit-test-secret-unit-test-secret-0123"


def image_bytes(fmt: str, size: tuple[int, int] = (20, 10)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(buf, fmt)
    return buf.getvalue()


def body(parts: list[tuple[str, str | None, bytes]], boundary: str = "XyZ") -> bytes:
    out = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


class CountingReader:
    """A request stream that records how many bytes were pulled from it."""

    def __init__(self, data: bytes) -> None:
        self.stream = io.BytesIO(data)
        self.pulled = 0

    def read(self, n: int) -> bytes:
        chunk = self.stream.read(n)
        self.pulled += len(chunk)
        return chunk


def parse(raw: bytes, cap: int = 1000, length: int | None = None) -> Callable[[], object]:
    return lambda: read_multipart(
        "multipart/form-data; boundary=XyZ", length, CountingReader(raw).read, file_field="image", max_file_bytes=cap
    )


def test_reads_fields_and_exactly_one_file() -> None:
    raw = body([("projectId", None, b"p"), ("prompt", None, "héllo".encode()), ("image", "a.png", b"x" * 1000)])
    form = read_multipart(
        "multipart/form-data; boundary=XyZ", len(raw), io.BytesIO(raw).read, file_field="image", max_file_bytes=1000
    )
    assert form.fields == {"projectId": "p", "prompt": "héllo"}
    assert form.file == b"x" * 1000
    assert form.filename == "a.png"


def test_file_over_the_cap_stops_reading_early() -> None:
    raw = body([("image", "a.png", b"x" * 5_000_000)])
    reader = CountingReader(raw)
    with pytest.raises(FileTooLarge):
        read_multipart("multipart/form-data; boundary=XyZ", None, reader.read, file_field="image", max_file_bytes=1000)
    assert reader.pulled <= 1000 + 64 * 1024 * 2, "never reads far past the cap"


def test_declared_length_over_the_cap_is_refused_before_reading() -> None:
    reader = CountingReader(b"irrelevant")
    with pytest.raises(FileTooLarge):
        read_multipart("multipart/form-data; boundary=XyZ", 10**9, reader.read, file_field="image", max_file_bytes=1000)
    assert reader.pulled == 0


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (body([("image", "a.png", b"1"), ("image", "b.png", b"2")]), InvalidRequest),
        (body([("other", "a.png", b"1")]), InvalidRequest),
        (body([("prompt", None, b"a"), ("prompt", None, b"b"), ("image", "a", b"1")]), InvalidRequest),
        (body([("prompt", None, b"x" * (FIELD_MAX_BYTES + 1)), ("image", "a", b"1")]), InvalidRequest),
        (body([("prompt", None, b"\xff\xfe"), ("image", "a", b"1")]), InvalidRequest),
        (body([("prompt", None, b"only text")]), InvalidRequest),
        (body([("image", "a", b"1")])[:-10], BadRequest),
        (b"garbage without boundaries", BadRequest),
    ],
    ids=[
        "two-files",
        "wrong-file-field",
        "duplicate-field",
        "giant-field",
        "non-utf8",
        "no-file",
        "unterminated",
        "garbage",
    ],
)
def test_malformed_forms(raw: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        parse(raw)()


def test_content_type_must_carry_a_boundary() -> None:
    for ctype in ("multipart/form-data", "application/json", None):
        with pytest.raises(BadRequest):
            read_multipart(ctype, 0, io.BytesIO(b"").read, file_field="image", max_file_bytes=10)


@pytest.mark.parametrize(("fmt", "mime"), [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp")])
def test_accepted_images(fmt: str, mime: str) -> None:
    info = inspect_image(image_bytes(fmt), max_bytes=10**6, max_pixels=10**6)
    assert (info.mime_type, info.width, info.height) == (mime, 20, 10)


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF", "ICO"])
def test_other_formats_are_415_whatever_their_name(fmt: str) -> None:
    assert sniff(image_bytes(fmt)) is None
    with pytest.raises(UnsupportedMediaType):
        inspect_image(image_bytes(fmt), max_bytes=10**6, max_pixels=10**6)


def test_truncated_and_lying_images_are_422() -> None:
    for data in (image_bytes("JPEG")[:100], image_bytes("PNG")[:40], b"RIFF\x00\x00\x00\x00WEBPVP8 garbage"):
        with pytest.raises(InvalidRequest):
            inspect_image(data, max_bytes=10**6, max_pixels=10**6)


def test_pixel_cap_is_checked_before_decoding() -> None:
    buf = io.BytesIO()
    Image.new("1", (5000, 5000)).save(buf, "PNG")
    images.configure_budgets(upload_bytes=64 * images.MIB, decode_bytes=256 * images.MIB)
    with pytest.raises(FileTooLarge):
        inspect_image(buf.getvalue(), max_bytes=10**6, max_pixels=1_000_000)
    assert images.decode_budget().peak == 0, "refused from the header: no pixel was decoded"
    inspect_image(buf.getvalue(), max_bytes=10**6, max_pixels=25_000_000)
    assert images.decode_budget().peak > 0, "a decode goes through the budget"


def test_tokens() -> None:
    verifier = TokenVerifier(secret=SECRET, audience="authenticated")
    user = uuid.uuid4()
    assert verifier.user_id(f"Bearer {issue_dev_token(SECRET, user)}") == user
    assert verifier.user_id(f"bearer {issue_dev_token(SECRET, user)}") == user
    now = int(time.time())
    bad = [
        None,
        "",
        "Bearer ",
        "Token abc",
        f"Bearer {jwt.encode({'sub': str(user), 'aud': 'authenticated', 'exp': now + 60}, None, algorithm='none')}",
        f"Bearer {jwt.encode({'sub': str(user), 'aud': 'authenticated', 'exp': now - 120}, SECRET, algorithm='HS256')}",
        f"Bearer {jwt.encode({'sub': str(user), 'aud': 'authenticated'}, SECRET, algorithm='HS256')}",
        f"Bearer {jwt.encode({'sub': str(user), 'aud': 'x', 'exp': now + 60}, SECRET, algorithm='HS256')}",
        f"Bearer {jwt.encode({'sub': 'x', 'aud': 'authenticated', 'exp': now + 60}, SECRET, algorithm='HS256')}",
        f"Bearer {jwt.encode({'sub': str(user), 'aud': 'authenticated', 'exp': now + 60}, SECRET + 'x', algorithm='HS256')}",
        f"Bearer {jwt.encode({'sub': str(user), 'aud': 'authenticated', 'exp': now + 60}, SECRET, algorithm='HS512')}",
        "Bearer " + "a" * 9000,
    ]
    for header in bad:
        with pytest.raises(Unauthenticated):
            verifier.user_id(header)
