"""`nano-banana dev-token` mints a local token whatever else the shell is set up for."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from nano_banana.adapters.postgres import PostgresJobStore
from nano_banana.auth import TokenVerifier
from nano_banana.embedded_pg import EmbeddedPostgres

pytestmark = pytest.mark.postgres
BIN = Path(sys.executable).parent
SECRET = "dev-token-test-secret-0123456789abcdef"


def test_dev_token_needs_no_unrelated_settings(embedded_pg: EmbeddedPostgres, tmp_path: Path) -> None:
    """It failed with a settings validation error when the shell had NANO_BANANA_GENERATOR=n8n but not
    the webhook URL and secret (or any other backend half-configured)."""
    user, project = uuid.uuid4(), uuid.uuid4()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("NANO_BANANA_", "N8N_", "SUPABASE_"))},
        "NANO_BANANA_GENERATOR": "n8n",  # without N8N_WEBHOOK_NANO_BANANA_PROCESSOR / N8N_NANO_BANANA_SECRET
        "NANO_BANANA_STORAGE": "supabase",  # without SUPABASE_URL / key
        "NANO_BANANA_QUEUE": "cloudtasks",  # without handler URLs
        "NANO_BANANA_CORS_ORIGINS": "not an origin",
        "NANO_BANANA_DATABASE_URL": embedded_pg.uri,
        "NANO_BANANA_JWT_SECRET": SECRET,
        "NANO_BANANA_DATA_DIR": str(tmp_path),
    }
    out = subprocess.run(
        [str(BIN / "nano-banana"), "dev-token", "--user", str(user), "--project", str(project)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    token = out.stdout.strip()
    assert TokenVerifier(secret=SECRET, audience="authenticated").user_id(f"Bearer {token}") == user
    store = PostgresJobStore(embedded_pg.uri, max_size=1)
    try:
        assert store.can_access(project, user), "the user was made a member"
    finally:
        store.close()


def test_dev_token_still_refuses_the_dev_secret_against_a_real_database(embedded_pg: EmbeddedPostgres) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("NANO_BANANA_", "N8N_", "SUPABASE_"))},
        "NANO_BANANA_DATABASE_URL": embedded_pg.uri,
    }
    out = subprocess.run(
        [str(BIN / "nano-banana"), "dev-token", "--user", str(uuid.uuid4()), "--project", str(uuid.uuid4())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode != 0
    assert "NANO_BANANA_JWT_SECRET must be set" in out.stderr


def _dev_token(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "nano-banana"), "dev-token", "--user", str(uuid.uuid4()), "--project", str(uuid.uuid4())],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _bare_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("NANO_BANANA_", "N8N_", "SUPABASE_", "DATABASE_"))}


def test_dev_token_refuses_a_default_data_dir_no_dev_server_runs_on(tmp_path: Path) -> None:
    """Without NANO_BANANA_DATA_DIR it silently created ./.data/postgres, wrote the membership there and
    printed a token the running server (on another data dir) answered with 403."""
    out = _dev_token(_bare_env(), tmp_path)
    assert out.returncode == 2
    assert out.stdout == "", "no token"
    assert "no dev server's database is running" in out.stderr
    assert str(tmp_path / ".data") in out.stderr
    assert "NANO_BANANA_DATA_DIR" in out.stderr
    assert "make dev" in out.stderr
    assert not (tmp_path / ".data").exists(), "nothing created"


def test_dev_token_refuses_a_data_dir_without_a_database(tmp_path: Path) -> None:
    """A data dir that was never a dev server's (a typo, a wrong path): refused, nothing created."""
    empty = tmp_path / "typo"
    out = _dev_token({**_bare_env(), "NANO_BANANA_DATA_DIR": str(empty)}, tmp_path)
    assert out.returncode == 2
    assert out.stdout == ""
    assert str(empty) in out.stderr
    assert not (empty / "postgres").exists()
