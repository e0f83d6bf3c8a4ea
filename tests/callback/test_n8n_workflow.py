"""The importable n8n workflow is well formed and speaks our signature protocol."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = [pytest.mark.callback, pytest.mark.unit]
WORKFLOW = Path(__file__).resolve().parents[2] / "infra" / "n8n" / "nano-banana-processor.json"


def test_workflow_structure() -> None:
    wf = json.loads(WORKFLOW.read_text())
    nodes = {n["name"]: n for n in wf["nodes"]}
    assert len(nodes) == len(wf["nodes"]), "node names are unique"
    types = {n["type"] for n in wf["nodes"]}
    assert {
        "n8n-nodes-base.webhook",
        "n8n-nodes-base.crypto",
        "n8n-nodes-base.if",
        "n8n-nodes-base.httpRequest",
        "n8n-nodes-base.code",
        "n8n-nodes-base.respondToWebhook",
    } <= types
    for source, outputs in wf["connections"].items():
        assert source in nodes
        for branch in outputs["main"]:
            for target in branch:
                assert target["node"] in nodes
    reachable, frontier = set(), ["Job webhook"]
    while frontier:
        name = frontier.pop()
        reachable.add(name)
        for branch in wf["connections"].get(name, {"main": []})["main"]:
            frontier += [t["node"] for t in branch if t["node"] not in reachable]
    assert reachable == set(nodes), "every node is wired in"
    cryptos = [n for n in wf["nodes"] if n["type"] == "n8n-nodes-base.crypto"]
    assert len(cryptos) == 2
    assert all(
        c["parameters"]["action"] == "hmac"
        and c["parameters"]["type"] == "SHA256"
        and c["parameters"]["encoding"] == "base64"
        for c in cryptos
    )
    assert nodes["Job webhook"]["parameters"]["options"]["rawBody"] is True, "the signature covers the raw body"
    text = WORKFLOW.read_text()
    for header in ("webhook-id", "webhook-timestamp", "webhook-signature"):
        assert header in text
    assert "v1," in text
    assert ":generateContent" in text
    headers = {p["name"] for p in nodes["POST callback"]["parameters"]["headerParameters"]["parameters"]}
    assert {"webhook-id", "webhook-timestamp", "webhook-signature"} <= headers
    assert nodes["Upload outputs"]["parameters"]["method"] == "PUT"
