"""TCP proxies that put a fixed delay on every byte each way, and record the round trips they carry.

One `ProxyLoop` (an asyncio loop on a thread) serves any number of `DelayProxy`s, one per dependency.
Every chunk is forwarded `delay_s` after it arrived, in order, so a request/response pair costs two
delays, however many bytes it carries (no bandwidth limit: that is what a far-away fast network does).
New connections cost nothing extra (warm pools are what the benchmarks measure).

What counts as a round trip, by protocol:
- "burst" (Postgres, HTTP/1.1): strictly request/response. An exchange starts with the client's first
  bytes after the server last spoke and ends with the last server bytes before the client speaks again.
  Client bytes no reply follows (Terminate, a closing connection) are not an exchange.
- "h2" (gRPC: Firestore, Cloud Tasks): frames are parsed. An exchange is one stream, from the client's
  HEADERS to the server's END_STREAM (or RST_STREAM); pings, settings and window updates are not.
Times are `time.perf_counter()`: client bytes when they reached the proxy, server bytes when they were
handed to the client. Exchanges of one request that overlap in time ran side by side: `waves` merges
them, so its length is the number of sequential round trips on that request's critical path (`chain`
counts the longest run of round trips one after another, which a long call overlapping two short
ones in sequence hides from `waves`).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

_H2_PREFACE = 24  # b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_DATA, _HEADERS, _RST_STREAM = 0x0, 0x1, 0x3
_END_STREAM = 0x1


@dataclass
class Exchange:
    """One round trip through a proxy: [start, end] in perf_counter seconds."""

    proxy: str
    start: float
    end: float


class _Recorder:
    def __init__(self, proxy: DelayProxy) -> None:
        self._proxy = proxy

    def record(self, start: float, end: float) -> Exchange:
        exchange = Exchange(self._proxy.name, start, end)
        with self._proxy.lock:
            self._proxy.exchanges.append(exchange)
        return exchange

    def client_bytes(self, data: bytes, at: float) -> None:
        raise NotImplementedError

    def server_bytes(self, data: bytes, at: float) -> None:
        raise NotImplementedError


class _Bursts(_Recorder):
    def __init__(self, proxy: DelayProxy) -> None:
        super().__init__(proxy)
        self._start: float | None = None
        self._current: Exchange | None = None  # recorded once the first reply bytes went out

    def client_bytes(self, data: bytes, at: float) -> None:
        if self._start is None or self._current is not None:
            self._start, self._current = at, None

    def server_bytes(self, data: bytes, at: float) -> None:
        if self._start is None:  # spoken first (a notification): not an answer to anything
            return
        if self._current is None:
            self._current = self.record(self._start, at)
        else:
            self._current.end = at


class _Frames:
    """HTTP/2 frame headers out of a byte stream: (type, flags, stream id)."""

    def __init__(self, skip: int) -> None:
        self._buf = bytearray()
        self._skip = skip

    def feed(self, data: bytes) -> list[tuple[int, int, int]]:
        self._buf += data
        if self._skip:
            cut = min(self._skip, len(self._buf))
            del self._buf[:cut]
            self._skip -= cut
        frames = []
        while len(self._buf) >= 9:
            length = int.from_bytes(self._buf[0:3], "big")
            if len(self._buf) < 9 + length:
                break
            frames.append((self._buf[3], self._buf[4], int.from_bytes(self._buf[5:9], "big") & 0x7FFFFFFF))
            del self._buf[: 9 + length]
        return frames


class _Streams(_Recorder):
    def __init__(self, proxy: DelayProxy) -> None:
        super().__init__(proxy)
        self._client = _Frames(_H2_PREFACE)
        self._server = _Frames(0)
        self._open: dict[int, float] = {}

    def client_bytes(self, data: bytes, at: float) -> None:
        for kind, _flags, stream in self._client.feed(data):
            if kind == _HEADERS and stream not in self._open:
                self._open[stream] = at
            elif kind == _RST_STREAM:  # canceled by the client: no answer to wait for
                self._open.pop(stream, None)

    def server_bytes(self, data: bytes, at: float) -> None:
        for kind, flags, stream in self._server.feed(data):
            ended = (kind in (_DATA, _HEADERS) and flags & _END_STREAM) or kind == _RST_STREAM
            if ended and (start := self._open.pop(stream, None)) is not None:
                self.record(start, at)


@dataclass
class DelayProxy:
    """Listens on 127.0.0.1:`port` and forwards to `upstream` ("host:port" or a unix socket path)."""

    name: str
    upstream: str
    protocol: str  # "burst" or "h2"
    delay_s: float
    port: int = 0
    exchanges: list[Exchange] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def between(self, start: float, end: float) -> list[Exchange]:
        """Exchanges that started within [start, end]."""
        with self.lock:
            return [e for e in self.exchanges if start <= e.start <= end]

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.upstream.startswith("/"):
            return await asyncio.open_unix_connection(self.upstream)
        host, _, port = self.upstream.rpartition(":")
        return await asyncio.open_connection(host, int(port))

    async def serve(self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter) -> None:
        try:
            server_in, server_out = await self._connect()
        except OSError:
            client_out.close()
            return
        recorder: _Recorder = _Streams(self) if self.protocol == "h2" else _Bursts(self)
        try:
            await asyncio.gather(
                self._pump(client_in, server_out, on_read=recorder.client_bytes),
                self._pump(server_in, client_out, on_write=recorder.server_bytes),
            )
        except asyncio.CancelledError:  # ProxyLoop.stop: the connection just ends
            client_out.close()
            server_out.close()

    async def _pump(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        *,
        on_read: Callable[[bytes, float], None] | None = None,
        on_write: Callable[[bytes, float], None] | None = None,
    ) -> None:
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()

        async def read() -> None:
            try:
                while data := await source.read(65536):
                    arrived = time.perf_counter()
                    if on_read is not None:
                        on_read(data, arrived)
                    queue.put_nowait((asyncio.get_running_loop().time() + self.delay_s, data))
            except OSError:
                pass
            queue.put_nowait(None)

        async def write() -> None:
            loop = asyncio.get_running_loop()
            try:
                while (item := await queue.get()) is not None:
                    due, data = item
                    if (wait := due - loop.time()) > 0:
                        await asyncio.sleep(wait)
                    if on_write is not None:  # before the client can see the bytes, let alone answer them
                        on_write(data, time.perf_counter())
                    sink.write(data)
                    await sink.drain()
                if sink.can_write_eof():
                    sink.write_eof()
            except OSError:
                pass
            finally:
                sink.close()

        await asyncio.gather(read(), write())


def waves(exchanges: Sequence[Exchange]) -> list[list[Exchange]]:
    """Group exchanges that overlap in time: each group ran side by side, the groups one after another."""
    groups: list[list[Exchange]] = []
    end = float("-inf")
    for exchange in sorted(exchanges, key=lambda e: e.start):
        if groups and exchange.start <= end:
            groups[-1].append(exchange)
            end = max(end, exchange.end)
        else:
            groups.append([exchange])
            end = exchange.end
    return groups


def chain(exchanges: Sequence[Exchange]) -> int:
    """The most round trips that ran strictly one after another (earliest end first). Below the number
    of waves when a long call overlaps two short ones in sequence: they are one wave but two trips."""
    count, last_end = 0, float("-inf")
    for exchange in sorted(exchanges, key=lambda e: e.end):
        if exchange.start > last_end:
            count, last_end = count + 1, exchange.end
    return count


def describe(groups: Sequence[Sequence[Exchange]]) -> str:
    """`postgres → firestore+storage → …`: each wave's dependencies (xN when one was called N times)."""
    parts = []
    for group in groups:
        names = sorted({e.proxy for e in group})
        parts.append("+".join(f"{n}x{c}" if (c := sum(e.proxy == n for e in group)) > 1 else n for n in names))
    return " → ".join(parts)


class ProxyLoop:
    """The thread all proxies run on. `add` returns a proxy listening on a free port."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="delay-proxy", daemon=True)
        self._thread.start()
        self._servers: list[asyncio.Server] = []

    def _run(self, coro: Awaitable[object]) -> object:
        async def wrapped() -> object:
            return await coro

        return asyncio.run_coroutine_threadsafe(wrapped(), self._loop).result(timeout=10)

    def add(self, name: str, upstream: str, *, protocol: str, delay_s: float) -> DelayProxy:
        proxy = DelayProxy(name, upstream, protocol, delay_s)

        async def start() -> asyncio.Server:
            return await asyncio.start_server(proxy.serve, "127.0.0.1", 0)

        server = self._run(start())
        assert isinstance(server, asyncio.Server)
        self._servers.append(server)
        proxy.port = server.sockets[0].getsockname()[1]
        return proxy

    def stop(self) -> None:
        """Close the listeners and every open connection, then end the thread."""

        async def close() -> None:
            for server in self._servers:
                server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self._run(close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()
