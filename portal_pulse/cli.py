"""``portal-pulse``: every user-facing command. Imports are lazy so ``--help`` stays fast."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from datetime import date, datetime
from pathlib import Path

__all__ = ["main"]

logger = logging.getLogger("portal_pulse")


def _settings():  # type: ignore[no-untyped-def]
    from portal_pulse.settings import Settings

    return Settings()


def _instant(text: str) -> datetime:
    from schemas.validation import InvalidEvent, parse_instant

    try:
        return parse_instant(text, "--until")
    except InvalidEvent as exc:
        raise argparse.ArgumentTypeError(exc.detail) from None


def _month(text: str) -> date:
    year, _, month = text.partition("-")
    try:
        return date(int(year), int(month), 1)
    except ValueError:
        raise SystemExit(f"portal-pulse: --start {text!r} is not YYYY-MM") from None


def _clickhouse(url: str | None):  # type: ignore[no-untyped-def]
    from sinks.client import connect

    settings = _settings()
    dsn = url or settings.clickhouse_dsn
    password = (
        settings.clickhouse_password.get_secret_value() if settings.clickhouse_password else None
    )
    return connect(
        dsn, user=settings.clickhouse_user, password=password, verify=settings.clickhouse_verify_tls
    )


def cmd_broker(args: argparse.Namespace) -> int:
    from portal_pulse.broker import LocalBroker, resolve_bootstrap

    settings = _settings()
    broker = LocalBroker(settings.data_dir / "kafka", port=args.port, controller_port=args.port + 1)
    if args.action == "assemble":
        broker.assemble()
        print(f"Kafka jars in {broker.libs}")
    elif args.action == "start":
        print(resolve_bootstrap(settings.data_dir) if args.any else broker.start())
    elif args.action == "stop":
        broker.stop()
        print("stopped")
    else:
        pid = broker.running_pid()
        print(
            f"running on {broker.bootstrap} (pid {pid})"
            if pid and broker.ready()
            else "not running"
        )
        return 0 if pid else 1
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from portal_pulse.simulate import SimulationSpec, simulate_to_file

    spec = SimulationSpec(
        practices=args.practices,
        patients=args.patients,
        months=args.months,
        seed=args.seed,
        bad_fraction=args.bad_fraction,
        **({"start": _month(args.start)} if args.start else {}),
    )
    summary = simulate_to_file(spec, args.out)
    print(f"wrote {args.out}: {summary}")
    return 0


def cmd_produce(args: argparse.Namespace) -> int:
    from portal_pulse.broker import resolve_bootstrap
    from portal_pulse.kafka_admin import ensure_topics
    from portal_pulse.produce import produce_file

    settings = _settings()
    bootstrap = resolve_bootstrap(settings.data_dir)
    ensure_topics(settings, bootstrap)
    summary = produce_file(settings, bootstrap, Path(args.file))
    print(
        f"produced {summary.valid} valid events and {summary.invalid} invalid lines to {bootstrap}"
    )
    for err in summary.errors:
        print(f"  invalid (sent for dead-lettering): {err}")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from portal_pulse.broker import resolve_bootstrap
    from portal_pulse.worker import run_worker

    settings = _settings()
    run_worker(
        settings,
        resolve_bootstrap(settings.data_dir),
        exit_when_idle=args.exit_when_idle,
        loglevel=args.loglevel,
    )
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from portal_pulse.replay import replay_file

    settings = _settings()
    if args.config:
        settings = settings.model_copy(update={"practices_file": Path(args.config)})
    client = _clickhouse(args.clickhouse)
    summary = replay_file(settings, Path(args.file), client, until=args.until)
    print(
        f"replayed {summary.events} events ({summary.duplicates} duplicates dropped, "
        f"{summary.dead_letters} dead letters) → {summary.alerts} alert records, "
        f"{summary.responses} responses; clock at {summary.clock.isoformat() if summary.clock else '-'}"
    )
    for reason, n in sorted(summary.reasons.items()):
        print(f"  dead letter: {reason} × {n}")
    return 0


def cmd_alerts(args: argparse.Namespace) -> int:
    from portal_pulse.reports.alerts import fetch_alerts, format_alerts

    rows = fetch_alerts(
        _clickhouse(args.clickhouse), practice=args.practice, open_only=args.open, kind=args.kind
    )
    sys.stdout.write(format_alerts(rows, args.format))
    return 0


def cmd_followups(args: argparse.Namespace) -> int:
    from portal_pulse.reports.followups import followups_command

    sys.stdout.write(
        followups_command(_clickhouse(args.clickhouse), args.practice, args.format, now=args.now)
    )
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    from portal_pulse.reports.dashboard import (
        MonthNotFound,
        fetch_month,
        fetch_trailing,
        render_html,
        render_json,
        text_report,
    )

    client = _clickhouse(args.clickhouse)
    try:
        current = fetch_month(client, args.practice, args.month)
        if args.format == "json":
            out = render_json(current)
        elif args.format == "html":
            out = render_html(fetch_trailing(client, args.practice, args.month))
        else:
            out = text_report(client, args.practice, args.month)
    except (MonthNotFound, ValueError) as exc:
        print(f"portal-pulse dashboard: {exc}", file=sys.stderr)
        return 1
    if args.out:
        Path(args.out).write_text(out, encoding="utf-8")
        print(f"wrote {args.out}")
    else:
        sys.stdout.write(out)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from portal_pulse.demo import run_demo

    return run_demo(args)


def cmd_config(args: argparse.Namespace) -> int:
    print(json.dumps(_settings().safe_dump(), indent=2, default=str))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="portal-pulse",
        description="Measure patient-portal adoption: Kafka + Faust agents + ClickHouse.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "demo",
        help="simulate practices, run them through Kafka and the worker into chDB, show results",
    )
    p.add_argument("--practices", type=int, default=3)
    p.add_argument("--patients", type=int, default=400, help="patients per practice")
    p.add_argument("--months", type=int, default=3)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument(
        "--bad-fraction", type=float, default=0.002, help="share of invalid events mixed in"
    )
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("broker", help="the local Kafka broker (native, KRaft, loopback)")
    p.add_argument("action", choices=["assemble", "start", "stop", "status"])
    p.add_argument(
        "--port", type=int, default=int(os.environ.get("PORTAL_PULSE_BROKER_PORT", "19092"))
    )
    p.add_argument(
        "--any", action="store_true", help="start: follow the choice order (env, Docker, native)"
    )
    p.set_defaults(func=cmd_broker)

    p = sub.add_parser(
        "simulate", help="write a realistic, deterministic JSON Lines event recording"
    )
    p.add_argument("--practices", type=int, default=3)
    p.add_argument("--patients", type=int, default=500, help="patients per practice")
    p.add_argument("--months", type=int, default=3)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--start", help="first month, YYYY-MM (default 2026-01)")
    p.add_argument(
        "--bad-fraction", type=float, default=0.0, help="share of invalid events to mix in"
    )
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("produce", help="produce a JSON Lines file to the raw topics as Avro")
    p.add_argument("file", type=Path)
    p.set_defaults(func=cmd_produce)

    p = sub.add_parser("worker", help="run the Faust worker (ingest, SLA, follow-ups, sinks)")
    p.add_argument(
        "--exit-when-idle",
        type=float,
        metavar="SECONDS",
        help="stop once caught up and idle this long",
    )
    p.add_argument("--loglevel", default="warn", choices=["crit", "error", "warn", "info", "debug"])
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser(
        "replay", help="process a JSON Lines file offline with the worker's processors"
    )
    p.add_argument("file", type=Path)
    p.add_argument("--config", type=Path, help="practices YAML (SPEC §3)")
    p.add_argument(
        "--clickhouse", help="chdb:///path or http(s)://host:8123 (default from settings)"
    )
    p.add_argument("--until", type=_instant, help="run the clock to this ISO-8601 instant")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("alerts", help="list alerts (SLA and follow-ups) from ClickHouse")
    p.add_argument("--clickhouse")
    p.add_argument("--practice")
    p.add_argument("--kind", help="e.g. sla.breached")
    p.add_argument("--open", action="store_true", help="only unresolved alerts")
    p.add_argument("--format", choices=["json", "table"], default="table")
    p.set_defaults(func=cmd_alerts)

    p = sub.add_parser("followups", help="the front desk's worklist of open enrollment follow-ups")
    p.add_argument("--clickhouse")
    p.add_argument("--practice", required=True)
    p.add_argument("--format", choices=["table", "json", "csv"], default="table")
    p.add_argument(
        "--now", type=_instant, help="overdue as of this instant (default: the data's clock)"
    )
    p.set_defaults(func=cmd_followups)

    p = sub.add_parser("dashboard", help="a practice's monthly portal dashboard (SPEC §1, §4)")
    p.add_argument("--clickhouse", help="chdb:///path or http(s)://host:8123 (default: settings)")
    p.add_argument("--practice", required=True)
    p.add_argument("--month", required=True, help="YYYY-MM, in the practice's time zone")
    p.add_argument("--format", choices=["text", "json", "html"], default="text")
    p.add_argument("--out", type=Path, help="write to this file instead of stdout")
    p.set_defaults(func=cmd_dashboard)

    p = sub.add_parser("config", help="print the effective settings (secrets masked)")
    p.set_defaults(func=cmd_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from portal_pulse.pseudonym import MissingPseudonymKey

    try:
        return int(args.func(args) or 0)
    except MissingPseudonymKey as exc:
        print(f"portal-pulse: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
