"""The README's first command: simulated practices → Kafka → the worker → chDB → what landed."""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import time
from datetime import date
from pathlib import Path

from portal_pulse.errors import UserError

__all__ = ["ensure_demo_key", "run_demo"]


def ensure_demo_key(data_dir: Path) -> Path | None:
    """A throw-away pseudonym key for the demo, unless a key is configured; its path.

    The file is created owner-only (0600) in the same call that creates it, never chmod-ed
    afterwards, so no other user can read it in between; a symlink in its place is refused.
    """
    if os.environ.get("PORTAL_PULSE_PSEUDONYM_KEY") or os.environ.get(
        "PORTAL_PULSE_PSEUDONYM_KEY_FILE"
    ):
        return None
    key_file = data_dir / "demo-pseudonym.key"
    key_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(key_file, flags, 0o600)
    except FileExistsError:  # a key from an earlier demo: its pseudonyms stay comparable
        if key_file.is_symlink() or not key_file.is_file():
            raise UserError(
                f"{key_file} is not a regular file: remove it, or set "
                "PORTAL_PULSE_PSEUDONYM_KEY_FILE to a key of your own"
            ) from None
    else:
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(secrets.token_hex(32))  # 64 bytes: SPEC §9 asks for at least 32
    os.environ["PORTAL_PULSE_PSEUDONYM_KEY_FILE"] = str(key_file.resolve())
    print(
        f"[demo] no pseudonym key configured: using a demo key in {key_file} (set PORTAL_PULSE_PSEUDONYM_KEY for real data)"
    )
    return key_file


def _write_practices(spec: object, path: Path) -> Path:
    """Practice rules matching the simulated practices' time zones (SPEC §3 defaults otherwise)."""
    import yaml

    zones = spec.timezones  # type: ignore[attr-defined]
    listed = {f"P{i + 1:03d}": {"timezone": zones[i % len(zones)]} for i in range(spec.practices)}  # type: ignore[attr-defined]
    path.write_text(yaml.safe_dump({"practices": {"default": {}, **listed}}, sort_keys=False))
    return path


def run_demo(args: argparse.Namespace) -> int:
    from portal_pulse.broker import resolve_bootstrap
    from portal_pulse.kafka_admin import ensure_topics
    from portal_pulse.produce import produce_file
    from portal_pulse.settings import Settings
    from portal_pulse.simulate import SimulationSpec, simulate_to_file
    from portal_pulse.worker import run_worker
    from sinks.client import connect

    base = Settings()
    demo_dir = base.data_dir / "demo"
    if demo_dir.exists():
        shutil.rmtree(demo_dir)
    demo_dir.mkdir(parents=True)
    ensure_demo_key(base.data_dir)
    run_id = time.strftime("%Y%m%d%H%M%S")
    spec = SimulationSpec(
        practices=args.practices,
        patients=args.patients,
        months=args.months,
        seed=args.seed,
        bad_fraction=args.bad_fraction,
    )
    practices_file = base.practices_file or _write_practices(spec, demo_dir / "practices.yaml")
    settings = Settings(
        practices_file=practices_file,
        topic_prefix=f"demo{run_id}",
        app_id=f"portal-pulse-demo-{run_id}",
        clickhouse_url=base.clickhouse_url or f"chdb://{(demo_dir / 'chdb').resolve()}",
        # A free port for /metrics unless one is asked for: a worker may already hold 6066.
        web_port=base.web_port if "PORTAL_PULSE_WEB_PORT" in os.environ else 0,
    )

    t0 = time.monotonic()
    bootstrap = resolve_bootstrap(base.data_dir)
    print(f"[demo] Kafka broker: {bootstrap} ({time.monotonic() - t0:.1f}s)")

    events_file = demo_dir / "events.jsonl"
    # Real feeds arrive late and out of order (SPEC §7.1): the demo's does too.
    summary = simulate_to_file(spec, events_file, arrival="realistic")
    print(
        f"[demo] simulated {spec.practices} practices × {spec.patients} patients × {spec.months} months → {events_file}: {summary}"
    )
    print("[demo] events written in a realistic arrival order (late and out of order per source)")

    ensure_topics(settings, bootstrap)
    t1 = time.monotonic()
    produced = produce_file(settings, bootstrap, events_file)
    print(
        f"[demo] produced {produced.valid} Avro events and {produced.invalid} invalid lines in {time.monotonic() - t1:.1f}s"
    )

    t2 = time.monotonic()
    print("[demo] running the Faust worker until it has caught up …")
    rt = run_worker(settings, bootstrap, exit_when_idle=3.0, loglevel="error")
    print(f"[demo] worker done in {time.monotonic() - t2:.1f}s")
    from portal_pulse.late_events import late_summary

    print("\n== Late and out-of-order events (corrected in event-time order, docs/time.md)")
    for line in late_summary(rt.metrics):
        print(f"  {line}")

    client = connect(settings.clickhouse_dsn)
    from portal_pulse.reports.summary import print_landing_summary

    print_landing_summary(client)

    from portal_pulse.pipeline import load_practices
    from portal_pulse.reports.dashboard import text_report
    from portal_pulse.reports.practices_sync import sync_practices

    sync_practices(
        client, load_practices(settings), [f"P{i + 1:03d}" for i in range(spec.practices)]
    )
    last_month = _last_month(spec.start, spec.months)
    for i in range(spec.practices):
        practice = f"P{i + 1:03d}"
        print(f"\n== Dashboard {practice} ({last_month})")
        print(text_report(client, practice, last_month))
    print(
        f"More: portal-pulse dashboard --clickhouse {settings.clickhouse_dsn} --practice P001 "
        f"--month {last_month} --format html --out dashboard.html"
    )
    return 0


def _last_month(start: date, months: int) -> str:
    index = start.year * 12 + start.month - 1 + months - 1
    return f"{index // 12:04d}-{index % 12 + 1:02d}"
