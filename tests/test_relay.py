"""The relay hop over real loopback sockets: a client, the gateway, a recording next hop."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import smtplib
import socket
import ssl
from typing import Any

import pytest

from gateway.pipeline import Processed
from gateway.relay import Reply
from gateway.transaction import MessageContext
from tests.certs import PKI
from tests.conftest import GatewayFactory
from tests.metric_samples import MetricDeltas
from tests.processes import wait_until
from tests.recording_server import RecordingServer
from tests.smtp_client import MESSAGE, UP_TO_DATA, asend, dialogue


async def test_message_arrives_byte_identical(hop: RecordingServer, make_gateway: GatewayFactory) -> None:
    app = await make_gateway(hop.address)
    refused = await asend(app.listener.port, "alice@example.org", ["bob@example.com"], MESSAGE)
    assert refused == {}
    assert len(hop.messages) == 1
    assert hashlib.sha256(hop.messages[0].message).digest() == hashlib.sha256(MESSAGE).digest()
    assert hop.messages[0].mail_from.startswith("FROM:<alice@example.org>")
    assert hop.messages[0].rcpts == ["TO:<bob@example.com>"]


async def test_null_sender_is_relayed(hop: RecordingServer, make_gateway: GatewayFactory) -> None:
    app = await make_gateway(hop.address)
    await asend(app.listener.port, "<>", ["bob@example.com"], MESSAGE)
    assert hop.messages[0].mail_from == f"FROM:<> size={len(MESSAGE)}"  # smtplib's SIZE, passed on


async def test_ehlo_advertises_relay_extensions(hop: RecordingServer, make_gateway: GatewayFactory) -> None:
    app = await make_gateway(hop.address)

    def ehlo() -> set[str]:
        with smtplib.SMTP("127.0.0.1", app.listener.port) as client:
            client.ehlo("client.test")
            return set(client.esmtp_features)

    features = await asyncio.to_thread(ehlo)
    assert {"pipelining", "size", "8bitmime", "smtputf8", "enhancedstatuscodes", "dsn"} <= features
    assert "auth" not in features  # no inbound users configured
    assert "starttls" not in features  # no certificate configured


async def test_refused_recipient_gets_next_hop_reply_others_delivered_once(
    hop: RecordingServer, make_gateway: GatewayFactory
) -> None:
    hop.replies["RCPT"] = lambda arg: (
        "550 5.1.1 <bad@example.com>: Recipient address rejected" if "bad@" in arg else None
    )
    app = await make_gateway(hop.address)
    refused = await asend(
        app.listener.port,
        "alice@example.org",
        ["one@example.com", "bad@example.com", "two@example.com"],
        MESSAGE,
    )
    assert refused == {"bad@example.com": (550, b"5.1.1 <bad@example.com>: Recipient address rejected")}
    assert len(hop.messages) == 1
    assert hop.messages[0].rcpts == ["TO:<one@example.com>", "TO:<two@example.com>"]


@pytest.mark.parametrize(
    ("reply", "code", "text"),
    [
        ("451 4.3.0 Temporary lookup failure", 451, b"4.3.0 Temporary lookup failure"),
        ("554 5.7.1 Message rejected as spam", 554, b"5.7.1 Message rejected as spam"),
    ],
)
async def test_data_reply_is_the_next_hops(
    hop: RecordingServer, make_gateway: GatewayFactory, reply: str, code: int, text: bytes
) -> None:
    hop.replies["DATA_END"] = lambda _: reply
    app = await make_gateway(hop.address)
    with pytest.raises(smtplib.SMTPDataError) as info:
        await asend(app.listener.port, "alice@example.org", ["bob@example.com"], MESSAGE)
    assert (info.value.smtp_code, info.value.smtp_error) == (code, text)
    assert hop.messages == []


@pytest.mark.parametrize("stage", ["DATA", "DATA_END"])
async def test_next_hop_421_at_data_becomes_451_and_connection_is_dropped(
    hop: RecordingServer, make_gateway: GatewayFactory, stage: str
) -> None:
    # RFC 5321 section 3.8: a 421 means the next hop is closing; upstream gets 451 4.4.2
    # (README, failure replies) and the connection is not handed back to the pool.
    hop.replies[stage] = lambda _: "421 4.3.2 Shutting down"
    app = await make_gateway(hop.address)
    with pytest.raises(smtplib.SMTPDataError) as info:
        await asend(app.listener.port, "alice@example.org", ["bob@example.com"], MESSAGE)
    assert info.value.smtp_code == 451
    assert info.value.smtp_error.startswith(b"4.4.2 ")
    del hop.replies[stage]
    await asend(app.listener.port, "alice@example.org", ["bob@example.com"], MESSAGE)
    assert len(hop.messages) == 1
    assert hop.connections == 2  # a fresh connection, not the one that said 421


async def test_multiline_next_hop_reply_is_relayed_whole(
    hop: RecordingServer, make_gateway: GatewayFactory
) -> None:
    hop.replies["RCPT"] = lambda _: "550-5.7.1 first line\r\n550 5.7.1 second line"
    app = await make_gateway(hop.address)
    out = await asyncio.to_thread(
        dialogue,
        app.listener.port,
        [b"EHLO c.test\r\n", b"MAIL FROM:<a@example.org>\r\n", b"RCPT TO:<b@example.com>\r\n", b"QUIT\r\n"],
    )
    assert "550-5.7.1 first line" in out and "550 5.7.1 second line" in out


async def test_next_hop_down_is_451_441(make_gateway: GatewayFactory) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]
    app = await make_gateway(f"127.0.0.1:{dead}")
    with pytest.raises(smtplib.SMTPSenderRefused) as info:
        await asend(app.listener.port, "alice@example.org", ["bob@example.com"], MESSAGE)
    assert info.value.smtp_code == 451
    assert info.value.smtp_error.startswith(b"4.4.1")


async def test_next_hop_hanging_on_data_is_4xx_within_timeout(
    hop: RecordingServer, make_gateway: GatewayFactory
) -> None:
    hop.delays["DATA_END"] = 30
    app = await make_gateway(hop.address, {"next_hop.data_timeout": 0.5})
    with pytest.raises(smtplib.SMTPDataError) as info:
        await asend(app.listener.port, "alice@example.org", ["bob@example.com"], MESSAGE)
    assert info.value.smtp_code == 451
    assert info.value.smtp_error.startswith(b"4.4.2")


async def test_next_hop_hanging_on_rcpt_is_4xx(hop: RecordingServer, make_gateway: GatewayFactory) -> None:
    hop.delays["RCPT"] = 30
    app = await make_gateway(hop.address, {"next_hop.command_timeout": 0.5})
    with pytest.raises(smtplib.SMTPRecipientsRefused) as info:
        await asend(app.listener.port, "alice@example.org", ["bob@example.com"], MESSAGE)
    code, text = info.value.recipients["bob@example.com"]
    assert code == 451 and text.startswith(b"4.4.2")


async def test_next_hop_closing_mid_data_is_4xx(hop: RecordingServer, make_gateway: GatewayFactory) -> None:
    hop.close_on["DATA_BODY"] = True
    app = await make_gateway(hop.address)
    with pytest.raises(smtplib.SMTPDataError) as info:
        await asend(app.listener.port, "alice@example.org", ["bob@example.com"], MESSAGE * 2000)
    assert 400 <= info.value.smtp_code < 500


async def test_dsn_parameters_arrive_unchanged(hop: RecordingServer, make_gateway: GatewayFactory) -> None:
    app = await make_gateway(hop.address)
    out = await asyncio.to_thread(
        dialogue,
        app.listener.port,
        [
            b"EHLO c.test\r\n",
            b"MAIL FROM:<> RET=HDRS ENVID=QQ314159+2Bcase SIZE=300\r\n",
            b"RCPT TO:<one@example.com> NOTIFY=FAILURE,DELAY ORCPT=rfc822;One+2BTag@Example.COM\r\n",
            b"RCPT TO:<two@example.com> NOTIFY=NEVER\r\n",
            b"DATA\r\n",
        ],
        read_final=False,
    )
    assert out[-1].startswith("354")  # pipelined: EHLO, MAIL, 2x RCPT, DATA all answered in order

    # the recording hop gets the parameters exactly as the client wrote them, per recipient
    assert "MAIL FROM:<> RET=HDRS ENVID=QQ314159+2Bcase SIZE=300" in hop.commands
    assert "RCPT TO:<one@example.com> NOTIFY=FAILURE,DELAY ORCPT=rfc822;One+2BTag@Example.COM" in hop.commands
    assert "RCPT TO:<two@example.com> NOTIFY=NEVER" in hop.commands


async def test_dsn_parameters_dropped_when_next_hop_lacks_dsn(
    hop: RecordingServer, make_gateway: GatewayFactory
) -> None:
    hop.extensions.remove("DSN")
    app = await make_gateway(hop.address)
    await asend(
        app.listener.port,
        "a@example.org",
        ["b@example.com"],
        MESSAGE,
        mail_options=["RET=FULL"],
        rcpt_options=["NOTIFY=SUCCESS"],
    )
    assert hop.messages[0].mail_from == f"FROM:<a@example.org> size={len(MESSAGE)}"
    assert hop.messages[0].rcpts == ["TO:<b@example.com>"]


@pytest.mark.parametrize(
    ("line", "code"),
    [
        (b"MAIL FROM:<a@example.org> NOTIFY=NEVER\r\n", "555"),  # an RCPT parameter on MAIL
        (b"MAIL FROM:<a@example.org> RET=SOME\r\n", "501"),
        (b"MAIL FROM:<a@example.org> ENVID=bad=value\r\n", "501"),
        (b"MAIL FROM:<a@example.org> XFOO=1\r\n", "555"),
        (b"MAIL FROM:<a@exa\rmple.org>\r\n", "553"),
        (b"MAIL FROM:<d\xc3\xa9@example.org>\r\n", "553"),  # UTF-8 without SMTPUTF8
        (b"MAIL FROM <a@example.org>\r\n", "501"),
    ],
)
async def test_bad_mail_parameters_get_clear_errors(
    hop: RecordingServer, make_gateway: GatewayFactory, line: bytes, code: str
) -> None:
    app = await make_gateway(hop.address)
    out = await asyncio.to_thread(dialogue, app.listener.port, [b"EHLO c.test\r\n", line, b"QUIT\r\n"])
    reply = next(
        x for x in out if not x.startswith("250") and not x.startswith("220") and not x.startswith("221")
    )
    assert reply.startswith(code + " 5.")
    assert hop.connections == 0  # nothing was opened downstream


async def test_smtputf8_addresses_and_8bit_body(hop: RecordingServer, make_gateway: GatewayFactory) -> None:
    app = await make_gateway(hop.address)
    body = "From: 山田 <yamada@例え.jp>\r\nSubject: テスト\r\n\r\n日本語の本文\r\n".encode()
    await asend(
        app.listener.port,
        "yamada@例え.jp",
        ["ユーザー@example.com"],
        body,
        mail_options=["SMTPUTF8", "BODY=8BITMIME"],
    )
    received = hop.messages[0]
    assert received.message == body
    assert received.mail_from == f"FROM:<yamada@例え.jp> size={len(body)} SMTPUTF8 BODY=8BITMIME"
    assert received.rcpts == ["TO:<ユーザー@example.com>"]


async def test_oversize_by_size_parameter_and_by_data(
    hop: RecordingServer, make_gateway: GatewayFactory
) -> None:
    app = await make_gateway(hop.address, {"listener.max_message_size": 4096})
    with pytest.raises(smtplib.SMTPSenderRefused) as declared:
        await asend(app.listener.port, "a@example.org", ["b@example.com"], b"x" * 5000 + b"\r\n")
    assert declared.value.smtp_code == 552 and declared.value.smtp_error.startswith(b"5.3.4")

    big = b"Subject: big\r\n\r\n" + b"y" * 900 + b"\r\n"
    out = await asyncio.to_thread(
        dialogue,
        app.listener.port,
        [
            *UP_TO_DATA,
            big * 10,
            b".\r\n",
            b"QUIT\r\n",
        ],
    )
    assert any(line.startswith("552 5.3.4") for line in out)
    assert hop.messages == []


async def test_long_line_is_refused(hop: RecordingServer, make_gateway: GatewayFactory) -> None:
    app = await make_gateway(hop.address)
    out = await asyncio.to_thread(
        dialogue,
        app.listener.port,
        [
            *UP_TO_DATA,
            b"Subject: x\r\n\r\n" + b"z" * 1200 + b"\r\n.\r\n",
            b"QUIT\r\n",
        ],
    )
    assert any(line.startswith("500 5.5.2") for line in out)
    assert hop.messages == []


async def test_too_many_recipients_is_452(hop: RecordingServer, make_gateway: GatewayFactory) -> None:
    app = await make_gateway(hop.address, {"listener.max_recipients": 2})
    refused = await asend(app.listener.port, "a@example.org", ["1@x.test", "2@x.test", "3@x.test"], MESSAGE)
    assert refused == {"3@x.test": (452, b"4.5.3 Too many recipients")}
    assert hop.messages[0].rcpts == ["TO:<1@x.test>", "TO:<2@x.test>"]


async def test_client_outside_allowed_networks_gets_554(
    hop: RecordingServer, make_gateway: GatewayFactory
) -> None:
    app = await make_gateway(hop.address, {"listener.allowed_networks": ["127.0.0.1/32"]})
    counted = MetricDeltas()
    out = await asyncio.to_thread(dialogue, app.listener.port, [b"EHLO c\r\n"], source="127.0.0.2")
    assert out[0].startswith("554 5.7.1")
    assert len(out) == 1  # and the connection is closed
    assert counted("bouncegw_connections_refused_total", reason="network") == 1
    # an allowed client is still served
    await asend(app.listener.port, "a@example.org", ["b@example.com"], MESSAGE)
    assert len(hop.messages) == 1


class Crash:
    """A processing step that fails, standing for a bug in a later step."""

    async def before_relay(self, ctx: MessageContext, message: Processed) -> None:
        if b"crash me" in message.data:
            raise RuntimeError("secret internal detail")

    async def after_relay(self, ctx: MessageContext, message: Processed, reply: Reply) -> None:
        return None


async def test_crash_in_processing_step_is_451_and_listener_keeps_serving(
    hop: RecordingServer, make_gateway: GatewayFactory
) -> None:
    app = await make_gateway(hop.address, extra_steps=[Crash()])
    with pytest.raises(smtplib.SMTPDataError) as info:
        await asend(app.listener.port, "a@example.org", ["b@example.com"], b"Subject: x\r\n\r\ncrash me\r\n")
    assert info.value.smtp_code == 451
    assert info.value.smtp_error == b"4.3.0 Temporary processing error, try again later"
    assert b"secret" not in info.value.smtp_error and b"RuntimeError" not in info.value.smtp_error
    assert hop.messages == []
    await asend(app.listener.port, "a@example.org", ["b@example.com"], MESSAGE)
    assert [m.message for m in hop.messages] == [MESSAGE]


async def test_bare_lf_dot_smuggling_stays_one_message(
    hop: RecordingServer, make_gateway: GatewayFactory
) -> None:
    app = await make_gateway(hop.address)
    smuggled = (
        b"Subject: outer\r\n\r\nhello\n.\n"
        b"MAIL FROM:<evil@example.org>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\n"
        b"Subject: smuggled\r\n\r\nspoof\r\n\r\n.\r\n"
    )
    # smtplib would normalise the bare LFs; write the DATA section raw.
    out = await asyncio.to_thread(
        dialogue,
        app.listener.port,
        [
            *UP_TO_DATA,
            smuggled,
            b"QUIT\r\n",
        ],
    )
    assert sum(1 for line in out if line.startswith("250 2.0.0 Ok: queued")) == 1
    assert len(hop.messages) == 1
    assert hop.messages[0].rcpts == ["TO:<b@example.com>"]
    assert b"smuggled" in hop.messages[0].data  # the would-be second message is just body text
    assert not any("evil@" in c for c in hop.commands)


async def test_pipelined_transactions_and_connection_reuse(
    hop: RecordingServer, make_gateway: GatewayFactory
) -> None:
    app = await make_gateway(hop.address)
    for _ in range(3):
        await asend(app.listener.port, "a@example.org", ["b@example.com"], MESSAGE)
    assert len(hop.messages) == 3
    assert hop.connections == 1  # the pooled next-hop connection was reused


async def test_pooled_connection_closed_by_next_hop_is_replaced(
    hop: RecordingServer, make_gateway: GatewayFactory
) -> None:
    app = await make_gateway(hop.address)
    await asend(app.listener.port, "a@example.org", ["b@example.com"], MESSAGE)
    for writer in list(hop._writers):  # the next hop drops its idle connection
        writer.close()
    await asyncio.sleep(0.1)
    await asend(app.listener.port, "a@example.org", ["b@example.com"], MESSAGE)
    assert len(hop.messages) == 2
    assert hop.connections == 2


async def test_rset_and_disconnect_release_the_downstream_transaction(
    hop: RecordingServer, make_gateway: GatewayFactory
) -> None:
    app = await make_gateway(hop.address)
    await asyncio.to_thread(
        dialogue,
        app.listener.port,
        [
            b"EHLO c\r\n",
            b"MAIL FROM:<a@example.org>\r\n",
            b"RCPT TO:<b@example.com>\r\n",
            b"RSET\r\n",
            b"QUIT\r\n",
        ],
    )
    await asyncio.sleep(0.2)
    assert "RSET" in hop.commands
    await asend(app.listener.port, "a@example.org", ["b@example.com"], MESSAGE)
    assert hop.connections == 1 and len(hop.messages) == 1


class Hold:
    """A processing step that waits until the test lets it go."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def before_relay(self, ctx: MessageContext, message: Processed) -> None:
        self.entered.set()
        await self.release.wait()

    async def after_relay(self, ctx: MessageContext, message: Processed, reply: Reply) -> None:
        return None


async def test_upstream_gone_during_processing_relays_nothing(
    hop: RecordingServer, make_gateway: GatewayFactory
) -> None:
    hold = Hold()
    app = await make_gateway(hop.address, extra_steps=[hold])
    _reader, writer = await asyncio.open_connection("127.0.0.1", app.listener.port)
    writer.write(b"".join(UP_TO_DATA) + MESSAGE + b".\r\n")
    await asyncio.wait_for(hold.entered.wait(), 30)
    writer.close()  # the upstream will retry: it never heard 250
    await writer.wait_closed()
    await wait_until(lambda: "RSET" in hop.commands, "the downstream transaction to be aborted")
    hold.release.set()
    await wait_until(lambda: not app.listener.sessions, "the session to end")
    assert hop.messages == [] and "DATA" not in hop.commands
    await asend(app.listener.port, "a@example.org", ["b@example.com"], MESSAGE)  # still serving
    assert [m.message for m in hop.messages] == [MESSAGE]


async def test_slow_client_is_cut_off_by_data_timeout(
    hop: RecordingServer, make_gateway: GatewayFactory
) -> None:
    app = await make_gateway(hop.address, {"listener.data_idle_timeout": 0.3})

    def slow() -> list[str]:
        with socket.create_connection(("127.0.0.1", app.listener.port), timeout=10) as sock:
            reader = sock.makefile("rb")
            reader.readline()
            sock.sendall(b"".join(UP_TO_DATA))
            lines = [reader.readline()]
            while not lines[-1].startswith(b"354"):
                lines.append(reader.readline())
            sock.sendall(b"Subject: slow\r\n")  # ... and then nothing
            lines.append(reader.readline())
            lines.append(reader.readline())  # EOF: the gateway closed the connection
            return [x.decode() for x in lines]

    out = await asyncio.to_thread(slow)
    assert out[-2].startswith("421 4.4.2")
    assert out[-1] == ""
    assert hop.messages == []


async def test_exception_in_session_never_becomes_5xx(
    hop: RecordingServer, make_gateway: GatewayFactory
) -> None:
    app = await make_gateway(hop.address)
    reply = await app.handler.handle_exception(RuntimeError("boom /etc/secret"))
    assert reply.startswith("451 4.3.0") and "boom" not in reply


async def test_starttls_in_and_out(
    pki: PKI, server_tls: ssl.SSLContext, make_gateway: GatewayFactory
) -> None:
    hop = RecordingServer(tls_context=server_tls)
    await hop.start()
    try:
        app = await make_gateway(
            hop.address,
            {
                "listener.tls_cert": str(pki.server_cert),
                "listener.tls_key": str(pki.server_key),
                "listener.require_tls": True,
                "next_hop.tls": "required",
                "next_hop.tls_ca_file": str(pki.ca_cert),
            },
        )

        def client() -> tuple[int, bytes]:
            context = ssl.create_default_context(cafile=str(pki.ca_cert))
            with smtplib.SMTP("127.0.0.1", app.listener.port) as smtp:
                smtp.ehlo("c.test")
                refused = smtp.mail("a@example.org")  # before STARTTLS: refused
                smtp.starttls(context=context)
                smtp.ehlo("c.test")
                smtp.sendmail("a@example.org", ["b@example.com"], MESSAGE)
                return refused

        refused = await asyncio.to_thread(client)
        assert refused[0] == 530
        assert len(hop.messages) == 1 and hop.messages[0].tls
        assert hop.messages[0].message == MESSAGE
    finally:
        await hop.stop()


async def test_next_hop_certificate_is_verified(
    pki: PKI, server_tls: ssl.SSLContext, make_gateway: GatewayFactory
) -> None:
    hop = RecordingServer(tls_context=server_tls)
    await hop.start()
    try:
        # No CA file: the test CA is unknown, so verification fails and nothing is relayed.
        app = await make_gateway(hop.address, {"next_hop.tls": "required"})
        with pytest.raises(smtplib.SMTPSenderRefused) as info:
            await asend(app.listener.port, "a@example.org", ["b@example.com"], MESSAGE)
        assert info.value.smtp_code == 451
        assert hop.messages == []
    finally:
        await hop.stop()


async def test_required_tls_not_offered_is_4xx(hop: RecordingServer, make_gateway: GatewayFactory) -> None:
    app = await make_gateway(hop.address, {"next_hop.tls": "required"})
    with pytest.raises(smtplib.SMTPSenderRefused) as info:
        await asend(app.listener.port, "a@example.org", ["b@example.com"], MESSAGE)
    assert info.value.smtp_code == 451
    assert hop.messages == []


async def test_inbound_auth_over_tls(
    pki: PKI, auth_over_tls: dict[str, Any], hop: RecordingServer, make_gateway: GatewayFactory
) -> None:
    app = await make_gateway(hop.address, auth_over_tls)

    def client(password: str) -> int:
        context = ssl.create_default_context(cafile=str(pki.ca_cert))
        with smtplib.SMTP("127.0.0.1", app.listener.port) as smtp:
            smtp.ehlo("c.test")
            assert not smtp.has_extn("auth")  # never offered in clear text
            code, _ = smtp.mail("a@example.org")
            assert code == 530
            smtp.rset()
            smtp.starttls(context=context)
            smtp.ehlo("c.test")
            try:
                smtp.login("exchange", password)
            except smtplib.SMTPAuthenticationError as exc:
                return exc.smtp_code
            smtp.sendmail("a@example.org", ["b@example.com"], MESSAGE)
            return 235

    assert await asyncio.to_thread(client, "wrong") == 535
    assert hop.messages == []
    assert await asyncio.to_thread(client, "s3cret") == 235
    assert len(hop.messages) == 1


async def test_maildir_next_hop_writes_each_message_once(tmp_path: Any, make_gateway: GatewayFactory) -> None:
    app = await make_gateway(f"maildir:{tmp_path / 'outbox'}")
    await asend(app.listener.port, "", ["a@example.com", "b@example.com"], MESSAGE)
    files = list((tmp_path / "outbox" / "new").iterdir())
    assert len(files) == 1
    # The delivery's Return-Path, then our trace (RFC 5321 section 4.4), then the message as sent.
    head, sep, rest = files[0].read_bytes().partition(b"\r\n")
    assert head == b"Return-Path: <>" and sep
    assert rest.startswith(b"Received: from ") and b" (bouncegw) with ESMTP id " in rest
    assert rest.endswith(b"\r\n" + MESSAGE) and rest.count(b"Received:") == 1
    assert list((tmp_path / "outbox" / "tmp").iterdir()) == []


async def test_auth_to_the_next_hop(hop: RecordingServer, make_gateway: GatewayFactory) -> None:
    hop.extensions.append("AUTH PLAIN LOGIN")
    app = await make_gateway(hop.address, {"next_hop.username": "relay", "next_hop.password": "pa55"})
    await asend(app.listener.port, "a@example.org", ["b@example.com"], MESSAGE)
    assert len(hop.messages) == 1
    auth = [c for c in hop.commands if c.upper().startswith("AUTH")]
    assert auth == ["AUTH PLAIN " + base64.b64encode(b"\0relay\0pa55").decode()]


async def test_next_hop_refusing_our_auth_is_4xx(hop: RecordingServer, make_gateway: GatewayFactory) -> None:
    hop.extensions.append("AUTH PLAIN LOGIN")
    hop.replies["AUTH"] = lambda _: "535 5.7.8 Authentication credentials invalid"
    app = await make_gateway(hop.address, {"next_hop.username": "relay", "next_hop.password": "wrong"})
    with pytest.raises(smtplib.SMTPSenderRefused) as info:
        await asend(app.listener.port, "a@example.org", ["b@example.com"], MESSAGE)
    assert info.value.smtp_code == 451 and info.value.smtp_error.startswith(b"4.7.0")
    assert hop.messages == []


async def test_sessions_beyond_the_limit_get_421(hop: RecordingServer, make_gateway: GatewayFactory) -> None:
    app = await make_gateway(hop.address, {"listener.max_sessions": 1})

    def two_sessions() -> tuple[str, str]:
        with socket.create_connection(("127.0.0.1", app.listener.port), timeout=10) as first:
            greeting = first.makefile("rb").readline().decode()
            with socket.create_connection(("127.0.0.1", app.listener.port), timeout=10) as second:
                refused = second.makefile("rb").readline().decode()
            return greeting, refused

    greeting, refused = await asyncio.to_thread(two_sessions)
    assert greeting.startswith("220 ")
    assert refused.startswith("421 4.3.2")
    await asend(app.listener.port, "a@example.org", ["b@example.com"], MESSAGE)  # and after, served again
    assert len(hop.messages) == 1
