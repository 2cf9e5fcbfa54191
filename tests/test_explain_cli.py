"""The real ``bouncegw explain`` command through click's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

import gateway.cli.explain  # noqa: F401  (registers the command)
from gateway.cli.common import cli
from tests.positives import NEGATIVES, POSITIVES


def test_explain_json_batch_continues_after_errors(tmp_path: Path) -> None:
    pos = next(p for p in POSITIVES if p.name == "multi-recipient-one-family")
    good = tmp_path / "ndr.eml"
    good.write_bytes(pos.data)
    plain = tmp_path / "plain.eml"
    plain.write_bytes(next(n for n in NEGATIVES if n.name.startswith("mysql")).data)
    empty = tmp_path / "empty.eml"
    empty.write_bytes(b"")
    missing = tmp_path / "missing.eml"
    result = CliRunner().invoke(cli, ["explain", "--json", str(good), str(missing), str(empty), str(plain)])
    assert result.exit_code == 1
    lines = [json.loads(line) for line in result.output.splitlines()]
    assert [line["file"] for line in lines] == [str(good), str(missing), str(empty), str(plain)]
    first = lines[0]
    assert first["is_bounce"] is True and first["format"] == "rfc3464"
    fam = [r for r in first["recipients"] if r["category"]]
    assert [(r["recipient"], r["status"], r["variant"]) for r in fam] == [
        ("sales-team@contoso.example", "5.7.133", "group")
    ]
    assert {"recipient", "status", "action", "diagnostic", "category", "variant"} <= set(
        first["recipients"][0]
    )
    assert "error" in lines[1] and "error" in lines[2]
    assert lines[3]["is_bounce"] is False and lines[3]["format"] is None


def test_explain_human_summary(tmp_path: Path) -> None:
    f = tmp_path / "ndr.eml"
    f.write_bytes(POSITIVES[0].data)
    result = CliRunner().invoke(cli, ["explain", str(f)])
    assert result.exit_code == 0
    assert "sender_not_authenticated/organization" in result.output
