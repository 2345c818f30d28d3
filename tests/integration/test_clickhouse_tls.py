"""``https://`` means TLS: a ClickHouse URL's scheme decides the transport, whatever the port.

A plain socket listener on loopback records the first bytes each connection sends. For an
``https://`` URL they must be a TLS handshake (record type 0x16), never an HTTP request line, and
the password must never appear in them. The listener speaks neither TLS nor HTTP, so the command
then fails with one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

PASSWORD = "s3cret-not-for-the-wire"


class Listener:
    """Accepts connections on 127.0.0.1 and keeps the first bytes of each, then hangs up."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.received: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                data = b""
                try:
                    while len(data) < 4096:
                        chunk = conn.recv(4096)
                        if not chunk:
                            break
                        data += chunk
                        # A ClientHello or a request head arrives in one go; don't wait for more.
                        if data[:1] == b"\x16" or b"\r\n\r\n" in data:
                            break
                except OSError:
                    pass
                self.received.append(data)

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        self._thread.join(timeout=5)


@pytest.fixture
def listener() -> Iterator[Listener]:
    server = Listener()
    try:
        yield server
    finally:
        server.close()


def _alerts(url: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PORTAL_PULSE_DATA_DIR": str(tmp_path / "var"),
        "PORTAL_PULSE_CLICKHOUSE_PASSWORD": "",
    }
    env.pop("PORTAL_PULSE_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "portal_pulse.cli", "alerts", "--clickhouse", url],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_https_url_sends_a_tls_handshake_never_the_password(
    listener: Listener, tmp_path: Path
) -> None:
    result = _alerts(f"https://bi:{PASSWORD}@127.0.0.1:{listener.port}/default", tmp_path)

    assert listener.received, "the command never connected"
    for first in listener.received:
        assert first[:1] == b"\x16", f"not a TLS handshake: {first[:40]!r}"
        assert not first.startswith((b"GET ", b"POST ", b"HEAD ")), first[:40]
        assert PASSWORD.encode() not in first
        assert b"Authorization" not in first
    assert result.returncode != 0
    stderr = result.stderr.strip().splitlines()
    assert len(stderr) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert PASSWORD not in result.stderr + result.stdout
    assert stderr[0].startswith("portal-pulse alerts: ClickHouse at https://bi:***@127.0.0.1")
    assert "TLS" in stderr[0]


def test_http_url_stays_plain_http(listener: Listener, tmp_path: Path) -> None:
    """The control: the same listener sees a request line for http:// (so the test can tell)."""
    result = _alerts(f"http://bi@127.0.0.1:{listener.port}/default", tmp_path)

    assert listener.received
    assert listener.received[0].split(b" ", 1)[0] in (b"GET", b"POST")
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) <= 2, result.stderr
    assert "Traceback" not in result.stderr
