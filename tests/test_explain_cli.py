"""The real ``bouncegw explain`` command through click's CliRunner."""

from __future__ import annotations

import email
import email.policy
import json
from pathlib import Path

from click.testing import CliRunner

import gateway.cli.explain
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
    result = CliRunner().invoke(cli, ["explain", "--summary", str(f)])
    assert result.exit_code == 0
    assert "sender_not_authenticated/organization" in result.output


def test_explain_prints_the_annotated_message(tmp_path: Path) -> None:
    f = tmp_path / "ndr.eml"
    f.write_bytes(POSITIVES[0].data)
    result = CliRunner().invoke(cli, ["explain", str(f)], env={"BOUNCEGW_EXPLAIN__LANGUAGES": "en"})
    assert result.exit_code == 0
    out = result.stdout_bytes
    assert out.startswith(b"X-Bouncegw-Explained: 5.7.12\r\n")
    assert out.endswith(POSITIVES[0].data[-200:])  # the rest of the message follows
    text = email.message_from_bytes(out, policy=email.policy.default)
    plain = next(p for p in text.walk() if p.get_content_type() == "text/plain")
    assert "accepts mail only from inside its own organization" in " ".join(plain.get_content().split())


def test_explain_preview_uses_an_override_template(tmp_path: Path) -> None:
    """An admin edits a template in the configured directory and previews the result."""
    templates = tmp_path / "templates" / "en"
    templates.mkdir(parents=True)
    shipped = Path(gateway.cli.explain.__file__).parents[1] / "templates" / "en" / "block.txt.j2"
    (templates / "block.txt.j2").write_text("OUR HELPDESK NOTE\n" + shipped.read_text())
    config = tmp_path / "bouncegw.toml"
    config.write_text(f'[explain]\nlanguages = ["en"]\ntemplate_dir = "{tmp_path / "templates"}"\n')
    f = tmp_path / "ndr.eml"
    f.write_bytes(POSITIVES[0].data)
    result = CliRunner().invoke(cli, ["explain", "--config", str(config), str(f)])
    assert result.exit_code == 0, result.output
    assert b"OUR HELPDESK NOTE" in result.stdout_bytes


def test_explain_leaves_other_mail_alone(tmp_path: Path) -> None:
    f = tmp_path / "plain.eml"
    f.write_bytes(next(n for n in NEGATIVES if n.name.startswith("mysql")).data)
    result = CliRunner().invoke(cli, ["explain", str(f)])
    assert result.exit_code == 0
    assert result.stdout_bytes == b""
    assert "relays it unchanged" in result.stderr


def test_explain_json_gives_the_specific_status_and_the_reported_one(tmp_path: Path) -> None:
    pos = next(p for p in POSITIVES if p.name == "exo-wrapped-5.7.0-5.7.133")
    f = tmp_path / "wrapped.eml"
    f.write_bytes(pos.data)
    result = CliRunner().invoke(cli, ["explain", "--json", str(f)])
    assert result.exit_code == 0, result.output
    line = json.loads(result.output)
    assert line["nesting_capped"] is False
    assert [(r["status"], r["reported_status"], r["variant"]) for r in line["recipients"]] == [
        ("5.7.133", "5.7.0", "group")
    ]


def test_explain_summary_and_json_never_carry_terminal_controls(tmp_path: Path) -> None:
    hostile = POSITIVES[0].data.replace(
        b"Reporting-MTA: dns;", b"Reporting-MTA: dns; \x1b]0;owned\x07\xc2\x9b31m", 1
    )
    assert hostile != POSITIVES[0].data
    path = tmp_path / "hostile.eml"
    path.write_bytes(hostile)
    runner = CliRunner()
    for flag in ("--summary", "--json"):
        result = runner.invoke(cli, ["explain", flag, str(path)])
        assert result.exit_code == 0, result.output
        assert "owned" in result.output  # the value is shown...
        assert not any(ch in result.output for ch in "\x1b\x07\x9b")  # ...but cannot drive the terminal
