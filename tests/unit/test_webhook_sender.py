"""The webhook sender (adapters/webhook_sender.py) against local servers: it resolves once and connects to
the address it checked (the Host header keeps the name), refuses a name with any private address, follows
no redirect, reads at most 1 KiB, and gives up on a receiver that trickles its answer past the timeout."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from nano_banana.adapters.webhook_sender import WebhookSender
from nano_banana.outbound import WebhookPolicy
from tests.support.webhook_receiver import WebhookReceiver

LOCAL_NAME = "receiver.test"  # resolved by the tests' own resolver, never by DNS


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver()
    yield server
    server.stop()


def test_one_resolution_and_the_connection_goes_to_the_checked_address(receiver: WebhookReceiver) -> None:
    asked: list[tuple[str, int]] = []

    def resolve(host: str, port: int) -> list[str]:
        asked.append((host, port))
        return ["127.0.0.1"]

    port = int(receiver.base_url.rsplit(":", 1)[1])
    sender = WebhookSender(WebhookPolicy(http_hosts=frozenset({LOCAL_NAME})), resolver=resolve)
    answer = sender.post(f"http://{LOCAL_NAME}:{port}/in?x=1", b"{}", {"Content-Type": "application/json"})
    assert (answer.status, answer.refused, answer.error) == (200, None, None)
    assert asked == [(LOCAL_NAME, port)], "resolved exactly once"
    (got,) = receiver.received
    assert got.headers["host"] == f"{LOCAL_NAME}:{port}"
    assert got.path == "/in?x=1"


@pytest.mark.parametrize(
    ("addresses", "reason"),
    [
        (["127.0.0.1"], "loopback"),
        (["93.184.215.14", "10.1.2.3"], "private"),
        (["169.254.169.254"], "link_local"),
        (["2606:4700::1111", "::1"], "loopback"),
        (["::ffff:192.168.0.1"], "private"),
    ],
)
def test_a_name_with_any_private_address_is_refused_before_connecting(addresses: list[str], reason: str) -> None:
    sender = WebhookSender(WebhookPolicy(), resolver=lambda _h, _p: addresses)
    answer = sender.post("https://hooks.builder.example/h", b"{}", {})
    assert (answer.status, answer.refused) == (None, reason)


def test_a_url_the_policy_now_refuses_is_refused_at_delivery() -> None:
    sender = WebhookSender(WebhookPolicy(), resolver=lambda _h, _p: ["127.0.0.1"])
    assert sender.post("http://127.0.0.1:9/h", b"{}", {}).refused == "scheme"


def test_a_redirect_is_an_answer_not_a_second_request() -> None:
    receiver = WebhookReceiver(statuses=(307,), headers={"Location": "http://169.254.169.254/latest/meta-data/"})
    try:
        sender = WebhookSender(WebhookPolicy(http_hosts=frozenset({"127.0.0.1"})))
        assert sender.post(f"{receiver.base_url}/h", b"{}", {}).status == 307
        time.sleep(0.2)
        assert len(receiver.received) == 1
    finally:
        receiver.stop()


def test_a_trickling_receiver_is_cut_off_at_the_timeout() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def trickle() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\n")
            while not stop.wait(0.2):  # one header byte at a time, forever
                try:
                    conn.sendall(b"X")
                except OSError:
                    return

    threading.Thread(target=trickle, daemon=True).start()
    try:
        sender = WebhookSender(WebhookPolicy(http_hosts=frozenset({"127.0.0.1"})), timeout_s=1.0)
        started = time.monotonic()
        answer = sender.post(f"http://127.0.0.1:{listener.getsockname()[1]}/h", b"{}", {})
        took = time.monotonic() - started
    finally:
        stop.set()
        listener.close()
    assert (answer.status, answer.error) == (None, "send: timeout")
    assert took < 2.5, f"the whole exchange is bounded by the timeout, took {took:.1f} s"


def test_a_refused_connection_is_an_error_to_retry() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    sender = WebhookSender(WebhookPolicy(http_hosts=frozenset({"127.0.0.1"})), timeout_s=1.0)
    answer = sender.post(f"http://127.0.0.1:{port}/h", b"{}", {})
    assert answer.status is None
    assert answer.error == "send: ConnectionRefusedError"
