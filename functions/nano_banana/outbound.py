"""Where completion webhooks may go (docs/webhooks.md): the URL rules checked when a job asks for one, and
the address rules checked again at every delivery (adapters/webhook_sender.py), against server-side
request forgery: a URL may not make us call our own metadata server, a private network or ourselves.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from nano_banana.domain import DEFAULT_WEBHOOK_EVENTS, WEBHOOK_EVENTS, storable_text
from nano_banana.errors import WebhookUrlInvalid

MAX_URL_CHARS = 2048

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Not "global" in Python's table but worth naming: 100.64/10 is carrier-grade NAT (is_global is False for
# it too; listed so the reason says so).
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# A host made only of digits, dots and hex markers is an address in some spelling ("2130706433", "0x7f.1",
# "127.1"): resolvers read it as one, so it is judged as one (refused unless it is a plain dotted quad).
_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")


@dataclass(frozen=True, slots=True)
class WebhookPolicy:
    """NANO_BANANA_WEBHOOK_HTTP_HOSTS (may use http, any port and private addresses: a local receiver),
    NANO_BANANA_WEBHOOK_ALLOWED_HOSTS (when set, the only other hosts: exact names or `*.suffix`),
    NANO_BANANA_WEBHOOK_PORTS (allowed besides 443 and 80)."""

    http_hosts: frozenset[str] = frozenset()
    allowed_hosts: tuple[str, ...] = ()
    ports: frozenset[int] = frozenset()

    def trusted(self, host: str) -> bool:
        return host in self.http_hosts


@dataclass(frozen=True, slots=True)
class Target:
    """A webhook URL taken apart: what the sender connects to and asks for."""

    url: str
    scheme: str
    host: str  # lower case, no brackets, no trailing dot
    port: int
    path: str  # path and query, at least "/"


def _refuse(reason: str, message: str) -> WebhookUrlInvalid:
    return WebhookUrlInvalid(message, details={"field": "webhookUrl", "reason": reason})


def address_refused(address: IpAddress) -> str | None:
    """Why a webhook may not be sent to this address (None: a public address). IPv6 spellings of IPv4
    addresses (mapped, 6to4, Teredo, NAT64) are judged by the IPv4 address inside."""
    if isinstance(address, ipaddress.IPv6Address):
        inner = address.ipv4_mapped or address.sixtofour or (address.teredo[1] if address.teredo else None)
        if inner is None and address in _NAT64:
            inner = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if inner is not None and (reason := address_refused(inner)) is not None:
            return reason
    checks = (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link_local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("cgnat", isinstance(address, ipaddress.IPv4Address) and address in _CGNAT),
        ("private", address.is_private),
        ("not_global", not address.is_global),
    )
    return next((name for name, hit in checks if hit), None)


def _host_allowed(host: str, allowed: Sequence[str]) -> bool:
    return any(host == a or (a.startswith("*.") and host.endswith(a[1:])) for a in allowed)


def check_url(url: str, policy: WebhookPolicy) -> Target:
    """The URL's target if the policy allows it; WebhookUrlInvalid (422 `webhook_url_invalid`, with a
    `reason`) otherwise. Names are not resolved here (the sender resolves and checks at delivery)."""
    if len(url) > MAX_URL_CHARS:
        raise _refuse("too_long", f"webhookUrl is longer than {MAX_URL_CHARS} characters")
    if not storable_text(url) or any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise _refuse("malformed", "webhookUrl may not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise _refuse("malformed", "webhookUrl is not a valid URL") from exc
    try:  # internationalized names as DNS and the Host header see them (xn--…)
        host = (parts.hostname or "").rstrip(".").encode("idna").decode("ascii").lower()
    except UnicodeError as exc:
        raise _refuse("malformed", "webhookUrl's host is not a valid name") from exc
    if not host:
        raise _refuse("malformed", "webhookUrl needs a host")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise _refuse("credentials", "webhookUrl may not contain credentials (user:password@)")
    trusted = policy.trusted(host)
    if parts.scheme != "https" and not (parts.scheme == "http" and trusted):
        raise _refuse("scheme", "webhookUrl must be https (http only for the hosts the deployment allows)")
    default_port = 443 if parts.scheme == "https" else 80
    if port is not None and port not in {443, 80, *policy.ports} and not trusted:
        raise _refuse("port", "webhookUrl may use port 443 or 80, or a port the deployment allows")
    if not trusted:
        _check_host(host, policy)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(url=url, scheme=parts.scheme, host=host, port=port or default_port, path=path)


def _check_host(host: str, policy: WebhookPolicy) -> None:
    try:
        literal: IpAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
        if all(_NUMERIC_LABEL.match(label) for label in host.split(".")):
            raise _refuse("address", "webhookUrl's host is an address in an unusual spelling") from None
    if literal is not None and (reason := address_refused(literal)) is not None:
        raise _refuse("address", f"webhookUrl points at a {reason.replace('_', '-')} address")
    if policy.allowed_hosts and not _host_allowed(host, policy.allowed_hosts):
        raise _refuse("host_not_allowed", "webhookUrl's host is not in the deployment's allowed hosts")


def check_events(events: Sequence[str] | None) -> tuple[str, ...]:
    """The events a webhook announces: a non-empty subset of WEBHOOK_EVENTS (default: the terminal ones),
    in the canonical order (so the request fingerprint does not depend on the order asked)."""
    if events is None:
        return DEFAULT_WEBHOOK_EVENTS
    unknown = sorted(set(events) - set(WEBHOOK_EVENTS))
    if unknown or not events:
        raise WebhookUrlInvalid(
            f"webhookEvents must be a non-empty list of {', '.join(WEBHOOK_EVENTS)}",
            details={"field": "webhookEvents", "reason": "events", "allowed": list(WEBHOOK_EVENTS)},
        )
    return tuple(e for e in WEBHOOK_EVENTS if e in events)
