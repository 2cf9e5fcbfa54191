"""Attacks on the listener and what it prints: a connection burst just over ``max_sessions``,
control bytes that a reply would echo, lines one octet too long, a valid RCPT with a long ORCPT,
a slow but steady upload, terminal escapes in a bounce shown by ``bouncegw incidents``, and an
open-relay configuration given to ``bouncegw serve``.

Real loopback SMTP against a real gateway and the recording next hop; the CLI runs on the
gateway's own database.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import io
import json
import os
import re
import sys
from pathlib import Path

from click.testing import CliRunner

import gateway.cli.incidents  # noqa: F401  (registers the commands)
from gateway.cli.common import cli
from gateway.envelope import COMMAND_LINE_LIMITS, MAX_ORCPT
from tests.chaos.harness import (
    Msg,
    Outcome,
    Rules,
    SmtpClient,
    check,
    incidents_by_tag,
    send_all,
    stuff,
    tagged,
)
from tests.conftest import GatewayFactory
from tests.positives import exo_ndr
from tests.processes import free_port, wait_for_smtp, wait_until
from tests.recording_server import RecordingServer
from tests.smtp_client import MESSAGE

#: A reply line as RFC 5321 section 4.2 allows it: code, separator, printable ASCII, CRLF.
REPLY_LINE = re.compile(rb"[2-5][0-9][0-9][ -][\x20-\x7e]*\r\n")


def plain(tag: str, body: bytes = MESSAGE) -> Msg:
    return Msg(tag, tagged(tag, body), sender="a@example.org", rcpt="b@example.com")


async def raw_reply(client: SmtpClient) -> list[bytes]:
    """One reply's lines exactly as they arrived (CRLF kept)."""
    assert client.reader is not None
    lines = []
    while True:
        line = await asyncio.wait_for(client.reader.readline(), client.timeout)
        if not line:
            raise ConnectionResetError("connection closed by the server")
        lines.append(line)
        if line[3:4] != b"-":
            return lines


# -- admission ---------------------------------------------------------------------------------


async def test_burst_admits_exactly_max_sessions(hop: RecordingServer, make_gateway: GatewayFactory) -> None:
    limit = 200
    app = await make_gateway(hop.address, {"listener.max_sessions": limit})
    # All connections are made before the gateway greets any of them (a tight loop).
    streams = await asyncio.gather(
        *(asyncio.open_connection("127.0.0.1", app.listener.port) for _ in range(limit + 1))
    )
    try:
        greetings = await asyncio.gather(*(asyncio.wait_for(r.readline(), 30) for r, _ in streams))
        admitted = [g for g in greetings if g.startswith(b"220 ")]
        refused = [g for g in greetings if g.startswith(b"421 4.3.2")]
        assert (len(admitted), len(refused)) == (limit, 1), greetings[-3:]
        # Still full: one more is refused, and the admitted ones are served.
        late = SmtpClient(app.listener.port, timeout=10)
        assert (await late.connect())[0] == 421
        await late.close()
        reader, writer = next((r, w) for (r, w), g in zip(streams, greetings, strict=True) if g[:3] == b"220")
        writer.write(b"EHLO burst.test\r\n")
        assert (await asyncio.wait_for(reader.readuntil(b"250 "), 10)).startswith(b"250")
    finally:
        for _, writer in streams:
            writer.close()
    await wait_until(lambda: not app.listener.admitted, "the burst's sessions to close", 30)
    after = await send_all(app.listener.port, [plain("after-burst")])
    outcomes = [
        Outcome(Msg(f"burst-refused-{i}", b""), 421, g.decode(), "connect") for i, g in enumerate(refused)
    ]
    figures = check("abuse_connection_burst", [*outcomes, *after], hop.messages, None, burst=limit + 1)
    assert figures.accepted == 1 and figures.replies_4xx == 1


# -- what a reply may quote ----------------------------------------------------------------------

#: Commands whose replies could quote client bytes: (command, reply code expected, or None).
ECHOED: list[tuple[bytes, int | None]] = [
    (b"MAIL FROM:<a@example.org> \x00\x1b[31MRED\x07", 501),  # the reported case
    (b"MAIL FROM:<a@example.org> \x1b]8;;http://evil.example\x07=1", 501),
    (b"MAIL FROM:<a@example.org> " + b"K" * 300 + b"\x1b[2J=1", 501),
    (b"MAIL FROM:<a@example.org> X-\x9b2J=1", 501),
    (b"\x1b[31mEVIL arg", 500),
    (b"VRFY \x1b]0;owned\x07", None),
    (b"VRFY <\xff\xfe\x1b[5m" + b"v" * 480, None),
    (b"HELP \x1b[5m\x7f", 501),
]


async def test_control_bytes_are_never_echoed(hop: RecordingServer, make_gateway: GatewayFactory) -> None:
    app = await make_gateway(hop.address)
    client = SmtpClient(app.listener.port, timeout=10)
    await client.connect()
    seen: list[bytes] = []
    try:
        for command, code in ECHOED:
            await client.write(command + b"\r\n")
            lines = await raw_reply(client)
            seen += lines
            assert code is None or int(lines[0][:3]) == code, (command, lines)
            for line in lines:
                assert REPLY_LINE.fullmatch(line) and len(line) <= 512, (command, line)
        # The first one names what it refused, visibly escaped.
        assert b"\\x1b[31MRED\\x07" in seen[0], seen[0]
        # The session is still usable.
        out = Outcome(plain("after-echo"))
        await client.transaction(out.msg, out)
    finally:
        await client.close()
    check("abuse_control_bytes_in_replies", [out], hop.messages, None, commands=len(ECHOED))
    assert out.accepted


# -- line lengths --------------------------------------------------------------------------------


def _line_message(line: bytes) -> bytes:
    return b"Subject: line length\r\n\r\n" + line + b"\r\nend\r\n"


async def test_line_limits(hop: RecordingServer, make_gateway: GatewayFactory) -> None:
    app = await make_gateway(hop.address)
    # RFC 5321 section 4.5.3.1.6: 1000 octets including CRLF; the transparency dot is not counted.
    messages = {
        "text-1000": plain("text-1000", _line_message(b"y" * 998)),
        "text-1001": plain("text-1001", _line_message(b"z" * 999)),
        "dotted-1000": plain("dotted-1000", _line_message(b"." + b"d" * 997)),
        "dotted-1001": plain("dotted-1001", _line_message(b"." + b"e" * 998)),
    }
    outcomes = await send_all(app.listener.port, list(messages.values()))
    by_tag = {o.msg.tag: o for o in outcomes}
    assert by_tag["text-1000"].accepted and by_tag["dotted-1000"].accepted
    for tag in ("text-1001", "dotted-1001"):
        assert (by_tag[tag].code, by_tag[tag].text[:5]) == (500, "5.5.2"), by_tag[tag]
    dotted = next(m for m in hop.messages if b"dotted-1000" in m.data)
    assert b"\r\n." + b"d" * 997 + b"\r\n" in dotted.data  # arrived with its one dot

    # Command lines: 512 octets with CRLF (RFC 5321 section 4.5.3.1.4).
    client = SmtpClient(app.listener.port, timeout=10)
    await client.connect()
    try:
        fits = b"HELP " + b"h" * (512 - len(b"HELP ") - 2)
        code, _ = await client.command(fits)
        assert code == 501  # read and answered as a command (HELP knows no such topic)
        code, text = await client.command(fits + b"h")
        assert (code, text) == (500, "5.5.2 Command line too long (RFC 5321 section 4.5.3.1.4)")
        # MAIL with every parameter at its longest fits the raised MAIL limit.
        mail = (
            b"MAIL FROM:<" + b"s" * 64 + b"@example.org> SIZE=00000000000000001000 BODY=8BITMIME"
            b" SMTPUTF8 RET=HDRS ENVID=" + b"E" * 100 + b" AUTH=" + b"A" * 500
        )
        code, text = await client.command(mail)
        assert code == 250, text
        await client.command("RSET")
    finally:
        await client.close()
    rules = Rules(allowed_5xx=("500 5.5.2",))
    figures = check("abuse_line_limits", outcomes, hop.messages, None, rules)
    assert figures.accepted == 2 and figures.replies_5xx == 2


async def test_long_orcpt_reaches_the_next_hop(hop: RecordingServer, make_gateway: GatewayFactory) -> None:
    app = await make_gateway(hop.address)
    # RFC 3461 section 4.2: ORCPT up to 500 characters; with NOTIFY the line is far over 512.
    orcpt = "rfc822;" + "o" * (MAX_ORCPT - len("rfc822;@example.com")) + "@example.com"
    assert len(orcpt) == MAX_ORCPT
    valid = f"RCPT TO:<b@example.com> NOTIFY=SUCCESS,FAILURE,DELAY ORCPT={orcpt}"
    assert len(valid) + 2 > 512
    tag = "long-orcpt"
    client = SmtpClient(app.listener.port, timeout=10)
    await client.connect()
    out = Outcome(plain(tag), stage="RCPT")
    try:
        assert (await client.command("MAIL FROM:<a@example.org> ENVID=" + "x" * 100))[0] == 250
        too_long_value = f"RCPT TO:<c@example.com> ORCPT={orcpt}x"
        assert (await client.command(too_long_value))[:1] == (501,)
        over_limit = "RCPT TO:<c@example.com>" + " " * COMMAND_LINE_LIMITS["RCPT"] + "NOTIFY=NEVER"
        code, text = await client.command(over_limit)
        assert (code, text[:5]) == (500, "5.5.2")
        out.code, out.text = await client.command(valid)
        assert out.code == 250, out.text
        out.stage = "DATA"
        out.code, out.text = await client.command("DATA")
        assert out.code == 354
        await client.write(stuff(out.msg.data))
        out.code, out.text = await client.reply()
        out.stage = "END"
    finally:
        await client.close()
    check("abuse_long_orcpt", [out], hop.messages, None, orcpt_chars=len(orcpt))
    [arrived] = hop.messages
    assert arrived.rcpts == [valid.removeprefix("RCPT ")]  # relayed exactly as written


# -- slow uploads ------------------------------------------------------------------------------


async def upload(port: int, msg: Msg, pieces: int, gap: float, *, stall: bool = False) -> Outcome:
    """DATA sent in ``pieces`` parts ``gap`` seconds apart; ``stall``: stop before the end."""
    out = Outcome(msg, stage="MAIL")
    client = SmtpClient(port, timeout=30)
    await client.connect()
    try:
        for line in (f"MAIL FROM:<{msg.sender}>", f"RCPT TO:<{msg.rcpt}>", "DATA"):
            out.code, out.text = await client.command(line)
        assert out.code == 354
        out.stage = "DATA"
        data = stuff(msg.data)
        size = -(-len(data) // pieces)
        for start in range(0, len(data), size):
            if stall and start + size >= len(data):
                break
            await client.write(data[start : start + size])
            await asyncio.sleep(gap)
        out.code, out.text = await client.reply()
        out.stage = "END"
    except ConnectionError:
        out.stage, out.code = "dropped", None
    finally:
        await client.close()
    return out


async def test_slow_steady_upload_is_not_idle(hop: RecordingServer, make_gateway: GatewayFactory) -> None:
    idle = 1.0
    app = await make_gateway(hop.address, {"listener.data_idle_timeout": idle, "listener.data_timeout": 60})
    body = MESSAGE + (b"x" * 70 + b"\r\n") * 40
    pieces, gap = 40, idle / 10  # the upload takes about four idle timeouts, never idle for one
    steady, stalled = await asyncio.gather(
        upload(app.listener.port, plain("steady-drip", body), pieces, gap),
        upload(app.listener.port, plain("stalled-drip", body), pieces, gap, stall=True),
    )
    assert steady.accepted, steady
    assert (stalled.code, stalled.text[:5]) == (421, "4.4.2"), stalled
    figures = check("abuse_slow_steady_upload", [steady, stalled], hop.messages, None, pieces=pieces)
    assert figures.accepted == 1 and figures.replies_4xx == 1


# -- terminal escapes from a bounce ------------------------------------------------------------

#: Text a bounce can carry to an operator's terminal: an OSC 8 hyperlink, colour, a one-byte C1
#: CSI (U+009B), a right-to-left override, DEL, rich markup, and a spreadsheet formula.
HOSTILE_SUBJECT = (
    '=HYPERLINK("http://evil.example") \x1b]8;;http://evil.example\x07click\x1b]8;;\x07 '
    "\x1b[31mRED\x1b[0m \x9b2J \u202egnp.exe\x7f [link=http://evil.example]markup[/link] 報告"
)
CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


async def test_terminal_escapes_from_a_bounce(hop: RecordingServer, make_gateway: GatewayFactory) -> None:
    app = await make_gateway(hop.address)
    tag = "hostile-subject"
    encoded = "=?utf-8?B?" + base64.b64encode(HOSTILE_SUBJECT.encode()).decode() + "?="
    # The returned message's Subject (the last one; the human part quotes it first).
    head, _, tail = exo_ndr("victim@contoso.example", "5.7.133").rpartition(b"Subject: Quarterly report")
    bounce = head + b"Subject: " + encoded.encode() + tail
    msg = Msg(tag, tagged(tag, bounce, message_id=True), family=1)
    outcomes = await send_all(app.listener.port, [msg])
    url = app.settings.database.url
    await wait_until(lambda: incidents_by_tag(url)[tag] == 1, "the incident to be recorded", 30)
    check("abuse_terminal_escapes", outcomes, hop.messages, incidents_by_tag(url))

    def run(*args: str) -> str:
        result = CliRunner(env={"COLUMNS": "400"}).invoke(cli, ["incidents", *args, "--database", url])
        assert result.exit_code == 0, result.output
        return result.output

    [stored] = json.loads(run("list", "--format", "json"))
    assert stored["original_subject"] == HOSTILE_SUBJECT  # stored as received; escaped when shown
    outputs = {
        "show": run("show", stored["id"]),
        "show-json": run("show", stored["id"], "--format", "json"),
        "list": run("list"),
        "list-csv": run("list", "--format", "csv"),
        "list-ndjson": run("list", "--format", "ndjson"),
    }
    for name, text in outputs.items():
        assert not CONTROLS.search(text), (name, CONTROLS.search(text))
    assert "\\x1b[31mRED" in outputs["show"] and "[link=http://evil.example]markup[/link]" in outputs["show"]
    assert "報告" in outputs["show"]  # ordinary Unicode stays readable
    assert json.loads(outputs["show-json"])["original_subject"] == HOSTILE_SUBJECT  # JSON: same data
    [row] = csv.DictReader(io.StringIO(outputs["list-csv"]))
    assert row["original_subject"].startswith("'=HYPERLINK(")  # not a formula for a spreadsheet


# -- configuration: an open relay does not start -------------------------------------------------


async def serve(tmp_path: Path, env: dict[str, str]) -> asyncio.subprocess.Process:
    full = {
        **os.environ,
        "BOUNCEGW_LISTENER__HOSTNAME": "gw.test",
        "BOUNCEGW_LISTENER__WORKERS": "1",
        "BOUNCEGW_NEXT_HOP__ADDRESS": f"maildir:{tmp_path / 'out'}",
        "BOUNCEGW_DATABASE__URL": f"sqlite:///{tmp_path / 'gw.sqlite3'}",
        "BOUNCEGW_STORAGE__JOURNAL_PATH": str(tmp_path / "journal.jsonl"),
        "BOUNCEGW_ADMIN__HTTP": f"127.0.0.1:{free_port()}",
        "BOUNCEGW_LOG__FORMAT": "text",
        **env,
    }
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "serve", env=full,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def test_open_relay_refuses_to_start(tmp_path: Path) -> None:
    port = free_port()
    relay = {
        "BOUNCEGW_LISTENER__LISTEN": f"0.0.0.0:{port}",
        "BOUNCEGW_LISTENER__ALLOWED_NETWORKS": "0.0.0.0/0",
    }
    proc = await serve(tmp_path, relay)
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    lines = err.decode().strip().splitlines()
    problems = [line for line in lines if "open relay" in line]
    assert proc.returncode not in (0, None)
    assert "Traceback" not in err.decode()
    assert len(lines) == 1 and len(problems) == 1, err.decode()  # one line for the operator
    assert "allowed_networks ['0.0.0.0/0']" in problems[0] and "allow_open_relay" in problems[0]

    # With the explicit override it starts, and says so in its log.
    proc = await serve(tmp_path, {**relay, "BOUNCEGW_LISTENER__ALLOW_OPEN_RELAY": "true"})
    try:
        assert proc.stderr is not None
        line = await asyncio.wait_for(proc.stderr.readline(), 60)
        assert b"open relay" in line and b"WARNING" in line, line
        await wait_for_smtp(port, proc)
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0
