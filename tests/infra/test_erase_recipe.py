"""docs/deploy.md's erasure recipe (erase-user.sh), run as written with fake `terraform` and `gcloud` on PATH
(the real jq and bash): it takes the function's name from `terraform output`, and any failure stops it
before `erase-user` runs. The recipe it replaced described a function named `api` (Terraform names it
`<name_prefix>-api`), exported nothing when that failed, and erased against the production database with
Storage and limits at their local defaults."""

from __future__ import annotations

import json
import re
import shutil
import stat
import subprocess
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.infra
ROOT = Path(__file__).resolve().parents[2]
MARKER = "<!-- tested: tests/infra/test_erase_recipe.py (the erase-user recipe"

FUNCTION_ENV = {
    "NANO_BANANA_STORAGE": "supabase",
    "NANO_BANANA_LIMITS": "firestore",
    "NANO_BANANA_QUEUE": "cloudtasks",
    "NANO_BANANA_BUCKET": "pip-ai-images",
    "NANO_BANANA_CORS_ORIGINS": "https://a.example,https://b.example",
    "NANO_BANANA_MODEL": "it's $(not run) `either`",  # quoting survives eval
    "THREADS": "40",
}
SECRET_IDS = {
    "database_url": "acme-database-url",
    "jwt_secret": "acme-jwt-secret",
    "supabase_service_key": "acme-supabase-service-key",
    "n8n_secret": "acme-n8n-secret",
}

FAKE_TERRAFORM = r"""#!/usr/bin/env bash
# terraform -chdir=terraform output (-json|-raw) <name>
[ -n "${FAKE_TF_FAIL:-}" ] && { echo "Error: No outputs found (state is empty)" >&2; exit 1; }
[ "$1" = "-chdir=terraform" ] && [ "$2" = output ] || { echo "unexpected: $*" >&2; exit 64; }
case "$4" in
  function_names) printf '%s' "$FAKE_FUNCTION_NAMES" ;;
  region) printf 'europe-west1' ;;
  secret_ids) printf '%s' "$FAKE_SECRET_IDS" ;;
  *) echo "Error: Output \"$4\" not found" >&2; exit 1 ;;
esac
"""

FAKE_GCLOUD = r"""#!/usr/bin/env bash
# Knows one deployed function, $FAKE_DEPLOYED in europe-west1, and every secret but $FAKE_SECRET_MISSING.
if [ "$1 $2" = "functions describe" ]; then
  if [ "$3" = "$FAKE_DEPLOYED" ] && [ "$*" = "functions describe $3 --gen2 --region europe-west1 --format=json" ]; then
    printf '%s' "$FAKE_FUNCTION_JSON"; exit 0
  fi
  echo "ERROR: (gcloud.functions.describe) NOT_FOUND: Resource 'projects/p/locations/europe-west1/functions/$3' was not found" >&2
  exit 1
fi
if [ "$1 $2 $3 $4" = "secrets versions access latest" ]; then
  id=${5#--secret=}
  [ "$id" = "${FAKE_SECRET_MISSING:-}" ] && { echo "ERROR: (gcloud.secrets.versions.access) NOT_FOUND" >&2; exit 1; }
  printf 'value of %s' "$id"; exit 0
fi
echo "unexpected: $*" >&2; exit 64
"""

FAKE_NANO_BANANA = r"""#!/usr/bin/env bash
# Records how erase-user was called and the settings it got.
{ printf '%s\n' "$@"; echo ---; env | grep -E '^(NANO_BANANA_|SUPABASE_|N8N_)' | sort; } > "$FAKE_RECORD"
"""


def recipe() -> str:
    guide = (ROOT / "docs" / "deploy.md").read_text()
    assert MARKER in guide, "docs/deploy.md marks the erasure recipe"
    block = re.search(r"```sh\n(.*?)```", guide[guide.index(MARKER) :], re.S)
    assert block
    return block.group(1)


def executable(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def run_recipe(tmp_path: Path, *args: str, **fake: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    bin_dir = tmp_path / "bin"
    executable(bin_dir / "terraform", FAKE_TERRAFORM)
    executable(bin_dir / "gcloud", FAKE_GCLOUD)
    executable(tmp_path / ".venv" / "bin" / "nano-banana", FAKE_NANO_BANANA)
    (tmp_path / "erase-user.sh").write_text(recipe())
    record = tmp_path / "record.txt"
    jq = shutil.which("jq")
    assert jq, "the recipe needs jq (make system-deps installs it)"
    env = {
        "PATH": f"{bin_dir}:{Path(jq).parent}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "FAKE_RECORD": str(record),
        "FAKE_DEPLOYED": "acme-api",
        "FAKE_FUNCTION_NAMES": json.dumps({"api": "acme-api", "generate": "acme-generate"}),
        "FAKE_SECRET_IDS": json.dumps(SECRET_IDS),
        "FAKE_FUNCTION_JSON": json.dumps({"name": "acme-api", "serviceConfig": {"environmentVariables": FUNCTION_ENV}}),
        **fake,
    }
    done = subprocess.run(
        ["bash", "erase-user.sh", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    return done, record


def test_the_recipe_erases_with_the_deployed_functions_settings(tmp_path: Path) -> None:
    user = str(uuid.uuid4())
    done, record = run_recipe(tmp_path, user, "--dry-run")
    assert done.returncode == 0, done.stderr
    argv, _, env_lines = record.read_text().partition("---\n")
    assert argv.splitlines() == ["erase-user", "--user", user, "--dry-run"]
    env = dict(line.split("=", 1) for line in env_lines.splitlines())
    for name, value in FUNCTION_ENV.items():
        if name.startswith("NANO_BANANA_"):
            assert env[name] == value, name
    assert env["NANO_BANANA_DATABASE_URL"] == "value of acme-database-url"
    assert env["NANO_BANANA_JWT_SECRET"] == "value of acme-jwt-secret"
    assert env["SUPABASE_SERVICE_ROLE_KEY"] == "value of acme-supabase-service-key"
    assert env["N8N_NANO_BANANA_SECRET"] == "value of acme-n8n-secret"


@pytest.mark.parametrize(
    ("fake", "message"),
    [
        pytest.param(
            {"FAKE_FUNCTION_NAMES": json.dumps({"api": "nano-banana-api"})},
            "gcloud functions describe nano-banana-api failed: nothing erased",
            id="wrong-function-name",
        ),
        pytest.param({"FAKE_FUNCTION_NAMES": json.dumps({})}, "no function name", id="no-api-in-the-output"),
        pytest.param({"FAKE_TF_FAIL": "1"}, "no function name", id="terraform-not-initialised"),
        pytest.param(
            {"FAKE_FUNCTION_JSON": json.dumps({"serviceConfig": {"environmentVariables": {"THREADS": "1"}}})},
            "does not run on Supabase Storage and Firestore limits",
            id="function-without-the-production-backends",
        ),
        pytest.param(
            {"FAKE_FUNCTION_JSON": json.dumps({"serviceConfig": {}})},
            "has no environment variables",
            id="function-without-environment",
        ),
        pytest.param(
            {"FAKE_SECRET_MISSING": "acme-supabase-service-key"}, "cannot read secret", id="unreadable-secret"
        ),
    ],
)
def test_the_recipe_stops_before_erasing_when_it_cannot_get_the_settings(
    tmp_path: Path, fake: dict[str, str], message: str
) -> None:
    done, record = run_recipe(tmp_path, str(uuid.uuid4()), **fake)
    assert done.returncode != 0
    assert message in done.stderr
    assert not record.exists(), "erase-user must not run"


def test_the_recipe_is_strict_shell() -> None:
    text = recipe()
    assert "set -euo pipefail" in text
    assert not re.search(r"^\s*export \w+=\$\(", text, re.M), "`export NAME=$(...)` hides the command's failure"
    assert "gcloud functions describe api " not in text
    assert "\r" not in text, "the block is run as written"
