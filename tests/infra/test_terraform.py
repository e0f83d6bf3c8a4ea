"""Terraform and Cloud Build, checked without providers: fmt, structure (python-hcl2), checkov."""

from __future__ import annotations

import ast
import functools
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import hcl2
import pytest
import yaml
from pydantic import AliasChoices, SecretStr

from nano_banana.settings import Settings

pytestmark = pytest.mark.infra
ROOT = Path(__file__).resolve().parents[2]
TF = ROOT / "terraform"
CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"
ENTRY_POINTS = {"api", "callback", "generate", "expire", "sweep"}


def unq(value: Any) -> Any:
    """python-hcl2 keeps string quotes; strip them recursively."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    if isinstance(value, dict):
        return {unq(k): unq(v) for k, v in value.items() if k != "__is_block__"}
    if isinstance(value, list):
        return [unq(v) for v in value]
    return value


@functools.cache
def tf() -> dict[str, Any]:
    merged: dict[str, Any] = {
        "resource": {},
        "locals": {},
        "variable": {},
        "terraform": [],
        "data": {},
        "output": {},
        "provider": [],
    }
    for path in sorted(TF.glob("*.tf")):
        with path.open() as f:
            doc = unq(hcl2.load(f))
        for block in doc.get("resource", []):
            for rtype, named in block.items():
                merged["resource"].setdefault(rtype, {}).update(named)
        for block in doc.get("locals", []):
            merged["locals"].update(block)
        for block in doc.get("variable", []):
            merged["variable"].update(block)
        for block in doc.get("data", []):
            merged["data"].update(block)
        for block in doc.get("output", []):
            merged["output"].update(block)
        merged["terraform"] += doc.get("terraform", [])
        merged["provider"] += doc.get("provider", [])
    return merged


def env_names(field: str) -> list[str]:
    alias = Settings.model_fields[field].validation_alias
    return [str(a) for a in alias.choices] if isinstance(alias, AliasChoices) else [str(alias)]


def secret_env_names() -> set[str]:
    """Every env var of a SecretStr setting: these may only come from Secret Manager."""
    names: set[str] = set()
    for name, field in Settings.model_fields.items():
        if SecretStr in (getattr(field.annotation, "__args__", ()) or (field.annotation,)):
            names.update(env_names(name))
    return names


def test_terraform_fmt() -> None:
    binary = shutil.which("terraform")
    if binary is None:
        pytest.skip("terraform is not installed here: `terraform fmt -check` could not run")
    env = {**os.environ, "TF_CLI_CONFIG_FILE": os.devnull}
    result = subprocess.run(
        [binary, "fmt", "-check", "-recursive", str(TF)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"terraform fmt would change: {result.stdout}"


def test_providers_are_pinned() -> None:
    (block,) = [b for b in tf()["terraform"] if "required_providers" in b]
    required = block["required_providers"][0]
    for name, spec in required.items():
        assert re.fullmatch(r"= \d+\.\d+\.\d+", spec["version"]), f"{name} is not pinned exactly"


def test_every_function_has_its_entry_point_in_main() -> None:
    tree = ast.parse((ROOT / "functions" / "main.py").read_text())
    defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    functions = tf()["locals"]["functions"]
    assert set(functions) == ENTRY_POINTS
    for name, spec in functions.items():
        assert spec["entry_point"] in defined, name
    build = tf()["resource"]["google_cloudfunctions2_function"]["fn"]["build_config"][0]
    assert build["runtime"] == "python311"
    assert build["entry_point"] == "${each.value.entry_point}"


def test_the_deployed_environment_satisfies_the_settings_object() -> None:
    common = tf()["locals"]["common_env"]
    secret = tf()["locals"]["secret_env"]
    known = {n for field in Settings.model_fields for n in env_names(field)}
    assert set(common) <= known, f"unknown env vars: {set(common) - known}"
    assert set(secret) <= known
    assert secret_env_names() & set(common) == set(), "secrets are never plain environment variables"
    assert secret_env_names() <= set(secret) | {"SUPABASE_JWT_SECRET", "SUPABASE_SERVICE_KEY", "DATABASE_URL"}
    # Build the settings object exactly as a deployed function would (placeholder values).
    env = {k: _resolve(str(v)) for k, v in common.items()}
    env.update(dict.fromkeys(secret, "placeholder-secret"))
    env["NANO_BANANA_DATABASE_URL"] = "postgresql://u:p@db.example:6543/postgres"
    settings = Settings(**env)
    assert (settings.limits, settings.queue, settings.storage) == ("firestore", "cloudtasks", "supabase")
    assert not settings.embedded
    fn = tf()["resource"]["google_cloudfunctions2_function"]["fn"]["service_config"][0]
    assert fn["environment_variables"] == "${local.common_env}"
    assert fn["dynamic"][0]["secret_environment_variables"]["for_each"] == "${local.secret_env}"


def _resolve(value: str) -> str:
    """Variables to their defaults; other references (resource attributes) to a placeholder URL."""
    match = re.fullmatch(r"\$\{(?:tostring\()?var\.(\w+)\)?\}", value)
    if match:
        return str(tf()["variable"][match.group(1)].get("default", "placeholder"))
    return "https://x.example" if "${" in value else value


def test_private_functions_have_no_public_invoker() -> None:
    functions = tf()["locals"]["functions"]
    public = {name for name, spec in functions.items() if spec["public"]}
    assert public == {"api", "callback"}
    for name in ENTRY_POINTS - public:
        assert functions[name]["ingress"] == "ALLOW_INTERNAL_ONLY", name
    iam = tf()["resource"]["google_cloud_run_service_iam_member"]
    assert iam["public"]["member"] == "allUsers"
    assert "v.public" in iam["public"]["for_each"]
    assert set(json.loads(iam["tasks_invoker"]["for_each"].replace("${toset(", "").replace(")}", ""))) == {
        "generate",
        "expire",
    }
    assert iam["tasks_invoker"]["member"] == "serviceAccount:${google_service_account.tasks.email}"
    assert iam["scheduler_invoker"]["service"].endswith('fn["sweep"].name}')
    text = "".join(p.read_text() for p in TF.glob("*.tf"))
    assert text.count('"allUsers"') == 1, "allUsers appears only on the public invoker"


def test_queue_and_timeouts_agree_with_the_deadline() -> None:
    variables = tf()["variable"]
    assert variables["timeout_s"]["default"] == Settings().timeout_s
    queue = tf()["resource"]["google_cloud_tasks_queue"]["jobs"]
    assert queue["retry_config"][0]["max_retry_duration"] == "${var.timeout_s}s"
    functions = tf()["locals"]["functions"]
    assert functions["generate"]["timeout"] == "${var.timeout_s + 60}", "generate outlives the 5-minute deadline"
    assert functions["generate"]["concurrency"] == 1
    assert functions["api"]["timeout"] == "${var.timeout_s + 60}", "SSE streams last until the deadline + 30 s"


def test_least_privilege_service_accounts() -> None:
    resources = tf()["resource"]
    assert set(resources["google_service_account"]) == {"runtime", "tasks", "scheduler"}
    project_roles = resources["google_project_iam_member"]["runtime"]["for_each"]
    assert set(re.findall(r'"(roles/[^"]+)"', project_roles)) == {
        "roles/aiplatform.user",
        "roles/datastore.user",
        "roles/logging.logWriter",
    }
    queue_roles = resources["google_cloud_tasks_queue_iam_member"]["runtime"]["for_each"]
    assert set(re.findall(r'"(roles/[^"]+)"', queue_roles)) == {
        "roles/cloudtasks.enqueuer",
        "roles/cloudtasks.taskDeleter",
    }
    assert (
        resources["google_service_account_iam_member"]["runtime_acts_as_tasks"]["role"]
        == "roles/iam.serviceAccountUser"
    )
    assert (
        resources["google_secret_manager_secret_iam_member"]["runtime"]["role"] == "roles/secretmanager.secretAccessor"
    )
    text = "".join(p.read_text() for p in TF.glob("*.tf"))
    for broad in ("roles/owner", "roles/editor", "roles/iam.serviceAccountTokenCreator"):
        assert broad not in text


def test_nothing_secret_in_variables_or_state() -> None:
    assert "google_secret_manager_secret_version" not in tf()["resource"], "secret values never pass through Terraform"
    for name, variable in tf()["variable"].items():
        default = json.dumps(variable.get("default", ""))
        assert not re.search(r"(?i)(password|postgres(ql)?://|eyJ|sk_|service_role)", default), name
    secrets = tf()["resource"]["google_secret_manager_secret"]["service"]
    assert secrets["for_each"] == "${var.secret_ids}"


def test_checkov_has_no_failed_checks() -> None:
    if not CHECKOV.exists():
        pytest.fail("checkov is missing: run `make checkov-venv` (make test does it)")
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"}
    result = subprocess.run(
        [str(CHECKOV), "-d", str(TF), "--framework", "terraform", "--output", "json", "--skip-download"],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
        check=False,
    )
    report = json.loads(result.stdout)
    summary = report["summary"]
    failed = [(c["check_id"], c["resource"]) for c in report["results"]["failed_checks"]]
    assert summary["failed"] == 0, failed
    assert summary["passed"] >= 15
    for skipped in report["results"]["skipped_checks"]:
        assert len(skipped.get("check_result", {}).get("suppress_comment", "")) > 20, (
            f"{skipped['check_id']} needs a reason"
        )


def test_cloudbuild_structure() -> None:
    raw = (ROOT / "cloudbuild.yaml").read_text()
    build = yaml.safe_load(raw)
    steps = build["steps"]
    assert all("name" in s and "id" in s for s in steps)
    ids = [s["id"] for s in steps]
    assert ids == ["test", "package", "terraform-init", "terraform-plan", "terraform-apply", "smoke-test"]
    assert "make test" in json.dumps(steps[0])
    plan = json.dumps(steps[3])
    assert "-out=tfplan" in plan
    assert "terraform/tfplan" in build["artifacts"]["objects"]["paths"]
    assert "apply" in steps[4]["args"]
    assert "tfplan" in steps[4]["args"]
    assert "healthz_url" in json.dumps(steps[5])
    declared = set(build["substitutions"])
    used = set(re.findall(r"\$\{?(_[A-Z_]+)", raw))
    assert used <= declared, f"undeclared substitutions: {used - declared}"
    assert {"_REGION"} <= declared
    assert "healthz_url" in tf()["output"]
