"""A real HTTP server on loopback standing in for Alertmanager or PagerDuty (no network here)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


class Receiver:
    """What the server saw (path, JSON body, headers, in arrival order) and what it answers:
    ``script`` first (status, headers, delay), then ``default``."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: list[tuple[str, Any, dict[str, str]]] = []
        self.script: list[tuple[int, dict[str, str], float]] = []
        self.delays: dict[str, float] = {}  # a body containing this text is answered late
        self.default = 200
        self.base = ""

    @property
    def bodies(self) -> list[Any]:
        with self.lock:
            return [body for _, body, _ in self.requests]

    def answer(self, path: str, raw: bytes, headers: dict[str, str]) -> tuple[int, dict, float]:
        with self.lock:
            self.requests.append((path, json.loads(raw), headers))
            status, extra, delay = self.script.pop(0) if self.script else (self.default, {}, 0.0)
            text = raw.decode()
            delay += sum(d for key, d in self.delays.items() if key in text)
            return status, extra, delay


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers["Content-Length"]))
            status, extra, delay = rec.answer(
                self.path, raw, {k.lower(): v for k, v in self.headers.items()}
            )
            if delay:
                time.sleep(delay)
            self.send_response(status)
            for name, value in extra.items():
                self.send_header(name, value)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = _QuietServer(("127.0.0.1", 0), Handler)
    rec.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield rec
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
