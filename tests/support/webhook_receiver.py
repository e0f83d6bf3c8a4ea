"""A builder's server receiving completion webhooks: records every POST (headers and raw body) and answers
with the statuses it is scripted to (then 200), optionally with extra headers (a redirect's Location)."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from tests.support.http_stub import LocalServer, QuietHandler


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


class WebhookReceiver(LocalServer):
    def __init__(
        self,
        statuses: tuple[int, ...] = (),
        headers: dict[str, str] | None = None,
        hold_first: threading.Event | None = None,
    ) -> None:
        """`hold_first`: the first delivery is recorded, then its answer waits until the event is set (a
        receiver still working when the sender dies)."""
        self.received: list[Received] = []
        self.statuses = list(statuses)
        self.answer_headers = headers or {}
        self.arrived = threading.Condition()
        receiver = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with receiver.arrived:
                    receiver.received.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                    first = len(receiver.received) == 1
                    receiver.arrived.notify_all()
                if first and hold_first is not None:
                    hold_first.wait(60)
                self.send_response(status)
                for key, value in receiver.answer_headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        self._serve(Handler)

    def wait_for(self, count: int, timeout_s: float = 20) -> list[Received]:
        with self.arrived:
            assert self.arrived.wait_for(lambda: len(self.received) >= count, timeout_s), (
                f"{len(self.received)} deliveries arrived, wanted {count}"
            )
            return list(self.received)
