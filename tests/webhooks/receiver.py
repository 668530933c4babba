"""A real webhook receiver on 127.0.0.1, in a thread: records every request it gets and answers as the
test says (a status code, a redirect, or holding the request open until released)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks import Webhook as Verifier


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def message_id(self) -> str:
        return self.headers["webhook-id"]

    def verify(self, secret: str) -> object:
        """The parsed body, once `standardwebhooks` verified the signature under `secret` (or raise)."""
        return Verifier(secret).verify(self.body, self.headers)

    def signed_by(self, secret: str) -> bool:
        """Whether one of the signatures is `standardwebhooks`' own signature under `secret`, whatever the
        timestamp (for tests whose clock has moved past the library's five-minute tolerance)."""
        moment = datetime.fromtimestamp(int(self.headers["webhook-timestamp"]), tz=UTC)
        expected = Verifier(secret).sign(self.message_id, moment, self.body)
        return expected in self.headers["webhook-signature"].split(" ")


Answer = Callable[[Received], int]


@dataclass
class Receiver:
    url: str
    received: list[Received] = field(default_factory=list)
    answer: Answer = lambda _: 204
    hold: threading.Event | None = None  # set: requests wait for it to be set before answering
    delay: float = 0.0  # seconds each request takes to answer: a slow receiver
    arrived: threading.Condition = field(default_factory=threading.Condition)

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Received]:
        """Block (a thread, not the event loop) until `count` requests arrived."""
        with self.arrived:
            if not self.arrived.wait_for(lambda: len(self.received) >= count, timeout=timeout):
                raise AssertionError(f"{len(self.received)} requests arrived, expected {count}")
            return list(self.received)


@contextmanager
def receiver() -> Iterator[Receiver]:
    state = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            got = Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            with state.arrived:
                state.received.append(got)
                state.arrived.notify_all()
            if state.hold is not None:
                state.hold.wait(60)
            if state.delay:
                time.sleep(state.delay)  # the receiver's own latency, on its thread
            status = state.answer(got)
            self.send_response(status)
            if 300 <= status < 400:
                self.send_header("location", state.url + "/elsewhere")
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    class Server(ThreadingHTTPServer):
        request_queue_size = 256  # many workers connect at once: the default backlog (5) refuses some

    server = Server(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        if state.hold is not None:
            state.hold.set()
        server.shutdown()
        server.server_close()
        thread.join(10)
