"""Fast structural checks of the shipped n8n workflow: the mistakes real n8n 1.123.0 punished (issue 14),
caught without starting n8n. The proof that the workflow works is tests/n8n, which runs it in n8n."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.callback, pytest.mark.unit]
WORKFLOW = Path(__file__).resolve().parents[2] / "infra" / "n8n" / "nano-banana-processor.json"
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def _workflow() -> dict[str, Any]:
    wf: dict[str, Any] = json.loads(WORKFLOW.read_text())
    return wf


def _expressions(value: Any) -> list[str]:
    """Every n8n expression parameter (a string starting with '=') outside Code nodes."""
    if isinstance(value, str):
        return [value[1:]] if value.startswith("=") else []
    if isinstance(value, dict):
        return [e for v in value.values() for e in _expressions(v)]
    if isinstance(value, list):
        return [e for v in value for e in _expressions(v)]
    return []


def _targets(wf: dict[str, Any], name: str, output: int | None = None) -> list[str]:
    branches = wf["connections"].get(name, {"main": []})["main"]
    chosen = branches if output is None else branches[output : output + 1]
    return [t["node"] for branch in chosen for t in branch]


def _reaches(wf: dict[str, Any], start: list[str], goal: str) -> bool:
    seen, frontier = set(), list(start)
    while frontier:
        name = frontier.pop()
        if name == goal:
            return True
        if name not in seen:
            seen.add(name)
            frontier += _targets(wf, name)
    return False


def test_import_needs_met() -> None:
    """`n8n import:workflow` needs versionId; webhook and wait nodes need a webhookId (else the production
    URL is registered under '{workflowId}/job%20webhook/...'); node ids are stable across imports."""
    wf = _workflow()
    assert UUID.match(wf["versionId"])
    assert re.fullmatch(r"[A-Za-z0-9]{16}", wf["id"])
    ids = [n["id"] for n in wf["nodes"]]
    assert len(set(ids)) == len(ids)
    assert all(UUID.match(i) for i in ids)
    names = [n["name"] for n in wf["nodes"]]
    assert len(set(names)) == len(names), "node names are unique"
    for node in wf["nodes"]:
        if node["type"] in ("n8n-nodes-base.webhook", "n8n-nodes-base.wait"):
            assert UUID.match(node.get("webhookId", "")), node["name"]
    (hook,) = [n for n in wf["nodes"] if n["type"] == "n8n-nodes-base.webhook"]
    assert hook["parameters"]["path"] == "pip-ai-nano-banana"
    assert hook["parameters"]["responseMode"] == "responseNode"
    assert hook["parameters"]["options"]["rawBody"] is True, "the signature covers the raw body"


def test_expressions_use_only_what_n8n_expressions_have() -> None:
    """In n8n expressions `$binary.<key>.data` and `Buffer` are unavailable (bytes are read in Code nodes
    with getBinaryDataBuffer), and a `}}` inside `{{ }}` ends the expression early."""
    wf = _workflow()
    for node in wf["nodes"]:
        if node["type"] == "n8n-nodes-base.code":
            continue
        for expression in _expressions(node["parameters"]):
            assert "Buffer" not in expression, node["name"]
            assert not re.search(r"\$binary\.\w+\.data", expression), node["name"]
            # n8n ends each {{ at the first }}: what lies between must be balanced JavaScript.
            for inner in re.findall(r"\{\{(.*?)\}\}", expression, flags=re.S):
                assert inner.count("{") == inner.count("}"), (node["name"], inner)
    code = {n["name"]: n["parameters"]["jsCode"] for n in wf["nodes"] if n["type"] == "n8n-nodes-base.code"}
    assert "getBinaryDataBuffer(0, 'data')" in code["Hand-off signing inputs"]
    assert "getBinaryDataBuffer(0, 'input')" in code["Vertex request"]


def test_retries_are_node_settings_and_every_path_calls_back() -> None:
    wf = _workflow()
    nodes = {n["name"]: n for n in wf["nodes"]}
    for node in wf["nodes"]:
        if node["type"] == "n8n-nodes-base.httpRequest":
            assert "retry" not in node["parameters"].get("options", {}), "not an option of the HTTP Request node"
    post = nodes["POST callback"]
    assert post["retryOnFail"] is True
    assert post["maxTries"] >= 2
    assert post["onError"] == "continueRegularOutput"
    headers = {p["name"] for p in post["parameters"]["headerParameters"]["parameters"]}
    assert {"webhook-id", "webhook-timestamp", "webhook-signature"} <= headers
    assert nodes["Upload outputs"]["parameters"]["method"] == "PUT"
    # Failure exits lead to the callback: the download's error output, every Vertex outcome, the uploads.
    assert _targets(wf, "Download input", 1) == ["Download failed"]
    for start in ("Download failed", "Vertex outcome", "Result callback"):
        assert _reaches(wf, [start], "POST callback"), start
    for vertex in ("Vertex generateContent (Google credential)", "Vertex generateContent (no auth)"):
        assert nodes[vertex]["onError"] == "continueRegularOutput", "a timeout still reaches Vertex outcome"
        assert _targets(wf, vertex) == ["Vertex outcome"]
    assert nodes["Vertex generateContent (Google credential)"]["parameters"]["nodeCredentialType"] == "googleApi"
    reachable = {n for n in nodes if _reaches(wf, ["Job webhook"], n)}
    assert reachable == set(nodes), "every node is wired in"


def test_keys_and_endpoint_come_from_the_environment() -> None:
    wf = _workflow()
    text = WORKFLOW.read_text()
    for name in (
        "N8N_NANO_BANANA_SECRET",
        "NANO_BANANA_VERTEX_LOCATION",
        "NANO_BANANA_VERTEX_BASE_URL",
        "NANO_BANANA_MODEL",
        "NANO_BANANA_VERTEX_AUTH",
        "GOOGLE_CLOUD_PROJECT",
    ):
        assert f"{name}" in text, name
    assert "locations/global" not in text, "the location is configurable"
    cryptos = [n for n in wf["nodes"] if n["type"] == "n8n-nodes-base.crypto"]
    assert len(cryptos) == 2
    for node in cryptos:
        p = node["parameters"]
        assert (p["action"], p["type"], p["encoding"]) == ("hmac", "SHA256", "base64")
        assert "[$json.keyIndex]" in p["secret"], "one HMAC per configured key (rotation), not just the first"


def test_the_callback_retries_outlast_a_delivery_in_flight() -> None:
    """Issue 24: n8n's duplicates of a delivery still in flight must still be sending when that delivery
    fails or its claim goes stale: the service holds each duplicate up to IN_FLIGHT_WAIT_S, and the node's
    retries after the first attempt span the claim TTL (its default), within the node's request timeout."""
    from nano_banana import callback
    from nano_banana.settings import Settings

    post = {n["name"]: n for n in _workflow()["nodes"]}["POST callback"]
    retries = post["maxTries"] - 1
    assert post["parameters"]["options"]["timeout"] / 1000 > callback.IN_FLIGHT_WAIT_S
    span = retries * (callback.IN_FLIGHT_WAIT_S + post["waitBetweenTries"] / 1000)
    assert span >= Settings().callback_claim_ttl_s
