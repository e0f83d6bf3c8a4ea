"""The benchmark proxy counts round trips as they happened: sequential ones as waves, parallel ones as one."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from tests.support.delay_proxy import ProxyLoop, chain, describe, waves


@pytest.fixture
def echo() -> Iterator[str]:
    """A line echo server: every line it reads it sends back."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve(conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as lines:
            for line in lines:
                conn.sendall(line)

    def accept() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield f"127.0.0.1:{server.getsockname()[1]}"
    server.close()


def ask(conn: socket.socket, line: bytes) -> None:
    conn.sendall(line)
    assert conn.recv(100) == line


def test_sequential_requests_are_waves_and_parallel_ones_one_wave(echo: str) -> None:
    loop = ProxyLoop()
    try:
        proxy = loop.add("echo", echo, protocol="burst", delay_s=0.2)
        host, port = proxy.address.split(":")
        with socket.create_connection((host, int(port))) as a, socket.create_connection((host, int(port))) as b:
            ask(a, b"one\n")
            ask(a, b"two\n")
            # Both sent before either answer can be back (each waits 2 x 200 ms in the proxy): side by side.
            a.sendall(b"three\n")
            b.sendall(b"four\n")
            assert a.recv(100) == b"three\n"
            assert b.recv(100) == b"four\n"
            ask(b, b"five\n")
        exchanges = proxy.between(0, float("inf"))
        assert len(exchanges) == 5
        assert len(waves(exchanges)) == 4
        assert chain(exchanges) == 4
        assert describe(waves(exchanges)) == "echo → echo → echox2 → echo"
    finally:
        loop.stop()
