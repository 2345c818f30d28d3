"""The HTML dashboard in a real browser: headless Chromium draws every chart, offline.

The screenshot is decoded by a small PNG reader (zlib + the five PNG filters) so the test needs
no imaging library.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import zlib
from pathlib import Path
from typing import Any

import pytest

from portal_pulse.reports.dashboard import previous_month, render_html

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
WIDTH, HEIGHT = 1280, 3000
SERIES = {  # the charts' series colours, exactly as drawn in solid areas
    "blue": (0x1F, 0x6F, 0xEB),
    "orange": (0xD9, 0x48, 0x0F),
    "green": (0x2B, 0x8A, 0x3E),
    "purple": (0x86, 0x2E, 0x9C),
}


def read_png(path: Path) -> tuple[int, int, list[bytes]]:
    """(width, height, rows of RGB bytes) of an 8-bit RGB or RGBA, non-interlaced PNG."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, bytearray(), None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
    assert header is not None
    width, height, depth, colour, _, _, interlace = header
    assert depth == 8 and colour in (2, 6) and interlace == 0, header
    bpp = 3 if colour == 2 else 4
    raw = zlib.decompress(bytes(idat))
    stride = width * bpp
    rows: list[bytes] = []
    previous = bytearray(stride)
    for r in range(height):
        start = r * (stride + 1)
        kind = raw[start]
        line = bytearray(raw[start + 1 : start + 1 + stride])
        if kind == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 0xFF
        elif kind == 2:
            line = bytearray((a + b) & 0xFF for a, b in zip(line, previous, strict=True))
        elif kind == 3:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + previous[i]) >> 1)) & 0xFF
        elif kind == 4:
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b = previous[i]
                c = previous[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
                line[i] = (line[i] + pred) & 0xFF
        previous = line
        rows.append(bytes(line) if bpp == 3 else bytes(v for i, v in enumerate(line) if i % 4 != 3))
    return width, height, rows


def trailing() -> list[dict[str, Any]]:
    months = [previous_month("2026-12", k) for k in reversed(range(12))]
    rows = []
    for i, month in enumerate(months):
        rows.append(
            {
                "practice_id": "P001", "month": month,
                "unique_patients": 2000, "enrolled_patients": 400 + 80 * i,
                "enrollment_rate": 0.2 + 0.04 * i, "new_enrollments": 80 + i,
                "active_users": 200 + 20 * i, "active_user_rate": 0.5 - 0.01 * i,
                "multi_feature_users": 100, "multi_feature_rate": 0.45,
                "patient_messages": 100 + 30 * i, "staff_replies": 90 + 25 * i,
                "messages_per_active_user": 0.7, "portal_bookings": 50 + 10 * i,
                "total_bookings": 700, "portal_booking_rate": 0.1 + 0.02 * i,
                "results_viewed": 100, "same_day_view_rate": 0.7 + 0.01 * i,
                "viewed_before_staff_contact_rate": 0.2 + 0.02 * i,
                "portal_payment_cents": 500_000, "total_payment_cents": 5_000_000,
                "portal_payment_share": 0.05 + 0.015 * i, "inbound_calls": 1500 - 50 * i,
                "phone_volume_change": -0.03, "responses": 300,
                "avg_response_business_hours": 3.0, "median_response_business_hours": 2.0,
                "p90_response_business_hours": 8.0, "avg_response_hours": 18 - 0.5 * i,
                "within_internal_target_rate": 0.8, "within_external_promise_rate": 0.95,
                "sla_breaches": 10, "avg_satisfaction_portal_users": 4.5,
                "app_install_rate": 0.3,
            }
        )  # fmt: skip
    return rows


def saturated(line: bytes, x: int) -> bool:
    """A strongly coloured pixel: chart ink, not text (greys) or page and bands (pale)."""
    r, g, b = line[3 * x], line[3 * x + 1], line[3 * x + 2]
    return max(r, g, b) - min(r, g, b) > 80


def row_runs(rows: list[bytes], x0: int, x1: int, *, gap: int = 80) -> list[tuple[int, int]]:
    """Vertical runs of rows with chart ink in columns x0..x1 (gaps up to ``gap`` merged)."""
    hits = [y for y, line in enumerate(rows) if any(saturated(line, x) for x in range(x0, x1))]
    runs: list[tuple[int, int]] = []
    for y in hits:
        if runs and y - runs[-1][1] <= gap:
            runs[-1] = (runs[-1][0], y)
        else:
            runs.append((y, y))
    # 20 rows: a chart whose lines are flat still has its legend and its line in one run.
    return [r for r in runs if r[1] - r[0] >= 20]


@pytest.fixture(scope="module")
def screenshot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install -y chromium)")
    tmp = tmp_path_factory.mktemp("browser")
    page = tmp / "dashboard.html"
    page.write_text(render_html(trailing(), timezone="America/New_York"), encoding="utf-8")
    png = tmp / "dashboard.png"
    result = subprocess.run(
        [
            str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", f"--user-data-dir={tmp / 'profile'}", f"--screenshot={png}",
            f"--window-size={WIDTH},{HEIGHT}", page.as_uri(),
        ],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert png.exists(), result.stderr[-3000:]
    shutil.rmtree(tmp / "profile", ignore_errors=True)
    return png


def test_every_chart_is_drawn(screenshot: Path) -> None:
    width, height, rows = read_png(screenshot)
    assert (width, height) == (WIDTH, HEIGHT)
    counts = dict.fromkeys(SERIES, 0)
    by_colour = {bytes(c): name for name, c in SERIES.items()}
    for line in rows:
        for x in range(0, width * 3, 3):
            name = by_colour.get(line[x : x + 3])
            if name:
                counts[name] += 1
    # Bars and lines of every series colour are on the page, in quantity.
    assert all(n > 500 for n in counts.values()), counts
    # Nine charts in a two-column grid: five down the left, four down the right.
    left, right = row_runs(rows, 0, width // 2), row_runs(rows, width // 2, width)
    assert len(left) >= 5, left
    assert len(right) >= 4, right


def test_nothing_is_fetched_from_the_network(screenshot: Path) -> None:
    page = screenshot.with_suffix(".html").read_text(encoding="utf-8")
    assert "http://" not in page and "https://" not in page
