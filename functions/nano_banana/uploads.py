"""Streaming multipart/form-data reader with hard caps: the body is never buffered past its limit."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from nano_banana.errors import BadRequest, FileTooLarge, InvalidRequest

_CHUNK = 64 * 1024
FIELD_MAX_BYTES = 16 * 1024
FORM_OVERHEAD_BYTES = 64 * 1024  # boundaries, part headers and the small text fields
_MAX_PARTS = 32  # 6 text fields, the image and up to 13 references, with room


@dataclass
class UploadedForm:
    fields: dict[str, str] = field(default_factory=dict)
    file_field: str | None = None
    filename: str | None = None
    file: bytes = b""
    # The files of `extra_field` (references), in the order sent.
    extras: list[bytes] = field(default_factory=list)


@dataclass
class _Part:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    header_name: bytes = b""
    header_value: bytes = b""
    name: str | None = None
    is_file: bool = False
    is_extra: bool = False


def _body_too_large(max_file_bytes: int, max_body: int) -> FileTooLarge:
    """A body past the image limit, the reference images' and room for the form fields: said in terms of
    the image limit (the number a client can act on), with the body cap beside it."""
    return FileTooLarge.image(max_file_bytes, maxBodyBytes=max_body)


def read_multipart(
    content_type: str | None,
    content_length: int | None,
    read: Callable[[int], bytes],
    *,
    file_field: str,
    max_file_bytes: int,
    extra_field: str | None = None,
    max_extra_bytes: int = 0,
) -> UploadedForm:
    """Parse a multipart body from `read`, keeping at most max_file_bytes of file data in memory, plus
    max_extra_bytes for all files named `extra_field` together (each also at most max_file_bytes).
    Exactly one file part named `file_field` is accepted; text fields are capped at 16 KiB each."""
    # Imported here: only a multipart POST needs the parser, and a cold instance answering GETs skips it.
    from python_multipart.exceptions import MultipartParseError
    from python_multipart.multipart import MultipartParser, parse_options_header

    ctype, params = parse_options_header(content_type or "")
    boundary = params.get(b"boundary")
    if ctype != b"multipart/form-data" or not boundary:
        raise BadRequest("expected multipart/form-data with a boundary", details={"contentType": ctype.decode()})
    max_body = max_file_bytes + max_extra_bytes + FORM_OVERHEAD_BYTES
    if content_length is not None and content_length > max_body:
        raise _body_too_large(max_file_bytes, max_body)

    form = UploadedForm()
    part = _Part()
    file_buf = bytearray()
    extra_buf = bytearray()
    extra_total = 0
    field_buf = bytearray()
    parts = 0

    def on_part_begin() -> None:
        nonlocal parts, part
        parts += 1
        if parts > _MAX_PARTS:
            raise BadRequest("too many form parts")
        part = _Part()
        field_buf.clear()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        part.header_name += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        part.header_value += data[start:end]
        if len(part.header_value) > 4096:
            raise BadRequest("a part header is too long")

    def on_header_end() -> None:
        part.headers[part.header_name.lower()] = part.header_value
        part.header_name, part.header_value = b"", b""

    def on_headers_finished() -> None:
        disposition, opts = parse_options_header(part.headers.get(b"content-disposition", b""))
        if disposition != b"form-data" or b"name" not in opts:
            raise BadRequest("each part needs Content-Disposition: form-data; name=...")
        name = opts[b"name"].decode("utf-8", "replace")
        part.name, part.is_file = name, b"filename" in opts
        if part.is_file and extra_field is not None and name == extra_field:
            part.is_extra = True
            extra_buf.clear()
        elif part.is_file:
            if name != file_field:
                raise InvalidRequest(f"unexpected file field {name!r}; send the image as {file_field!r}")
            if form.file_field is not None:
                raise InvalidRequest("send exactly one image", details={"field": file_field})
            form.file_field = name
            form.filename = opts[b"filename"].decode("utf-8", "replace")[:255]
        elif name in form.fields:
            raise InvalidRequest(f"field {name!r} appears twice", details={"field": name})

    def on_part_data(data: bytes, start: int, end: int) -> None:
        nonlocal extra_total
        if part.is_extra:
            extra_total += end - start
            if len(extra_buf) + (end - start) > max_file_bytes or extra_total > max_extra_bytes:
                limit = min(max_file_bytes, max_extra_bytes)
                raise FileTooLarge(
                    f"{extra_field} files are limited to {max_file_bytes} bytes each and {max_extra_bytes} together",
                    details={"field": extra_field, "maxBytes": limit, "maxTotalBytes": max_extra_bytes},
                )
            extra_buf.extend(data[start:end])
        elif part.is_file:
            if len(file_buf) + (end - start) > max_file_bytes:
                raise FileTooLarge.image(max_file_bytes)
            file_buf.extend(data[start:end])
        else:
            if len(field_buf) + (end - start) > FIELD_MAX_BYTES:
                raise InvalidRequest(f"field {part.name!r} is too long", details={"field": part.name})
            field_buf.extend(data[start:end])

    def on_part_end() -> None:
        if part.is_extra:
            form.extras.append(bytes(extra_buf))
        elif not part.is_file and part.name is not None:
            try:
                form.fields[part.name] = field_buf.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InvalidRequest("form fields must be UTF-8", details={"field": part.name}) from exc

    ended = False

    def on_end() -> None:
        nonlocal ended
        ended = True

    parser = MultipartParser(
        boundary,
        callbacks={
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
            "on_end": on_end,
        },
        max_size=max_body,
    )
    received = 0
    try:
        while chunk := read(_CHUNK):
            received += len(chunk)
            if received > max_body:
                raise _body_too_large(max_file_bytes, max_body)
            parser.write(chunk)
        parser.finalize()
    except MultipartParseError as exc:
        raise BadRequest("the multipart body is malformed") from exc
    if not ended:
        raise BadRequest("the multipart body ended before its closing boundary")
    if form.file_field is None:
        raise InvalidRequest("an image file is required", details={"field": file_field})
    form.file = bytes(file_buf)
    return form
