"""``bouncegw incidents list|show|stats`` output formats and filters, and ``db purge``."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

import gateway.cli.db
import gateway.cli.incidents  # noqa: F401  (registers the commands)
from gateway.cli.common import cli
from storage.db import upgrade
from storage.incidents import IncidentRecord
from storage.repository import Repository
from tests.processes import run_bouncegw
from tests.storage_builders import records_for

pytest_plugins = ["tests.storage_fixtures"]

START = datetime(2025, 5, 1, tzinfo=UTC)


@pytest.fixture
def stored(repo: Repository) -> list[IncidentRecord]:
    records = records_for(12, start=START, step=timedelta(hours=3))
    repo.record(records)
    return records


def run(url: str, *args: str, columns: int = 100) -> str:
    result = CliRunner(env={"COLUMNS": str(columns)}).invoke(cli, [*args[:2], "--database", url, *args[2:]])
    assert result.exit_code == 0, result.output
    return result.output


def test_list_formats(migrated_url: str, stored: list[IncidentRecord]) -> None:
    newest_first = sorted((r.id for r in stored), reverse=True)
    as_json = json.loads(run(migrated_url, "incidents", "list", "--format", "json"))
    assert [i["id"] for i in as_json] == newest_first
    assert as_json[0]["recorded_at"].startswith("2025-05-02")
    lines = run(migrated_url, "incidents", "list", "--format", "ndjson", "--limit", "5").splitlines()
    assert [json.loads(line)["id"] for line in lines] == newest_first[:5]
    rows = list(csv.DictReader(io.StringIO(run(migrated_url, "incidents", "list", "--format", "csv"))))
    assert [r["id"] for r in rows] == newest_first and rows[0]["status"] == "5.7.133"
    for columns in (80, 140):
        table = run(migrated_url, "incidents", "list", columns=columns)
        assert all(len(line) <= columns for line in table.splitlines())
        assert "sender" in table.splitlines()[0] and newest_first[0] in table
    assert "group1-0@contoso1.example" in table  # nothing cut when there is room


def test_list_filters(migrated_url: str, stored: list[IncidentRecord]) -> None:
    out = run(
        migrated_url, "incidents", "list", "--format", "ndjson", "--since", "2025-05-01T06:00:00Z",
        "--until", "2025-05-01T15:00:00Z", "--variant", "mailbox",
    )  # fmt: skip
    expected = {r.id for r in stored[2:5] if r.variant == "mailbox"}
    assert {json.loads(line)["id"] for line in out.splitlines()} == expected
    out = run(migrated_url, "incidents", "list", "--format", "ndjson", "--sender", "fabrikam1.example")
    assert {json.loads(line)["id"] for line in out.splitlines()} == {
        r.id for r in stored if r.sender_domain == "fabrikam1.example"
    }
    assert run(migrated_url, "incidents", "list", "--format", "ndjson", "--since", "24h") == ""
    result = CliRunner().invoke(cli, ["incidents", "list", "--database", migrated_url, "--since", "soon"])
    assert result.exit_code == 2 and "neither a duration" in result.output


def test_show(migrated_url: str, stored: list[IncidentRecord]) -> None:
    target = stored[4]
    data = json.loads(run(migrated_url, "incidents", "show", "--format", "json", target.id))
    assert data == target.to_dict()
    table = run(migrated_url, "incidents", "show", target.id)
    assert "failed_recipient" in table and (target.failed_recipient or "") in table
    result = CliRunner().invoke(
        cli, ["incidents", "show", "--database", migrated_url, "01HZZZZZZZZZZZZZZZZZZZZZZZ"]
    )
    assert result.exit_code == 1 and "no incident" in result.output


def test_stats_formats(migrated_url: str, stored: list[IncidentRecord]) -> None:
    by_day = json.loads(run(migrated_url, "incidents", "stats", "--by", "day", "--format", "json"))
    assert [(d["day"], d["count"]) for d in by_day] == [("2025-05-01", 8), ("2025-05-02", 4)]
    rows = list(
        csv.DictReader(
            io.StringIO(run(migrated_url, "incidents", "stats", "--by", "variant", "--format", "csv"))
        )
    )
    assert {r["variant"]: int(r["count"]) for r in rows} == {"group": 6, "mailbox": 6}
    table = run(migrated_url, "incidents", "stats", "--by", "sender-domain")
    assert "fabrikam0.example" in table and "first seen" in table


def test_purge(migrated_url: str, repo: Repository) -> None:
    now = datetime.now(UTC)
    repo.record(
        records_for(7, start=now - timedelta(days=100))
        + records_for(2, tag="new", start=now - timedelta(hours=2))
    )
    out = run(migrated_url, "db", "purge", "--older-than", "30d")
    assert "purged 7 incidents" in out
    assert len(json.loads(run(migrated_url, "incidents", "list", "--format", "json"))) == 2
    result = CliRunner().invoke(cli, ["db", "purge", "--database", migrated_url, "--older-than", "old"])
    assert result.exit_code == 2 and "not a duration" in result.output


LONG = "sales-team-distribution-list-with-a-long-name@contoso-international.example"


async def test_read_only_commands_never_create_a_database(tmp_path: Path) -> None:
    for args in (["list"], ["stats"], ["show", "01HZZZZZZZZZZZZZZZZZZZZZZZ"]):
        code, out, err = await run_bouncegw("incidents", *args, cwd=tmp_path)
        assert code == 1 and out == ""
        line = err.strip()
        assert "\n" not in line and "Traceback" not in line
        assert f"no incident database at {tmp_path / 'var' / 'bouncegw.sqlite3'}" in line
    assert list(tmp_path.iterdir()) == []  # no var/, no empty database


async def test_read_only_commands_find_the_configured_database(tmp_path: Path) -> None:
    database = tmp_path / "state" / "incidents.sqlite3"
    database.parent.mkdir()
    url = f"sqlite:///{database}"
    upgrade(url)
    repository = Repository.from_url(url)
    try:
        repository.record(records_for(2))
    finally:
        repository.close()
    config = tmp_path / "bouncegw.toml"
    config.write_text(f'[database]\nurl = "{url}"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for env in ({"BOUNCEGW_CONFIG": str(config)}, {"BOUNCEGW_DATABASE__URL": url}):
        code, out, err = await run_bouncegw("incidents", "list", "--format", "tsv", cwd=elsewhere, env=env)
        assert code == 0, err
        assert len(out.splitlines()) == 1 + 2
    assert list(elsewhere.iterdir()) == []


async def test_piped_table_keeps_whole_values(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'gw.sqlite3'}"
    upgrade(url)
    records = records_for(3)
    records[1] = dataclasses.replace(
        records[1], failed_recipient=LONG, diagnostic="line one\ttab\nline two\x1b[2J"
    )
    repository = Repository.from_url(url)
    try:
        repository.record(records)
    finally:
        repository.close()
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    # A pipe is not a terminal: nothing is cut, so grep finds the whole address.
    code, out, err = await run_bouncegw("incidents", "list", "--database", url, cwd=tmp_path, env=env)
    assert code == 0, err
    assert LONG in out and "..." not in out and "…" not in out
    code, out, _ = await run_bouncegw(
        "incidents", "stats", "--by", "recipient", "--database", url, cwd=tmp_path
    )
    assert LONG in out
    code, out, _ = await run_bouncegw("incidents", "show", records[1].id, "--database", url, cwd=tmp_path)
    assert LONG in out
    # TSV: one line per incident, tabs and line breaks inside a value escaped.
    code, out, _ = await run_bouncegw("incidents", "list", "--format", "tsv", "--database", url, cwd=tmp_path)
    header, *rows = out.splitlines()
    fields = header.split("\t")
    assert len(rows) == 3 and all(len(row.split("\t")) == len(fields) for row in rows)
    row = next(dict(zip(fields, r.split("\t"), strict=True)) for r in rows if LONG in r)
    assert row["failed_recipient"] == LONG
    assert row["diagnostic"] == "line one\\ttab\\nline two\\x1b[2J"
    assert "\x1b" not in out


def test_variant_and_code_are_validated_against_the_tables(migrated_url: str) -> None:
    from gateway.bounce.family import ROWS

    variants = {row.variant for row in ROWS}
    result = CliRunner().invoke(cli, ["incidents", "list", "--database", migrated_url, "--variant", "bogus"])
    assert result.exit_code == 2
    assert all(variant in result.output for variant in variants)
    help_text = CliRunner().invoke(cli, ["incidents", "list", "--help"]).output
    assert all(variant in help_text for variant in variants)
    result = CliRunner().invoke(cli, ["incidents", "stats", "--database", migrated_url, "--code", "5.7.x"])
    assert result.exit_code == 2 and "not an enhanced status code" in result.output
