"""Validate response bodies against infra/openapi.yaml (JSON Schema 2020-12, as OpenAPI 3.1 uses)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from referencing import Registry, Resource

SPEC_PATH = Path(__file__).resolve().parents[2] / "infra" / "openapi.yaml"


@functools.cache
def spec() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(SPEC_PATH.read_text())
    return loaded


@functools.cache
def _registry() -> Registry:
    return Registry().with_resource(
        "urn:openapi", Resource.from_contents({**spec(), "$schema": "https://json-schema.org/draft/2020-12/schema"})
    )


def validate(body: Any, schema_name: str) -> None:
    """Raise jsonschema.ValidationError unless body matches components.schemas[schema_name]."""
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$ref": f"urn:openapi#/components/schemas/{schema_name}",
    }
    validator = jsonschema.Draft202012Validator(schema, registry=_registry(), format_checker=jsonschema.FormatChecker())
    validator.validate(body)


def validate_error(body: Any, code: str) -> None:
    validate(body, "Error")
    assert body["error"]["code"] == code, body
