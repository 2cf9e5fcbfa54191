"""Hand-made bad input: oversize, long lines, NUL and 8-bit without 8BITMIME, CR/LF in headers and
addresses, HTML and template injection through bounce fields, 500 nested multiparts, a 30 MB bounce."""

from __future__ import annotations

import asyncio
import base64
import email
import email.message
import email.policy
import time

from tests.chaos.harness import (
    LINE_ENDINGS,
    TAG_RE,
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
from tests.explain_checks import delivery_status_fields
from tests.positives import POSITIVES, exo_ndr
from tests.recording_server import RecordingServer
from tests.smtp_client import MESSAGE

LIMITS = ("552 5.3.4", "500 5.5.2")


def ordinary(tag: str, body: bytes, mail_params: str = "") -> Msg:
    data = tagged(tag, b"Subject: " + tag.encode() + b"\r\n\r\n" + body)
    return Msg(tag, data, sender="a@example.org", mail_params=mail_params)


async def test_oversize_long_lines_nul_8bit_crlf(hop: RecordingServer, make_gateway: GatewayFactory) -> None:
    app = await make_gateway(hop.address, {"listener.max_message_size": 64 * 1024})
    msgs = [
        ordinary("oversize-data", (b"y" * 900 + b"\r\n") * 80),  # 72 KB: 552 after the data
        ordinary("oversize-declared", b"small\r\n", mail_params=" SIZE=999999"),  # 552 at MAIL
        ordinary("line-1001", b"z" * 1001 + b"\r\n"),  # 1001 octets + CRLF: 500 5.5.2
        ordinary("line-998", b"z" * 998 + b"\r\n"),  # 998 + CRLF = 1000: fine
        ordinary("nul-8bit-no-8bitmime", b"nul:\x00 8bit:\x80\xff\xe3\x81\x82 end\r\n"),
        ordinary("bare-cr-in-header", b"x\r\n"),
        Msg("addr-cr", b"Subject: x\r\n\r\nx\r\n", sender="a@exa\rmple.org"),
    ]
    # a header whose value carries a bare CR and a bare LF ("header splitting")
    msgs[5] = Msg(
        "bare-cr-in-header",
        tagged("bare-cr-in-header", b"Subject: hi\rBcc: victim@example.net\r\nX-A: b\nX-B: c\r\n\r\nx\r\n"),
        sender="a@example.org",
    )
    nul_family = next(p for p in POSITIVES if b"charset=utf-8" in p.data.lower())
    data = nul_family.data.replace(b"Delivery has failed", b"Delivery\x00 has \xff failed", 1)
    msgs.append(
        Msg(
            "nul-8bit-family",
            tagged("nul-8bit-family", data, message_id=True),
            family=len(nul_family.expected),
        )
    )
    outcomes = await send_all(app.listener.port, msgs)
    # Last on its own session: the server reads "RCPT TO:<b@exa" and "mple.com>" as two commands.
    lf = Msg("addr-lf", b"Subject: x\r\n\r\nx\r\n", sender="a@example.org", rcpt="b@exa\nmple.com")
    outcomes += await send_all(app.listener.port, [lf])
    by_tag = {o.msg.tag: o for o in outcomes}
    rec = await asyncio.to_thread(incidents_by_tag, app.settings.database.url)
    check(
        "oversize_longlines_nul_8bit_crlf",
        outcomes,
        hop.messages,
        rec,
        Rules(allowed_5xx=(*LIMITS, "553", "501", "500 5.5.2")),
    )
    assert by_tag["oversize-data"].code == 552 and by_tag["oversize-declared"].code == 552
    assert by_tag["line-1001"].code == 500 and by_tag["line-998"].accepted
    assert by_tag["nul-8bit-no-8bitmime"].accepted and by_tag["nul-8bit-family"].accepted
    assert by_tag["addr-cr"].code == 553 and by_tag["addr-lf"].code in (501, 553)
    arrived = {m.message.split(b"\r\n", 1)[0]: m for m in hop.messages}
    nul = arrived[b"X-Chaos-Tag: nul-8bit-no-8bitmime"]
    assert nul.message == msgs[4].data  # byte for byte, NUL and 8-bit included
    split = arrived[b"X-Chaos-Tag: bare-cr-in-header"]
    # Bare CR/LF become CRLF on the way out (documented); the envelope is never affected.
    assert split.message == LINE_ENDINGS.sub(b"\r\n", msgs[5].data)
    assert split.rcpts == ["TO:<sender@example.org>"]
    assert not any("victim" in c or ("exa" in c and "mple" in c and "\r" in c) for c in hop.commands)


async def test_html_and_template_injection(hop: RecordingServer, make_gateway: GatewayFactory) -> None:
    evil_rcpt = '"<script>alert(1)</script>{{7*7}}"@contoso.example'
    data = exo_ndr(evil_rcpt, "5.7.133")
    data = data.replace(
        b"RESOLVER.RST.", b"{{ 7*7 }}{% raw %}<script>x()</script>\r\n Bcc: v@x.test RESOLVER.RST.", 1
    )
    data = data.replace(
        b"Subject: Quarterly report", b"Subject: =?utf-8?q?q=0D=0AX-Injected:_yes_{{7*7}}_<b>?=", 1
    )
    app = await make_gateway(hop.address)
    msg = Msg("injection", tagged("injection", data, message_id=True), family=1)
    outcomes = await send_all(app.listener.port, [msg])
    rec = await asyncio.to_thread(incidents_by_tag, app.settings.database.url)
    check("html_template_injection", outcomes, hop.messages, rec)
    out = hop.messages[0].message
    assert out.startswith(b"X-Bouncegw-Explained: ")
    parsed = email.message_from_bytes(out, policy=email.policy.default)
    before = human_parts(email.message_from_bytes(msg.data, policy=email.policy.default))
    blocks = {kind: added(before[kind], text) for kind, text in human_parts(parsed).items()}
    assert set(blocks) == {"text/plain", "text/html"} and all(blocks.values())
    # what the block adds: input escaped in HTML, never evaluated, no line that starts a header
    assert "<script>" not in blocks["text/html"] and "&lt;script&gt;" in blocks["text/html"]
    assert "yes {{7*7}} <b>" not in blocks["text/html"]  # the subject's markup is escaped too
    for block in blocks.values():
        assert "49" not in block.replace("7*7", "")
        assert not any(line.lstrip().startswith(("X-Injected", "Bcc:")) for line in block.splitlines())
    assert delivery_status_fields(out) == delivery_status_fields(msg.data)
    # root headers: the original ones plus X-Bouncegw-Explained, nothing injected
    assert parsed["X-Injected"] is None and parsed["Bcc"] is None


def human_parts(message: email.message.Message) -> dict[str, str]:
    """The first text/plain and text/html parts (the bounce's own, not the returned message's)."""
    found: dict[str, str] = {}
    for part in message.walk():
        kind = part.get_content_type()
        if kind in ("text/plain", "text/html"):
            found.setdefault(kind, part.get_content())  # type: ignore[attr-defined]
    return found


def added(before: str, after: str) -> str:
    """The block spliced in: what precedes the original content (after <body> in HTML)."""
    before, after = before.replace("\r\n", "\n"), after.replace("\r\n", "\n")
    if "<body>" in before:
        before, after = before.split("<body>", 1)[1], after.split("<body>", 1)[1]
    head = before.lstrip()[:60]
    assert head in after
    return after.split(head, 1)[0]


def nested(depth: int) -> bytes:
    head = (
        b"From: MAILER-DAEMON@outlook.example\r\nTo: sender@example.org\r\nSubject: Undeliverable\r\n"
        b"MIME-Version: 1.0\r\n"
    )
    open_ = b"".join(
        b'Content-Type: multipart/mixed; boundary="n%d"\r\n\r\n--n%d\r\n' % (i, i) for i in range(depth)
    )
    inner = (
        b"Content-Type: text/plain\r\n\r\n550 5.7.133 RESOLVER.RST.SenderNotAuthenticatedForGroup;"
        b" authentication required <grp@contoso.example>\r\n"
    )
    close = b"".join(b"--n%d--\r\n" % i for i in reversed(range(depth)))
    return head + open_ + inner + close


async def test_500_nested_multiparts(hop: RecordingServer, make_gateway: GatewayFactory) -> None:
    app = await make_gateway(hop.address)
    msgs = [Msg(f"nested-{d}", tagged(f"nested-{d}", nested(d))) for d in (50, 500, 2000)]
    msgs.append(Msg("nested-after", tagged("nested-after", MESSAGE)))
    outcomes = await send_all(app.listener.port, msgs)
    check("nested_multiparts_500", outcomes, hop.messages, None, depths="50,500,2000")
    assert all(o.accepted for o in outcomes)
    sent = {x.tag.encode(): x.data for x in msgs}
    for m in hop.messages:
        found = TAG_RE.search(m.data[:300])
        assert found is not None
        assert m.message == sent[found.group(1)] or m.message.startswith(b"X-Bouncegw-Explained: ")


def big_bounce(size: int) -> bytes:
    positive = POSITIVES[0]
    blob = base64.encodebytes(b"\x00\x01binary" * (size // 8 * 3 // 4)).replace(b"\n", b"\r\n")
    extra = b"--rep-b1\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    assert b"--rep-b1--" in positive.data
    return positive.data.replace(b"--rep-b1--", extra + blob + b"--rep-b1--", 1)


async def test_30mb_bounce_and_loop_stays_responsive(
    hop: RecordingServer, make_gateway: GatewayFactory
) -> None:
    app = await make_gateway(hop.address, {"listener.max_message_size": 40 * 1024 * 1024})
    data = big_bounce(30 * 1024 * 1024)
    big = Msg("big-30mb", tagged("big-30mb", data, message_id=True), family=len(POSITIVES[0].expected))
    small = Msg("small-during-big", tagged("small-during-big", MESSAGE), sender="a@example.org")
    lag = 0.0
    stop = asyncio.Event()

    async def ticker() -> None:  # how late a 10 ms sleep wakes up: the loop's worst stall
        nonlocal lag
        while not stop.is_set():
            t = time.perf_counter()
            await asyncio.sleep(0.01)
            lag = max(lag, time.perf_counter() - t - 0.01)

    big_out, small_out = Outcome(big), Outcome(small)
    client = SmtpClient(app.listener.port, timeout=120)
    await client.connect()
    tick = asyncio.create_task(ticker())
    try:
        big_out.stage = "DATA"
        for line in ("MAIL FROM:<>", "RCPT TO:<sender@example.org>", "DATA"):
            big_out.code, big_out.text = await client.command(line)
        await client.write(stuff(big.data))  # all of it written: the gateway now reads, parses, relays
        small_out = (await send_all(app.listener.port, [small]))[0]
        big_out.code, big_out.text = await client.reply()
        big_out.stage = "END"
    finally:
        stop.set()
        await tick
        await client.close()
    order = [m.message[:200].split(b"\r\n") for m in hop.messages]
    rec = await asyncio.to_thread(incidents_by_tag, app.settings.database.url)
    check(
        "bounce_30mb",
        [big_out, small_out],
        hop.messages,
        rec,
        size_bytes=len(big.data),
        max_loop_stall_ms=round(lag * 1000),
    )
    assert big_out.accepted and small_out.accepted
    assert hop.messages[0].message.startswith(b"X-Chaos-Tag: small-during-big"), order  # not stuck behind it
    assert hop.messages[1].message.startswith(b"X-Bouncegw-Explained: ")
