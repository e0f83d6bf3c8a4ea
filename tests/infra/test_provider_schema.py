"""terraform/*.tf against the hashicorp/google provider's own schema, of the exact version versions.tf pins
(tests/infra/provider_schema.py reads it from cdktn-provider-google's jsii assembly): what `terraform
validate` would catch in resource types, arguments and blocks, without downloading the provider. Then the
role names: every `roles/...` the module grants or the guides tell an operator to grant is a predefined
role listed here with what it is for, and the Cloud Build deployer's roles cover every resource type."""

from __future__ import annotations

import re
import shutil
import zipfile
from pathlib import Path

import hcl2
import pytest

from tests.infra import provider_schema
from tests.infra.provider_schema import check_files

pytestmark = pytest.mark.infra
ROOT = Path(__file__).resolve().parents[2]
TF = ROOT / "terraform"


def pinned_provider() -> str:
    text = (TF / "versions.tf").read_text()
    match = re.search(r'source\s*=\s*"hashicorp/google"\s*version\s*=\s*"=\s*([\d.]+)"', text)
    assert match, "terraform/versions.tf pins hashicorp/google exactly"
    return match.group(1)


def google_blocks() -> list[tuple[str, str]]:
    """(resource type, name) of every google_* resource and data source in terraform/."""
    found = []
    for path in sorted(TF.glob("*.tf")):
        with path.open() as f:
            document = hcl2.load(f)
        for kind in ("resource", "data"):
            for block in document.get(kind, []):
                for rtype, named in block.items():
                    found += [(rtype.strip('"'), name.strip('"')) for name in named if rtype.startswith('"google_')]
    return found


def modified(tmp_path: Path, file: str, old: str, new: str) -> list[Path]:
    """A copy of terraform/*.tf with one exact, unique edit in one file."""
    for path in TF.glob("*.tf"):
        shutil.copy(path, tmp_path / path.name)
    target = tmp_path / file
    text = target.read_text()
    assert text.count(old) == 1, f"{old!r} must occur once in {file}"
    target.write_text(text.replace(old, new))
    return sorted(tmp_path.glob("*.tf"))


# ------------------------------------------------------------------------------------------ the schema


def test_the_schema_is_the_pinned_provider_version() -> None:
    pin = re.search(r"cdktn-provider-google==([\d.]+)", (ROOT / "infra/provider_schema/requirements.txt").read_text())
    assert pin, "infra/provider_schema/requirements.txt pins cdktn-provider-google"
    assert provider_schema.wheel().name == f"cdktn_provider_google-{pin.group(1)}-py3-none-any.whl"
    with zipfile.ZipFile(provider_schema.wheel()) as whl:
        (metadata,) = [n for n in whl.namelist() if n.endswith(".dist-info/METADATA")]
        readme = whl.read(metadata).decode()
    # The release's README says which provider it was built from; it must be the one Terraform installs.
    assert f"bindings for hashicorp/google provider version {pinned_provider()}\n" in readme
    assert provider_schema.load().provider_version == pinned_provider()


def test_the_schema_knows_what_the_checks_rely_on() -> None:
    """A sanity check of the reader itself on a resource whose schema is well known."""
    schema = provider_schema.load()
    assert len(schema.resources) > 1000
    assert len(schema.data_sources) > 300
    fn = schema.structs[schema.resources["google_cloudfunctions2_function"]]
    assert fn["name"].required
    assert not fn["name"].block
    assert fn["location"].required
    assert fn["service_config"].block
    assert not fn["service_config"].required
    assert fn["labels"].block is False
    service = schema.structs[fn["service_config"].struct or ""]
    assert service["secret_environment_variables"].block
    secret = schema.structs[service["secret_environment_variables"].struct or ""]
    assert {n for n, f in secret.items() if f.required} == {"key", "project_id", "secret", "version"}
    iam = schema.structs[schema.resources["google_project_iam_member"]]
    assert {n for n, f in iam.items() if f.required} == {"project", "role", "member"}
    assert iam["condition"].block


# ------------------------------------------------------------------------------------------ the module


def test_every_google_resource_matches_the_provider_schema() -> None:
    checker = provider_schema.Checker(provider_schema.load())
    for path in sorted(TF.glob("*.tf")):
        with path.open() as f:
            checker.check_document(path.name, hcl2.load(f))
    assert checker.problems == []
    # It did look at every resource (36 google resources and data sources today), into their blocks.
    assert checker.checked_resources == len(google_blocks()) >= 30
    assert checker.checked_blocks >= 60
    assert checker.checked_arguments >= 250


@pytest.mark.parametrize(
    ("file", "old", "new", "problem"),
    [
        pytest.param(
            "functions.tf",
            "available_memory                 =",
            "available_memroy                 =",
            "functions.tf: google_cloudfunctions2_function.fn.service_config: unknown argument "
            "'available_memroy' (did you mean 'available_memory'?)",
            id="misspelt-argument-in-a-block",
        ),
        pytest.param(
            "main.tf",
            'account_id   = "${var.name_prefix}-runtime"',
            'acount_id    = "${var.name_prefix}-runtime"',
            [
                "main.tf: google_service_account.runtime: unknown argument 'acount_id' (did you mean 'account_id'?)",
                "main.tf: google_service_account.runtime: missing required argument 'account_id'",
            ],
            id="misspelt-required-argument",
        ),
        pytest.param(
            "functions.tf",
            "        secret     = secret_environment_variables.value\n",
            "        secrets    = secret_environment_variables.value\n",
            [
                "functions.tf: google_cloudfunctions2_function.fn.service_config.secret_environment_variables: "
                "unknown argument 'secrets' (did you mean 'secret'?)",
                "functions.tf: google_cloudfunctions2_function.fn.service_config.secret_environment_variables: "
                "missing required argument 'secret'",
            ],
            id="misspelt-argument-in-a-dynamic-block",
        ),
        pytest.param(
            "functions.tf",
            'dynamic "secret_environment_variables" {',
            'dynamic "secret_environment_variable" {',
            "functions.tf: google_cloudfunctions2_function.fn.service_config: dynamic "
            "\"secret_environment_variable\": unknown (did you mean 'secret_environment_variables'?)",
            id="misspelt-dynamic-block",
        ),
        pytest.param(
            "functions.tf",
            "  labels = { app",
            "  labelz = { app",
            "functions.tf: google_cloudfunctions2_function.fn: unknown argument 'labelz' (did you mean 'labels'?)",
            id="misspelt-top-level-argument",
        ),
        pytest.param(
            "functions.tf",
            '  role     = "roles/run.invoker"\n  member   = "serviceAccount:${google_service_account.scheduler.email}"',
            '  member   = "serviceAccount:${google_service_account.scheduler.email}"',
            "functions.tf: google_cloud_run_service_iam_member.scheduler_invoker: missing required argument 'role'",
            id="missing-required-argument",
        ),
        pytest.param(
            "main.tf",
            '    title       = "function-build-buckets"\n',
            "",
            "main.tf: google_project_iam_member.builder_storage.condition: missing required argument 'title'",
            id="missing-required-argument-in-a-block",
        ),
        pytest.param(
            "functions.tf",
            "        key        = secret_environment_variables.key\n",
            "",
            "functions.tf: google_cloudfunctions2_function.fn.service_config.secret_environment_variables: "
            "missing required argument 'key'",
            id="missing-required-argument-in-a-dynamic-block",
        ),
        pytest.param(
            "functions.tf",
            '  labels = { app = "nano-banana", role = each.key }',
            '  labels {\n    app = "nano-banana"\n  }',
            "functions.tf: google_cloudfunctions2_function.fn: 'labels' is an argument, written as a block "
            "(labels { ... })",
            id="argument-written-as-a-block",
        ),
        pytest.param(
            "main.tf",
            "  condition {\n",
            "  condition = {\n",
            "main.tf: google_project_iam_member.builder_storage: 'condition' is a block, written as an argument "
            "(condition = ...)",
            id="block-written-as-an-argument",
        ),
        pytest.param(
            "functions.tf",
            'resource "google_cloud_run_service_iam_member" "scheduler_invoker"',
            'resource "google_cloud_run_services_iam_member" "scheduler_invoker"',
            "functions.tf: google_cloud_run_services_iam_member.scheduler_invoker: unknown resource type "
            "'google_cloud_run_services_iam_member' (did you mean 'google_cloud_run_service_iam_member'?)",
            id="unknown-resource-type",
        ),
    ],
)
def test_a_broken_copy_of_the_module_is_reported_exactly(
    tmp_path: Path, file: str, old: str, new: str, problem: str | list[str]
) -> None:
    assert check_files(modified(tmp_path, file, old, new)) == ([problem] if isinstance(problem, str) else problem)


# ------------------------------------------------------------------------------------------ roles

# Every predefined role this repository names (Terraform grants, the guides' gcloud commands), with what it
# is for. A role name not listed here fails the test below: a typo such as roles/cloudtask.enqueuer would
# otherwise only show up as a 400 at apply time.
PREDEFINED_ROLES = {
    # granted by terraform/ (tests/infra/test_terraform.py checks who gets which, on what)
    "roles/aiplatform.user": "runtime: call Vertex AI (aiplatform.endpoints.predict)",
    "roles/datastore.user": "runtime: read/write the limits documents in Firestore",
    "roles/cloudtasks.enqueuer": "runtime, on the queue: cloudtasks.tasks.create",
    "roles/cloudtasks.taskDeleter": "runtime, on the queue: cloudtasks.tasks.delete (a job's expire task)",
    "roles/iam.serviceAccountUser": "runtime on the tasks account (OIDC on tasks); the deployer (actAs)",
    "roles/secretmanager.secretAccessor": "runtime, on each secret it mounts",
    "roles/run.invoker": "tasks/scheduler/allUsers on the functions' Cloud Run services",
    "roles/logging.logWriter": "builder and deployer: write their build logs",
    "roles/artifactregistry.writer": "builder: push the functions' images",
    "roles/storage.objectAdmin": "builder: source and gcf-* build buckets only (conditioned)",
    # the Cloud Build deployer (docs/deploy.md section 6; DEPLOYER_ROLES below says which resource needs it)
    "roles/cloudfunctions.admin": "deployer: cloudfunctions.functions.*",
    "roles/run.admin": "deployer: run.services.setIamPolicy for the *_iam_member grants on the services",
    "roles/iam.serviceAccountAdmin": "deployer: create service accounts and set IAM on them",
    "roles/resourcemanager.projectIamAdmin": "deployer: the project-level *_iam_member grants",
    "roles/cloudtasks.admin": "deployer: the queue and its IAM",
    "roles/cloudscheduler.admin": "deployer: the sweep job",
    "roles/secretmanager.admin": "deployer: the secrets' metadata and IAM",
    "roles/storage.admin": "deployer: the source bucket and object, the Terraform state",
    "roles/datastore.owner": "deployer: create the Firestore database",
    "roles/serviceusage.serviceUsageAdmin": "deployer: enable the APIs",
    "roles/logging.configWriter": "deployer: the log-based metrics (logging.logMetrics.*)",
    "roles/monitoring.editor": "deployer: alert policies, dashboard, uptime check, channels, service, SLO",
    # the operator running the erasure recipe (docs/deploy.md, "Erasing a user's data")
    "roles/cloudfunctions.viewer": "operator: gcloud functions describe (the deployed settings)",
}

# The Cloud Build deployer's roles, derived from what each resource type of terraform/ needs to be
# created, changed and destroyed (least privilege among predefined roles; actAs for resources that run as,
# or mint tokens for, one of the module's service accounts).
DEPLOYER_ROLES = {
    "google_project_service": {"roles/serviceusage.serviceUsageAdmin"},
    "google_service_account": {"roles/iam.serviceAccountAdmin"},
    "google_service_account_iam_member": {"roles/iam.serviceAccountAdmin"},
    "google_project_iam_member": {"roles/resourcemanager.projectIamAdmin"},
    "google_cloud_tasks_queue": {"roles/cloudtasks.admin"},
    "google_cloud_tasks_queue_iam_member": {"roles/cloudtasks.admin"},
    "google_cloud_scheduler_job": {"roles/cloudscheduler.admin", "roles/iam.serviceAccountUser"},
    "google_cloudfunctions2_function": {"roles/cloudfunctions.admin", "roles/iam.serviceAccountUser"},
    "google_cloud_run_service_iam_member": {"roles/run.admin"},
    "google_firestore_database": {"roles/datastore.owner"},
    "google_secret_manager_secret": {"roles/secretmanager.admin"},
    "google_secret_manager_secret_iam_member": {"roles/secretmanager.admin"},
    "google_storage_bucket": {"roles/storage.admin"},
    "google_storage_bucket_object": {"roles/storage.admin"},
    "google_logging_metric": {"roles/logging.configWriter"},
    "google_monitoring_alert_policy": {"roles/monitoring.editor"},
    "google_monitoring_custom_service": {"roles/monitoring.editor"},
    "google_monitoring_dashboard": {"roles/monitoring.editor"},
    "google_monitoring_notification_channel": {"roles/monitoring.editor"},
    "google_monitoring_slo": {"roles/monitoring.editor"},
    "google_monitoring_uptime_check_config": {"roles/monitoring.editor"},
}
# Not for a resource: Cloud Build running as a user-managed account must be able to write its own logs.
DEPLOYER_EXTRA = {"roles/logging.logWriter"}


def role_names(text: str) -> set[str]:
    return set(re.findall(r"roles/[A-Za-z0-9_.]+[A-Za-z0-9]", text))


def deploy_guide_deployer_roles() -> tuple[set[str], dict[str, set[str]]]:
    """The roles of docs/deploy.md's `for role in ...; do` loop, and its table: role -> resource types."""
    guide = (ROOT / "docs" / "deploy.md").read_text()
    loop = re.search(r"for role in (.+?); do", guide, re.S)
    assert loop, "docs/deploy.md grants the deployer its roles in a `for role in ...; do` loop"
    table: dict[str, set[str]] = {}
    for row in re.findall(r"^\| `(roles/[^`]+)` \| (.+) \|$", guide, re.M):
        table[row[0]] = set(re.findall(r"`(google_\w+)`", row[1]))
    return role_names(loop.group(1)), table


def test_every_role_named_is_a_listed_predefined_role() -> None:
    sources = [*TF.glob("*.tf"), ROOT / "docs" / "deploy.md", ROOT / "docs" / "operations.md", ROOT / "cloudbuild.yaml"]
    named = {role: path.name for path in sources for role in role_names(path.read_text())}
    unknown = {role: file for role, file in named.items() if role not in PREDEFINED_ROLES}
    assert unknown == {}, "not a role this repository knows (a typo?): add it to PREDEFINED_ROLES with its reason"
    assert set(PREDEFINED_ROLES) == set(named), "a listed role nothing names any more"
    assert all(re.fullmatch(r"roles/[a-z][A-Za-z0-9]*\.[a-z][A-Za-z]*", r) for r in PREDEFINED_ROLES)


def test_the_deployer_roles_cover_every_resource_type() -> None:
    types = {rtype for rtype, _ in google_blocks()}
    assert set(DEPLOYER_ROLES) == types, "decide which deployer role creates each new resource type"
    loop, table = deploy_guide_deployer_roles()
    needed = set().union(*DEPLOYER_ROLES.values()) | DEPLOYER_EXTRA
    assert loop == needed, f"missing: {sorted(needed - loop)}, not needed: {sorted(loop - needed)}"
    assert set(table) == loop, "the guide's table explains each role of the loop"
    for rtype, roles in DEPLOYER_ROLES.items():
        for role in roles:
            assert rtype in table[role], f"docs/deploy.md: the row of {role} names {rtype}"
    assert "roles/owner" not in loop
    assert "roles/editor" not in loop


def test_the_checker_runs_from_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        provider_schema.main([str(p) for p in sorted(TF.glob("*.tf"))])
    assert exit_.value.code == 0
    assert f"no problem against hashicorp/google {pinned_provider()}" in capsys.readouterr().out
