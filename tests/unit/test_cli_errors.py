"""The CLI as a user meets it: one-line errors with documented exit codes, and help that explains.

Every case runs ``python -m portal_pulse.cli`` in a subprocess, as a user would, and checks the
exit code, that stderr has at most two lines and that no traceback leaks. None needs a broker:
"unreachable" is a free port nothing listens on. The tests that need a broker or a listener are
in tests/integration (test_cli_kafka.py, test_clickhouse_tls.py).
"""

from __future__ import annotations

import json
import os
import pty
import select
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from portal_pulse.cli import ALERT_KINDS, build_parser, main
from portal_pulse.errors import EXIT_NO_DATA, EXIT_UNREACHABLE, EXIT_USAGE

ROOT = Path(__file__).resolve().parents[2]
KEY = "unit-test-key-not-a-secret-32-bytes"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PORTAL_PULSE_")
        and k not in ("KAFKA_BOOTSTRAP_SERVERS", "SCHEMA_REGISTRY_URL")
    }
    env.update(
        {
            "PORTAL_PULSE_DATA_DIR": str(tmp_path / "var"),
            "PORTAL_PULSE_BROKER_PORT": str(free_port()),
            "PYTHONPATH": str(ROOT),
        }
    )
    env.update(extra)
    return env


def run(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "portal_pulse.cli", *args],
        env=env or _env(tmp_path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def assert_user_error(result: subprocess.CompletedProcess, code: int, *needles: str) -> str:
    """Exit ``code``, at most two lines on stderr, no traceback; returns stderr."""
    err = result.stderr
    assert result.returncode == code, (result.returncode, err)
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert 1 <= len(lines) <= 2, err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


# -- practices files ---------------------------------------------------------------------------

BAD_PRACTICES = {
    "unknown_zone": ("practices:\n  P1:\n    timezone: Mars/Olympus\n", "unknown time zone"),
    "overlapping_hours": (
        'practices:\n  P1:\n    hours: {mon: "08:00-12:00,11:00-13:00"}\n',
        "overlap",
    ),
    "unknown_key": ("practices:\n  P1:\n    colour: blue\n", "unknown key"),
    "malformed_yaml": ("practices:\n  P1: [\n", "invalid YAML at line"),
}


@pytest.mark.parametrize("case", sorted(BAD_PRACTICES))
def test_practices_file_error_is_one_line(case: str, tmp_path: Path) -> None:
    text, needle = BAD_PRACTICES[case]
    path = tmp_path / f"{case}.yaml"
    path.write_text(text)
    result = run(tmp_path, "config", "check", str(path))
    err = assert_user_error(result, EXIT_USAGE, needle, f"practices file {path}")
    assert len(err.strip().splitlines()) == 1
    assert result.stdout == ""


def test_practices_error_stops_replay_before_any_work(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD_PRACTICES["unknown_zone"][0])
    recording = tmp_path / "events.jsonl"
    recording.write_text("{}\n")
    chdb = tmp_path / "chdb"
    env = _env(tmp_path, PORTAL_PULSE_PSEUDONYM_KEY=KEY)
    result = run(
        tmp_path, "replay", str(recording), "--config", str(path), "--clickhouse",
        f"chdb://{chdb}", env=env,
    )  # fmt: skip
    assert_user_error(result, EXIT_USAGE, "unknown time zone")
    assert not chdb.exists()


def test_debug_flag_and_env_show_the_traceback(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD_PRACTICES["unknown_key"][0])
    for args, extra in (
        (("--debug", "config", "check", str(path)), {}),
        (("config", "check", str(path), "--debug"), {}),
        (("config", "check", str(path)), {"PORTAL_PULSE_DEBUG": "1"}),
    ):
        result = run(tmp_path, *args, env=_env(tmp_path, **extra))
        assert result.returncode == EXIT_USAGE
        assert "Traceback" in result.stderr
        assert result.stderr.strip().splitlines()[-1].startswith("portal-pulse config: ")


def test_unexpected_error_is_one_line_with_a_hint(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import portal_pulse.cli as cli

    def boom(args: object) -> int:
        raise RuntimeError("something broke\nsecond line")

    monkeypatch.delenv("PORTAL_PULSE_DEBUG", raising=False)
    monkeypatch.setattr(cli, "cmd_config", boom)
    assert main(["config"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "portal-pulse config: unexpected error RuntimeError: something broke "
        "(rerun with --debug for the traceback)"
    ]


def test_bad_environment_setting_is_named(tmp_path: Path) -> None:
    env = _env(tmp_path, PORTAL_PULSE_RAW_PARTITIONS="four")
    result = run(tmp_path, "config", env=env)
    assert_user_error(result, EXIT_USAGE, "invalid setting PORTAL_PULSE_RAW_PARTITIONS", "'four'")


# -- ClickHouse URLs and empty databases -------------------------------------------------------


def test_unsupported_clickhouse_url(tmp_path: Path) -> None:
    result = run(tmp_path, "alerts", "--clickhouse", "ftp://bi:pw@clickhouse.example/db")
    err = assert_user_error(result, EXIT_USAGE, "unsupported ClickHouse URL", "chdb:///")
    assert "pw" not in err.replace("portal-pulse", "")


def test_unreachable_clickhouse_url_names_it_without_the_password(tmp_path: Path) -> None:
    port = free_port()
    started = time.monotonic()
    result = run(tmp_path, "alerts", "--clickhouse", f"http://bi:hunter2@127.0.0.1:{port}/db")
    assert time.monotonic() - started < 30
    err = assert_user_error(result, EXIT_UNREACHABLE, f"127.0.0.1:{port}", "connection refused")
    assert "hunter2" not in err


@pytest.mark.parametrize(
    "args",
    [
        ("alerts",),
        ("followups", "--practice", "P001"),
        ("dashboard", "--practice", "P001", "--month", "2026-01"),
    ],
    ids=["alerts", "followups", "dashboard"],
)
def test_read_of_a_missing_chdb_path_creates_nothing(args: tuple[str, ...], tmp_path: Path) -> None:
    chdb = tmp_path / "never-written" / "chdb"
    result = run(tmp_path, *args, "--clickhouse", f"chdb://{chdb}")
    assert_user_error(
        result, EXIT_NO_DATA, f"no Portal Pulse tables at {chdb}", "run the worker or replay first"
    )
    assert not chdb.parent.exists()


def test_default_chdb_path_is_not_created_by_a_read(tmp_path: Path) -> None:
    result = run(tmp_path, "alerts")
    assert_user_error(result, EXIT_NO_DATA, "no Portal Pulse tables at")
    assert not (tmp_path / "var").exists()


# -- input files -------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["produce", "replay"])
def test_missing_input_file(command: str, tmp_path: Path) -> None:
    env = _env(tmp_path, PORTAL_PULSE_PSEUDONYM_KEY=KEY)
    result = run(tmp_path, command, "no-such.jsonl", env=env)
    assert_user_error(result, EXIT_USAGE, "no-such.jsonl: no such file")
    assert not (tmp_path / "var").exists()


def test_input_that_is_a_directory(tmp_path: Path) -> None:
    result = run(
        tmp_path, "replay", str(tmp_path), env=_env(tmp_path, PORTAL_PULSE_PSEUDONYM_KEY=KEY)
    )
    assert_user_error(result, EXIT_USAGE, "not a file")


# -- Kafka: never started behind the user's back, unreachable in bounded time --------------------


@pytest.mark.parametrize("command", ["produce", "worker"])
def test_no_broker_configured_says_how_to_start_one(command: str, tmp_path: Path) -> None:
    recording = tmp_path / "events.jsonl"
    recording.write_text("{}\n")
    env = _env(tmp_path, PORTAL_PULSE_PSEUDONYM_KEY=KEY)
    args = (command, str(recording)) if command == "produce" else (command,)
    started = time.monotonic()
    result = run(tmp_path, *args, env=env)
    assert time.monotonic() - started < 15
    assert_user_error(
        result, EXIT_UNREACHABLE, "portal-pulse broker start", "KAFKA_BOOTSTRAP_SERVERS"
    )
    # Nothing was assembled or started under the data directory.
    assert not (tmp_path / "var" / "kafka").exists()


@pytest.mark.parametrize("how", ["option", "env"])
@pytest.mark.parametrize("command", ["produce", "worker"])
def test_unreachable_kafka_is_one_line_within_ten_seconds(
    command: str, how: str, tmp_path: Path
) -> None:
    recording = tmp_path / "events.jsonl"
    recording.write_text("{}\n")
    address = f"127.0.0.1:{free_port()}"
    env = _env(tmp_path, PORTAL_PULSE_PSEUDONYM_KEY=KEY)
    args = [command, str(recording)] if command == "produce" else [command]
    if how == "option":
        args += ["--bootstrap-servers", address]
    else:
        env["KAFKA_BOOTSTRAP_SERVERS"] = address
    started = time.monotonic()
    result = run(tmp_path, *args, env=env)
    elapsed = time.monotonic() - started
    assert_user_error(result, EXIT_UNREACHABLE, f"Kafka at {address} is not reachable")
    assert elapsed < 15, elapsed  # 10 s bound plus interpreter start
    assert "%3|" not in result.stderr and "rdkafka" not in result.stderr.lower()


def test_broker_status_reports_the_configured_port(tmp_path: Path) -> None:
    env = _env(tmp_path)
    port = env["PORTAL_PULSE_BROKER_PORT"]
    result = run(tmp_path, "broker", "status", env=env)
    assert result.returncode == EXIT_UNREACHABLE
    assert result.stdout.strip().startswith("not running")
    assert f"port {port}" in result.stdout
    assert str(tmp_path / "var" / "kafka") in result.stdout
    assert "Traceback" not in result.stderr


def test_broker_status_says_when_the_port_is_taken_by_something_else(tmp_path: Path) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        port = server.getsockname()[1]
        env = _env(tmp_path, PORTAL_PULSE_BROKER_PORT=str(port))
        result = run(tmp_path, "broker", "status", env=env)
    assert result.returncode == EXIT_UNREACHABLE
    assert "not Kafka" in result.stdout or "does not answer" in result.stdout, result.stdout


# -- alerts: kinds, practices, formats (one replayed database) -----------------------------------


def test_unknown_kind_lists_the_valid_ones(tmp_path: Path) -> None:
    result = run(tmp_path, "alerts", "--kind", "sla.late")
    err = assert_user_error(result, EXIT_USAGE, "invalid choice: 'sla.late'")
    for kind in ALERT_KINDS:
        assert kind in err


def test_alert_kinds_match_the_domain() -> None:
    from portal_pulse.domain.followups import FOLLOWUP_KINDS
    from portal_pulse.domain.sla import ALERT_KINDS as SLA_KINDS

    assert set(ALERT_KINDS) == set(SLA_KINDS) | set(FOLLOWUP_KINDS)


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A small simulated recording (with a non-UTF-8 line added) replayed into chDB."""
    root = tmp_path_factory.mktemp("replayed")
    env = _env(root, PORTAL_PULSE_PSEUDONYM_KEY=KEY)
    recording = root / "events.jsonl"
    result = run(
        root, "simulate", "--practices", "2", "--patients", "30", "--months", "1",
        "--bad-fraction", "0.01", "--out", str(recording), env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    with open(recording, "ab") as fh:
        fh.write(b'{"event_id": "latin1", "note": "caf\xe9"}\n')
    chdb = root / "chdb"
    result = run(
        root, "replay", str(recording), "--config", str(ROOT / "config" / "practices.yaml"),
        "--clickhouse", f"chdb://{chdb}", "--until", "2026-03-01T00:00:00Z", env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return chdb, {"stdout": result.stdout, "stderr": result.stderr}


def test_non_utf8_line_is_one_dead_letter_in_replay(replayed: tuple[Path, dict[str, str]]) -> None:
    _, out = replayed
    assert "dead letter: bad_encoding × 1" in out["stdout"]
    assert "Traceback" not in out["stderr"]


def test_unknown_practice_says_so(replayed: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    chdb, _ = replayed
    result = run(tmp_path, "alerts", "--clickhouse", f"chdb://{chdb}", "--practice", "P999")
    assert_user_error(result, EXIT_NO_DATA, "no practice 'P999'", "P001")


def test_alerts_formats(replayed: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    chdb, _ = replayed
    url = f"chdb://{chdb}"
    as_json = run(tmp_path, "alerts", "--clickhouse", url, "--practice", "P001", "--format", "json")
    assert as_json.returncode == 0, as_json.stderr
    rows = json.loads(as_json.stdout)
    as_csv = run(tmp_path, "alerts", "--clickhouse", url, "--practice", "P001", "--format", "csv")
    assert as_csv.returncode == 0, as_csv.stderr
    lines = as_csv.stdout.splitlines()
    assert lines[0].split(",")[:3] == ["alert_id", "kind", "practice_id"]
    assert len(lines) == len(rows) + 1
    table = run(tmp_path, "alerts", "--clickhouse", url, "--practice", "P001")
    assert table.returncode == 0 and table.stdout.startswith("kind")


def test_alerts_withdrawn_filter(replayed: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    """A replay applies events in event-time order: it withdraws nothing. --withdrawn show
    lists what the default lists, --withdrawn only nothing; with --open it is a usage error."""
    chdb, _ = replayed
    url = f"chdb://{chdb}"
    base = ("alerts", "--clickhouse", url, "--practice", "P001", "--format", "json")
    default = json.loads(run(tmp_path, *base).stdout)
    assert default and all(row["withdrawn_at"] is None for row in default)
    assert json.loads(run(tmp_path, *base, "--withdrawn", "show").stdout) == default
    assert json.loads(run(tmp_path, *base, "--withdrawn", "only").stdout) == []
    result = run(tmp_path, "alerts", "--clickhouse", url, "--open", "--withdrawn", "only")
    assert_user_error(result, EXIT_USAGE, "--open lists alerts that stand")


# -- help, version, output ----------------------------------------------------------------------


def test_version(tmp_path: Path) -> None:
    from importlib.metadata import version

    result = run(tmp_path, "--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"portal-pulse {version('portal-pulse')}"


COMMANDS = (
    "demo", "broker", "simulate", "produce", "worker", "replay", "alerts", "followups",
    "dashboard", "status", "config",
)  # fmt: skip


def _subparsers() -> dict:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return action.choices  # type: ignore[return-value]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_has_help_with_its_default_and_an_example(command: str) -> None:
    sub = _subparsers()[command]
    assert (sub.epilog or "").startswith("example: portal-pulse ")
    text = sub.format_help()
    for action in sub._actions:
        if action.help == "==SUPPRESS==" or action.dest == "help":
            continue
        assert action.help, (command, action.dest)
        if action.option_strings and action.default not in (None, False):
            assert "default" in action.help or f"(default: {action.default})" in " ".join(
                text.split()
            ), (command, action.dest)


def test_help_runs_for_every_command(tmp_path: Path) -> None:
    assert set(COMMANDS) == set(_subparsers())
    for command in COMMANDS:
        result = run(tmp_path, command, "--help")
        assert result.returncode == 0, result.stderr
        assert "example: portal-pulse" in result.stdout


def test_usage_error_is_two_lines(tmp_path: Path) -> None:
    result = run(tmp_path, "alerts", "--no-such-option")
    assert_user_error(result, EXIT_USAGE, "unrecognized arguments: --no-such-option", "--help'")


def test_simulate_prints_a_readable_summary_and_no_progress_when_piped(tmp_path: Path) -> None:
    out = tmp_path / "sim.jsonl"
    result = run(
        tmp_path, "simulate", "--practices", "1", "--patients", "20", "--months", "1",
        "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "SimulationSummary" not in result.stdout and "PosixPath" not in result.stdout
    assert result.stdout.startswith(f"wrote {out}: ")
    assert "valid events" in result.stdout
    assert result.stderr == ""
    assert "\r" not in result.stdout and "\x1b" not in result.stdout


def test_simulate_bad_month_is_a_usage_error(tmp_path: Path) -> None:
    result = run(tmp_path, "simulate", "--start", "January", "--out", str(tmp_path / "x.jsonl"))
    assert_user_error(result, EXIT_USAGE, "--start 'January' is not YYYY-MM")


def test_simulate_shows_progress_on_a_terminal(tmp_path: Path) -> None:
    """Under a pseudo-terminal the same command draws a tqdm bar (description and rate)."""
    out = tmp_path / "sim.jsonl"
    pid, fd = pty.fork()
    if pid == 0:  # child: stdout and stderr are the terminal
        os.chdir(tmp_path)
        env = _env(tmp_path, TERM="xterm")
        os.execve(
            sys.executable,
            [sys.executable, "-m", "portal_pulse.cli", "simulate", "--practices", "1",
             "--patients", "200", "--months", "1", "--out", str(out)],
            env,
        )  # fmt: skip
    chunks = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 1)
        if not ready:
            continue
        try:
            data = os.read(fd, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    _, status = os.waitpid(pid, 0)
    text = b"".join(chunks).decode("utf-8", "replace")
    assert os.waitstatus_to_exitcode(status) == 0, text
    assert "simulating" in text and "events" in text
    assert "wrote " in text


# -- config ----------------------------------------------------------------------------------


def test_config_masks_every_secret_and_shows_effective_defaults(tmp_path: Path) -> None:
    env = _env(
        tmp_path,
        PORTAL_PULSE_KAFKA_SASL_PASSWORD="sasl-pw-123",
        PORTAL_PULSE_CLICKHOUSE_URL="https://bi:ch-pw-456@clickhouse.example:8443/default",
        PORTAL_PULSE_CLICKHOUSE_PASSWORD="ch-pw-789",
        PORTAL_PULSE_WEBHOOK_URL="https://hooks.example/services/T0/B0/tok-abc?key=qs-def",
        SCHEMA_REGISTRY_URL="https://reg:reg-pw-000@registry.example",
        PORTAL_PULSE_PSEUDONYM_KEY="key-value-111-not-a-secret-32-bytes",
    )
    result = run(tmp_path, "config", env=env)
    assert result.returncode == 0, result.stderr
    for secret in ("sasl-pw-123", "ch-pw-456", "ch-pw-789", "tok-abc", "qs-def", "reg-pw-000",
                   "key-value-111-not-a-secret-32-bytes", "T0/B0"):  # fmt: skip
        assert secret not in result.stdout, secret
    shown = json.loads(result.stdout)
    assert shown["clickhouse_url"] == "https://bi:***@clickhouse.example:8443/default"
    assert shown["webhook_url"] == "https://hooks.example/***"


def test_config_without_settings_shows_the_defaults_it_would_use(tmp_path: Path) -> None:
    result = run(tmp_path, "config")
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["clickhouse_url"] == f"chdb://{(tmp_path / 'var' / 'chdb').resolve()}"
    assert shown["practices_file"] == "(built-in defaults)"
    assert shown["kafka_bootstrap_servers"].startswith("127.0.0.1:")
    assert shown["sink_batch_size"] == 10000


def test_config_check_prints_each_practice_effective_rules(tmp_path: Path) -> None:
    result = run(tmp_path, "config", "check", str(ROOT / "config" / "practices.yaml"))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "valid; 3 practices listed" in out
    section = out.split("\nP003\n", 1)[1].split("\n\n", 1)[0]
    assert "America/Los_Angeles" in section
    assert "Sat 09:00-12:00" in section
    assert "240 business minutes" in section  # its own internal target
    assert "540 business minutes" in section  # inherited from default
    assert "2026-01-19" in section  # inherited holidays
    p004 = out.split("\nP004\n", 1)[1]
    assert "Europe/London" in p004 and "2026-12-28" in p004


def test_config_check_without_a_file_says_what_to_pass(tmp_path: Path) -> None:
    result = run(tmp_path, "config", "check")
    assert_user_error(result, EXIT_USAGE, "config check PRACTICES.yaml")


def test_pyproject_license_is_an_spdx_string_and_setuptools_supports_it() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["license"] == "Apache-2.0"
    assert "setuptools>=77" in project["build-system"]["requires"]
    assert any(dep.startswith("tqdm") for dep in project["project"]["dependencies"])


def test_a_sigterm_while_the_worker_starts_is_a_clean_stop() -> None:
    import signal
    import subprocess
    import sys

    code = (
        "from portal_pulse.cli import _stop_cleanly_until_started\n"
        "_stop_cleanly_until_started()\n"
        "import time\n"
        "print('starting', flush=True)\n"
        "time.sleep(60)  # imports, topics, migrations...\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "starting"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
