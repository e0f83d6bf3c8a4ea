"""Things that must stay true across the repo: docs/configuration.md documents every setting, docs/api.md every
error code, requirements match."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from pydantic import AliasChoices

from nano_banana.settings import Settings

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


def _env_names() -> list[list[str]]:
    names = []
    for field in Settings.model_fields.values():
        alias = field.validation_alias
        names.append([str(a) for a in alias.choices] if isinstance(alias, AliasChoices) else [str(alias)])
    return names


def test_configuration_table_lists_every_setting() -> None:
    page = (ROOT / "docs" / "configuration.md").read_text()
    table = page.split("# Configuration", 1)[1].split("\n## ", 1)[0]
    missing = [names[0] for names in _env_names() if not any(f"`{n}`" in table for n in names)]
    assert missing == []


def test_env_example_names_only_real_settings() -> None:
    known = {n for names in _env_names() for n in names}
    used = set(re.findall(r"^#?\s*([A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), flags=re.MULTILINE))
    assert used
    assert used <= known


def test_deployed_requirements_match_pyproject() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    lines = [
        line
        for line in (ROOT / "functions" / "requirements.txt").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert lines == deps
    assert all("==" in d for d in deps), "runtime dependencies are pinned exactly"


def test_api_page_names_every_error_code() -> None:
    from nano_banana import errors

    readme = (ROOT / "docs" / "api.md").read_text().split("## Errors", 1)[1]
    codes = {
        cls.code for cls in vars(errors).values() if isinstance(cls, type) and issubclass(cls, errors.NanoBananaError)
    }
    codes -= {
        "internal",
        "generation_failed",
        "content_blocked",
        "processor_unavailable",
    }  # job errorCodes, listed separately
    assert {c for c in codes if f"`{c}`" not in readme} == set()


def test_no_module_of_the_package_passes_600_lines() -> None:
    """One concern per module (STYLE.md): a module past ~400 lines holds two; 600 is where it must split."""
    sizes = {
        str(p.relative_to(ROOT)): len(p.read_text().splitlines())
        for p in (ROOT / "functions" / "nano_banana").rglob("*.py")
    }
    assert len(sizes) > 40, "the package was found"
    assert {p: n for p, n in sizes.items() if n > 600} == {}
