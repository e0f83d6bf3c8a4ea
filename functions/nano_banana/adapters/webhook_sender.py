"""POSTs a completion webhook to a builder's server without letting the URL reach anything private.

At each delivery: the URL is checked again (the policy may have changed since the job was created), the
host is resolved once and EVERY address checked (a name that resolves to a private address is refused,
whatever else it resolves to), and the connection goes to a checked address with the original Host header
and TLS server name: there is no second resolution for DNS rebinding to slip into. Redirects are never
followed (a 3xx is a non-2xx answer), the whole exchange is bounded by one timeout, and at most 1 KiB of
the answer is read.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping

from nano_banana.errors import WebhookUrlInvalid
from nano_banana.outbound import IpAddress, Target, WebhookPolicy, address_refused, check_url
from nano_banana.ports import WebhookAnswer

Resolver = Callable[[str, int], list[str]]
"""(host, port) → the addresses it resolves to (tests inject their own instead of real DNS)."""

MAX_ANSWER_BYTES = 1024


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, target: Target, address: str, timeout_s: float) -> None:
        super().__init__(target.host, target.port, timeout=timeout_s)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, target: Target, address: str, timeout_s: float, context: ssl.SSLContext) -> None:
        super().__init__(target.host, target.port, timeout=timeout_s, context=context)
        self._address = address
        self._tls = context

    def connect(self) -> None:
        raw = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._tls.wrap_socket(raw, server_hostname=self.host)


class WebhookSender:
    """One POST per call, under the outbound policy."""

    def __init__(
        self,
        policy: WebhookPolicy,
        *,
        resolver: Resolver = system_resolver,
        timeout_s: float = 5.0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._policy = policy
        self._resolve = resolver
        self._timeout_s = timeout_s
        self._tls = tls  # built on the first https delivery: loading the CA store costs every cold start

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context()
        return self._tls

    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> WebhookAnswer:
        try:
            target = check_url(url, self._policy)
        except WebhookUrlInvalid as exc:
            return WebhookAnswer(refused=str(exc.details.get("reason", "url")))
        started = time.monotonic()
        try:
            addresses = self._resolve(target.host, target.port)
        except (OSError, UnicodeError) as exc:
            return WebhookAnswer(error=f"resolve: {type(exc).__name__}")
        if not addresses:
            return WebhookAnswer(error="resolve: no address")
        parsed: list[IpAddress] = []
        for text in addresses:
            try:
                parsed.append(ipaddress.ip_address(text.split("%", 1)[0]))
            except ValueError:
                return WebhookAnswer(refused="address")
        if not self._policy.trusted(target.host):
            for address in parsed:
                if (reason := address_refused(address)) is not None:
                    return WebhookAnswer(refused=reason)
        return self._send(target, str(parsed[0]), body, headers, started)

    def _send(
        self, target: Target, address: str, body: bytes, headers: Mapping[str, str], started: float
    ) -> WebhookAnswer:
        remaining = max(0.1, self._timeout_s - (time.monotonic() - started))
        connection: http.client.HTTPConnection = (
            _PinnedHTTPSConnection(target, address, remaining, self._tls_context())
            if target.scheme == "https"
            else _PinnedHTTPConnection(target, address, remaining)
        )
        # The socket timeout bounds each read; this bounds the whole exchange (a receiver trickling its
        # headers a byte at a time would otherwise hold the delivery for minutes).
        watchdog = threading.Timer(remaining, _cut, args=(connection,))
        watchdog.daemon = True
        watchdog.start()
        try:
            connection.request("POST", target.path, body=body, headers=dict(headers))
            answer = connection.getresponse()
            answer.read(MAX_ANSWER_BYTES)
            if watchdog.finished.is_set():
                return WebhookAnswer(error="send: timeout")
            return WebhookAnswer(status=answer.status)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            return WebhookAnswer(error="send: timeout" if watchdog.finished.is_set() else f"send: {type(exc).__name__}")
        finally:
            watchdog.cancel()
            connection.close()


def _cut(connection: http.client.HTTPConnection) -> None:
    """The delivery's time is up: shut its socket down, which ends a read blocked on it."""
    sock = connection.sock
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
