"""Where completion webhooks may go (nano_banana.outbound): the SSRF cases of issue 27 and their relatives
are refused at creation with a stable reason; a public https URL and a dev receiver pass."""

from __future__ import annotations

import ipaddress

import pytest

from nano_banana.errors import WebhookUrlInvalid
from nano_banana.outbound import WebhookPolicy, address_refused, check_events, check_url

DEV = WebhookPolicy(http_hosts=frozenset({"127.0.0.1", "localhost"}))
PRODUCTION = WebhookPolicy()


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://169.254.169.254/", "scheme"),
        ("https://169.254.169.254/computeMetadata/v1/", "address"),
        ("http://[::1]/", "scheme"),
        ("https://[::1]/", "address"),
        ("http://10.0.0.1/", "scheme"),
        ("https://10.0.0.1/", "address"),
        ("https://192.168.1.20/", "address"),
        ("https://100.64.0.1/", "address"),  # CGNAT
        ("https://224.0.0.251/", "address"),  # multicast
        ("https://0.0.0.0/", "address"),
        ("https://[::]/", "address"),
        ("https://[fe80::1]/", "address"),
        ("https://[fd00::1]/", "address"),
        ("https://[::ffff:169.254.169.254]/", "address"),  # IPv4-mapped
        ("https://[64:ff9b::a00:1]/", "address"),  # NAT64 of 10.0.0.1
        ("https://[2002:a00:1::]/", "address"),  # 6to4 of 10.0.0.1
        ("https://2130706433/", "address"),  # 127.0.0.1 as one number
        ("https://0x7f.1/", "address"),
        ("https://user:pass@hooks.example.com/", "credentials"),
        ("https://token@hooks.example.com/", "credentials"),
        ("ftp://hooks.example.com/", "scheme"),
        ("file:///etc/passwd", "malformed"),
        ("https://hooks.example.com:8443/", "port"),
        ("https://hooks.example.com:99999/", "malformed"),
        ("https://hooks.example.com/a b", "malformed"),
        ("https://hooks.example.com/" + "x" * 2048, "too_long"),
    ],
)
def test_refused_at_creation_with_a_stable_reason(url: str, reason: str) -> None:
    for policy in (DEV, PRODUCTION):
        with pytest.raises(WebhookUrlInvalid) as refused:
            check_url(url, policy)
        assert refused.value.status == 422
        assert refused.value.code == "webhook_url_invalid"
        assert refused.value.details == {"field": "webhookUrl", "reason": reason}


def test_http_and_any_port_only_for_the_listed_hosts() -> None:
    local = check_url("http://127.0.0.1:38123/hooks?x=1", DEV)
    assert (local.scheme, local.host, local.port, local.path) == ("http", "127.0.0.1", 38123, "/hooks?x=1")
    assert check_url("http://localhost/h", DEV).port == 80
    with pytest.raises(WebhookUrlInvalid):
        check_url("http://127.0.0.1:38123/hooks", PRODUCTION)
    with pytest.raises(WebhookUrlInvalid):
        check_url("http://hooks.example.com/", DEV)


def test_a_public_https_url_passes_and_the_allowlist_and_ports_apply() -> None:
    target = check_url("https://Hooks.Example.com./nano?sig=1", PRODUCTION)
    assert (target.host, target.port, target.path) == ("hooks.example.com", 443, "/nano?sig=1")
    allowing = WebhookPolicy(allowed_hosts=("api.builder.example", "*.hooks.example"), ports=frozenset({8443}))
    assert check_url("https://api.builder.example/", allowing).host == "api.builder.example"
    assert check_url("https://eu.hooks.example:8443/", allowing).port == 8443
    for url in ("https://hooks.example/", "https://evilhooks.example/", "https://other.example/"):
        with pytest.raises(WebhookUrlInvalid) as refused:
            check_url(url, allowing)
        assert refused.value.details["reason"] == "host_not_allowed"


def test_addresses_are_judged_by_what_they_reach() -> None:
    assert address_refused(ipaddress.ip_address("8.8.8.8")) is None
    assert address_refused(ipaddress.ip_address("2606:4700::1111")) is None
    assert address_refused(ipaddress.ip_address("127.0.0.1")) == "loopback"
    assert address_refused(ipaddress.ip_address("169.254.169.254")) == "link_local"
    assert address_refused(ipaddress.ip_address("100.64.3.4")) == "cgnat"
    assert address_refused(ipaddress.ip_address("::ffff:127.0.0.1")) == "loopback"
    assert address_refused(ipaddress.ip_address("ff02::1")) == "multicast"


def test_events_default_to_the_terminal_ones_in_a_canonical_order() -> None:
    assert check_events(None) == ("succeeded", "failed", "canceled")
    assert check_events(["failed", "running"]) == ("running", "failed")
    for bad in ([], ["done"], ["succeeded", "started"]):
        with pytest.raises(WebhookUrlInvalid) as refused:
            check_events(bad)
        assert refused.value.details["field"] == "webhookEvents"


def test_an_internationalized_name_is_checked_and_sent_as_dns_sees_it() -> None:
    assert check_url("https://Bücher.example/x", PRODUCTION).host == "xn--bcher-kva.example"
    allowing = WebhookPolicy(allowed_hosts=("xn--bcher-kva.example",))
    assert check_url("https://bücher.example/", allowing).host == "xn--bcher-kva.example"
    for url in ("https://a..example/", "https://" + "x" * 64 + ".example/"):
        with pytest.raises(WebhookUrlInvalid) as refused:
            check_url(url, PRODUCTION)
        assert refused.value.details["reason"] == "malformed"
