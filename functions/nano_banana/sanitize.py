"""Strip what an uploaded image carries besides its pixels, without re-encoding them.

Photos arrive with EXIF (GPS position, camera serial, owner name), XMP, IPTC and comments, and a file can
hide another one after its end marker (a PNG with a ZIP appended is still a valid PNG). The stored input
is shown to everyone in the project, handed to the model and to processors, so only what draws the
picture is kept: the compressed image data, its colour information (ICC profile, gamma, sRGB, Adobe
transform) and its orientation (rewritten as a minimal EXIF holding that one tag, so phone photos stay
upright). Everything after the format's end marker is dropped. The pixels are not decoded or re-encoded
here, so nothing is lost; the caller decodes the result to validate it (so what is checked is exactly what
is stored).
"""

from __future__ import annotations

import io
import struct
import warnings

from nano_banana.errors import InvalidRequest
from nano_banana.images import ORIENTATION

# JPEG: markers that stand alone (no length), APPn segments worth keeping.
_JPEG_STANDALONE = {0x01, *range(0xD0, 0xD8)}
_JPEG_KEEP_APP = {
    0xE0: (b"JFIF\x00", b"JFXX\x00"),  # APP0: JFIF header and thumbnail-free extension
    0xE2: (b"ICC_PROFILE\x00",),  # APP2: colour profile (MPF, FlashPix also live in APP2: dropped)
    0xEE: (b"Adobe",),  # APP14: colour transform flag, needed to decode CMYK/YCCK correctly
}

# PNG: critical chunks plus the ancillary ones that change how pixels look.
_PNG_KEEP = {
    b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"cHRM", b"gAMA", b"iCCP", b"sBIT", b"sRGB",
    b"cICP", b"mDCV", b"cLLI", b"pHYs", b"bKGD",
}  # fmt: skip

# WebP: image data, alpha, colour profile, animation.
_WEBP_KEEP = {b"VP8 ", b"VP8L", b"VP8X", b"ALPH", b"ICCP", b"ANIM", b"ANMF"}
_VP8X_EXIF, _VP8X_XMP = 0x08, 0x04


def _corrupt(why: str) -> InvalidRequest:
    return InvalidRequest(f"image could not be decoded ({why})", details={"field": "image", "reason": "undecodable"})


def _orientation(data: bytes) -> int:
    """The EXIF orientation (1..8) Pillow reads from the container without decoding pixels; 1 if none."""
    from PIL import Image

    try:
        with warnings.catch_warnings(), Image.open(io.BytesIO(data)) as img:
            warnings.simplefilter("ignore")  # Pillow warns about corrupt EXIF; it is dropped anyway
            value = img.getexif().get(ORIENTATION, 1)
    except Exception:
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _minimal_exif(orientation: int) -> bytes:
    """`Exif\\0\\0` + a TIFF structure holding only the orientation tag (JPEG's APP1 payload)."""
    from PIL import Image

    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    return exif.tobytes()


def _minimal_tiff(orientation: int) -> bytes:
    """The same without the `Exif\\0\\0` header: PNG's eXIf and WebP's EXIF chunks hold bare TIFF."""
    return _minimal_exif(orientation).removeprefix(b"Exif\x00\x00")


def strip_metadata(data: bytes, mime: str) -> bytes:
    """The same image without metadata or trailing bytes. Raises InvalidRequest (422) if the container's
    structure is broken (truncated, lengths pointing past the end)."""
    if mime == "image/jpeg":
        return _jpeg(data)
    if mime == "image/png":
        return _png(data)
    if mime == "image/webp":
        return _webp(data)
    return data


def _jpeg(data: bytes) -> bytes:
    if data[:2] != b"\xff\xd8":
        raise _corrupt("not a JPEG")
    orientation = _orientation(data)
    out = [b"\xff\xd8"]
    exif_written = orientation == 1
    i, n = 2, len(data)
    while i < n:
        if data[i] != 0xFF:
            raise _corrupt("expected a JPEG marker")
        while i < n and data[i] == 0xFF:  # fill bytes
            i += 1
        if i >= n:
            break
        marker = data[i]
        i += 1
        if marker == 0xD9:  # EOI: the image ends here, whatever follows is not part of it
            out.append(b"\xff\xd9")
            return b"".join(out)
        if marker in _JPEG_STANDALONE:
            out.append(bytes((0xFF, marker)))
            continue
        if i + 2 > n:
            raise _corrupt("truncated JPEG segment")
        length = struct.unpack(">H", data[i : i + 2])[0]
        if length < 2 or i + length > n:
            raise _corrupt("truncated JPEG segment")
        segment = data[i : i + length]
        i += length
        if not exif_written and marker != 0xE0:  # the minimal EXIF goes right after SOI/JFIF
            payload = _minimal_exif(orientation)
            out.append(b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload)
            exif_written = True
        if marker == 0xDA:  # start of scan: entropy-coded data runs to the next real marker
            j = i
            while True:
                j = data.find(b"\xff", j)
                if j < 0 or j + 1 >= n:
                    raise _corrupt("truncated JPEG scan")
                following = data[j + 1]
                if following == 0x00 or 0xD0 <= following <= 0xD7:
                    j += 2
                    continue
                break
            out.append(b"\xff\xda" + segment + data[i:j])
            i = j
            continue
        if 0xE0 <= marker <= 0xEF:
            prefixes = _JPEG_KEEP_APP.get(marker, ())
            if any(segment[2:].startswith(p) for p in prefixes):
                out.append(bytes((0xFF, marker)) + segment)
            continue
        if marker == 0xFE:  # COM
            continue
        out.append(bytes((0xFF, marker)) + segment)
    raise _corrupt("JPEG has no end marker")


def _png(data: bytes) -> bytes:
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise _corrupt("not a PNG")
    orientation = _orientation(data)
    out = [data[:8]]
    i, n = 8, len(data)
    while i + 12 <= n:
        length = struct.unpack(">I", data[i : i + 4])[0]
        kind = data[i + 4 : i + 8]
        end = i + 12 + length
        if end > n:
            raise _corrupt("truncated PNG chunk")
        if kind == b"IDAT" and orientation != 1:  # eXIf must precede the image data
            payload = _minimal_tiff(orientation)
            out.append(_png_chunk(b"eXIf", payload))
            orientation = 1
        if kind in _PNG_KEEP:
            out.append(data[i:end])
        i = end
        if kind == b"IEND":
            return b"".join(out)
    raise _corrupt("PNG has no IEND chunk")


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    import zlib

    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _webp(data: bytes) -> bytes:
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        raise _corrupt("not a WebP")
    riff_end = 8 + struct.unpack("<I", data[4:8])[0]
    if riff_end > len(data):
        raise _corrupt("truncated WebP")
    orientation = _orientation(data)
    chunks: list[bytes] = []
    extended = False
    i = 12
    while i + 8 <= riff_end:
        kind = data[i : i + 4]
        size = struct.unpack("<I", data[i + 4 : i + 8])[0]
        end = i + 8 + size + (size & 1)
        if i + 8 + size > riff_end:
            raise _corrupt("truncated WebP chunk")
        chunk = data[i : min(end, riff_end)]
        if kind == b"VP8X" and size >= 10:
            extended = True
            flags = chunk[8] & ~(_VP8X_EXIF | _VP8X_XMP)
            if orientation != 1:
                flags |= _VP8X_EXIF
            chunk = chunk[:8] + bytes((flags,)) + chunk[9:]
        if kind in _WEBP_KEEP:
            chunks.append(chunk + (b"\x00" if len(chunk) % 2 else b""))
        i = end
    if not chunks:
        raise _corrupt("WebP has no image data")
    if orientation != 1 and extended:  # EXIF goes after the image data in an extended WebP
        payload = _minimal_tiff(orientation)
        chunks.append(b"EXIF" + struct.pack("<I", len(payload)) + payload + (b"\x00" if len(payload) % 2 else b""))
    body = b"WEBP" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body
