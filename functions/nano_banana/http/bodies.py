"""Request bodies and their validation: JSON models, multipart fields, ids and Idempotency-Keys."""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Iterator
from typing import Annotated, Any, Literal, TypeVar

from flask import Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from nano_banana import usecases
from nano_banana.domain import ASPECT_RATIOS, JobStatus, storable_text
from nano_banana.errors import (
    BadRequest,
    FileTooLarge,
    InvalidRequest,
    NotFound,
    UnsupportedMediaType,
)
from nano_banana.http.api import Api
from nano_banana.images import inspect_image, sniff
from nano_banana.sanitize import strip_metadata
from nano_banana.uploads import read_multipart

log = logging.getLogger("nano_banana")


JSON_MAX_BYTES = 64 * 1024


_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")


_M = TypeVar("_M", bound=BaseModel)


AspectRatio = Literal["1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9"]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_max_length=10_000, frozen=True)


class CreateJobBody(_Body):
    project_id: uuid.UUID = Field(alias="projectId")
    prompt: str
    input_path: str = Field(alias="inputPath", max_length=512)
    variant_count: int | None = Field(None, alias="variantCount", ge=1, le=4)
    aspect_ratio: AspectRatio | None = Field(None, alias="aspectRatio")


class SignUrlsBody(_Body):
    paths: list[Annotated[str, Field(min_length=1, max_length=512)]] = Field(min_length=1, max_length=50)


class RefineBody(_Body):
    job_id: uuid.UUID = Field(alias="jobId")
    variant_id: uuid.UUID = Field(alias="variantId")
    prompt: str


class ListQuery(_Body):
    project_id: uuid.UUID = Field(alias="projectId")
    status: JobStatus | None = None
    limit: int = Field(20, ge=1, le=100)
    cursor: str | None = Field(None, max_length=200)


class BlocksQuery(_Body):
    variant_id: uuid.UUID = Field(alias="variantId")
    type: Literal["image", "image_compare"] = "image"
    layout: Literal["slider", "side_by_side"] = "slider"
    # image_compare's "before": the image this job was made from (a refinement's: the variant it refined),
    # or the photo its thread began with.
    before: Literal["parent", "original"] = "parent"


def _unstorable(data: Any, where: str) -> str | None:
    """The first field (dotted path) holding a string that cannot be stored or logged, if any."""
    if isinstance(data, str):
        return None if storable_text(data) else where
    if isinstance(data, dict):
        items: Iterator[tuple[Any, Any]] = iter(data.items())
    elif isinstance(data, list):
        items = enumerate(data)
    else:
        return None
    for key, value in items:
        field = f"{where}.{key}" if where else str(key)
        if isinstance(key, str) and not storable_text(key):
            return where or "body"
        if (found := _unstorable(value, field)) is not None:
            return found
    return None


def _check_text(data: Any) -> None:
    """NUL (Postgres text rejects it) or a lone surrogate (JSON's "\\ud800"; UTF-8 cannot encode it) in
    any string is bad input: refused here, before it can reach the database, storage or a log line."""
    if (field := _unstorable(data, "")) is not None:
        raise InvalidRequest(
            "text may not contain NUL characters or unpaired surrogates",
            details={"field": field[:100].encode("ascii", "backslashreplace").decode()},
        )


def validated(model: type[_M], data: Any) -> _M:
    _check_text(data)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        fields = [
            {"field": ".".join(str(p) for p in e["loc"]) or "body", "problem": e["msg"]}
            for e in exc.errors(include_url=False, include_input=False)
        ]
        said = "; ".join(f"{f['field']}: {f['problem'][:1].lower()}{f['problem'][1:]}" for f in fields[:3])
        more = f" (and {len(fields) - 3} more)" if len(fields) > 3 else ""
        raise InvalidRequest(f"the request is not valid: {said}{more}", details={"fields": fields}) from exc


def json_body(request: Request) -> Any:
    if request.content_length is not None and request.content_length > JSON_MAX_BYTES:
        raise FileTooLarge(f"JSON bodies are limited to {JSON_MAX_BYTES} bytes")
    raw = request.stream.read(JSON_MAX_BYTES + 1)
    if len(raw) > JSON_MAX_BYTES:
        raise FileTooLarge(f"JSON bodies are limited to {JSON_MAX_BYTES} bytes")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest("the body is not valid JSON") from exc


def parse_uuid(value: str, field: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError as exc:
        raise NotFound(f"{field} not found", details={field: value[:64]}) from exc


def idempotency_key(request: Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not _IDEMPOTENCY_KEY.match(key):
        raise InvalidRequest(
            "Idempotency-Key must be 1-255 visible ASCII characters", details={"field": "Idempotency-Key"}
        )
    return key


def form_int(fields: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = fields.get(name)
    if raw is None or raw == "":
        return default
    # ASCII digits only: str.isdigit() is also true for "²" (U+00B2) and Arabic-Indic digits.
    value = raw.strip()
    if not (value.isascii() and value.isdigit() and len(value) <= 4) or not low <= int(value) <= high:
        raise InvalidRequest(f"{name} must be a whole number from {low} to {high}", details={"field": name})
    return int(value)


def create_command(api: Api, request: Request) -> usecases.CreateJob:
    settings = api.services.settings
    key = idempotency_key(request)
    mimetype = request.mimetype
    if mimetype == "multipart/form-data":
        form = read_multipart(
            request.headers.get("Content-Type"),
            request.content_length,
            request.stream.read,
            file_field="image",
            max_file_bytes=settings.max_file_bytes,
        )
        unknown = set(form.fields) - {"projectId", "prompt", "variantCount", "aspectRatio"}
        if unknown:
            raise InvalidRequest("unknown form fields", details={"fields": sorted(unknown)[:10]})
        _check_text(form.fields)
        project = form.fields.get("projectId", "")
        try:
            project_id = uuid.UUID(project)
        except ValueError as exc:
            raise InvalidRequest("projectId must be a UUID", details={"field": "projectId"}) from exc
        aspect = form.fields.get("aspectRatio") or None
        if aspect is not None and aspect not in ASPECT_RATIOS:
            raise InvalidRequest(
                "aspectRatio is not supported", details={"field": "aspectRatio", "allowed": list(ASPECT_RATIOS)}
            )
        # Metadata (EXIF GPS, XMP, comments) and bytes after the image's end never get stored; the
        # stripped image is what gets validated.
        image = strip_metadata(form.file, sniff(form.file) or "")
        info = inspect_image(image, max_bytes=settings.max_file_bytes, max_pixels=settings.max_pixels)
        return usecases.CreateJob(
            project_id=project_id,
            prompt=form.fields.get("prompt", ""),
            variant_count=form_int(form.fields, "variantCount", settings.default_variant_count, 1, 4),
            aspect_ratio=aspect,
            upload=usecases.ImageUpload(image, info),
            idempotency_key=key,
        )
    if mimetype == "application/json":
        body = validated(CreateJobBody, json_body(request))
        return usecases.CreateJob(
            project_id=body.project_id,
            prompt=body.prompt,
            variant_count=body.variant_count or settings.default_variant_count,
            aspect_ratio=body.aspect_ratio,
            input_path=body.input_path,
            idempotency_key=key,
        )
    raise UnsupportedMediaType(
        "send multipart/form-data (with an image) or application/json (with an inputPath)",
        details={"contentType": mimetype[:100]},
    )
