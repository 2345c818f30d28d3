"""``portal-pulse``: every user-facing command. Imports are lazy so ``--help`` stays fast.

Errors: a mistake the user can fix (``UserError``, a bad practices file, a missing key) prints
``portal-pulse <command>: <message>`` on stderr and exits with its documented code
(docs/cli.md); anything else prints one line naming the exception and exits 1. ``--debug`` or
``PORTAL_PULSE_DEBUG=1`` adds the traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from datetime import date, datetime
from pathlib import Path

from portal_pulse.errors import EXIT_NO_DATA, EXIT_UNREACHABLE, EXIT_USAGE, UserError

__all__ = ["main"]

logger = logging.getLogger("portal_pulse")

ALERT_KINDS = (
    "sla.at_risk", "sla.internal_missed", "sla.breached",
    "enrollment.invite_not_activated", "enrollment.no_first_login",
    "enrollment.app_not_installed", "enrollment.dormant",
)  # fmt: skip
"""What ``alerts --kind`` accepts (portal_pulse.domain.sla and .followups; a unit test checks)."""


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
        raise UserError(f"--start {text!r} is not YYYY-MM") from None


def _clickhouse(url: str | None, *, create: bool = False):  # type: ignore[no-untyped-def]
    """A ClickHouse client; readers (``create=False``) never create a database or a directory."""
    from sinks.client import connect

    settings = _settings()
    dsn = url or settings.clickhouse_dsn
    password = (
        settings.clickhouse_password.get_secret_value() if settings.clickhouse_password else None
    )
    _warn_cleartext_http(dsn, bool(password))
    if not create and dsn.startswith("chdb://"):
        remote = _worker_holding(dsn)
        if remote is not None:
            return remote
    try:
        return connect(
            dsn,
            user=settings.clickhouse_user,
            password=password,
            verify=settings.clickhouse_verify_tls,
            create=create,
        )
    except Exception as exc:
        if dsn.startswith("chdb://") and "EmbeddedServer" in str(exc):
            raise _held_elsewhere(dsn.removeprefix("chdb://")) from None
        raise


def _worker_holding(dsn: str):  # type: ignore[no-untyped-def]
    """The read model through the worker holding this embedded database, if one runs.

    Its address and token are trusted only from its private directory (this user's, mode
    0700, files 0600); anything else is a one-line error saying what is wrong.
    """
    from portal_pulse.errors import EXIT_UNREACHABLE, UserError
    from sinks.remote import runtime_dir, worker_for

    settings = _settings()
    directory = runtime_dir(dsn, settings.data_dir)
    token = settings.web_token.get_secret_value() if settings.web_token else None
    reads, pid = worker_for(directory, token)
    if reads is None and pid is not None:
        raise UserError(
            f"{dsn.removeprefix('chdb://')} is held by worker pid {pid}, which does not answer "
            f"on its HTTP endpoint ({directory}); wait for it to start or stop it",
            EXIT_UNREACHABLE,
        )
    return reads


def _practice_id(practice: str | None) -> str | None:
    """A --practice value that can be a practice id (SPEC §2), checked before any read."""
    from portal_pulse.reports.reads import BadParameter, check_practice_id

    if practice is None:
        return None
    try:
        return check_practice_id(practice)
    except BadParameter as exc:
        raise UserError(f"--practice: {exc}") from None


def _held_elsewhere(path: str) -> Exception:
    """One line naming the process that holds an embedded database (Linux: from /proc)."""
    from portal_pulse.errors import EXIT_UNREACHABLE, UserError

    holder = "another process"
    target = str(Path(path).resolve())
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if any(str(fd.readlink()).startswith(target) for fd in (proc / "fd").iterdir()):
                name = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:80].strip()
                holder = f"process {proc.name} ({name})"
                break
        except OSError:
            continue
    return UserError(
        f"{path} is held by {holder}; chDB opens a path in one process at a time: stop it, or "
        "run the worker (it serves these reads while it holds the path)",
        EXIT_UNREACHABLE,
    )


def _warn_cleartext_http(dsn: str, has_password: bool) -> None:
    """A password over http:// travels as it is: say so unless the server is local."""
    from urllib.parse import urlparse

    try:
        parsed = urlparse(dsn)
        secret = has_password or parsed.password is not None
    except ValueError:
        return
    if parsed.scheme != "http" or not secret:
        return
    if parsed.hostname in ("127.0.0.1", "localhost", "::1"):
        return
    print(
        f"portal-pulse: warning: http:// sends the ClickHouse password to {parsed.hostname} "
        "unencrypted; use https://",
        file=sys.stderr,
    )


def _input_file(path: Path) -> Path:
    """A recording the user named: it must exist and be a readable file."""
    if not path.exists():
        raise UserError(f"{path}: no such file")
    if not path.is_file():
        raise UserError(f"{path}: not a file")
    if not os.access(path, os.R_OK):
        raise UserError(f"{path}: not readable")
    return path


def _practices(path: Path | None):  # type: ignore[no-untyped-def]
    """The practice rules, loaded once up front, so a bad file fails before any other work."""
    from portal_pulse.domain.practices import PracticeConfigError, Practices

    if path is not None:
        _input_file(Path(path))
    try:
        return Practices.load(path)
    except UnicodeDecodeError:
        raise UserError(f"practices file {path}: not UTF-8 text") from None
    except PracticeConfigError as exc:
        raise UserError(f"practices file {path}: {_practice_problem(exc, path)}") from None


def _practice_problem(exc: Exception, path: Path | None = None) -> str:
    """The error without the placeholders (and the path) used for file-level problems."""
    text = str(exc).replace("practice '<file>', field '<root>': ", "")
    if path is not None:
        text = text.replace(f"{path}: ", "")
    return text.replace("practice '<file>', ", "top level, ")


def _kafka(settings, override: str | None) -> str:  # type: ignore[no-untyped-def]
    """Bootstrap servers for produce and worker: found, never started, and checked to answer."""
    from portal_pulse.broker import check_kafka, find_bootstrap

    bootstrap = find_bootstrap(override, settings.kafka_bootstrap_servers, settings.broker_port)
    _warn_cleartext_sasl(settings, bootstrap)
    check_kafka(bootstrap, settings.kafka_client_config())
    return bootstrap


def _warn_cleartext_sasl(settings, bootstrap: str) -> None:  # type: ignore[no-untyped-def]
    """SASL/PLAIN without TLS sends the password as it is: say so unless the broker is local."""
    if settings.kafka_security_protocol != "SASL_PLAINTEXT":
        return
    if settings.kafka_sasl_mechanism != "PLAIN":
        return
    hosts = {part.rsplit(":", 1)[0].strip("[]") for part in bootstrap.split(",")}
    if hosts <= {"127.0.0.1", "localhost", "::1"}:
        return
    print(
        "portal-pulse: warning: SASL/PLAIN over SASL_PLAINTEXT sends the Kafka password "
        "unencrypted; set PORTAL_PULSE_KAFKA_SECURITY_PROTOCOL=SASL_SSL",
        file=sys.stderr,
    )


def cmd_broker(args: argparse.Namespace) -> int:
    from portal_pulse.broker import LocalBroker, _port_open, resolve_bootstrap

    settings = _settings()
    port = args.port if args.port is not None else settings.broker_port
    home = settings.data_dir / "kafka"
    broker = LocalBroker(home, port=port, controller_port=port + 1)
    if args.action == "assemble":
        broker.assemble()
        print(f"Kafka jars in {broker.libs}")
    elif args.action == "start":
        print(resolve_bootstrap(settings.data_dir) if args.any else broker.start())
    elif args.action == "stop":
        pid = broker.running_pid()
        broker.stop()
        print(f"stopped (pid {pid})" if pid else f"not running (data in {home})")
    else:
        return _broker_status(broker, home, _port_open)
    return 0


def _broker_status(broker, home: Path, port_open) -> int:  # type: ignore[no-untyped-def]
    """What runs on the configured port, and whether it is the broker of this data directory."""
    pid = broker.running_pid()
    answers = broker.ready()
    if pid and answers:
        print(f"running on {broker.bootstrap} (pid {pid}, data in {home})")
        return 0
    if pid:
        print(
            f"process {pid} from {home} is alive but {broker.bootstrap} does not answer "
            f"(starting, or see {broker.log_file})"
        )
        return EXIT_UNREACHABLE
    if answers:
        print(f"a Kafka broker answers on {broker.bootstrap}, but it was not started from {home}")
        return 0
    if port_open("127.0.0.1", broker.port):
        print(f"not running; port {broker.port} is taken by a process that is not Kafka")
        return EXIT_UNREACHABLE
    print(f"not running (port {broker.port}, data in {home})")
    return EXIT_UNREACHABLE


def cmd_simulate(args: argparse.Namespace) -> int:
    from portal_pulse.progress import progress_for_terminal
    from portal_pulse.simulate import SimulationSpec, simulate_to_file

    if not args.out.parent.is_dir():
        raise UserError(f"{args.out.parent}: no such directory")
    try:
        spec = SimulationSpec(
            practices=args.practices,
            patients=args.patients,
            months=args.months,
            seed=args.seed,
            bad_fraction=args.bad_fraction,
            **({"start": _month(args.start)} if args.start else {}),
        )
    except ValueError as exc:
        raise UserError(str(exc)) from None
    summary = simulate_to_file(
        spec, args.out, progress=progress_for_terminal(), arrival=args.arrival
    )
    print(f"wrote {args.out}: {summary}")
    for kind, n in summary.bad_by_kind.items():
        print(f"  invalid on purpose: {kind} × {n:,}")
    if summary.lags:
        print(
            f"  arrival order {summary.arrival}: {summary.reordered:,} events written after "
            "a later-stamped one"
        )
    for source, lag in summary.lags.items():
        print(f"  arrival lag, {source}: {lag}")
    return 0


def cmd_produce(args: argparse.Namespace) -> int:
    from portal_pulse.kafka_admin import ensure_topics
    from portal_pulse.produce import produce_file
    from portal_pulse.progress import progress_for_terminal

    settings = _settings()
    path = _input_file(args.file)
    bootstrap = _kafka(settings, args.bootstrap_servers)
    ensure_topics(settings, bootstrap)
    summary = produce_file(settings, bootstrap, path, progress=progress_for_terminal())
    print(
        f"produced {summary.valid:,} valid events and {summary.invalid:,} invalid lines "
        f"to {bootstrap}"
    )
    for err in summary.errors:
        print(f"  invalid (sent for dead-lettering): {err}")
    if summary.invalid > len(summary.errors):
        print(f"  … and {summary.invalid - len(summary.errors):,} more invalid lines")
    return 0


def _stop_cleanly_until_started() -> None:
    """A SIGTERM while the worker is still starting (imports, topics, migrations: seconds on a
    busy machine) is a clean stop, not a death by signal: nothing has been read, so there is
    nothing to checkpoint. The worker's own handlers replace this one once it runs."""
    import signal

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)


def cmd_worker(args: argparse.Namespace) -> int:
    _stop_cleanly_until_started()
    from portal_pulse.pseudonym import Pseudonymizer, load_key
    from portal_pulse.worker import run_worker

    settings = _settings()
    if args.web_port is not None:
        settings = settings.model_copy(update={"web_port": args.web_port})
    # Configuration first: a bad practices file or a missing key needs no broker to report.
    _practices(settings.practices_file)
    Pseudonymizer(load_key(settings))
    if settings.webhook_url:
        from portal_pulse.notify.webhook import check_webhook_url

        check_webhook_url(settings.webhook_url, require_tls=settings.webhook_require_tls)
    bootstrap = _kafka(settings, args.bootstrap_servers)
    run_worker(
        settings,
        bootstrap,
        exit_when_idle=args.exit_when_idle,
        loglevel=args.loglevel,
        role=args.role,
    )
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from portal_pulse.progress import progress_for_terminal
    from portal_pulse.pseudonym import Pseudonymizer, load_key
    from portal_pulse.replay import replay_file

    settings = _settings()
    if args.config:
        settings = settings.model_copy(update={"practices_file": Path(args.config)})
    path = _input_file(args.file)
    _practices(settings.practices_file)
    Pseudonymizer(load_key(settings))
    client = _clickhouse(args.clickhouse, create=True)
    summary = replay_file(
        settings, path, client, until=args.until, progress=progress_for_terminal()
    )
    print(
        f"replayed {summary.events:,} events ({summary.duplicates:,} duplicates dropped, "
        f"{summary.dead_letters:,} dead letters) → {summary.alerts:,} alert records, "
        f"{summary.responses:,} responses; clock at "
        f"{summary.clock.isoformat() if summary.clock else '-'}"
    )
    for reason, n in sorted(summary.reasons.items()):
        print(f"  dead letter: {reason} × {n:,}")
    return 0


def cmd_alerts(args: argparse.Namespace) -> int:
    from portal_pulse.reports.alerts import fetch_alerts, format_alerts, practice_ids

    if args.open and args.withdrawn == "only":
        raise UserError(
            "--open lists alerts that stand; a withdrawn alert never does: "
            "use --withdrawn only without --open",
            EXIT_USAGE,
        )
    _practice_id(args.practice)
    client = _clickhouse(args.clickhouse)
    if args.practice:
        known = practice_ids(client)
        if args.practice not in known:
            listed = ", ".join(known[:10]) + (", …" if len(known) > 10 else "")
            raise UserError(
                f"no practice {args.practice!r} in this database"
                + (f" (practices: {listed})" if known else " (it holds no events yet)"),
                EXIT_NO_DATA,
            )
    rows = fetch_alerts(
        client,
        practice=args.practice,
        open_only=args.open,
        kind=args.kind,
        withdrawn=args.withdrawn,
    )
    sys.stdout.write(format_alerts(rows, args.format))
    return 0


def cmd_followups(args: argparse.Namespace) -> int:
    from portal_pulse.errors import UserError
    from portal_pulse.pseudonym import MissingPseudonymKey, Pseudonymizer, load_key
    from portal_pulse.reports.followups import followups_command, load_roster, parse_kinds
    from portal_pulse.reports.local_time import configured_timezone

    settings = _settings()
    kinds = parse_kinds(args.kind)  # user mistakes first, before any database work
    _practice_id(args.practice)
    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit must be at least 1, got {args.limit}")
    roster = None
    if args.roster is not None:
        try:
            pseudonymize = Pseudonymizer(load_key(settings))
        except MissingPseudonymKey as exc:
            raise UserError(f"--roster needs the pipeline's pseudonym key: {exc}") from None
        roster = load_roster(args.roster, args.practice, pseudonymize)
    sys.stdout.write(
        followups_command(
            _clickhouse(args.clickhouse),
            args.practice,
            args.format,
            now=args.now,
            kinds=kinds,
            limit=args.limit,
            roster=roster,
            timezone=lambda: configured_timezone(settings.practices_file, args.practice),
        )
    )
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    from portal_pulse.reports.dashboard import check_month, dashboard_command
    from portal_pulse.reports.local_time import configured_timezone

    settings = _settings()
    check_month(args.month)  # a UserError before any database work
    _practice_id(args.practice)
    out = dashboard_command(
        _clickhouse(args.clickhouse),
        args.practice,
        args.month,
        args.format,
        timezone=lambda: configured_timezone(settings.practices_file, args.practice),
    )
    if args.out:
        Path(args.out).write_text(out, encoding="utf-8")
        print(f"wrote {args.out}")
    else:
        sys.stdout.write(out)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from portal_pulse.demo import run_demo

    return run_demo(args)


def cmd_status(args: argparse.Namespace) -> int:
    from portal_pulse.reports.status import fetch_status, render_status, status_token, worker_url
    from sinks.remote import runtime_dir
    from streams.web import web_url

    settings = _settings()
    directory = runtime_dir(settings.clickhouse_dsn, settings.data_dir)
    url = worker_url(args.worker, directory, web_url(settings))
    configured = settings.web_token.get_secret_value() if settings.web_token else None
    status = fetch_status(url, status_token(configured, directory, url))
    if args.format == "json":
        print(json.dumps(status, indent=2))
    else:
        sys.stdout.write(render_status(status, url))
    return 0 if status.get("ready") else 1


def cmd_config(args: argparse.Namespace) -> int:
    if args.action == "check":
        return _config_check(args)
    if args.file is not None:
        raise UserError("a file goes with 'config check FILE'; plain 'config' takes none")
    print(json.dumps(_settings().effective(), indent=2, default=str))
    return 0


def _config_check(args: argparse.Namespace) -> int:
    from portal_pulse.practices_report import describe_practices

    path = args.file or _settings().practices_file
    if path is None:
        raise UserError(
            "config check needs a practices file: portal-pulse config check PRACTICES.yaml "
            "(or set PORTAL_PULSE_PRACTICES_FILE)"
        )
    practices = _practices(Path(path))
    sys.stdout.write(describe_practices(practices, Path(path)))
    return 0


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps epilog line breaks; appends ``(default: …)`` where the help does not say it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            "default" in text
            or not action.option_strings
            or action.default in (None, False, argparse.SUPPRESS)
        ):
            return text
        return f"{text} (default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    """Usage errors in two lines (what is wrong, where to look), exit code 2."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # type: ignore[no-untyped-def]
        self.exit(EXIT_USAGE, f"{self.prog}: {message}\nsee '{self.prog} --help'\n")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("portal-pulse")
    except PackageNotFoundError:
        from portal_pulse import __version__

        return __version__


CLICKHOUSE_HELP = (
    "chdb:///absolute/path or http(s)://user@host:8123/db; https means TLS "
    "(default: PORTAL_PULSE_CLICKHOUSE_URL, else chdb://<data dir>/chdb)"
)
BOOTSTRAP_HELP = (
    "Kafka bootstrap servers, HOST:PORT[,HOST:PORT] (default: KAFKA_BOOTSTRAP_SERVERS, else "
    "the native broker on 127.0.0.1:PORTAL_PULSE_BROKER_PORT if it answers; never started here)"
)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="portal-pulse",
        description="Measure patient-portal adoption: Kafka + Faust agents + ClickHouse.",
        epilog="example: portal-pulse demo\n\n"
        "exit codes: 0 ok, 1 unexpected error, 2 usage or configuration error,\n"
        "3 Kafka or ClickHouse unreachable, 4 no data (docs/cli.md)",
    )
    parser.add_argument("--version", action="version", version=f"portal-pulse {_version()}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="log at DEBUG level and show the traceback of an error (or PORTAL_PULSE_DEBUG=1)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "demo",
        help="simulate practices, run them through Kafka and the worker into chDB, show results",
        description="The end-to-end demo: starts a Kafka broker if none is configured, "
        "simulates practices, produces, runs the worker until idle and prints what landed.",
        epilog="example: portal-pulse demo --practices 2 --patients 200 --months 2",
    )
    p.add_argument("--practices", type=int, default=3, help="number of practices")
    p.add_argument("--patients", type=int, default=400, help="patients per practice")
    p.add_argument("--months", type=int, default=3, help="months of activity")
    p.add_argument("--seed", type=int, default=7, help="random seed (same seed, same events)")
    p.add_argument(
        "--bad-fraction", type=float, default=0.002, help="share of invalid events mixed in"
    )
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "broker",
        help="the local Kafka broker (native, KRaft, loopback)",
        description="The native single-node Kafka broker under <data dir>/kafka. 'start' is, "
        "with 'demo', the only command that starts a broker.",
        epilog="example: portal-pulse broker start && portal-pulse broker status",
    )
    p.add_argument(
        "action",
        choices=["assemble", "start", "stop", "status"],
        help="assemble the jars from Maven Central, start, stop, or report on the broker",
    )
    p.add_argument(
        "--port",
        type=int,
        help="client port; the controller uses PORT+1 (default: PORTAL_PULSE_BROKER_PORT, "
        "else 19092)",
    )
    p.add_argument(
        "--any", action="store_true", help="start: follow the choice order (env, Docker, native)"
    )
    p.set_defaults(func=cmd_broker)

    p = sub.add_parser(
        "simulate",
        help="write a realistic, deterministic JSON Lines event recording",
        epilog="example: portal-pulse simulate --practices 3 --patients 500 --months 3 "
        "--out events.jsonl",
    )
    p.add_argument("--practices", type=int, default=3, help="number of practices (P001, P002, …)")
    p.add_argument("--patients", type=int, default=500, help="patients per practice")
    p.add_argument("--months", type=int, default=3, help="months of activity")
    p.add_argument("--seed", type=int, default=1, help="random seed (same seed, same file)")
    p.add_argument("--start", metavar="YYYY-MM", help="first month (default: 2026-01)")
    p.add_argument(
        "--bad-fraction", type=float, default=0.0, help="share of invalid events to mix in"
    )
    p.add_argument(
        "--arrival",
        choices=("ordered", "realistic", "portal-jitter"),
        default="ordered",
        help="line order: by occurred_at (default); as a pipeline receives them, each event "
        "late by a lag for its source (docs/events.md); or only portal events 0-30 s late",
    )
    p.add_argument("--out", type=Path, required=True, help="the JSON Lines file to write")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser(
        "produce",
        help="produce a JSON Lines file to the raw topics as Avro",
        description="Sends each valid line as Avro to its raw topic; invalid lines go as their "
        "original bytes, so the worker dead-letters them with a reason. Needs a running broker.",
        epilog="example: portal-pulse produce events.jsonl --bootstrap-servers 127.0.0.1:19092",
    )
    p.add_argument("file", type=Path, help="a JSON Lines recording (e.g. from simulate)")
    p.add_argument("--bootstrap-servers", metavar="HOST:PORT", help=BOOTSTRAP_HELP)
    p.set_defaults(func=cmd_produce)

    p = sub.add_parser(
        "worker",
        help="run the Faust worker (ingest, SLA, follow-ups, sinks)",
        description="Runs the Faust agents until stopped (SIGTERM) or, with --exit-when-idle, "
        "until caught up. Needs a running broker and a pseudonym key. --role splits the work: "
        "any number of 'process' workers (no ClickHouse) and 'sink' workers (ClickHouse "
        "writers; exactly one with chdb://).",
        epilog="example: portal-pulse worker --exit-when-idle 5; "
        "portal-pulse worker --role process",
    )
    p.add_argument(
        "--role",
        choices=["all", "process", "sink"],
        default="all",
        help="all: everything in one process (default); process: ingest, SLA, follow-ups, "
        "live metrics and the webhook, no ClickHouse (group <app_id>); sink: writes ClickHouse "
        "from the topics (group <app_id>-sink)",
    )
    p.add_argument(
        "--exit-when-idle",
        type=float,
        metavar="SECONDS",
        help="stop once the role's consumer group has committed every partition the role reads "
        "and nothing arrived for this long (default: run until stopped)",
    )
    p.add_argument(
        "--loglevel",
        default="info",
        choices=["crit", "error", "warn", "info", "debug"],
        help="the worker's log level (debug adds Faust's and aiokafka's own lines)",
    )
    p.add_argument(
        "--web-port",
        type=int,
        metavar="PORT",
        help="port of /healthz, /readyz, /metrics, /status (default: PORTAL_PULSE_WEB_PORT "
        "or 6066; 0 picks a free port, -1 turns the endpoint off)",
    )
    p.add_argument("--bootstrap-servers", metavar="HOST:PORT", help=BOOTSTRAP_HELP)
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser(
        "replay",
        help="process a JSON Lines file offline with the worker's processors",
        description="The worker's ingest and processors on a recording, in event-time order, "
        "without Kafka; writes the same ClickHouse tables (docs/time.md).",
        epilog="example: portal-pulse replay events.jsonl --config config/practices.yaml "
        "--clickhouse chdb://$PWD/var/replay",
    )
    p.add_argument("file", type=Path, help="a JSON Lines recording")
    p.add_argument(
        "--config",
        type=Path,
        metavar="PRACTICES.yaml",
        help="practice rules, docs/sla.md (default: PORTAL_PULSE_PRACTICES_FILE, else built-in)",
    )
    p.add_argument("--clickhouse", metavar="URL", help=CLICKHOUSE_HELP)
    p.add_argument(
        "--until",
        type=_instant,
        metavar="ISO-8601",
        help="run the clock on to this instant (default: the last event's time)",
    )
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser(
        "alerts",
        help="list alerts (SLA and follow-ups) from ClickHouse",
        description="SLA and follow-up alerts, latest version of each (docs/sla.md).",
        epilog="example: portal-pulse alerts --practice P001 --open --kind sla.breached",
    )
    p.add_argument("--clickhouse", metavar="URL", help=CLICKHOUSE_HELP)
    p.add_argument("--practice", help="only this practice, e.g. P001 (default: all)")
    p.add_argument(
        "--kind",
        choices=ALERT_KINDS,
        metavar="KIND",
        help=f"only this kind: {', '.join(ALERT_KINDS)} (default: all)",
    )
    p.add_argument(
        "--open", action="store_true", help="only open alerts: not resolved, not withdrawn"
    )
    p.add_argument(
        "--withdrawn",
        choices=["hide", "show", "only"],
        default="hide",
        help="alerts later data withdrew (docs/sla.md): hide them (default), show them with the "
        "others, or only them",
    )
    p.add_argument(
        "--format", choices=["table", "json", "csv"], default="table", help="output format"
    )
    p.set_defaults(func=cmd_alerts)

    p = sub.add_parser(
        "followups",
        help="the front desk's worklist of open enrollment follow-ups",
        description="Open enrollment follow-ups of one practice, most overdue first, due times "
        "in the practice's time zone. With --roster, the practice's own patient list is matched "
        "in memory and each follow-up shows the patient's id and roster columns (docs/followups.md).",
        epilog="example: portal-pulse followups --practice P001 --kind app_not_installed "
        "--limit 20 --roster patients.csv",
    )
    p.add_argument(
        "--clickhouse",
        help="chdb:///path or http(s)://user@host:8123/db (default: PORTAL_PULSE_CLICKHOUSE_URL)",
    )
    p.add_argument("--practice", required=True, help="practice id, e.g. P001")
    p.add_argument(
        "--kind",
        action="append",
        metavar="KIND",
        help="only this kind: invite_not_activated, no_first_login, app_not_installed or dormant "
        "(the enrollment. prefix is optional; repeat or separate with commas; default: all)",
    )
    p.add_argument("--limit", type=int, metavar="N", help="only the N most overdue (default: all)")
    p.add_argument(
        "--roster",
        type=Path,
        metavar="FILE.csv",
        help="the practice's patient list: a CSV whose header row has a patient_id column; "
        "matched with the pseudonym key, read only, never stored (default: none)",
    )
    p.add_argument(
        "--format",
        choices=["table", "json", "csv"],
        default="table",
        help="output format (default: table)",
    )
    p.add_argument(
        "--now",
        type=_instant,
        help="ISO-8601 instant to measure overdue against (default: the data's clock)",
    )
    p.set_defaults(func=cmd_followups)

    p = sub.add_parser(
        "dashboard",
        help="a practice's monthly portal dashboard",
        description="One practice's month from monthly_portal_performance: the text dashboard, "
        "the metrics as JSON, or a self-contained HTML page with the trailing 12 months "
        "(docs/metrics.md). Response times headline the median in business hours.",
        epilog="example: portal-pulse dashboard --practice P001 --month 2026-01 --format html "
        "--out dashboard.html",
    )
    p.add_argument(
        "--clickhouse",
        help="chdb:///path or http(s)://user@host:8123/db (default: PORTAL_PULSE_CLICKHOUSE_URL)",
    )
    p.add_argument("--practice", required=True, help="practice id, e.g. P001")
    p.add_argument(
        "--month", required=True, help="YYYY-MM, a calendar month in the practice's time zone"
    )
    p.add_argument(
        "--format",
        choices=["text", "json", "html"],
        default="text",
        help="output format (default: text)",
    )
    p.add_argument(
        "--out", type=Path, help="write to this file instead of stdout (default: stdout)"
    )
    p.set_defaults(func=cmd_dashboard)

    p = sub.add_parser(
        "status",
        help="is the worker ready and caught up? lag, event clocks, events/s, dead letters",
        description="Asks a running worker (its /status endpoint) and prints one screen: ready "
        "or not and why, lag per topic, event clock per partition, events/s over the last "
        "minute, dead letters by reason, open alerts by kind, the last error. Exit 0 when "
        "ready, 1 when not, 3 when no worker answers.",
        epilog="example: portal-pulse status --worker http://127.0.0.1:6066",
    )
    p.add_argument(
        "--worker",
        metavar="URL",
        help="the worker's HTTP address (default: the address the worker left beside the "
        "embedded database, else PORTAL_PULSE_WEB_HOST:PORTAL_PULSE_WEB_PORT)",
    )
    p.add_argument(
        "--format", choices=["text", "json"], default="text", help="output format (default: text)"
    )
    p.set_defaults(func=cmd_status)
    p = sub.add_parser(
        "config",
        help="print the effective settings (secrets masked), or check a practices file",
        description="Without an action: every setting as the commands will use it, defaults "
        "filled in, secrets masked. 'check FILE': validate a practices file and print each "
        "practice's effective rules (docs/sla.md).",
        epilog="example: portal-pulse config check config/practices.yaml",
    )
    p.add_argument(
        "action",
        nargs="?",
        choices=["show", "check"],
        default="show",
        help="show the settings, or check a practices file",
    )
    p.add_argument(
        "file",
        nargs="?",
        type=Path,
        metavar="PRACTICES.yaml",
        help="check: the practices file (default: PORTAL_PULSE_PRACTICES_FILE)",
    )
    p.set_defaults(func=cmd_config)

    # --debug is accepted after the command too (portal-pulse alerts --debug …).
    for command in sub.choices.values():
        command.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
        )
    return parser


def _debug_requested(args: argparse.Namespace) -> bool:
    env = os.environ.get("PORTAL_PULSE_DEBUG", "").strip().lower()
    return bool(getattr(args, "debug", False)) or env not in ("", "0", "false", "no")


def _as_user_error(exc: BaseException) -> UserError | None:
    """The exceptions that are a user's to fix, as ``UserError``; None for anything else."""
    from portal_pulse.broker import BrokerError
    from portal_pulse.domain.practices import PracticeConfigError
    from portal_pulse.pseudonym import MissingPseudonymKey

    if isinstance(exc, UserError):
        return exc
    if isinstance(exc, PracticeConfigError):
        return UserError(f"practices file: {_practice_problem(exc)}", EXIT_USAGE)
    if isinstance(exc, MissingPseudonymKey):
        return UserError(str(exc), EXIT_USAGE)
    if isinstance(exc, BrokerError):
        return UserError(str(exc).strip().splitlines()[0], EXIT_UNREACHABLE)
    return _settings_error(exc)


def _settings_error(exc: BaseException) -> UserError | None:
    """A bad environment variable (``PORTAL_PULSE_RAW_PARTITIONS=four``), named as set."""
    from pydantic import ValidationError

    if not isinstance(exc, ValidationError) or exc.title != "Settings":
        return None
    problems = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else "?"
        name = f"PORTAL_PULSE_{field.upper()}"
        secret = any(word in field for word in ("password", "key", "token"))
        shown = "" if secret else f" (got {str(error.get('input'))[:60]!r})"
        problems.append(f"{name}: {error['msg']}{shown}")
    more = f"; and {len(problems) - 1} more" if len(problems) > 1 else ""
    return UserError(f"invalid setting {problems[0]}{more}", EXIT_USAGE)


def _two_lines(text: str) -> str:
    """At most two lines, each with its control characters escaped (a message may quote input)."""
    from portal_pulse.printable import printable

    lines = [ln.rstrip() for ln in str(text).strip().splitlines() if ln.strip()] or ["(no detail)"]
    return "\n".join(printable(line) for line in lines[:2])


def main(argv: Sequence[str] | None = None) -> int:
    from portal_pulse.private_files import PRIVATE_UMASK

    # Everything portal-pulse creates (data dir, chDB store, state, keys, reports) is private to
    # its user: pseudonymised data is still PHI (docs/security.md).
    os.umask(PRIVATE_UMASK)
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = _debug_requested(args)
    if debug:
        os.environ["PORTAL_PULSE_DEBUG"] = "1"  # librdkafka's log lines too (portal_pulse.broker)
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from portal_pulse.logs import TextFormatter

    for handler in logging.getLogger().handlers:
        handler.setFormatter(TextFormatter())  # control characters escaped in every line
    name = f"portal-pulse {args.command}"
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if debug:
            import traceback

            traceback.print_exc()
        error = _as_user_error(exc)
        if error is not None:
            print(f"{name}: {_two_lines(str(error))}", file=sys.stderr)
            return error.exit_code
        detail = _two_lines(str(exc)).splitlines()[0]
        print(
            f"{name}: unexpected error {type(exc).__name__}: {detail[:200]}"
            + ("" if debug else " (rerun with --debug for the traceback)"),
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
