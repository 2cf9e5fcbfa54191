"""Misbehaving clients: outside the allowed networks, too many sessions, slow drip, command floods,
AUTH guessing, SMTP smuggling, a STARTTLS downgrade, and the admin API without the right token."""

from __future__ import annotations

import asyncio
import base64
import smtplib
import ssl
from typing import Any

import httpx

from gateway.admin import create_admin_app
from storage.repository import Repository
from tests.certs import PKI
from tests.chaos.harness import Figures, Msg, Outcome, Rules, SmtpClient, check, report, send_all, tagged
from tests.conftest import GatewayFactory
from tests.metric_samples import MetricDeltas
from tests.recording_server import RecordingServer
from tests.smtp_client import MESSAGE


def plain(tag: str) -> Msg:
    return Msg(tag, tagged(tag, MESSAGE), sender="a@example.org", rcpt="b@example.com")


async def test_clients_outside_allowed_networks(hop: RecordingServer, make_gateway: GatewayFactory) -> None:
    app = await make_gateway(hop.address, {"listener.allowed_networks": ["127.0.0.1/32"]})
    counted = MetricDeltas()
    outside = await asyncio.gather(
        *(send_all(app.listener.port, [plain(f"outside-{i}")], source="127.0.0.2") for i in range(20))
    )
    inside = await send_all(app.listener.port, [plain("inside")])
    outcomes = [o for r in outside for o in r] + inside
    figures = check("abuse_outside_networks", outcomes, hop.messages, None, Rules(allowed_5xx=("554 5.7.1",)))
    assert figures.replies_5xx == 20 and figures.accepted == 1
    assert all(o.stage == "connect" for r in outside for o in r)
    assert counted("bouncegw_connections_refused_total", reason="network") == 20
    assert hop.connections == 1


async def test_too_many_sessions(hop: RecordingServer, make_gateway: GatewayFactory) -> None:
    app = await make_gateway(hop.address, {"listener.max_sessions": 4})
    idle = [SmtpClient(app.listener.port, timeout=10) for _ in range(4)]
    for c in idle:
        assert (await c.connect())[0] == 250
    try:
        refused = await asyncio.gather(
            *(send_all(app.listener.port, [plain(f"extra-{i}")]) for i in range(8))
        )
    finally:
        for c in idle:
            await c.close()
    await asyncio.sleep(0.2)
    after = await send_all(app.listener.port, [plain("after-idle-closed")])
    outcomes = [o for r in refused for o in r] + after
    figures = check("abuse_too_many_sessions", outcomes, hop.messages, None)
    assert all(o.code == 421 and o.text.startswith("4.3.2") for r in refused for o in r)
    assert figures.accepted == 1 and figures.replies_4xx == 8


async def drip(
    port: int, prefix: bytes, payload: bytes, interval: float, limit: int
) -> tuple[int | None, str, int]:
    """Send ``prefix`` at once, then ``payload`` one byte per ``interval`` (at most ``limit`` bytes)."""
    client = SmtpClient(port, timeout=10)
    await client.connect()
    assert client.writer is not None and client.reader is not None
    sent = 0
    try:
        if prefix:
            client.writer.write(prefix)
            while True:  # read up to the 354
                code, _ = await client.reply()
                if code == 354:
                    break
        try:
            for byte in payload[:limit]:
                if client.reader.at_eof() or client.writer.is_closing():
                    break
                client.writer.write(bytes([byte]))
                await client.writer.drain()
                sent += 1
                await asyncio.sleep(interval)
                if client.reader._buffer:  # type: ignore[attr-defined]  # the server said something
                    break
        except ConnectionError:
            pass  # the server closed: its last words are still in the read buffer
        try:
            code, text = await client.reply()
            return code, text, sent
        except (ConnectionError, TimeoutError, ValueError):
            return None, "closed", sent
    except ConnectionError:
        return None, "closed", sent
    finally:
        await client.close()


async def test_slowloris(hop: RecordingServer, make_gateway: GatewayFactory) -> None:
    app = await make_gateway(
        hop.address,
        {"listener.command_timeout": 0.5, "listener.data_idle_timeout": 0.3, "listener.data_timeout": 1.0},
    )
    data_prefix = b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n"
    drips = [
        drip(app.listener.port, b"", b"NOOP and a very slow command line\r\n" * 4, 0.1, 100) for _ in range(3)
    ]
    drips += [drip(app.listener.port, data_prefix, MESSAGE * 4, 0.1, 100) for _ in range(3)]
    normal = asyncio.create_task(
        send_all(app.listener.port, [plain(f"beside-slowloris-{i}") for i in range(10)])
    )
    results = await asyncio.gather(*drips)
    outcomes = await normal
    for i, (code, text, sent) in enumerate(results):
        o = Outcome(Msg(f"slowloris-{i}", b""), code, text, "dropped" if code is None else "DATA")
        outcomes.append(o)
        assert sent < 100, "the gateway must cut a drip client off before it is done"
    # Every drip is cut off with 421 and a close. A drip client that writes one more byte after
    # the close can get a TCP reset that discards the unread 421 from its own receive buffer, so
    # "closed" counts as cut off too; most drips do read the 421.
    assert all(code in (421, None) for code, _, _ in results), results
    assert sum(code == 421 for code, _, _ in results) >= 1, results
    figures = check("abuse_slowloris", outcomes, hop.messages, None)
    assert figures.accepted == 10


async def test_command_flood_and_auth_guessing(
    pki: PKI, auth_over_tls: dict[str, Any], hop: RecordingServer, make_gateway: GatewayFactory
) -> None:
    app = await make_gateway(hop.address, auth_over_tls)
    outcomes: list[Outcome] = []
    for verb, bound in (("NOOP", 200), ("VRFY b@example.com", 50), ("HELP", 50)):
        client = SmtpClient(app.listener.port, timeout=10)
        await client.connect()
        codes = []
        try:
            for _ in range(bound):  # bounded flood
                code, text = await client.command(verb)
                codes.append(code)
                if code == 421:
                    break
        except ConnectionError:
            pass
        finally:
            await client.close()
        assert codes[-1] == 421 and len(codes) < bound, (verb, codes[-3:])
        outcomes.append(Outcome(Msg(f"flood-{verb.split()[0]}", b""), 421, text, "MAIL"))

    def guess() -> list[int]:
        codes = []
        context = ssl.create_default_context(cafile=str(pki.ca_cert))
        with smtplib.SMTP("127.0.0.1", app.listener.port, timeout=10) as smtp:
            smtp.ehlo("c.test")
            smtp.starttls(context=context)
            smtp.ehlo("c.test")
            for i in range(20):  # bounded guessing
                token = base64.b64encode(f"\0exchange\0guess{i}".encode()).decode()
                try:
                    code, _ = smtp.docmd("AUTH", "PLAIN " + token)
                except smtplib.SMTPServerDisconnected:
                    break
                codes.append(code)
                if code == 421:
                    break
        return codes

    codes = await asyncio.to_thread(guess)
    assert codes[:5] == [535] * 5 and codes[-1] == 421 and 235 not in codes
    outcomes.append(Outcome(Msg("auth-guessing", b""), 421, "auth", "MAIL"))
    figures = check(
        "abuse_command_flood_auth_guessing", outcomes, hop.messages, None, auth_attempts=len(codes)
    )
    assert figures.replies_4xx == 4 and hop.connections == 0


SMUGGLING = {
    "bare-lf": b"\n.\n",
    "lf-crlf": b"\n.\r\n",
    "crlf-lf": b"\r\n.\n",
    "bare-cr": b"\r.\r",
    "cr-crlf": b"\r.\r\n",
}


async def test_smtp_smuggling(hop: RecordingServer, make_gateway: GatewayFactory) -> None:
    app = await make_gateway(hop.address)
    outcomes = []
    for name, ending in SMUGGLING.items():
        tag = f"smuggle-{name}"
        body = (
            b"X-Chaos-Tag: "
            + tag.encode()
            + b"\r\nSubject: outer\r\n\r\nhello"
            + ending
            + b"MAIL FROM:<evil@example.org>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\n"
            + b"Subject: smuggled\r\n\r\nspoof\r\n"
        )
        out = Outcome(Msg(tag, body))
        client = SmtpClient(app.listener.port, timeout=10)
        await client.connect()
        try:
            for line in ("MAIL FROM:<a@example.org>", "RCPT TO:<b@example.com>", "DATA"):
                out.code, out.text = await client.command(line)
            await client.write(body + b"\r\n.\r\n")  # raw: no dot-stuffing, the smuggled dot stays
            out.code, out.text = await client.reply()
            out.stage = "END"
            out.code2 = await client.command("QUIT")  # type: ignore[attr-defined]
        finally:
            await client.close()
        outcomes.append(out)
    figures = check("abuse_smtp_smuggling", outcomes, hop.messages, None, variants=len(SMUGGLING))
    assert figures.accepted == len(SMUGGLING)
    assert all(m.rcpts == ["TO:<b@example.com>"] and b"smuggled" in m.data for m in hop.messages)
    assert not any("evil@" in c or "victim@" in c for c in hop.commands)


async def _strip_starttls_proxy(target: int) -> asyncio.Server:
    """A man in the middle that deletes STARTTLS from the EHLO reply (a downgrade attack)."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, strip: bool) -> None:
        try:
            while line := await reader.readline():
                if not (strip and b"STARTTLS" in line.upper() and line.startswith(b"250-")):
                    writer.write(line)
                    await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def session(cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        sr, sw = await asyncio.open_connection("127.0.0.1", target)
        await asyncio.gather(pipe(cr, sw, False), pipe(sr, cw, True))

    return await asyncio.start_server(session, "127.0.0.1", 0)


async def test_starttls_downgrade(pki: PKI, hop: RecordingServer, make_gateway: GatewayFactory) -> None:
    app = await make_gateway(
        hop.address,
        {
            "listener.tls_cert": str(pki.server_cert),
            "listener.tls_key": str(pki.server_key),
            "listener.require_tls": True,
        },
    )
    direct = await send_all(app.listener.port, [plain(f"cleartext-{i}") for i in range(5)])
    proxy = await _strip_starttls_proxy(app.listener.port)
    try:
        port = proxy.sockets[0].getsockname()[1]

        def stripped() -> int:
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
                smtp.ehlo("c.test")
                assert not smtp.has_extn("starttls")  # the attacker removed it
                try:
                    smtp.sendmail("a@example.org", ["b@example.com"], MESSAGE)
                except smtplib.SMTPSenderRefused as exc:
                    return exc.smtp_code
                return 250

        code = await asyncio.to_thread(stripped)
    finally:
        proxy.close()
    outcomes = [*direct, Outcome(Msg("stripped-starttls", b""), code, "", "MAIL")]
    figures = check("abuse_starttls_downgrade", outcomes, hop.messages, None, Rules(allowed_5xx=("530",)))
    assert all(o.code == 530 and o.stage == "MAIL" for o in outcomes)
    assert figures.accepted == 0 and hop.connections == 0


async def test_api_tokens(hop: RecordingServer, make_gateway: GatewayFactory) -> None:
    app = await make_gateway(hop.address, {"admin.api_token": "s3cret-token"})
    url = f"http://127.0.0.1:{app.http_port}/api/v1/incidents"
    async with httpx.AsyncClient(timeout=10) as client:
        none = await client.get(url)
        wrong = await client.get(url, headers={"Authorization": "Bearer guess"})
        right = await client.get(url, headers={"Authorization": "Bearer s3cret-token"})
    assert (none.status_code, wrong.status_code, right.status_code) == (401, 401, 200)
    # No token configured: loopback clients only. The real admin app, driven in-process with a
    # client address that is not loopback (the suite stays on 127.0.0.0/8).
    repo = Repository.from_url(app.settings.database.url)
    try:
        open_app = create_admin_app(repo, api_token=None)
        for host, expected in (("192.0.2.10", 403), ("127.0.0.1", 200)):
            transport = httpx.ASGITransport(app=open_app, client=(host, 40000))
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as c:
                assert (await c.get("/api/v1/incidents")).status_code == expected
    finally:
        repo.close()
    figures = Figures("abuse_api_tokens", sent=5, accepted=2, replies_4xx=3)
    figures.extra["note"] = "HTTP requests: 401 no token, 401 wrong, 403 non-loopback without token"
    report(figures)
