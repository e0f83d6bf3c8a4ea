"""The model capability table and the checks that read it (nano_banana/models.py), and the allowlist."""

from __future__ import annotations

import pytest

from nano_banana.errors import InvalidRequest
from nano_banana.models import CAPABILITIES, choose, image_size
from nano_banana.settings import Settings

pytestmark = pytest.mark.unit
FLASH, PRO = "gemini-2.5-flash-image", "gemini-3-pro-image-preview"
BOTH = (FLASH, PRO)


def test_the_table_holds_the_cited_figures() -> None:
    assert (CAPABILITIES[FLASH].max_references, CAPABILITIES[FLASH].resolutions) == (2, ("1K",))
    assert (CAPABILITIES[PRO].max_references, CAPABILITIES[PRO].resolutions) == (13, ("1K", "2K", "4K"))
    assert {m.inline_max_bytes for m in CAPABILITIES.values()} == {7_000_000}


def test_choose_defaults_to_the_first_and_names_the_model_when_refusing() -> None:
    assert choose(BOTH, None, None, 0) == FLASH
    assert choose(BOTH, PRO, "4K", 13) == PRO
    cases = [
        ((BOTH, "gemini-9", None, 0), "model", "not offered"),
        ((BOTH, FLASH, "2K", 0), "resolution", f"model {FLASH} does not render"),
        ((BOTH, None, "8K", 0), "resolution", f"model {FLASH} does not render"),
        ((BOTH, FLASH, None, 3), "reference", f"model {FLASH} takes at most 2"),
        ((BOTH, PRO, None, 14), "reference", f"model {PRO} takes at most 13"),
        (((FLASH,), PRO, None, 0), "model", "not offered"),
    ]
    for args, field, message in cases:
        with pytest.raises(InvalidRequest) as refused:
            choose(*args)
        assert refused.value.details["field"] == field, args
        assert message in refused.value.message, args


def test_image_size_only_for_a_model_that_takes_one() -> None:
    assert image_size(PRO, "2K") == "2K"
    assert image_size(PRO, None) is None
    assert image_size(FLASH, "1K") is None
    assert image_size("preview", "1K") is None


def test_the_allowlist(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NANO_BANANA_MODELS", raising=False)
    monkeypatch.setenv("NANO_BANANA_MODEL", PRO)
    assert Settings().models == (PRO,), "unset: NANO_BANANA_MODEL alone"
    monkeypatch.setenv("NANO_BANANA_MODELS", f" {PRO}, {FLASH},{PRO} ")
    assert Settings().models == (PRO, FLASH)
    monkeypatch.setenv("NANO_BANANA_MODELS", f"{FLASH},imagen-9")
    with pytest.raises(ValueError, match="imagen-9 not in the capability table"):
        Settings()
