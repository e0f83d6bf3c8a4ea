"""terraform/monitoring.tf against the code and against a real run: every log-based metric's filter names
only events and fields the service logs, and selects exactly the lines it should among those a real run
wrote; every alert and dashboard chart reads a metric that exists, with labels it has; thresholds come
from variables; the runbook covers every alert. (terraform fmt and checkov: tests/infra/test_terraform.py.)
"""

from __future__ import annotations

import ast
import json
import operator
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from nano_banana.embedded_pg import EmbeddedPostgres
from nano_banana.events import COMMON_FIELDS, FIELDS, TERMINAL_EVENTS, Event
from tests.infra.test_terraform import ROOT, TF, default, example_tfvars, tf
from tests.support import captured_logs
from tests.support import logging_query as lq

pytestmark = pytest.mark.infra

PREFIX = "nano-banana"
LOG_METRIC = "logging.googleapis.com/user/"
# Metrics other services publish that alerts and charts may read.
EXTERNAL_METRICS: dict[str, set[str]] = {
    "cloudtasks.googleapis.com/queue/depth": set(),
    "cloudtasks.googleapis.com/queue/task_attempt_delays": set(),
    "monitoring.googleapis.com/uptime_check/check_passed": {"check_id", "checker_location"},
    "run.googleapis.com/container/instance_count": {"state"},
}
# Placeholders for attributes only the provider knows.
COMPUTED = {
    "google_cloud_tasks_queue.jobs.name": PREFIX,
    "google_monitoring_uptime_check_config.healthz.uptime_check_id": "uptime-check-id",
    "google_monitoring_slo.jobs_in_time.name": "projects/p/services/nano-banana-jobs/serviceLevelObjectives/jobs-done-in-time",
}


# ------------------------------------------------------------------------------------------ rendering


_ARITH: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}


def _value(expression: str) -> Any:
    """One interpolated expression of the module: var.x (its default), local.x, local.metric_type.x,
    a provider-computed attribute, or arithmetic over variables."""
    expression = expression.strip()
    if expression in COMPUTED:
        return COMPUTED[expression]
    if match := re.fullmatch(r"local\.metric_type\.(\w+)", expression):
        assert match.group(1) in metrics(), f"local.metric_type.{match.group(1)} is no metric of the module"
        return f"{LOG_METRIC}{PREFIX}/{match.group(1)}"
    if match := re.fullmatch(r"local\.(\w+)", expression):
        return render(tf()["locals"][match.group(1)])
    source = re.sub(r"var\.(\w+)", lambda m: repr(default(m.group(1))), expression)

    def walk(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _ARITH:
            return _ARITH[type(node.op)](walk(node.left), walk(node.right))
        raise AssertionError(f"cannot render ${{{expression}}}")

    return walk(ast.parse(source, mode="eval"))


def render(text: str) -> str:
    """A module string as Terraform makes it: interpolations resolved (innermost first), escapes undone."""
    while (match := re.search(r"\$\{([^${}]*)\}", text)) is not None:
        value = _value(match.group(1))
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        text = text[: match.start()] + str(value) + text[match.end() :]
    return text.replace('\\"', '"').replace("\\\\", "\\")


def monitoring_resources(rtype: str) -> dict[str, Any]:
    return dict(tf()["resource"].get(rtype, {}))


def metrics() -> dict[str, dict[str, Any]]:
    """Every log-based metric: name -> {filter, labels (name -> extractor), value (extractor or None)}."""
    out: dict[str, dict[str, Any]] = {}
    for name, spec in tf()["locals"]["log_counters"].items():
        out[name] = {"filter": spec["filter"], "labels": dict(spec["labels"]), "value": None}
    for name, spec in tf()["locals"]["usage_distributions"].items():
        out[name] = {"filter": spec["filter"], "labels": dict(spec["labels"]), "value": spec["value"]}
    duration = monitoring_resources("google_logging_metric")["job_duration"]
    out["job_duration"] = {
        "filter": duration["filter"],
        "labels": dict(tf()["locals"]["duration_labels"]),
        "value": duration["value_extractor"],
    }
    return out


def metric_filter(name: str) -> lq.Filter:
    return lq.parse(render(metrics()[name]["filter"]))


def label_extractors(name: str) -> dict[str, lq.Extractor]:
    return {k: lq.extractor(render(v)) for k, v in metrics()[name]["labels"].items()}


# ------------------------------------------------------------------------------------------ captured run


@pytest.fixture(scope="module")
def captured(tmp_path_factory: pytest.TempPathFactory, embedded_pg: EmbeddedPostgres) -> list[dict[str, Any]]:
    lines = captured_logs.dev_server_lines(tmp_path_factory.mktemp("monitoring-dev"))
    lines += captured_logs.in_process_lines(embedded_pg.uri)
    return [line for line in lines if "event" in line]


def entries(lines: list[dict[str, Any]]) -> list[tuple[dict[str, Any], lq.Entry]]:
    return [(line, lq.entry(line, f"{PREFIX}-api")) for line in lines]


TERMINAL = {e.value for e in TERMINAL_EVENTS}

# What each metric should count, said in Python, independently of its filter.
EXPECTED: dict[str, Callable[[dict[str, Any]], bool]] = {
    "jobs_finished": lambda line: line["event"] in TERMINAL,
    "jobs_good": lambda line: (
        line["event"] in TERMINAL
        and (line["status"] == "succeeded" or line["errorCode"] == "content_blocked")
        and line["durationMs"] <= default("slo_seconds") * 1000
    ),
    "api_responses": lambda line: line["event"] == "request",
    "api_rate_limited": lambda line: line["event"] == "request" and line["status"] == 429,
    "callback_invalid_signature": lambda line: (
        line["event"] == "callback_rejected" and line["code"] == "invalid_signature"
    ),
    "jobs_unscheduled": lambda line: line["event"] == "job_rejected" and line.get("reason") == "enqueue_failed",
    "slot_release_failed": lambda line: line["event"] == "release_failed",
    "sweep_expired_jobs": lambda line: line["event"] == "job_expired" and line["by"] == "sweep",
    "listener_reconnects": lambda line: line["event"] == "listener_reconnected",
    "vertex_retries": lambda line: line["event"] == "vertex_retry",
    "webhook_failures": lambda line: line["event"] in {"webhook_attempt_failed", "webhook_abandoned"},
    "job_duration": lambda line: line["event"] in TERMINAL,
    "images": lambda line: line["event"] in TERMINAL,
    "tokens": lambda line: line["event"] in TERMINAL and line.get("totalTokens") is not None,
    "budget_thresholds": lambda line: line["event"] == "budget_threshold",
}


def test_every_metric_is_specified_here() -> None:
    assert set(metrics()) == set(EXPECTED)


def test_the_run_wrote_every_line_the_metrics_are_about(captured: list[dict[str, Any]]) -> None:
    """The captured run is not vacuous: each signal happened, including the two that needed code changes
    (an enqueue failure is a rejection saying so; a job the sweep expires says so)."""
    events = {line["event"] for line in captured}
    assert {"request", "callback_rejected", "release_failed", "listener_reconnected", "vertex_retry"} <= events
    assert {"webhook_attempt_failed", "webhook_delivered"} <= events
    assert events >= TERMINAL
    codes = {(line["status"], line.get("code")) for line in captured if line["event"] == "request"}
    assert {(429, "rate_limited"), (429, "concurrency_limited"), (404, "not_found"), (503, "unavailable")} <= codes
    assert any(line["status"] == 202 for line in captured if line["event"] == "request")
    failed = {line["errorCode"] for line in captured if line["event"] == "job_failed"}
    assert {"content_blocked", "generation_failed"} <= failed
    rejected = [line for line in captured if line["event"] == "job_rejected"]
    assert {(r["code"], r["status"], r.get("reason")) for r in rejected} >= {("unavailable", 503, "enqueue_failed")}
    assert not [r for r in rejected if "jobId" in r], "a rejection names no job: none exists"
    assert {line["by"] for line in captured if line["event"] == "job_expired"} == {"sweep", "expire_task"}
    assert any(line["event"] == "sweep" and line["expired"] >= 1 for line in captured)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_metric_filter_matches_exactly_the_lines_it_should(name: str, captured: list[dict[str, Any]]) -> None:
    check = metric_filter(name)
    matched = [line for line, item in entries(captured) if check(item)]
    expected = [line for line in captured if EXPECTED[name](line)]
    assert matched, f"{name}: no line of the run matches {check.text}"
    assert matched == expected, (
        f"{name}: the filter and the expectation disagree on {[ln for ln in matched + expected if (ln in matched) != (ln in expected)]}"
    )
    # ... and only for our own functions' logs.
    line = matched[0]
    assert not check(lq.entry(line, "some-other-service"))
    assert not check({**lq.entry(line, f"{PREFIX}-api"), "resource": {"type": "gae_app", "labels": {}}})


def test_metric_filters_name_only_registered_events_and_logged_fields() -> None:
    registered = {e.value for e in Event}
    for name in metrics():
        check = metric_filter(name)
        assert check.text.startswith(render("${local.log_base} AND ")), f"{name}: not scoped to our functions"
        events = {c.value for c in check.comparisons if c.field == "jsonPayload.event"}
        assert events, f"{name}: a metric names the events it counts"
        assert events <= registered, f"{name}: {events - registered} are not in events.py"
        allowed = set(COMMON_FIELDS).union(*(FIELDS[Event(e)] for e in events))
        named = {f.removeprefix("jsonPayload.") for f in check.fields if f.startswith("jsonPayload.")}
        named |= {
            lq.extractor(render(x)).field.removeprefix("jsonPayload.") for x in metrics()[name]["labels"].values()
        }
        if metrics()[name]["value"]:
            named.add(lq.extractor(render(metrics()[name]["value"])).field.removeprefix("jsonPayload."))
        assert named <= allowed, f"{name}: {named - allowed} are not fields of {events} (events.FIELDS)"
        others = {f for f in check.fields if not f.startswith("jsonPayload.")}
        assert others <= {"resource.type", "resource.labels.service_name"}, others


def test_the_registry_lists_the_fields_the_lines_really_carry(captured: list[dict[str, Any]]) -> None:
    for line in captured:
        event = Event(line["event"])
        if event in FIELDS:
            extra = set(line) - COMMON_FIELDS - FIELDS[event]
            assert not extra, f"{event} lines carry {extra}, not listed in events.FIELDS"
    # Every field a metric reads appears in the run.
    for name in metrics():
        for extractor in label_extractors(name).values():
            field = extractor.field.removeprefix("jsonPayload.")
            assert any(field in line for line in captured if metric_filter(name)(lq.entry(line, f"{PREFIX}-api"))), (
                f"{name}: no matched line carries {field}"
            )


def test_the_service_name_pattern_is_exactly_the_functions() -> None:
    names = set(tf()["locals"]["functions"])
    check = lq.parse(render("${local.log_base}"))
    item = lq.entry({"event": "request"}, "")
    for function in names:
        item["resource"]["labels"]["service_name"] = f"{PREFIX}-{function}"
        assert check(item), function
    for other in (f"{PREFIX}-apix", f"x{PREFIX}-api", f"{PREFIX}-", "api"):
        item["resource"]["labels"]["service_name"] = other
        assert not check(item), other


def _labels_of(captured: list[dict[str, Any]], name: str) -> list[dict[str, str]]:
    check, extractors = metric_filter(name), label_extractors(name)
    return [{k: x(item) for k, x in extractors.items()} for _, item in entries(captured) if check(item)]


def test_labels_extracted_from_the_run(captured: list[dict[str, Any]]) -> None:
    finished = _labels_of(captured, "jobs_finished")
    assert {"event": "job_failed", "status": "failed", "error_code": "content_blocked"} in finished
    assert "enqueue_failed" not in {f["error_code"] for f in finished}, "rolled back, never a failed job"
    assert len(_labels_of(captured, "jobs_unscheduled")) == 1
    assert {"event": "job_expired", "status": "failed", "error_code": "timeout"} in finished
    assert {"event": "job_succeeded", "status": "succeeded", "error_code": ""} in finished
    assert {"event": "job_canceled", "status": "canceled", "error_code": ""} in finished
    answers = _labels_of(captured, "api_responses")
    assert {"status_class": "2", "code": ""} in answers
    assert {"status_class": "4", "code": "rate_limited"} in answers
    assert {"status_class": "5", "code": "unavailable"} in answers
    assert {a["code"] for a in _labels_of(captured, "api_rate_limited")} == {"rate_limited", "concurrency_limited"}
    causes = {c["cause"] for c in _labels_of(captured, "vertex_retries")}
    assert "429" in causes
    value = lq.extractor(render(metrics()["job_duration"]["value"]))
    durations = [float(value(item)) for line, item in entries(captured) if line["event"] in TERMINAL]
    assert durations
    assert all(d >= 0 for d in durations)


def test_the_evaluator_refuses_what_it_does_not_know() -> None:
    for query in ('jsonPayload.a!="x"', 'jsonPayload.a="x" jsonPayload.b="y"', 'jsonPayload.a>"x"', "SEARCH(x)"):
        with pytest.raises(SyntaxError):
            lq.parse(query)
    item = lq.entry({"event": "x", "n": 5, "gone": None}, "s")
    assert lq.parse("jsonPayload.n>=5 AND NOT jsonPayload.n>5")(item)
    assert not lq.parse('jsonPayload.gone="None"')(item)
    assert not lq.parse("jsonPayload.missing<1")(item)
    assert lq.parse('jsonPayload.event="y" OR jsonPayload.event="x" AND jsonPayload.n=5')(item)
    assert lq.extractor("EXTRACT(jsonPayload.gone)")(item) == ""


# ------------------------------------------------------------------------------------------ alerts


def monitoring_filter_parts(text: str) -> tuple[str, dict[str, list[str]]]:
    """(metric type, label -> values compared) of a Monitoring filter, read with regexes."""
    (metric_type,) = re.findall(r'metric\.type="([^"]+)"', text)
    labels: dict[str, list[str]] = {}
    for label, rest in re.findall(r"metric\.labels?\.(\w+)\s*!?=\s*(one_of\([^)]*\)|\"[^\"]*\")", text):
        labels.setdefault(label, []).extend(re.findall(r'"([^"]*)"', rest))
    return metric_type, labels


def metric_labels(metric_type: str) -> set[str]:
    if metric_type in EXTERNAL_METRICS:
        return EXTERNAL_METRICS[metric_type]
    assert metric_type.startswith(f"{LOG_METRIC}{PREFIX}/"), f"{metric_type} is no metric the module creates"
    name = metric_type.removeprefix(f"{LOG_METRIC}{PREFIX}/")
    assert name in metrics(), f"{metric_type}: no such log-based metric"
    return set(metrics()[name]["labels"])


def conditions() -> list[tuple[str, dict[str, Any]]]:
    return [
        (policy, condition["condition_threshold"][0])
        for policy, spec in monitoring_resources("google_monitoring_alert_policy").items()
        for condition in spec["conditions"]
    ]


def test_every_alert_reads_an_existing_metric_with_its_labels(captured: list[dict[str, Any]]) -> None:
    slo = monitoring_resources("google_monitoring_slo")
    for policy, condition in conditions():
        for key in ("filter", "denominator_filter"):
            if key not in condition:
                continue
            text = render(condition[key])
            if text.startswith("select_slo_burn_rate("):
                assert re.fullmatch(r'select_slo_burn_rate\("[^"]+/serviceLevelObjectives/([\w-]+)", "\d+s"\)', text)
                assert any(s["slo_id"] == text.split("/")[-1].split('"')[0] for s in slo.values()), policy
                continue
            metric_type, labels = monitoring_filter_parts(text)
            known = metric_labels(metric_type)
            assert set(labels) <= known, f"{policy}: {set(labels) - known} are not labels of {metric_type}"
            if metric_type.startswith(LOG_METRIC):
                # Each label value an alert compares with is one the metric really produces.
                produced = _labels_of(captured, metric_type.removeprefix(f"{LOG_METRIC}{PREFIX}/"))
                for label, values in labels.items():
                    for value in values:
                        assert any(p[label] == value for p in produced), f"{policy}: {label}={value} never seen"


def test_every_threshold_comes_from_a_variable() -> None:
    for policy, condition in conditions():
        threshold = condition["threshold_value"]
        assert isinstance(threshold, str), f"{policy}: {threshold} is a literal"
        assert re.search(r"\bvar\.\w+", threshold), f"{policy}: {threshold} reads no variable"
        for name in re.findall(r"var\.(\w+)", threshold):
            assert "default" in tf()["variable"][name], name
        assert condition["comparison"] in ("COMPARISON_GT", "COMPARISON_LT"), "only GT and LT are supported"
        duration = render(condition["duration"])
        assert re.fullmatch(r"\d+s", duration)
        assert int(duration[:-1]) % 60 == 0, f"{policy}: durations are whole minutes"


def test_defaults_are_the_issues() -> None:
    assert default("alert_failed_ratio") == 0.1
    assert default("alert_window_s") == 900
    assert default("alert_api_5xx_ratio") == 0.01
    assert default("alert_api_window_s") == 300
    assert default("alert_timeouts_threshold") == 0
    assert default("alert_sweep_expired_threshold") == 0
    assert default("alert_uptime_failing_regions") == 2
    assert default("alert_queue_delay_s") < default("timeout_s")
    assert (default("slo_goal"), default("slo_seconds")) == (0.99, 120)


def test_alerts_notify_the_configured_channels_and_link_the_runbook() -> None:
    runbook = (ROOT / "docs" / "operations.md").read_text()
    anchors = {_anchor(h) for h in re.findall(r"^#+ (.+)$", runbook, flags=re.MULTILINE)}
    channel = monitoring_resources("google_monitoring_notification_channel")["email"]
    assert channel["for_each"] == "${toset(var.alert_emails)}"
    assert channel["type"] == "email"
    assert channel["labels"] == {"email_address": "${each.value}"}
    assert (
        tf()["locals"]["notification_channels"] == "${[for c in google_monitoring_notification_channel.email : c.name]}"
    )
    for policy, spec in monitoring_resources("google_monitoring_alert_policy").items():
        assert spec["notification_channels"] == "${local.notification_channels}", policy
        content = spec["documentation"][0]["content"]
        (anchor,) = re.findall(r"docs/operations\.md#([\w-]+)", content)
        assert anchor in anchors, f"{policy}: docs/operations.md has no section #{anchor}"
        assert spec["display_name"].startswith("${var.name_prefix}: ")


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_uptime_check_probes_healthz_from_enough_regions() -> None:
    check = monitoring_resources("google_monitoring_uptime_check_config")["healthz"]
    assert check["selected_regions"] == "${var.uptime_regions}"
    assert len(default("uptime_regions")) >= 3, "Cloud Monitoring needs at least 3 checker locations"
    http = check["http_check"][0]
    host = check["monitored_resource"][0]["labels"]["host"]
    # What outputs.tf calls healthz_url (the smoke test's URL): the api function's URL + /healthz.
    assert tf()["output"]["healthz_url"]["value"] == '${local.function_url["api"]}/healthz'
    function_url = tf()["locals"]["function_url"]
    assert "https://${var.region}-${var.project_id}.cloudfunctions.net/${var.name_prefix}-${name}" in function_url
    assert host == "${var.region}-${var.project_id}.cloudfunctions.net"
    assert http["path"] == "/${var.name_prefix}-api/healthz"
    assert http["port"] == 443
    assert http["use_ssl"] is True
    policy = monitoring_resources("google_monitoring_alert_policy")["healthz"]["conditions"][0]["condition_threshold"][
        0
    ]
    assert policy["aggregations"][0]["cross_series_reducer"] == "REDUCE_COUNT_FALSE"
    assert policy["threshold_value"] == "${var.alert_uptime_failing_regions - 1}"
    assert "uptime_check_id" in policy["filter"]


def test_queue_alert_reads_this_queue() -> None:
    policy = monitoring_resources("google_monitoring_alert_policy")["queue_backlog"]
    types = {monitoring_filter_parts(render(c["condition_threshold"][0]["filter"]))[0] for c in policy["conditions"]}
    assert types == {"cloudtasks.googleapis.com/queue/depth", "cloudtasks.googleapis.com/queue/task_attempt_delays"}
    assert 'resource.label.queue_id="nano-banana"' in render(tf()["locals"]["queue_filter"])


def test_slo_counts_good_and_total_jobs() -> None:
    (slo,) = monitoring_resources("google_monitoring_slo").values()
    assert slo["goal"] == "${var.slo_goal}"
    ratio = slo["request_based_sli"][0]["good_total_ratio"][0]
    good, _ = monitoring_filter_parts(render(ratio["good_service_filter"]))
    total, total_labels = monitoring_filter_parts(render(ratio["total_service_filter"]))
    assert good.endswith("/jobs_good")
    assert total.endswith("/jobs_finished")
    assert total_labels == {"status": ["canceled"]}
    assert "good_service_filter" in ratio
    assert "total_service_filter" in ratio


# ------------------------------------------------------------------------------------------ dashboard


def dashboard() -> dict[str, Any]:
    spec = monitoring_resources("google_monitoring_dashboard")["service"]
    assert 'templatefile("${path.module}/dashboard.json.tftpl"' in spec["dashboard_json"]
    raw = (TF / "dashboard.json.tftpl").read_text()
    variables = {
        "title": f"{PREFIX} jobs",
        "queue": PREFIX,
        "prefix": PREFIX,
        "promql": "logging_googleapis_com:user_" + PREFIX.replace("-", "_"),
    }

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name.startswith("metrics."):
            return _value(f"local.metric_type.{name.removeprefix('metrics.')}")
        assert name in variables, f"the template reads {name}, which monitoring.tf does not pass"
        return variables[name]

    text = re.sub(r"(?<!\$)\$\{([\w.]+)\}", substitute, raw).replace("$${", "${")
    result: dict[str, Any] = json.loads(text)
    return result


def _filters(node: Any) -> list[tuple[str, list[str]]]:
    found: list[tuple[str, list[str]]] = []
    if isinstance(node, dict):
        query = node.get("timeSeriesFilter")
        if isinstance(query, dict):
            found.append((query["filter"], query.get("aggregation", {}).get("groupByFields", [])))
        for value in node.values():
            found += _filters(value)
    elif isinstance(node, list):
        for value in node:
            found += _filters(value)
    return found


def test_dashboard_parses_and_charts_existing_metrics() -> None:
    board = dashboard()
    tiles = board["mosaicLayout"]["tiles"]
    titles = " ".join(t["widget"]["title"] for t in tiles).lower()
    for wanted in (
        "jobs per minute by outcome",
        "p50 and p95",
        "429",
        "queue depth",
        "instances per function",
        "vertex",
    ):
        assert wanted in titles, wanted
    charted = set()
    for text, group_by in _filters(board):
        metric_type, labels = monitoring_filter_parts(text)
        known = metric_labels(metric_type)
        used = set(labels) | {g.removeprefix("metric.label.") for g in group_by if g.startswith("metric.label.")}
        assert used <= known, f"{metric_type}: {used - known} are not its labels"
        charted.add(metric_type)
    ours = {f"{LOG_METRIC}{PREFIX}/{name}" for name in metrics()} - {f"{LOG_METRIC}{PREFIX}/jobs_good"}
    assert ours <= charted, f"metrics no chart shows: {ours - charted}"
    for tile in tiles:
        assert tile["xPos"] + tile["width"] <= board["mosaicLayout"]["columns"]


# ------------------------------------------------------------------------------------------ variables


def test_usage_charts_sum_the_usage_distributions(captured: list[dict[str, Any]]) -> None:
    """Images and tokens per day are sums of the distributions' values (PromQL `<metric>_sum`): each query
    names a distribution of the module, by a label it has; and the values those metrics extract from the
    run are the images and tokens the jobs reported."""
    board = dashboard()
    titles = " ".join(t["widget"]["title"] for t in board["mosaicLayout"]["tiles"]).lower()
    assert "images per day" in titles
    queries = re.findall(r'"prometheusQuery": "((?:[^"\\]|\\.)*)"', json.dumps(board))
    named = set()
    for query in queries:
        (metric,) = re.findall(r"logging_googleapis_com:user_nano_banana_(\w+)_sum\{", query.replace('\\"', '"'))
        assert metric in tf()["locals"]["usage_distributions"], metric
        (by,) = re.findall(r"sum by \((\w+)\)", query)
        assert by in metrics()[metric]["labels"]
        named.add(metric)
    assert named == {"images", "tokens"}
    images = lq.extractor(render(metrics()["images"]["value"]))
    succeeded = [item for line, item in entries(captured) if line["event"] == "job_succeeded"]
    assert sum(int(images(item)) for item in succeeded) == sum(
        line["images"] for line in captured if line["event"] == "job_succeeded"
    )
    assert {line["images"] for line in captured if line["event"] in {"job_failed", "job_canceled"}} == {0}
    tokens = [line["totalTokens"] for line in captured if EXPECTED["tokens"](line)]
    assert tokens, "the Vertex stand-in reports usageMetadata: some job carries tokens"
    assert all(t > 0 for t in tokens)


def test_tfvars_example_lists_every_variable() -> None:
    example = (TF / "terraform.tfvars.example").read_text()
    listed = set(re.findall(r"^(?:# )?(\w+)\s*=", example, flags=re.MULTILINE))
    assert set(tf()["variable"]) <= listed, f"not in terraform.tfvars.example: {set(tf()['variable']) - listed}"
    assert example_tfvars()  # and it still parses


def test_operations_runbook_is_linked_and_uses_logged_fields() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "(docs/operations.md)" in readme
    runbook = (ROOT / "docs" / "operations.md").read_text()
    registered = {e.value for e in Event}
    for event in re.findall(r'jsonPayload\.event="(\w+)"', runbook):
        assert event in registered, f"the runbook queries {event}, which the service does not log"
    logged = set(COMMON_FIELDS).union(*FIELDS.values())
    for field in re.findall(r"jsonPayload\.(\w+)", runbook):
        assert field in logged, f"the runbook queries jsonPayload.{field}, not a field in events.FIELDS"
    for query in re.findall(r"```logging\n(.*?)```", runbook, flags=re.DOTALL):
        lq.parse(" AND ".join(line.strip() for line in query.strip().splitlines()))


def test_module_files_exist() -> None:
    assert Path(TF / "monitoring.tf").is_file()
    assert Path(TF / "dashboard.json.tftpl").is_file()
