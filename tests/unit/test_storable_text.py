"""Text that Postgres cannot store (NUL) or UTF-8 cannot encode (a lone surrogate) is bad input."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from nano_banana.domain import storable_text
from nano_banana.errors import InvalidRequest
from nano_banana.usecases import creating

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("text", ["", "plain", "héllo ² \u0661 \U0001f34c", "\ufeff\u202e", "\t\n\r"])
def test_storable(text: str) -> None:
    assert storable_text(text)


@pytest.mark.parametrize("text", ["\x00", "a\x00b", "\ud800", "x\udfffy"])
def test_not_storable(text: str) -> None:
    assert not storable_text(text)


def test_the_prompt_check_of_every_use_case_refuses_them() -> None:
    svc: Any = SimpleNamespace(settings=SimpleNamespace(max_prompt_chars=2000))
    for prompt in ("a\x00b", "\ud800 sky"):
        with pytest.raises(InvalidRequest) as raised:
            creating._check_prompt(svc, prompt)
        assert raised.value.details == {"field": "prompt"}
    assert creating._check_prompt(svc, "  golden hour ") == "golden hour"
