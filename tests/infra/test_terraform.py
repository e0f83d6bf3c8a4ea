"""Terraform, Cloud Build and the deployment guide, checked without providers (they cannot be downloaded
here, so no init/validate/plan): `terraform fmt`, the structure parsed with python-hcl2 and checked
against the code it deploys (functions/main.py, the settings object), checkov, and cloudbuild.yaml."""

from __future__ import annotations

import ast
import functools
import json
import math
import operator
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hcl2
import pytest
import yaml
from pydantic import SecretStr

from nano_banana.dev import env_names
from nano_banana.settings import Settings

pytestmark = pytest.mark.infra
ROOT = Path(__file__).resolve().parents[2]
TF = ROOT / "terraform"
CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"
ENTRY_POINTS = {"api", "callback", "generate", "expire", "sweep"}
PUBLIC = {"api", "callback"}

# What each function's role reads from the settings object (field names of Settings; the env var names
# are derived from their validation aliases). Every function builds the whole runtime (bootstrap.build:
# database, limits, queue, storage), hence RUNTIME for all of them.
RUNTIME = {
    "database_url",
    "jwt_secret",  # the settings refuse a database URL without it
    "limits",
    "queue",
    "storage",
    "generator",
    "gcp_project",
    "gcp_location",
    "supabase_url",
    "supabase_service_key",
    "bucket",
    "tasks_queue",
    "generate_url",
    "expire_url",
    "timeout_s",
}
ROLE_NEEDS: dict[str, set[str]] = {
    "api": RUNTIME | {"rate_per_hour", "max_active_per_project", "tasks_service_account", "public_base_url"},
    "generate": RUNTIME
    | {"vertex_location", "model", "tasks_service_account", "n8n_secret", "n8n_webhook_url", "callback_url"},
    "expire": RUNTIME | {"tasks_service_account"},
    "sweep": RUNTIME | {"scheduler_service_account", "sweep_url"},
    "callback": RUNTIME | {"n8n_secret"},
}


# ------------------------------------------------------------------------------------------ parsing


def unq(value: Any) -> Any:
    """python-hcl2 keeps string quotes and adds bookkeeping keys; strip both recursively."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    if isinstance(value, dict):
        return {unq(k): unq(v) for k, v in value.items() if k not in {"__is_block__", "__comments__"}}
    if isinstance(value, list):
        return [unq(v) for v in value]
    return value


@functools.cache
def tf() -> dict[str, Any]:
    merged: dict[str, Any] = {"resource": {}, "locals": {}, "variable": {}, "data": {}, "output": {}, "terraform": []}
    for path in sorted(TF.glob("*.tf")):
        with path.open() as f:
            doc = unq(hcl2.load(f))
        for block in doc.get("resource", []):
            for rtype, named in block.items():
                merged["resource"].setdefault(rtype, {}).update(named)
        for kind in ("locals", "variable", "data", "output"):
            for block in doc.get(kind, []):
                merged[kind].update(block)
        merged["terraform"] += doc.get("terraform", [])
    return merged


def tf_text() -> str:
    return "".join(p.read_text() for p in sorted(TF.glob("*.tf")))


def default(variable: str) -> Any:
    return tf()["variable"][variable]["default"]


def functions() -> dict[str, dict[str, Any]]:
    return dict(tf()["locals"]["functions"])


def string_list(expression: str) -> set[str]:
    """`${toset(["a", "b"])}` -> {"a", "b"}."""
    return set(re.findall(r'"([^"]+)"', expression))


_OPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}


def evaluate(expression: str, variables: dict[str, Any]) -> Any:
    """Evaluate a small arithmetic HCL expression (numbers, + - * /, floor, var.*, local.*)."""
    source = expression.removeprefix("${").removesuffix("}")
    for name, value in variables.items():
        source = re.sub(rf"\b{re.escape(name)}\b", repr(value), source)

    def walk(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](walk(node.left), walk(node.right))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "floor":
            return math.floor(walk(node.args[0]))
        raise AssertionError(f"unsupported expression {ast.dump(node)} in {expression}")

    return walk(ast.parse(source, mode="eval"))


def secret_fields() -> set[str]:
    """Settings fields typed SecretStr: these may only come from Secret Manager."""
    return {
        name
        for name, field in Settings.model_fields.items()
        if SecretStr in (getattr(field.annotation, "__args__", ()) or (field.annotation,))
    }


def function_secrets(name: str, generator: str) -> set[str]:
    """The secrets (keys of var.secret_ids) a function mounts for a generator mode."""
    local = tf()["locals"]
    assert local["n8n_secret_for_all"] == '${var.generator == "n8n" ? ["n8n_secret"] : []}'
    known = {
        "local.runtime_secrets": set(local["runtime_secrets"]),
        "local.n8n_secret_for_all": {"n8n_secret"} if generator == "n8n" else set(),
        '["n8n_secret"]': {"n8n_secret"},
    }
    match = re.fullmatch(r"\$\{concat\((.+), (.+)\)\}", functions()[name]["secrets"])
    assert match, f"{name}: secrets must be concat(local.runtime_secrets, ...)"
    return known[match.group(1)] | known[match.group(2)]


def function_env(name: str, generator: str) -> set[str]:
    """Env var names a function gets: the common environment plus its own secrets."""
    secret_env = tf()["locals"]["secret_env_names"]
    return set(tf()["locals"]["common_env"]) | {secret_env[s] for s in function_secrets(name, generator)}


def example_tfvars() -> dict[str, Any]:
    """The values terraform.tfvars.example sets (the operator's starting point)."""
    with (TF / "terraform.tfvars.example").open() as f:
        return dict(unq(hcl2.load(f)))


def resolve(value: str, overrides: dict[str, Any]) -> str:
    """A common_env value as deployed: variables to their defaults (or overrides); other references
    (resource attributes, predictable URLs) to a placeholder of the right shape."""
    match = re.fullmatch(r"\$\{(?:tostring\()?var\.(\w+)\)?\}", value)
    if match:
        name = match.group(1)
        return str(overrides.get(name, tf()["variable"][name].get("default", "")))
    match = re.fullmatch(r'\$\{join\(",", var\.(\w+)\)\}', value)
    if match:
        name = match.group(1)
        return ",".join(overrides.get(name, tf()["variable"][name].get("default", [])))
    if "email}" in value:
        return "account@project.iam.gserviceaccount.com"
    return "https://region-project.cloudfunctions.net/x" if "${" in value else value


# ------------------------------------------------------------------------------------------ terraform


def test_terraform_fmt() -> None:
    binary = shutil.which("terraform")
    if binary is None:
        pytest.skip("terraform is not installed here: `terraform fmt -check` could not run")
    result = subprocess.run(
        [binary, "fmt", "-check", "-recursive", str(TF)],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CLI_CONFIG_FILE": os.devnull},
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"terraform fmt would change: {result.stdout}"


def test_providers_are_pinned_exactly() -> None:
    (block,) = [b for b in tf()["terraform"] if "required_providers" in b]
    required = block["required_providers"][0]
    assert set(required) == {"google", "archive"}
    for name, spec in required.items():
        assert spec["source"] == f"hashicorp/{name}"
        assert re.fullmatch(r"= \d+\.\d+\.\d+", spec["version"]), f"{name} is not pinned exactly"
    assert block["required_version"].startswith(">= 1.9.0")  # validations that read other variables


def test_every_function_has_its_entry_point_in_main() -> None:
    tree = ast.parse((ROOT / "functions" / "main.py").read_text())
    defined = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert set(functions()) == ENTRY_POINTS
    for name, spec in functions().items():
        entry = spec["entry_point"]
        assert entry in defined, f"{name}: functions/main.py has no top-level `def {entry}`"
        assert len(defined[entry].args.args) == 1, f"{entry} must take the request only"
    fn = tf()["resource"]["google_cloudfunctions2_function"]["fn"]
    build = fn["build_config"][0]
    assert build["runtime"] == "python311"
    assert build["entry_point"] == "${each.value.entry_point}"
    assert fn["for_each"] == "${local.functions}"
    # The source is functions/ itself, zipped by Terraform, named by its content hash.
    archive = tf()["data"]["archive_file"]["functions"]
    assert archive["source_dir"] == "${path.module}/../functions"
    assert (ROOT / "functions" / "requirements.txt").is_file()
    assert "output_md5" in tf()["resource"]["google_storage_bucket_object"]["source"]["name"]


def test_each_function_gets_the_settings_its_role_needs() -> None:
    known = {n for field in Settings.model_fields for n in env_names(field)}
    common = tf()["locals"]["common_env"]
    assert set(common) <= known, f"not a settings env var: {set(common) - known}"
    assert "NANO_BANANA_TASK_OIDC_AUDIENCE" not in common, "each task's audience must stay its own target URL"
    fn = tf()["resource"]["google_cloudfunctions2_function"]["fn"]["service_config"][0]
    # Every function gets the common environment, and gunicorn as many threads as Cloud Run sends
    # requests (the Functions Framework's default, 4 per CPU, would cap the api at 4 open event streams).
    assert fn["environment_variables"] == "${merge(local.common_env, {THREADS = tostring(each.value.concurrency)})}"
    (dynamic,) = fn["dynamic"]
    mount = dynamic["secret_environment_variables"]
    assert re.sub(r"\s+", " ", mount["for_each"]) == (
        "${{for s in each.value.secrets : local.secret_env_names[s] => google_secret_manager_secret.service[s].secret_id}}"
    )
    assert mount["content"][0]["version"] == "latest"
    assert set(tf()["locals"]["secret_env_names"]) == set(default("secret_ids"))

    for name, needs in ROLE_NEEDS.items():
        # Build the settings object exactly as this function will, for both generator modes.
        for generator, overrides in (("vertex", {}), ("n8n", {"n8n_webhook_url": "https://n8n.example/webhook"})):
            env = function_env(name, generator)
            for field in needs:
                assert env & set(env_names(field)), f"{name} lacks {field} ({' or '.join(env_names(field))})"
            given = {**example_tfvars(), "generator": generator, **overrides}
            values = {k: resolve(str(v), given) for k, v in common.items()}
            values.update(dict.fromkeys(env - set(common), "placeholder-secret"))
            values["NANO_BANANA_DATABASE_URL"] = "postgresql://u:p@db.example:6543/postgres"
            settings = Settings.model_validate(values)
            assert (settings.limits, settings.queue, settings.storage) == ("firestore", "cloudtasks", "supabase")
            assert settings.generator == generator
            assert not settings.embedded
    # With the Vertex generator the n8n secret goes only where it is used.
    assert {n for n in ENTRY_POINTS if "n8n_secret" in function_secrets(n, "vertex")} == {"callback", "generate"}
    assert all("n8n_secret" in function_secrets(n, "n8n") for n in ENTRY_POINTS)


def test_secrets_are_never_plain_environment_variables() -> None:
    secret_env = {n for field in secret_fields() for n in env_names(field)}
    assert secret_env & set(tf()["locals"]["common_env"]) == set()
    mounted = set(tf()["locals"]["secret_env_names"].values())
    # Secret settings the deployment leaves unset on purpose, each with its reason.
    not_deployed = {
        # Derived from the database URL (Supabase's transaction pooler -> its session mode, same host).
        "listen_database_url",
    }
    deployed = secret_fields() - not_deployed
    assert {env_names(f)[0] for f in deployed} <= mounted, "every secret setting comes from Secret Manager"
    assert not_deployed <= secret_fields()
    assert "google_secret_manager_secret_version" not in tf()["resource"], "secret values never pass through Terraform"
    secrets = tf()["resource"]["google_secret_manager_secret"]["service"]
    assert secrets["for_each"] == "${var.secret_ids}"


def test_nothing_secret_in_variable_defaults_or_examples() -> None:
    looks_secret = re.compile(r"(?i)(password|postgres(ql)?://|eyJ[a-z0-9]|sk_|service_role|BEGIN [A-Z ]*KEY)")
    for name, variable in tf()["variable"].items():
        assert not looks_secret.search(json.dumps(variable.get("default", ""))), name
        assert variable.get("sensitive") is not True, f"{name}: secrets are Secret Manager ids, not variables"
    example = (TF / "terraform.tfvars.example").read_text()
    assert not looks_secret.search(example)
    assigned = set(re.findall(r"^(?:# )?(\w+)\s*=", example, flags=re.MULTILINE))
    assert assigned <= set(tf()["variable"]), f"unknown variables in the example: {assigned - set(tf()['variable'])}"
    required = {n for n, v in tf()["variable"].items() if "default" not in v}
    assert required <= set(re.findall(r"^(\w+)\s*=", example, flags=re.MULTILINE)), "example sets every required one"
    backend = (TF / "backend.tf.example").read_text()
    assert 'backend "gcs"' in backend
    assert 'backend "gcs"' in (TF / "backend.tf").read_text()


def test_private_functions_have_no_public_invoker() -> None:
    assert {n for n, spec in functions().items() if spec["public"]} == PUBLIC
    service = tf()["resource"]["google_cloudfunctions2_function"]["fn"]["service_config"][0]
    assert service["ingress_settings"] == '${each.value.public ? "ALLOW_ALL" : var.private_ingress}'
    assert default("private_ingress") == "ALLOW_INTERNAL_ONLY"
    assert "ALLOW_ALL" not in tf()["variable"]["private_ingress"]["validation"][0]["condition"]
    iam = tf()["resource"]["google_cloud_run_service_iam_member"]
    assert iam["public"]["member"] == "allUsers"
    assert iam["public"]["for_each"] == "${{for k, v in local.functions : k => v if v.public}}"
    assert string_list(iam["tasks_invoker"]["for_each"]) == {"generate", "expire"}
    assert iam["scheduler_invoker"]["service"] == '${google_cloudfunctions2_function.fn["sweep"].name}'
    assert tf_text().count('"allUsers"') == 1, "allUsers appears only on the public invoker"
    assert "allAuthenticatedUsers" not in tf_text()


def test_least_privilege_service_accounts() -> None:
    """Every IAM grant in the module, as (member, scope, role): exactly the list, nothing else."""
    resources = tf()["resource"]
    assert set(resources["google_service_account"]) == {"runtime", "tasks", "scheduler", "builder"}
    for authoritative in ("iam_binding", "iam_policy"):
        assert not [r for r in resources if r.endswith(authoritative)], "only additive *_iam_member grants"

    def who(member: str) -> str:
        match = re.fullmatch(r"serviceAccount:\$\{google_service_account\.(\w+)\.email\}", member)
        return match.group(1) if match else member

    def expand(resource: dict[str, Any], key: str) -> set[str]:
        value = resource[key]
        if value == "${each.value}" or value == "${each.key}":
            return string_list(resource["for_each"])
        return {value}

    grants: set[tuple[str, str, str]] = set()
    for rtype, named in resources.items():
        if not rtype.endswith("_iam_member"):
            continue
        for resource in named.values():
            scope = rtype.removeprefix("google_").removesuffix("_iam_member")
            if rtype == "google_cloud_run_service_iam_member":
                if "each.key" not in resource["service"]:
                    targets = set(re.findall(r'fn\["(\w+)"\]', resource["service"]))
                elif resource["for_each"].startswith("${{for"):  # the map of functions with public = true
                    targets = PUBLIC
                else:
                    targets = string_list(resource["for_each"])
                scopes = {f"run:{t}" for t in targets}
            elif rtype == "google_secret_manager_secret_iam_member":
                assert resource["for_each"] == "${google_secret_manager_secret.service}", "one grant per secret"
                scopes = {"secret:each"}
            elif rtype == "google_service_account_iam_member":
                scopes = {f"serviceAccount:{resource['service_account_id'].split('.')[1]}"}
            else:
                scopes = {scope}
            for role in expand(resource, "role"):
                grants |= {(who(resource["member"]), s, role) for s in scopes}

    assert grants == {
        ("runtime", "project", "roles/aiplatform.user"),
        ("runtime", "project", "roles/datastore.user"),
        ("runtime", "cloud_tasks_queue", "roles/cloudtasks.enqueuer"),
        ("runtime", "cloud_tasks_queue", "roles/cloudtasks.taskDeleter"),
        ("runtime", "serviceAccount:tasks", "roles/iam.serviceAccountUser"),
        ("runtime", "secret:each", "roles/secretmanager.secretAccessor"),
        ("tasks", "run:generate", "roles/run.invoker"),
        ("tasks", "run:expire", "roles/run.invoker"),
        ("scheduler", "run:sweep", "roles/run.invoker"),
        ("allUsers", "run:api", "roles/run.invoker"),
        ("allUsers", "run:callback", "roles/run.invoker"),
        ("builder", "project", "roles/logging.logWriter"),
        ("builder", "project", "roles/artifactregistry.writer"),
        ("builder", "project", "roles/storage.objectAdmin"),
    }
    # The builder's storage role is limited to the function-build buckets (not the Terraform state).
    condition = resources["google_project_iam_member"]["builder_storage"]["condition"][0]["expression"]
    assert "google_storage_bucket.source.name" in condition
    assert "buckets/gcf-" in condition
    fn = resources["google_cloudfunctions2_function"]["fn"]
    assert fn["service_config"][0]["service_account_email"] == "${google_service_account.runtime.email}"
    assert fn["build_config"][0]["service_account"] == "${google_service_account.builder.id}"
    for broad in ("roles/owner", "roles/editor", "roles/iam.serviceAccountTokenCreator", "roles/run.admin"):
        assert broad not in tf_text()


def cloud_tasks_backoff(retry: int, min_s: float, max_s: float, doublings: int) -> float:
    """Cloud Tasks' documented schedule: minBackoff, doubled maxDoublings times, then growing linearly by
    that last doubled interval, capped at maxBackoff (min 10, max 300, doublings 3: 10 20 40 80 160 240 300)."""
    base = min_s * float(2 ** min(retry, doublings))
    return min(max_s, base + max(0, retry - doublings) * min_s * float(2**doublings))


def test_cloud_tasks_backoff_model_matches_the_documented_example() -> None:
    schedule = [cloud_tasks_backoff(i, 10, 300, 3) for i in range(8)]
    assert schedule == [10, 20, 40, 80, 160, 240, 300, 300]


def test_queue_retries_and_timeouts_agree_with_the_deadline() -> None:
    timeout = default("timeout_s")
    assert timeout == Settings.model_fields["timeout_s"].default == 300, (
        "Terraform's default is the settings' NANO_BANANA_TIMEOUT_S"
    )
    assert tf()["locals"]["common_env"]["NANO_BANANA_TIMEOUT_S"] == "${tostring(var.timeout_s)}"
    queue = tf()["resource"]["google_cloud_tasks_queue"]["jobs"]
    retry = queue["retry_config"][0]
    assert retry["max_retry_duration"] == "${var.timeout_s}s", "no retries after the job's deadline"
    local = tf()["locals"]
    min_s, max_s, doublings = local["retry_min_backoff_s"], local["retry_max_backoff_s"], local["retry_max_doublings"]
    assert retry["min_backoff"] == "${local.retry_min_backoff_s}s"
    assert retry["max_backoff"] == "${local.retry_max_backoff_s}s"
    assert retry["max_doublings"] == "${local.retry_max_doublings}"
    assert retry["max_attempts"] == "${local.retry_max_attempts}"
    assert local["retry_doubling_span_s"] == sum(cloud_tasks_backoff(i, min_s, max_s, doublings) for i in range(4))
    # Cloud Tasks stops after max_retry_duration AND max_attempts, so the attempt count must be what fits
    # in the deadline: the last fast-failing retry lands before it, one more would land after it.
    low, high = (int(v) for v in re.findall(r"timeout_s (?:>=|<=) (\d+)", json.dumps(tf()["variable"]["timeout_s"])))
    for deadline in sorted({low, timeout, 600, high}):
        attempts = evaluate(
            local["retry_max_attempts"], {"var.timeout_s": deadline, **{f"local.{k}": v for k, v in local.items()}}
        )
        retries = [cloud_tasks_backoff(i, min_s, max_s, doublings) for i in range(attempts)]
        assert sum(retries[: attempts - 1]) <= deadline < sum(retries), (deadline, attempts, retries)
    assert (
        evaluate(local["retry_max_attempts"], {"var.timeout_s": 300, **{f"local.{k}": v for k, v in local.items()}})
        == 8
    )
    # Concurrency: no more in flight than the two task functions can hold.
    assert queue["rate_limits"][0]["max_concurrent_dispatches"] == (
        '${local.functions["generate"].max + local.functions["expire"].max}'
    )
    # The generate function outlives the job's deadline and the task's dispatch deadline (remaining + N s).
    usecases = (ROOT / "functions" / "nano_banana" / "usecases" / "services.py").read_text()
    slack = re.search(r'kind="generate".*?dispatch_deadline_s=max\([\d.]+, remaining \+ (\d+)\)', usecases)
    assert slack, "usecases/services.py no longer sets the generate task's dispatch deadline as remaining + N"
    generate, api = functions()["generate"], functions()["api"]
    assert generate["timeout"] == "${var.timeout_s + 60}"
    assert int(slack.group(1)) < 60
    assert generate["concurrency"] == 1, "one job per generate instance (bounded memory, exact model-call cap)"
    assert api["timeout"] == "${var.timeout_s + 60}", "SSE streams last until the deadline + 30 s"


def test_the_functions_framework_takes_its_thread_count_from_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pinned Functions Framework sizes gunicorn from THREADS (what functions.tf sets per function)."""
    from functions_framework._http.gunicorn import GunicornApplication

    def app(environ: object, start_response: object) -> list[bytes]:
        return []

    monkeypatch.setenv("THREADS", "40")
    assert GunicornApplication(app, "127.0.0.1", 0, False).options["threads"] == 40
    monkeypatch.delenv("THREADS")
    assert GunicornApplication(app, "127.0.0.1", 0, False).options["threads"] == (os.cpu_count() or 1) * 4


def test_function_sizes_are_deployable() -> None:
    """Cloud Run's rules: less than one CPU means one request at a time; memory within the CPU's range."""
    for name, spec in functions().items():
        cpu = float(spec["cpu"])
        memory_mib = (
            int(spec["memory"].removesuffix("Mi"))
            if spec["memory"].endswith("Mi")
            else 1024 * int(spec["memory"].removesuffix("Gi"))
        )
        if cpu < 1:
            assert spec["concurrency"] == 1, f"{name}: concurrency > 1 needs at least 1 CPU"
            assert memory_mib <= 1024, name
        assert 128 <= memory_mib <= 4096 * cpu, name
        assert spec["min"] == "${var.api_min_instances}" or spec["min"] == 0, name


def test_scheduler_calls_sweep_with_its_own_identity() -> None:
    job = tf()["resource"]["google_cloud_scheduler_job"]["sweep"]
    assert job["schedule"] == "* * * * *"
    target = job["http_target"][0]
    assert target["uri"] == '${local.function_url["sweep"]}'
    oidc = target["oidc_token"][0]
    assert oidc["service_account_email"] == "${google_service_account.scheduler.email}"
    assert oidc["audience"] == '${local.function_url["sweep"]}', (
        "the sweep checks this audience (NANO_BANANA_SWEEP_URL)"
    )
    assert tf()["locals"]["common_env"]["NANO_BANANA_SWEEP_URL"] == '${local.function_url["sweep"]}'
    assert tf()["locals"]["function_url"] == (
        '${{for name in ["api", "callback", "generate", "expire", "sweep"] : '
        'name => "https://${var.region}-${var.project_id}.cloudfunctions.net/${var.name_prefix}-${name}"}}'
    )


def test_checkov_has_no_failed_checks() -> None:
    if not CHECKOV.exists():
        pytest.fail("checkov is missing: run `make checkov-venv` (make test does it)")
    config = TF / ".checkov.yaml"
    result = subprocess.run(
        [str(CHECKOV), "--config-file", str(config), "-d", str(TF), "--output", "json"],
        capture_output=True,
        text=True,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"},
        cwd=ROOT,
        timeout=180,
        check=False,
    )
    report = json.loads(result.stdout)
    failed = [(c["check_id"], c["resource"]) for c in report["results"].get("failed_checks", [])]
    assert report["summary"]["failed"] == 0, failed
    assert report["summary"]["parsing_errors"] == 0
    assert report["summary"]["passed"] >= 25
    documented = set(re.findall(r"^#\s+(CKV_\w+)", config.read_text(), flags=re.MULTILINE))
    for skipped in report["results"].get("skipped_checks", []):
        reason = skipped.get("check_result", {}).get("suppress_comment", "")
        assert len(reason) > 40, f"{skipped['check_id']} on {skipped['resource']} needs a reason"
        assert skipped["check_id"] in documented, f"{skipped['check_id']} is not listed in .checkov.yaml"


# ------------------------------------------------------------------------------------------ cloud build


BUILTIN_SUBSTITUTIONS = {"PROJECT_ID", "BUILD_ID", "PROJECT_NUMBER", "LOCATION", "COMMIT_SHA", "SHORT_SHA"}


def cloudbuild() -> tuple[str, dict[str, Any]]:
    raw = (ROOT / "cloudbuild.yaml").read_text()
    return raw, yaml.safe_load(raw)


def test_cloudbuild_steps() -> None:
    _, build = cloudbuild()
    steps = build["steps"]
    assert all(s.get("name") and s.get("id") for s in steps), "every step has an image and an id"
    ids = [s["id"] for s in steps]
    assert ids == ["test", "package", "terraform-init", "terraform-plan", "store-plan", "terraform-apply", "smoke-test"]
    by_id = {s["id"]: json.dumps(s) for s in steps}
    assert "make test" in by_id["test"]
    assert "google-cloud-cli-firestore-emulator" in by_id["test"]
    assert "openjdk-17-jre-headless" in by_id["test"]
    assert "functions/requirements.txt" in by_id["package"]
    assert all(f"'{n}'" in by_id["package"] for n in ENTRY_POINTS)
    assert "-out=tfplan" in by_id["terraform-plan"]
    assert "terraform/tfplan" in by_id["store-plan"], "the plan is kept before apply"
    assert "apply -input=false -auto-approve tfplan" in by_id["terraform-apply"], "apply exactly the stored plan"
    assert "healthz_url" in by_id["terraform-apply"]
    assert "healthz_url" in tf()["output"]
    assert "curl" in by_id["smoke-test"]
    assert "healthz_url" in by_id["smoke-test"]
    assert "terraform/tfplan" in build["artifacts"]["objects"]["paths"]
    assert "CLOUD_LOGGING_ONLY" in json.dumps(build["options"]), "required with a custom build service account"


def test_cloudbuild_substitutions_and_images() -> None:
    raw, build = cloudbuild()
    declared = set(build["substitutions"])
    body = raw.split("steps:", 1)[1] + json.dumps(build.get("serviceAccount", ""))
    used = set(re.findall(r"(?<!\$)\$\{?(_[A-Z0-9_]+)", body)) | set(
        re.findall(r"\$\{(_[A-Z0-9_]+)\}", json.dumps(build["substitutions"]))
    )
    assert used <= declared, f"undeclared substitutions: {used - declared}"
    assert declared <= used, f"declared but unused (Cloud Build refuses those): {declared - used}"
    assert {"_REGION", "_SUPABASE_URL", "_TF_STATE_BUCKET"} <= declared
    # Every other $NAME must be a built-in; shell variables are escaped as $$name.
    for step in build["steps"]:
        text = json.dumps(step.get("args", [])) + json.dumps(step.get("env", []))
        for name in re.findall(r"(?<!\$)\$\{?([A-Za-z_][A-Za-z0-9_]*)", text.replace("$$", "")):
            assert name in declared | BUILTIN_SUBSTITUTIONS, (
                f"{step['id']}: ${name} is not a substitution (use $${name})"
            )
    images = [build["substitutions"].get(s["name"][2:-1], s["name"]) for s in build["steps"]]
    assert not [i for i in images if i.endswith(":latest") or ":" not in i], "images are tagged"
    terraform_image = build["substitutions"]["_TERRAFORM_IMAGE"]
    assert re.fullmatch(r"hashicorp/terraform:1\.(9|1\d)\.\d+", terraform_image), terraform_image


def test_deploy_guide_matches_the_module() -> None:
    guide = (ROOT / "docs" / "deploy.md").read_text()
    for secret_id in default("secret_ids").values():
        assert f"gcloud secrets versions add {secret_id}" in guide, secret_id
    for required in (
        "supabase --workdir infra db push",
        "pip-ai-images",
        "pip_ai_image_jobs",
        "pip_ai_image_variants",
        "pip_ai_can_access_project(p_project_id uuid, p_user_id uuid)",
        "-backend-config=bucket=",
        "terraform apply",
        "/healthz",
        "gcloud builds submit",
    ):
        assert required in guide, required
    for api in tf()["locals"]["apis"].replace("${toset([", "").split(","):
        name = api.strip().strip('"]})\n ')
        if name:
            assert name in guide, f"{name} is not named in docs/deploy.md"


def test_deploy_guide_counts_and_tools() -> None:
    guide = (ROOT / "docs" / "deploy.md").read_text()
    apis = string_list(tf()["locals"]["apis"])
    assert f"| {len(apis)} APIs |" in guide
    tools = guide[guide.index("## 0. Tools") : guide.index("## 1.")]
    code = "\n".join(re.findall(r"```sh\n(.*?)```", guide, flags=re.DOTALL))
    for tool in ("gcloud", "terraform", "supabase", "curl", "jq", "openssl"):
        if re.search(rf"(^|[\s|(]){tool} ", code, flags=re.MULTILINE) or f"`{tool} " in guide:
            assert tool in tools.lower(), f"docs/deploy.md uses {tool} but does not list it under Tools"


def test_supabase_cli_commands_point_at_the_migrations() -> None:
    """The Supabase CLI reads <workdir>/supabase/migrations, the workdir being --workdir or the nearest
    directory upwards with supabase/config.toml (supabase/cli internal/utils/misc.go: ChangeWorkDir,
    getProjectRoot). Ours are in infra/supabase/migrations, and no supabase/ at the root may shadow them."""
    assert sorted((ROOT / "infra" / "supabase" / "migrations").glob("*_*.sql"))
    assert not (ROOT / "supabase").exists()
    for page in ("docs/deploy.md", "docs/operations.md", "README.md"):
        text = (ROOT / page).read_text()
        for command in re.findall(r"\bsupabase ((?:--\S+ \S+ )*(?:db|migration|link)\b[^`\n]*)", text):
            assert command.startswith("--workdir infra "), f"{page}: supabase {command}"
