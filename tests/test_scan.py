"""``bouncegw scan`` on real mailbox archives, run as the real command in its own process."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import mailbox
import os
import pty
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.identity import as_on_the_wire, bounce_digest
from tests.conftest import GatewayFactory
from tests.positives import NEGATIVES, POSITIVES, with_mbox_quoted_lines
from tests.processes import free_port
from tests.recording_server import RecordingServer

#: Messages nobody would call a bounce.
ORDINARY = [
    b"From: alice@example.org\r\nTo: bob@example.org\r\nSubject: lunch\r\n\r\nAt noon?\r\n",
    b"From: carol@example.org\r\nTo: dan@example.org\r\nSubject: MySQL 5.7.12 upgrade\r\n\r\ndone\r\n",
]


def family_recipients(data: list[bytes]) -> list[tuple[str, str]]:
    """(recipient, variant) the sample tables expect, independently of the scanner."""
    expected = {p.data: p.expected for p in POSITIVES}
    allowed = {n.data: n.allowed for n in NEGATIVES}
    return sorted(
        (rcpt.lower(), variant) for d in data for rcpt, _, _, variant in expected.get(d, allowed.get(d, []))
    )


def run_scan(
    *args: str, db: Path | None = None, stdin: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "gateway", "scan", *args]
    if db is not None:
        command += ["--database", f"sqlite:///{db}"]
    return subprocess.run(
        command, input=stdin.decode() if stdin else None, capture_output=True, text=True, timeout=120
    )


def rows(db: Path) -> list[tuple[str, str, str]]:
    # closing(): sqlite3's own context manager only commits (Python 3.13 warns on unclosed connections).
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return sorted(conn.execute("SELECT failed_recipient, variant, source FROM incidents").fetchall())


@pytest.fixture
def archive(tmp_path: Path) -> tuple[Path, list[bytes]]:
    """One of each kind of input: mbox, Maildir, MH, .eml files, plus ordinary mail and damage."""
    root = tmp_path / "archive"
    root.mkdir()
    positives = [p.data for p in POSITIVES]
    negatives = [n.data for n in NEGATIVES]
    box = mailbox.mbox(root / "postmaster.mbox")
    for data in positives[:10] + negatives + ORDINARY:
        box.add(data)
    box.flush()
    box.close()
    maildir = mailbox.Maildir(root / "helpdesk", create=True)
    for data in positives[10:20]:
        maildir.add(data)
    (root / "nested").mkdir()
    mh = mailbox.MH(root / "nested" / "mh", create=True)
    for data in positives[20:25]:
        mh.add(data)
    (root / "nested" / "mh" / ".mh_sequences").touch()
    eml = root / "nested" / "exports"
    eml.mkdir()
    for n, data in enumerate(positives[25:]):
        (eml / f"{n}.eml").write_bytes(data.replace(b"\r\n", b"\n"))  # as a mail client saves it
    (eml / "ordinary.eml").write_bytes(ORDINARY[0])
    (eml / "dangling.eml").symlink_to(tmp_path / "gone.eml")  # an unreadable file
    # A truncated mbox: the last message stops in the middle of its header block.
    (root / "nested" / "cut.mbox").write_bytes(
        b"From MAILER-DAEMON Mon Jan  1 00:00:00 2026\n" + positives[0][:300]
    )
    return root, positives + negatives


def test_a_mixed_archive_is_counted_right(archive: tuple[Path, list[bytes]], tmp_path: Path) -> None:
    root, messages = archive
    result = run_scan("--recursive", "--format", "jsonl", str(root))
    assert result.returncode == 0, result.stderr
    found = sorted((row["recipient"], row["variant"]) for row in map(json.loads, result.stdout.splitlines()))
    assert found == family_recipients(messages)
    assert f"family recipients: {len(found)}" in result.stderr
    # The dangling link is reported with its location; the scan went on past it.
    assert "dangling.eml" in result.stderr and "problems:" in result.stderr
    locations = {row["location"] for row in map(json.loads, result.stdout.splitlines())}
    assert any("helpdesk#" in loc for loc in locations) and any(loc.endswith(".eml") for loc in locations)
    assert any("/mh#" in loc for loc in locations)


def test_without_recursion_only_the_top_level_is_read(archive: tuple[Path, list[bytes]]) -> None:
    root, _ = archive
    result = run_scan("--format", "jsonl", str(root))
    locations = {json.loads(line)["location"] for line in result.stdout.splitlines()}
    assert locations and all(loc.startswith(str(root / "postmaster.mbox#")) for loc in locations)


def test_recording_twice_stores_each_recipient_once(
    archive: tuple[Path, list[bytes]], tmp_path: Path
) -> None:
    root, _ = archive
    db = tmp_path / "incidents.sqlite3"
    first = run_scan("-r", "--record", str(root), db=db)
    assert first.returncode == 0, first.stderr
    stored = rows(db)
    # Distinct recipients per bounce: a bounce listing one twice makes one incident, as in the relay.
    expected = sum(len({r.lower() for r, *_ in p.expected}) for p in POSITIVES) + sum(
        len({r.lower() for r, *_ in n.allowed}) for n in NEGATIVES
    )
    assert len(stored) == expected and {s for *_, s in stored} == {"scan"}
    assert f"recorded: {expected} new, 0 already in the database" in first.stdout
    second = run_scan("-r", "--record", str(root), db=db)
    assert f"recorded: 0 new, {expected} already in the database" in second.stdout
    assert rows(db) == stored
    listed = subprocess.run(
        [sys.executable, "-m", "gateway", "incidents", "list", "--database", f"sqlite:///{db}",
         "--source", "scan", "--format", "json", "--limit", "0"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert len(json.loads(listed.stdout)) == expected


async def test_mail_the_relay_recorded_is_not_recorded_again(
    tmp_path: Path, hop: RecordingServer, make_gateway: GatewayFactory
) -> None:
    """The relay's explained copy and a plain copy of the same bounce find the relay's incident."""
    import aiosmtplib

    app = await make_gateway(hop.address)
    first, second = POSITIVES[2], POSITIVES[3]
    for positive in (first, second):
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=app.listener.port) as client:
            await client.sendmail("", ["taro.yamada@example.org"], positive.data)
    db = Path(app.settings.database.url.removeprefix("sqlite:///"))
    before = rows(db)
    assert before and {s for *_, s in before} == {"relay"}
    maildir = mailbox.Maildir(tmp_path / "inbox", create=True)
    maildir.add(b"Return-Path: <>\r\nDelivered-To: taro.yamada@example.org\r\n" + hop.messages[0].data)
    # The other one as a mailbox that never saw the block: trace fields on top, LF line ends.
    trace = b"Return-Path: <>\nDelivered-To: taro.yamada@example.org\nReceived: from mx by mbox; now\n"
    maildir.add(trace + second.data.replace(b"\r\n", b"\n"))
    # Not the same bytes, but the same bounce:
    assert bounce_digest(as_on_the_wire(trace + second.data.replace(b"\r\n", b"\n"))) == bounce_digest(
        second.data
    )
    result = run_scan("--record", "--format", "csv", str(tmp_path / "inbox"), db=db)
    assert result.returncode == 0, result.stderr
    assert "already explained and recorded by the relay: 1 bounces" in result.stderr
    assert "recorded: 0 new" in result.stderr  # so the relay's incidents are found
    assert rows(db) == before
    table = list(csv.DictReader(io.StringIO(result.stdout)))
    assert sorted(r["recipient"] for r in table) == sorted(r for r, *_ in before)


async def test_an_mbox_copy_with_quoted_from_lines_is_the_relays_incident(
    tmp_path: Path, hop: RecordingServer, make_gateway: GatewayFactory
) -> None:
    """An mbox writer quotes a body line starting "From " (RFC 4155): still the relay's incident."""
    import aiosmtplib

    app = await make_gateway(hop.address)
    bounce = with_mbox_quoted_lines()
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=app.listener.port) as client:
        await client.sendmail("", ["taro.yamada@example.org"], bounce)
    db = Path(app.settings.database.url.removeprefix("sqlite:///"))
    before = rows(db)
    assert len(before) == 1 and before[0][2] == "relay"
    # The copy a mailbox that never saw the block holds (delivered by another route).
    box = mailbox.mbox(tmp_path / "postmaster.mbox")
    try:
        box.add(b"Return-Path: <>\r\nDelivered-To: postmaster@example.org\r\n" + bounce)
    finally:
        box.close()
    assert b"\n>From the team" in (tmp_path / "postmaster.mbox").read_bytes()
    result = run_scan("--record", "--format", "csv", str(tmp_path / "postmaster.mbox"), db=db)
    assert result.returncode == 0, result.stderr
    assert "recorded: 0 new, 1 already in the database" in result.stderr
    assert rows(db) == before


def test_exit_status_says_what_was_found(tmp_path: Path) -> None:
    plain = tmp_path / "plain.eml"
    plain.write_bytes(ORDINARY[0])
    bounce = tmp_path / "bounce.eml"
    bounce.write_bytes(POSITIVES[0].data)
    assert run_scan(str(plain)).returncode == 1
    assert run_scan(str(bounce)).returncode == 0
    missing = run_scan(str(bounce), str(tmp_path / "nope"))
    assert missing.returncode == 2
    assert "nope: no such file or folder" in missing.stdout
    assert "Traceback" not in missing.stderr
    assert run_scan("-", stdin=POSITIVES[0].data).returncode == 0


def test_values_from_a_bounce_cannot_drive_the_terminal_or_a_spreadsheet(tmp_path: Path) -> None:
    hostile = POSITIVES[0].data.replace(b"taro.yamada@example.org", b"x\x1b]0;owned\x07\x1b[31m@example.org")
    assert hostile != POSITIVES[0].data
    (tmp_path / "=SUM(1+1).eml").write_bytes(hostile)
    table = subprocess.run(
        [sys.executable, "-m", "gateway", "scan", "=SUM(1+1).eml"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert table.returncode == 0 and "board@contoso.example" in table.stdout
    assert "\x1b" not in table.stdout and "\x07" not in table.stdout
    sheet = subprocess.run(
        [sys.executable, "-m", "gateway", "scan", "--format", "csv", "=SUM(1+1).eml"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert "\x1b" not in sheet.stdout
    assert next(csv.DictReader(io.StringIO(sheet.stdout)))["location"] == "'=SUM(1+1).eml"


def test_progress_only_on_a_terminal(tmp_path: Path) -> None:
    box = mailbox.mbox(tmp_path / "a.mbox")
    for data in [p.data for p in POSITIVES] * 3:
        box.add(data)
    box.close()
    piped = run_scan("--format", "jsonl", str(tmp_path / "a.mbox"))
    assert piped.stderr.startswith("scanned ")  # the summary only: no progress in a pipe
    controller, terminal = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "scan", "--format", "jsonl", str(tmp_path / "a.mbox")],
            stdout=subprocess.PIPE, stderr=terminal, env=os.environ | {"COLUMNS": "100"},
        )  # fmt: skip
        os.close(terminal)
        seen = b""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # the terminal closed: the process is gone
                break
            if not chunk:
                break
            seen += chunk
        assert proc.wait(60) == 0
        assert proc.stdout is not None
        with proc.stdout:
            expected = 3 * len(family_recipients([p.data for p in POSITIVES]))
            assert proc.stdout.read().count(b"\n") == expected  # the rows stay on stdout
    finally:
        os.close(controller)
    assert b"scanning:" in seen and b"family recipients" in seen


def test_the_pool_gives_the_same_rows_as_one_process(tmp_path: Path) -> None:
    box = mailbox.mbox(tmp_path / "big.mbox")
    for data in [p.data for p in POSITIVES] * 4:  # past the inline candidates: the pool runs
        box.add(data)
    box.close()
    one = run_scan("--jobs", "1", "--format", "csv", str(tmp_path / "big.mbox"))
    two = run_scan("--jobs", "2", "--format", "csv", str(tmp_path / "big.mbox"))
    assert one.returncode == two.returncode == 0
    assert one.stdout == two.stdout and one.stdout.count("\n") > 100


def test_ctrl_c_keeps_what_was_recorded(tmp_path: Path) -> None:
    box = mailbox.mbox(tmp_path / "huge.mbox")
    for data in [p.data for p in POSITIVES] * 100:
        box.add(data)
    box.close()
    db = tmp_path / "incidents.sqlite3"
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "scan", "--record", "--jobs", "1", "--database", f"sqlite:///{db}",
         str(tmp_path / "huge.mbox")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    stored = 0
    while time.monotonic() < deadline and not stored and proc.poll() is None:
        time.sleep(0.2)
        if db.exists():
            try:
                stored = len(rows(db))
            except sqlite3.OperationalError:  # the schema is still being created
                stored = 0
    assert stored and proc.poll() is None, "the scan ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted after" in out and "Traceback" not in err
    recorded = int(out.split("recorded: ", 1)[1].split(" new", 1)[0])
    assert recorded == len(rows(db)) and recorded < 100 * len(POSITIVES)


def test_a_date_out_of_range_does_not_stop_the_scan(tmp_path: Path) -> None:
    data = POSITIVES[0].data
    start = data.index(b"\r\nDate: ") + 2
    end = data.index(b"\r\n", start)
    # Parses as a date, then overflows in UTC.
    (tmp_path / "a.eml").write_bytes(data[:start] + b"Date: 31 Dec 9999 23:59:59 -0100" + data[end:])
    (tmp_path / "b.eml").write_bytes(POSITIVES[1].data)
    result = run_scan("--format", "jsonl", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted(row["location"].rsplit("/", 1)[1] for row in rows) == ["a.eml", "b.eml"]
    assert next(row["date"] for row in rows if row["location"].endswith("a.eml")) is None


def test_a_bare_lf_body_and_its_mailbox_copy_share_the_digest() -> None:
    head, body = POSITIVES[0].data.split(b"\r\n\r\n", 1)
    sloppy = head + b"\r\n\r\n" + body.replace(b"\r\n", b"\n", 3)  # a few bare LFs on the wire
    assert sloppy.count(b"\r\n") != sloppy.count(b"\n")
    mailbox_copy = b"Return-Path: <>\n" + sloppy.replace(b"\r\n", b"\n")
    assert bounce_digest(sloppy) == bounce_digest(as_on_the_wire(mailbox_copy))
    assert bounce_digest(sloppy) == bounce_digest(POSITIVES[0].data)
    assert bounce_digest(POSITIVES[1].data) != bounce_digest(POSITIVES[0].data)


def test_recording_into_an_unreachable_database_is_one_line_and_status_2(tmp_path: Path) -> None:
    (tmp_path / "a.eml").write_bytes(POSITIVES[0].data)
    port = free_port()  # nothing listens there
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "scan", "--record", "--database",
         f"postgresql://nobody@127.0.0.1:{port}/x", str(tmp_path / "a.eml")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "unavailable" in lines[0] and f"127.0.0.1:{port}" in lines[0]
