"""`portal-pulse followups --roster` as the front desk runs it, on what `replay` wrote to chDB.

A small simulated recording is replayed (no Kafka needed) into a temporary chDB path. The roster
is built from the recording's patient ids, with extra columns whose values occur nowhere else.
Pseudonyms are recomputed here independently (HMAC-SHA256 of ``practice_id:patient_id``, SPEC §9)
to check every match. The roster must never reach ClickHouse: its ids and values are searched for
in every table, and the tables are byte-for-byte the same before and after the commands ran.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from portal_pulse.simulate import SimulationSpec, simulate
from tests.integration.conftest import PSEUDONYM_KEY, Pipeline, query_chdb

pytestmark = pytest.mark.integration

PRACTICE = "P001"
ZONE = "America/Chicago"
EXTRA = ("full_name", "phone", "notes")


def pseudonym(patient_id: str) -> str:
    message = f"{PRACTICE}:{patient_id}".encode()
    return hmac.new(PSEUDONYM_KEY.encode(), message, hashlib.sha256).hexdigest()[:32]


def roster_row(patient_id: str) -> dict[str, str]:
    n = patient_id.rsplit("-", 1)[-1]
    return {
        "full_name": f"Rostername Zq{n}",
        "phone": f"555-77{n}",
        "notes": f"prefers calls, token-{n}-xyzzy",
    }


class Replayed:
    def __init__(self, root: Path) -> None:
        self.pipeline = Pipeline("127.0.0.1:9", root)  # replay and reports need no broker
        self.root = root
        self.chdb = root / "chdb"
        self.ch = f"chdb://{self.chdb}"
        self.roster = root / "roster.csv"
        self.patients: list[str] = []

    def followups(self, *args: str) -> Any:
        return self.pipeline.cli(
            "followups", "--clickhouse", self.ch, "--practice", PRACTICE, *args
        )

    def json(self, *args: str) -> list[dict[str, Any]]:
        result = self.followups("--format", "json", *args)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> Replayed:
    r = Replayed(tmp_path_factory.mktemp("roster"))
    spec = SimulationSpec(practices=1, patients=80, months=2, seed=11)
    events = list(simulate(spec))
    recording = r.root / "events.jsonl"
    recording.write_text("\n".join(json.dumps(e) for e in events) + "\n")
    practices = r.root / "practices.yaml"
    practices.write_text(
        yaml.safe_dump({"practices": {"default": {}, PRACTICE: {"timezone": ZONE}}})
    )
    result = r.pipeline.cli(
        "replay", str(recording), "--config", str(practices), "--clickhouse", r.ch,
        "--until", "2026-04-01T00:00:00Z",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    r.patients = sorted({e["patient_id"] for e in events if e.get("practice_id") == PRACTICE})
    with r.roster.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["patient_id", *EXTRA])
        writer.writeheader()
        for patient_id in [*r.patients, "MRN-P001-999999"]:  # one patient with no events
            writer.writerow({"patient_id": patient_id, **roster_row(patient_id)})
    return r


def table_snapshot(chdb: Path) -> tuple[list[str], list[list[Any]]]:
    """Every table's name, row count and content hash."""
    tables = [
        row[0]
        for row in query_chdb(
            chdb,
            [
                "SELECT name FROM system.tables WHERE database = currentDatabase()"
                " AND engine NOT LIKE '%View' ORDER BY name"
            ],
        )[0]
    ]
    sums = query_chdb(
        chdb,
        [f"SELECT count(), sum(cityHash64(formatRow('TSV', *))) FROM {t}" for t in tables],
    )
    return tables, [rows[0] for rows in sums]


def test_patient_ids_and_roster_columns_beside_matched_followups(replayed: Replayed) -> None:
    by_pseudonym = {pseudonym(p): p for p in replayed.patients}
    items = replayed.json("--roster", str(replayed.roster))
    assert len(items) > 10, "the recording leaves open follow-ups"
    assert list(items[0])[-4:] == ["patient_id", *EXTRA]
    for item in items:
        expected = by_pseudonym.get(item["patient_pseudonym"])
        assert expected is not None, "every follow-up's patient is on the roster"
        assert item["patient_id"] == expected
        assert {k: item[k] for k in EXTRA} == roster_row(expected)
        assert item["due_at_local"].endswith(("-06:00", "-05:00"))  # Chicago
    assert [i["days_overdue"] for i in items] == sorted(
        (i["days_overdue"] for i in items), reverse=True
    )

    csv_out = replayed.followups("--roster", str(replayed.roster), "--format", "csv")
    assert csv_out.returncode == 0, csv_out.stderr
    rows = list(csv.DictReader(io.StringIO(csv_out.stdout)))
    assert [(r["alert_id"], r["patient_id"], r["full_name"], r["notes"]) for r in rows] == [
        (i["alert_id"], i["patient_id"], i["full_name"], i["notes"]) for i in items
    ]

    table = replayed.followups("--roster", str(replayed.roster))
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].startswith(f"open follow-ups for {PRACTICE} as of ")
    assert lines[0].endswith(f"({ZONE})")
    assert f"roster: {len(replayed.patients) + 1} patients; {len(items)} of the {len(items)}" in (
        table.stdout
    )
    body = lines[lines.index("") + 2 :]
    assert len(body) == len(items)
    for item, line in zip(items, body, strict=True):  # same order: most overdue first
        assert item["patient_id"] in line and item["patient_pseudonym"] in line
        assert item["full_name"] in line and item["phone"] in line
        assert line.split()[1] == item["kind"].removeprefix("enrollment.")
        assert " CST " in line or " CDT " in line


def test_kind_and_limit(replayed: Replayed) -> None:
    everything = replayed.json()
    kinds = {i["kind"] for i in everything}
    assert "enrollment.app_not_installed" in kinds and len(kinds) > 1
    app = [i for i in everything if i["kind"] == "enrollment.app_not_installed"]
    top = replayed.json("--kind", "app_not_installed", "--limit", "3")
    assert [i["alert_id"] for i in top] == [i["alert_id"] for i in app[:3]]
    full_name = replayed.json(
        "--kind", "enrollment.app_not_installed", "--roster", str(replayed.roster)
    )
    assert [i["alert_id"] for i in full_name] == [i["alert_id"] for i in app]
    assert all(i["patient_id"] for i in full_name)
    table = replayed.followups("--kind", "app_not_installed", "--limit", "2")
    assert f"{len(app)} open: {len(app)} app_not_installed" in table.stdout
    assert "showing the 2 most overdue" in table.stdout


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["--kind", "bogus"], 2, "unknown follow-up kind 'bogus'"),
        (["--limit", "0"], 2, "--limit must be at least 1"),
        (["--roster", "/nonexistent/roster.csv"], 2, "does not exist"),
        (["--practice", "P404"], 4, "no data for practice 'P404' (practices with data: P001)"),
    ],
)
def test_user_mistakes_are_one_line(
    replayed: Replayed, args: list[str], code: int, says: str
) -> None:
    result = replayed.followups(*args)
    assert result.returncode == code, result.stderr
    assert says in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert result.stdout == ""


def test_a_roster_without_patient_id_is_refused(replayed: Replayed, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("mrn,full_name\nMRN-P001-000001,Someone\n", encoding="utf-8")
    result = replayed.followups("--roster", str(bad))
    assert result.returncode == 2
    assert "has no patient_id column in its header row (found: mrn, full_name)" in result.stderr
    assert "MRN-P001-000001" not in result.stderr


def test_the_roster_never_reaches_clickhouse(replayed: Replayed) -> None:
    before = table_snapshot(replayed.chdb)
    files_before = sorted(p for p in replayed.root.rglob("*") if replayed.chdb not in p.parents)
    for fmt in ("table", "json", "csv"):
        result = replayed.followups("--roster", str(replayed.roster), "--format", fmt)
        assert result.returncode == 0, result.stderr
    assert table_snapshot(replayed.chdb) == before, "followups writes nothing to ClickHouse"
    files_after = sorted(p for p in replayed.root.rglob("*") if replayed.chdb not in p.parents)
    assert files_after == files_before, "nor any file"

    tables, _ = before
    needles = ["MRN-", "Rostername", "xyzzy", "555-77"]
    found = query_chdb(
        replayed.chdb,
        [
            f"SELECT count() FROM {t} WHERE multiSearchAny(formatRow('TSV', *), {needles!r})"
            for t in tables
        ],
    )
    assert dict(zip(tables, (rows[0][0] for rows in found), strict=True)) == dict.fromkeys(
        tables, 0
    )
    # and the pseudonyms the roster matched are what the pipeline holds
    held = {
        row[0]
        for row in query_chdb(
            replayed.chdb, ["SELECT DISTINCT patient_pseudonym FROM events FINAL"]
        )[0]
    }
    assert {pseudonym(p) for p in replayed.patients} == held
