"""Fault injection: kills, SIGTERMs, sink faults, poison records and a broker outage.

Every scenario feeds the same recorded stream to a fresh pipeline, breaks the worker in its own
way, lets a final ``worker --exit-when-idle`` catch up and then requires exactly what an offline
``replay`` of the recording wrote (streams/checkpoint.py, docs/delivery-guarantees.md): every
valid event once in ``events`` *without* FINAL, the same alerts, response facts, monthly metrics
and dead letters, and a consumer group that committed everything it reads.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from portal_pulse.simulate import SimulationSpec, realistic_order, simulate
from tests.integration.conftest import LIVENESS_SCALE, Pipeline, free_port, query_chdb

# ``cpu_load``: every core busy for the module under PORTAL_PULSE_TEST_CPU_LOAD=1 (conftest).
pytestmark = [
    pytest.mark.integration,
    pytest.mark.faults,
    pytest.mark.usefixtures("cpu_load"),
]

SPEC = SimulationSpec(practices=2, patients=150, months=2, seed=11, bad_fraction=0.01)

# What SPEC §7.1 guarantees equal to the replay: the standing alerts (not withdrawn) and response
# facts, by their user-facing fields (a correction's version instants are bookkeeping).
ALERTS_SQL = (
    "SELECT alert_id, kind, practice_id, subject_id, patient_pseudonym, category, staff_pool, "
    "due_at, resolved_at, response_business_minutes FROM alerts FINAL "
    "WHERE withdrawn_at IS NULL ORDER BY alert_id"
)
RESPONSES_SQL = (
    "SELECT response_id, practice_id, thread_id, patient_pseudonym, category, routed_pool, "
    "replied_by_pool, first_message_at, clock_started_at, replied_at, messages_answered, "
    "response_business_minutes, response_wall_minutes, internal_due_at, external_due_at, "
    "met_internal_target, met_external_promise FROM message_responses FINAL "
    "WHERE withdrawn_at IS NULL ORDER BY response_id"
)
MONTHLY_SQL = "SELECT * FROM monthly_portal_performance ORDER BY practice_id, month"
# Without FINAL: a row written twice would show here.
EVENTS_SQL = (
    "SELECT count(), uniqExact(event_id), sum(cityHash64(event_id, patient_pseudonym)) FROM events"
)
DEAD_LETTERS_SQL = "SELECT reason, count() FROM dead_letters FINAL GROUP BY reason ORDER BY reason"
QUERIES = [ALERTS_SQL, RESPONSES_SQL, MONTHLY_SQL, EVENTS_SQL, DEAD_LETTERS_SQL]

POISON_MRN = "MRN-POISON-777"


# -- the shared recording and its replay ----------------------------------------------------------


def _instant(value: object) -> datetime:
    try:
        at = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)
    return at if at.tzinfo else datetime.min.replace(tzinfo=UTC)


def _rounded(rows: list[list[Any]]) -> list[list[Any]]:
    return [[round(v, 9) if isinstance(v, float) else v for v in row] for row in rows]


def _write_recording(path: Path, practices_file: Path, *, arrival: str = "ordered") -> None:
    """SPEC's stream (duplicates and invalid lines included) plus a far-future sentinel.

    As in test_replay_equivalence: the sentinel moves both clocks past every deadline of the
    data, its odd offset keeps any deadline out of the idle seconds the live worker adds.
    ``arrival="realistic"`` writes the same lines in a realistic arrival order (SPEC §7.1).
    """
    objects = list(simulate(SPEC))
    if arrival != "ordered":
        objects = realistic_order(objects, seed=SPEC.seed, mode=arrival)
    lines = [json.dumps(obj) for obj in objects]
    last = max(_instant(json.loads(x).get("occurred_at")) for x in lines)
    sentinel = last + timedelta(days=40, hours=7, minutes=13, seconds=17)
    lines.append(
        json.dumps(
            {
                "event_id": "sentinel-1",
                "event_type": "patient.seen",
                "occurred_at": sentinel.astimezone(UTC).isoformat(),
                "practice_id": "P001",
                "patient_id": "sentinel-patient",
                "encounter_id": "sentinel-encounter",
            }
        )
    )
    path.write_text("\n".join(lines) + "\n")
    zones = SPEC.timezones
    practices_file.write_text(
        yaml.safe_dump(
            {
                "practices": {
                    "default": {},
                    **{f"P{i + 1:03d}": {"timezone": zones[i]} for i in range(SPEC.practices)},
                }
            }
        )
    )


@dataclass(frozen=True)
class Recording:
    events: Path
    practices: Path

    @property
    def env(self) -> dict[str, str]:
        return {"PORTAL_PULSE_PRACTICES_FILE": str(self.practices)}


@dataclass(frozen=True)
class Baseline:
    alerts: list[list[Any]]
    responses: list[list[Any]]
    monthly: list[list[Any]]
    events: list[Any]  # count, distinct ids, checksum of (event_id, pseudonym)
    dead_letters: dict[str, int]


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Recording:
    root = tmp_path_factory.mktemp("fault-recording")
    rec = Recording(root / "events.jsonl", root / "practices.yaml")
    _write_recording(rec.events, rec.practices)
    return rec


@pytest.fixture(scope="module")
def baseline(
    recording: Recording, kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Baseline:
    """The recording replayed offline once per module: what every faulted run must equal."""
    return replay_baseline(recording, kafka_bootstrap, tmp_path_factory.mktemp("fault-replay"))


def replay_baseline(recording: Recording, kafka_bootstrap: str, root: Path) -> Baseline:
    replay_chdb = root / "replay-chdb"
    result = Pipeline(kafka_bootstrap, root).cli(
        "replay",
        str(recording.events),
        "--config",
        str(recording.practices),
        "--clickhouse",
        f"chdb://{replay_chdb}",
        env=recording.env,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    alerts, responses, monthly, events, dead = query_chdb(replay_chdb, QUERIES)
    base = Baseline(alerts, responses, monthly, events[0], {r: n for r, n in dead})
    count, distinct, _ = base.events
    assert count == distinct > 2000, "replay writes every valid event once"
    assert len(alerts) > 50 and len(responses) > 50, "the stream exercises alerts and responses"
    assert base.dead_letters, "the recording carries invalid lines"
    print(
        f"\nreplay baseline: {count} events, {len(alerts)} alerts, {len(responses)} responses, "
        f"{len(monthly)} monthly rows, dead letters {base.dead_letters}"
    )
    return base


def assert_matches_replay(
    pipeline: Pipeline,
    baseline: Baseline,
    *,
    label: str,
    extra_dead_letters: dict[str, int] | None = None,
    context: str = "",
    roles: tuple[str, ...] = ("all",),
) -> None:
    """The pipeline's tables equal the replay's; events exactly once without FINAL; the group
    of each of ``roles`` committed everything it reads."""
    alerts, responses, monthly, events, dead = query_chdb(pipeline.chdb, QUERIES)
    count, distinct, checksum = events[0]
    dead_letters = {r: n for r, n in dead}
    print(
        f"[{label}] events {count} (distinct {distinct}) vs replay {baseline.events[0]}; "
        f"alerts {len(alerts)} vs {len(baseline.alerts)}; responses {len(responses)} vs "
        f"{len(baseline.responses)}; monthly rows {len(monthly)} vs {len(baseline.monthly)}; "
        f"dead letters {dead_letters}"
    )
    tail = f"\n--- worker stderr (tail) ---\n{context[-3000:]}" if context else ""
    assert distinct == baseline.events[1], (
        f"distinct events {distinct} != {baseline.events[1]}{tail}"
    )
    assert count == distinct, f"{count - distinct} duplicate event rows without FINAL{tail}"
    assert checksum == baseline.events[2], f"same event ids and pseudonyms as replay{tail}"

    if alerts != baseline.alerts:
        got = {tuple(map(str, a)) for a in alerts}
        want = {tuple(map(str, a)) for a in baseline.alerts}
        missing, extra = sorted(want - got)[:5], sorted(got - want)[:5]
        pytest.fail(
            f"alerts differ: {len(want - got)} missing, {len(got - want)} extra\n"
            f"missing: {missing}\nextra: {extra}{tail}"
        )
    assert responses == baseline.responses, f"identical response facts{tail}"
    assert _rounded(monthly) == _rounded(baseline.monthly), f"identical monthly metrics{tail}"
    want_dead = dict(baseline.dead_letters)
    for reason, n in (extra_dead_letters or {}).items():
        want_dead[reason] = want_dead.get(reason, 0) + n
    assert dead_letters == want_dead, f"dead letters by reason{tail}"
    for role in roles:
        assert pipeline.group_lag(role) == {}, (
            f"the {role} group committed every partition it reads"
        )


# -- workers under test ---------------------------------------------------------------------------


class Worker:
    """A `portal-pulse worker` in its own process group, output kept in files."""

    def __init__(
        self,
        pipeline: Pipeline,
        env: dict[str, str],
        logdir: Path,
        name: str,
        args: tuple[str, ...] = (),
    ) -> None:
        self.name = name
        self.stdout_path = logdir / f"{name}.stdout"
        self.stderr_path = logdir / f"{name}.stderr"
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "portal_pulse.cli", "worker", "--loglevel", "info", *args],
                env={**pipeline.env, **env},
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        self.started = time.monotonic()

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def at(self, seconds: float) -> None:
        """Sleep until ``seconds`` after launch; the worker must still be running then."""
        time.sleep(max(0.0, self.started + seconds - time.monotonic()))
        assert self.proc.poll() is None, (
            f"{self.name} exited on its own with {self.proc.returncode}:\n{self.stderr()[-3000:]}"
        )

    def ready(self, timeout: float = 90.0) -> float:
        """Wait until the worker logs that its state is recovered (joined, recovered); seconds since
        launch."""
        timeout *= LIVENESS_SCALE
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (
                f"{self.name} exited with {self.proc.returncode}:\n{self.stderr()[-3000:]}"
            )
            if "state recovered in" in self.stderr():
                return time.monotonic() - self.started
            time.sleep(0.2)
        pytest.fail(f"{self.name} not ready within {timeout:.0f}s:\n{self.stderr()[-3000:]}")

    def terminate(self, within: float = 30.0) -> tuple[int, float]:
        """SIGTERM; returns (exit code, seconds to exit). Fails if it takes over ``within``
        (times LIVENESS_SCALE)."""
        within *= LIVENESS_SCALE
        sent = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(within)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"{self.name} ignored SIGTERM for {within:.0f}s:\n{self.stderr()[-3000:]}")
        return code, time.monotonic() - sent

    def kill(self) -> None:
        """SIGKILL the worker's whole process group (no cleanup of any kind)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)


@pytest.fixture
def workers(pipeline: Pipeline, tmp_path: Path, recording: Recording) -> Iterator[Any]:
    started: list[Worker] = []

    def launch(env: dict[str, str] | None = None, pipe: Pipeline | None = None) -> Worker:
        w = Worker(
            pipe or pipeline, {**recording.env, **(env or {})}, tmp_path, f"w{len(started) + 1}"
        )
        started.append(w)
        return w

    yield launch
    for w in started:
        if w.proc.poll() is None:
            w.kill()


def _produce(pipeline: Pipeline, recording: Recording) -> None:
    result = pipeline.cli("produce", str(recording.events), env=recording.env)
    assert result.returncode == 0, result.stderr[-4000:]


@dataclass(frozen=True)
class Finished:
    stdout: str
    stderr: str
    seconds: float


def _recover(
    pipeline: Pipeline,
    recording: Recording,
    label: str,
    *,
    env: dict[str, str] | None = None,
    timeout: float = 150,
) -> Finished:
    """The last restart: ``worker --exit-when-idle 3`` (as ``pipeline.run_worker``), timed from
    launch to its idle exit ("time to recover"); its output is kept in files, so a worker that
    never goes idle still shows its log. ``timeout`` (times LIVENESS_SCALE) bounds liveness only."""
    timeout *= LIVENESS_SCALE
    out_path, err_path = (
        pipeline.root / f"{label}-final.stdout",
        pipeline.root / f"{label}-final.stderr",
    )
    began = time.monotonic()
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "portal_pulse.cli", "worker", "--exit-when-idle", "3",
             "--loglevel", "info"],
            env={**pipeline.env, **recording.env, **(env or {})},
            stdout=out,
            stderr=err,
            start_new_session=True,
        )  # fmt: skip
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(30)
            code = None
    took = time.monotonic() - began
    done = Finished(
        out_path.read_text(errors="replace"), err_path.read_text(errors="replace"), took
    )
    if code is None:
        pytest.fail(
            f"[{label}] group lag when stopped: {pipeline.group_lag()}\n"
            f"[{label}] no idle exit within {timeout:.0f}s; log before the SIGTERM ({err_path}):\n"
            f"{done.stderr.split('stopping on SIGTERM')[0][-4000:]}"
        )
    print(f"[{label}] time to recover (last restart → idle exit): {took:.1f}s")
    assert code == 0, f"[{label}] exit {code}:\n{done.stderr[-4000:]}"
    return done


# -- scenarios ------------------------------------------------------------------------------------


def test_sigterm_twice_then_resume(
    pipeline: Pipeline, recording: Recording, baseline: Baseline, workers: Any
) -> None:
    _produce(pipeline, recording)
    logs = []
    for _ in range(2):
        w = workers()
        w.at(3.0)
        code, took = w.terminate(within=30)
        print(f"[sigterm] {w.name} exited {code} {took:.1f}s after SIGTERM")
        assert code == 0, f"a SIGTERM is a clean stop:\n{w.stderr()[-3000:]}"
        logs.append(w.stderr())
    result = _recover(pipeline, recording, "sigterm")
    assert_matches_replay(
        pipeline, baseline, label="sigterm", context="\n".join([*logs, result.stderr])
    )


def test_kill9_at_several_points(
    pipeline: Pipeline, recording: Recording, baseline: Baseline, workers: Any
) -> None:
    _produce(pipeline, recording)
    logs = []
    for after in (2.0, 4.0, 7.0):
        w = workers()
        w.at(after)
        w.kill()
        logs.append(w.stderr())
    result = _recover(pipeline, recording, "kill9")
    assert_matches_replay(
        pipeline, baseline, label="kill9", context="\n".join([*logs, result.stderr])
    )


def test_kill9_while_joining(
    pipeline: Pipeline, recording: Recording, baseline: Baseline, workers: Any
) -> None:
    """Killed during start-up, group join and state recovery; the idle exit still waits for
    the group to catch up (assert_matches_replay checks the group's committed offsets too)."""
    _produce(pipeline, recording)
    logs = []
    for after in (1.0, 2.0, 3.0):
        w = workers()
        w.at(after)
        w.kill()
        logs.append(w.stderr())
    result = _recover(pipeline, recording, "kill9-joining")
    assert_matches_replay(
        pipeline, baseline, label="kill9-joining", context="\n".join([*logs, result.stderr])
    )


def test_sink_faults_until_retries_exhausted(
    pipeline: Pipeline, recording: Recording, baseline: Baseline
) -> None:
    """80 % of inserts lose their acknowledgement and are sent again (same dedup token)."""
    _produce(pipeline, recording)
    env = {"PORTAL_PULSE_SINK_FAULT_RATE": "0.8", "PORTAL_PULSE_SINK_RETRY_MAX_SECONDS": "0.5"}
    result = _recover(pipeline, recording, "sink-faults", env=env, timeout=300)
    assert "fault injection" in result.stderr
    assert_matches_replay(pipeline, baseline, label="sink-faults", context=result.stderr)


def _event(**fields: Any) -> dict[str, Any]:
    return {
        "event_id": "poison-base",
        "event_type": "portal.login",
        "occurred_at": "2026-01-12T15:00:00Z",
        "practice_id": "P001",
        "patient_id": "pt-poison",
        "channel": "web",
        **fields,
    }


def _padded(name: str, field: str, letter: str, size: int = 900_000) -> bytes:
    """A JSON portal.login event of exactly ``size`` bytes, ``field`` filled with ``letter``."""
    event = _event(event_id=f"poison-{name}")
    event[field] = ""
    event[field] = letter * (size - len(json.dumps(event).encode()))
    body = json.dumps(event).encode()
    assert len(body) == size
    return body


def _poison_records() -> list[tuple[str, bytes]]:
    good = json.dumps(_event(event_id="poison-encoded")).encode()
    nul_escaped = json.dumps(_event(event_id="poison-nul-escaped", patient_id="MRN\x00123"))
    nul_raw = (
        b'{"event_id": "poison-nul-raw", "event_type": "portal.login", '
        b'"occurred_at": "2026-01-12T15:00:00Z", "practice_id": "P001", '
        b'"patient_id": "MRN\x00124", "channel": "web"}'
    )
    return [
        ("brackets", b"[" * 200_000),
        ("random", random.Random(777).randbytes(900_000)),
        ("long-channel", _padded("long-channel", "channel", "x")),
        ("long-event-id", _padded("long-event-id", "event_id", "e")),
        ("utf8-bom", b"\xef\xbb\xbf" + good),
        ("utf16", good.decode().encode("utf-16")),
        ("utf16le-no-bom", good.decode().encode("utf-16-le")),
        ("nul-escaped", nul_escaped.encode()),
        ("nul-raw", nul_raw),
        ("mrn-in-channel", json.dumps(_event(event_id="poison-c", channel=POISON_MRN)).encode()),
        (
            "mrn-in-occurred-at",
            json.dumps(_event(event_id="poison-o", occurred_at=POISON_MRN)).encode(),
        ),
        (
            "mrn-in-event-type",
            json.dumps(_event(event_id="poison-t", event_type=POISON_MRN)).encode(),
        ),
    ]


def _produce_raw(bootstrap: str, topic: str, records: list[tuple[str, bytes]]) -> dict:
    """Produce the values; returns name → (partition, offset)."""
    from confluent_kafka import Producer

    producer = Producer(
        {"bootstrap.servers": bootstrap, "message.max.bytes": 2_000_000, "linger.ms": 5}
    )
    where: dict[str, tuple[int, int]] = {}
    errors: list[str] = []

    def report(name: str) -> Any:
        def done(err: Any, msg: Any) -> None:
            if err is not None:
                errors.append(f"{name}: {err}")
            else:
                where[name] = (msg.partition(), msg.offset())

        return done

    for name, value in records:
        producer.produce(topic, value=value, on_delivery=report(name))
        producer.poll(0)
    assert producer.flush(60) == 0
    assert not errors, errors
    return where


def _read_topic(bootstrap: str, topic: str) -> list[Any]:
    """Every record of ``topic``, up to the high watermarks read at the start."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"fault-reader-{os.getpid()}-{time.monotonic_ns()}",
            "enable.auto.commit": False,
            "fetch.max.bytes": 5_000_000,
        }
    )
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), 10) for p in parts}
        consumer.assign([TopicPartition(topic, p, lo) for p, (lo, _) in ends.items()])
        want = sum(hi - lo for lo, hi in ends.values())
        records: list[Any] = []
        deadline = time.monotonic() + 60
        while len(records) < want and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            records.append(msg)
        assert len(records) == want, f"read {len(records)} of {want} records of {topic}"
        return records
    finally:
        consumer.close()


def test_poison_records_each_one_dead_letter(
    pipeline: Pipeline, recording: Recording, baseline: Baseline, tmp_path: Path
) -> None:
    _produce(pipeline, recording)  # also creates the raw topics
    bootstrap = pipeline.env["KAFKA_BOOTSTRAP_SERVERS"]
    raw_topic = f"{pipeline.prefix}.raw.portal"
    poison = _poison_records()
    assert all(len(v) <= 900_000 for _, v in poison)
    where = _produce_raw(bootstrap, raw_topic, poison)

    result = _recover(pipeline, recording, "poison", timeout=200)
    rows = pipeline.query(
        "SELECT source_partition, source_offset, reason, detail, field FROM dead_letters FINAL "
        f"WHERE source_topic = '{raw_topic}'"
    )
    by_position: dict[tuple[int, int], list[list[Any]]] = {}
    for row in rows:
        by_position.setdefault((row[0], row[1]), []).append(row)
    reasons: dict[str, int] = {}
    for name, pos in where.items():
        got = by_position.get(pos, [])
        assert len(got) == 1, f"{name} at {pos}: {len(got)} dead letters\n{result.stderr[-3000:]}"
        reason = got[0][2]
        assert reason, f"{name}: dead letter without a reason"
        print(f"[poison] {name}: reason={reason!r} field={got[0][4]!r} detail={got[0][3][:100]!r}")
        reasons[reason] = reasons.get(reason, 0) + 1

    # No raw patient id anywhere in ClickHouse nor in the worker's log.
    tables = [
        r[0]
        for r in pipeline.query("SELECT name FROM system.tables WHERE database = currentDatabase()")
    ]
    dump = "\n".join(
        json.dumps(pipeline.query(f"SELECT * FROM {t}"), default=str)
        for t in tables
        if t != "schema_migrations"
    )
    assert POISON_MRN not in dump, "a patient id in the wrong field leaked into ClickHouse"
    assert POISON_MRN not in result.stderr, "a patient id in the wrong field leaked into the log"
    assert POISON_MRN not in result.stdout

    assert_matches_replay(
        pipeline, baseline, label="poison", extra_dead_letters=reasons, context=result.stderr
    )

    records = _read_topic(bootstrap, f"{pipeline.prefix}.events.deadletter")
    sizes = [len(m.value() or b"") + len(m.key() or b"") for m in records]
    print(f"[poison] dead-letter topic: {len(records)} records, largest {max(sizes)} bytes")
    assert len(records) >= sum(baseline.dead_letters.values()) + len(poison)
    assert max(sizes) < 1_000_000


def _produce_with_headers(
    bootstrap: str, topic: str, records: list[tuple[str, bytes | None, list[tuple[str, bytes]]]]
) -> dict[str, tuple[int, int]]:
    """Produce values with headers; returns name → (partition, offset)."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    where: dict[str, tuple[int, int]] = {}
    errors: list[str] = []
    for name, value, headers in records:

        def done(err: Any, msg: Any, name: str = name) -> None:
            if err is not None:
                errors.append(f"{name}: {err}")
            else:
                where[name] = (msg.partition(), msg.offset())

        producer.produce(topic, value=value, headers=headers, on_delivery=done)
    assert producer.flush(60) == 0
    assert not errors, errors
    return where


def _internal_poison(prefix: str) -> dict[str, list[tuple[str, bytes | None, list]]]:
    """Records on the pipeline's own topics that the pipeline never writes (issue #21)."""
    raw = f"{prefix}.raw.portal"
    old_ms = b"1577836800000"  # 2020-01-01: a watermark that would move nothing anyway
    return {
        f"{prefix}.events.clean": [
            ("src-notanumber", b"x", [("pp-src", f"{raw}|0|notanumber".encode())]),
            ("src-unknown-raw", b"x", [("pp-src", b"elsewhere|0|1")]),
            ("wm-notanumber", b"", [("pp-watermark", b"notanumber")]),
            ("wm-huge", b"", [("pp-watermark", b"9" * 15)]),
            ("cover-bad", b"", [("pp-watermark", old_ms), ("pp-wm-cover", b"zz;9")]),
            ("cover-alone", b"", [("pp-wm-cover", b"f;1")]),
            ("clean-undecodable", b"\x00\x01garbage", []),
            ("clean-empty", b"", []),
        ],
        f"{prefix}.alerts": [
            ("alert-empty", b"", []),
            ("alert-garbage", b"\x00garbage", []),
            ("alert-json", b"{}", []),
        ],
        f"{prefix}.facts.responses": [
            ("fact-empty", b"", []),
            ("fact-not-json", b"not json", []),
            ("fact-list", b"[1, 2]", []),
            ("fact-wrong-fields", b'{"response_id": 1}', []),
        ],
        f"{prefix}.metrics.live": [("live-empty", b"", [])],
    }


def test_poison_on_internal_topics_each_one_dead_letter(
    pipeline: Pipeline, recording: Recording, baseline: Baseline
) -> None:
    """Bad headers and values on the clean, alerts, facts and live-metrics topics: each one
    dead-lettered with its reason, the worker keeps running (an idle exit 0), and every table
    still equals the replay of the valid input."""
    from portal_pulse.kafka_admin import ensure_topics
    from portal_pulse.settings import Settings

    _produce(pipeline, recording)
    bootstrap = pipeline.env["KAFKA_BOOTSTRAP_SERVERS"]
    settings = Settings(topic_prefix=pipeline.prefix, app_id=pipeline.env["PORTAL_PULSE_APP_ID"])
    ensure_topics(settings, bootstrap)  # as the worker makes them, before anyone writes
    poison = _internal_poison(pipeline.prefix)
    placed = {
        topic: _produce_with_headers(bootstrap, topic, recs) for topic, recs in poison.items()
    }

    result = _recover(pipeline, recording, "internal-poison", timeout=200)
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    rows = pipeline.query(
        "SELECT source_topic, source_partition, source_offset, reason, field FROM dead_letters "
        f"FINAL WHERE source_topic IN ({', '.join(repr(t) for t in poison)})"
    )
    got = {(r[0], r[1], r[2]): (r[3], r[4]) for r in rows}
    reasons: dict[str, int] = {}
    for topic, where in placed.items():
        for name, pos in where.items():
            verdict = got.get((topic, *pos))
            print(f"[internal-poison] {topic} {name}: {verdict}")
            assert verdict is not None, f"{name} on {topic} at {pos}: no dead letter"
            want = "bad_header" if name.startswith(("src-", "wm-", "cover-")) else None
            assert verdict[0] == (want or "bad_internal_record"), (name, verdict)
            reasons[verdict[0]] = reasons.get(verdict[0], 0) + 1
    assert len(rows) == sum(len(w) for w in placed.values()), "one dead letter each"
    assert_matches_replay(
        pipeline,
        baseline,
        label="internal-poison",
        extra_dead_letters=reasons,
        context=result.stderr,
    )


def test_broker_outage_past_delivery_timeout(
    recording: Recording, baseline: Baseline, tmp_path: Path
) -> None:
    """A broker of its own goes away under running workers, then comes back.

    The broker is stopped once the worker is ready (joined and recovered), not at a fixed
    instant: on a loaded machine start-up alone can take longer than a few seconds.
    """
    from portal_pulse.broker import LocalBroker

    broker = LocalBroker(tmp_path / "kafka", port=free_port(), controller_port=free_port())
    bootstrap = broker.start(timeout=120)
    started: list[Worker] = []
    try:
        pipe = Pipeline(bootstrap, tmp_path / "pipe")
        _produce(pipe, recording)

        # 1. The broker stops for 40 s under a working worker (librdkafka never expires a
        #    record, so there is no delivery timeout to pass: outputs must wait, not drop) and
        #    comes back: the worker either carries on until its group has caught up, or exits
        #    non-zero; it never hangs, and never exits 0 by itself.
        w1 = Worker(pipe, recording.env, tmp_path, "outage-40s")
        started.append(w1)
        ready = w1.ready()
        broker.stop()
        time.sleep(40)
        alive = w1.proc.poll() is None
        broker.start(timeout=120)
        back = time.monotonic()
        caught_up = False
        while time.monotonic() < back + 120 * LIVENESS_SCALE and w1.proc.poll() is None:
            try:
                caught_up = not pipe.group_lag()
            except Exception:  # the broker is still settling
                caught_up = False
            if caught_up:
                break
            time.sleep(2)
        if w1.proc.poll() is None:
            assert caught_up, (
                f"worker stuck after the outage; lag {pipe.group_lag()}:\n{w1.stderr()[-3000:]}"
            )
            code, took = w1.terminate(within=30)
            print(
                f"[outage] broker stopped {ready:.1f}s after launch (worker ready); the worker "
                f"lived through 40s without it (alive at the end: {alive}); its group caught up "
                f"{time.monotonic() - back:.1f}s after the broker returned; SIGTERM → exit "
                f"{code} in {took:.1f}s"
            )
            assert code == 0, w1.stderr()[-3000:]
        else:
            print(f"[outage] worker exited {w1.proc.returncode} by itself")
            assert w1.proc.returncode != 0, (
                f"exited 0 without a SIGTERM during an outage:\n{w1.stderr()[-3000:]}"
            )

        # 2. SIGTERM while the broker is down: the stop is bounded (shutdown_timeout_seconds).
        w2 = Worker(pipe, recording.env, tmp_path, "outage-sigterm")
        started.append(w2)
        w2.ready()
        broker.stop()
        time.sleep(3)
        assert w2.proc.poll() is None, f"exited when the broker went:\n{w2.stderr()[-3000:]}"
        code, took = w2.terminate(within=30)
        print(f"[outage] SIGTERM 3s into an outage: exit {code} after {took:.1f}s")
        broker.start(timeout=120)

        result = _recover(pipe, recording, "outage", timeout=200)
        assert_matches_replay(
            pipe,
            baseline,
            label="outage",
            context="\n".join([w1.stderr(), w2.stderr(), result.stderr]),
        )
    finally:
        for w in started:
            if w.proc.poll() is None:
                w.kill()
        broker.stop()
