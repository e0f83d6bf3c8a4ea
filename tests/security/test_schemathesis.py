"""schemathesis against infra/openapi.yaml and the running dev server: no 5xx, every response conforms."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.devserver import DevServer

pytestmark = pytest.mark.security
ROOT = Path(__file__).resolve().parents[2]


def test_schemathesis_finds_no_server_error_and_no_schema_mismatch(dev_server: DevServer) -> None:
    s = dev_server.session()
    cli = Path(sys.executable).parent / "schemathesis"
    checks = "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance"
    result = subprocess.run(
        [
            str(cli),
            "run",
            str(ROOT / "infra" / "openapi.yaml"),
            "--url",
            dev_server.url,
            "-H",
            f"Authorization: Bearer {s.token}",
            "--max-examples",
            "15",
            "-c",
            checks,
            "--exclude-path-regex",
            "events",
            "--seed",
            "1",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    summary = result.stdout[-3000:]
    assert result.returncode == 0, summary
    match = re.search(r"(\d+) generated, (\d+) passed", summary)
    assert match, summary
    assert int(match.group(1)) >= 300
    assert match.group(1) == match.group(2)
