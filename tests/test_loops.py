"""The Received: trace bouncegw adds and the loop refusal that reads it back (gateway.loops)."""

from __future__ import annotations

import asyncio
import smtplib
from datetime import UTC, datetime
from email.parser import BytesHeaderParser

import pytest
from pydantic import ValidationError

from gateway import metrics, replies
from gateway.config import ListenerSettings
from gateway.loops import TRACE_MAX, LoopGuard, size_budget
from tests.conftest import GatewayFactory
from tests.recording_server import RecordingServer

GUARD = LoopGuard("gw.example.net", max_hops=5, max_passes=2)
BODY = b"Subject: hi\r\n\r\nReceived: from body.example (not a header)\r\n"


def ours(n: int = 1) -> bytes:
    return b"".join(
        GUARD.trace(
            helo="mta.example.org",
            client_address="192.0.2.1",
            esmtp=True,
            tls=False,
            authenticated=False,
            transaction_id=f"T{i}",
            when=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        )
        for i in range(n)
    )


def others(n: int) -> bytes:
    return b"".join(
        b"Received: from a.example by b%d.example with ESMTP;\r\n Mon, 1 Jan 2026\r\n" % i for i in range(n)
    )


def test_the_trace_is_a_folded_received_field_that_parses() -> None:
    trace = ours()
    assert trace == (
        b"Received: from mta.example.org ([192.0.2.1])\r\n"
        b"\tby gw.example.net (bouncegw) with ESMTP id T0;\r\n"
        b"\tFri, 02 Jan 2026 03:04:05 +0000\r\n"
    )
    [(name, _value)] = BytesHeaderParser().parsebytes(trace + b"\r\n").items()
    assert name == "Received"


BY = b"\r\n\tby gw.example.net (bouncegw) with "


@pytest.mark.parametrize(
    ("helo", "address", "esmtp", "tls", "auth", "expected"),
    [
        (
            "x.example\r\nX-Injected: 1",
            "192.0.2.1",
            True,
            True,
            True,
            b"from unknown ([192.0.2.1])" + BY + b"ESMTPSA ",
        ),
        (None, "2001:db8::1", False, False, False, b"from unknown ([IPv6:2001:db8::1])" + BY + b"SMTP "),
        (
            "[192.0.2.7]",
            "not an address",
            True,
            True,
            False,
            b"from [192.0.2.7] ([unknown])" + BY + b"ESMTPS ",
        ),
    ],
)
def test_client_words_never_reach_the_header_unchecked(
    helo: str | None, address: str, esmtp: bool, tls: bool, auth: bool, expected: bytes
) -> None:
    trace = GUARD.trace(
        helo=helo,
        client_address=address,
        esmtp=esmtp,
        tls=tls,
        authenticated=auth,
        transaction_id="T",
        when=datetime.now(UTC),
    )
    assert trace.startswith(b"Received: " + expected)
    assert trace.count(b"\r\n") == 3 and b"Injected" not in trace


def test_below_the_limits_the_message_passes() -> None:
    assert GUARD.check(others(4) + BODY) is None
    assert GUARD.check(ours(1) + others(3) + BODY) is None
    assert GUARD.check(b"no header block at all") is None


def test_hop_limit_counts_received_fields_like_postfix() -> None:
    loop = GUARD.check(others(5) + BODY)
    assert loop is not None and loop.reason == "hops"
    assert loop.reply == replies.TOO_MANY_HOPS.format(limit=5)
    assert loop.reply.startswith("554 5.4.6 ")
    # Case and spacing of the field name do not matter (RFC 5322 section 1.2.2, 3.6.7).
    assert GUARD.check(others(4).replace(b"Received:", b"RECEIVED :") + b"received: x\r\n\r\n") is not None


def test_only_the_header_block_counts() -> None:
    assert GUARD.check(b"Subject: x\r\n\r\n" + others(50)) is None
    assert GUARD.check(others(2) + b"\r\n" + ours(5)) is None


def test_our_own_trace_is_recognised_before_the_hop_limit() -> None:
    loop = GUARD.check(ours(2) + BODY)
    assert loop is not None and loop.reason == "passes"
    assert loop.reply == replies.LOOP_DETECTED.format(passes=2)
    # Another gateway's trace is not ours, whatever it calls itself.
    other = LoopGuard("gw2.example.net", max_hops=5, max_passes=2)
    assert other.check(ours(2) + BODY) is None


def test_counting_stops_at_the_limit() -> None:
    # A header block of 100,000 Received: fields is refused after reading max_hops of them:
    # the same answer as for exactly max_hops.
    huge = others(1) * 100_000 + BODY
    loop = GUARD.check(huge)
    assert loop is not None and loop.reply == replies.TOO_MANY_HOPS.format(limit=5)


async def test_the_gateway_refuses_a_looping_message_with_5_4_6_and_counts_it(
    hop: RecordingServer, make_gateway: GatewayFactory
) -> None:
    app = await make_gateway(hop.address)
    before = metrics.LOOPS.labels("passes")._value.get()
    sent = ours(3).replace(b"gw.example.net", app.settings.listener.hostname.encode()) + BODY

    def send(message: bytes) -> None:
        with smtplib.SMTP("127.0.0.1", app.listener.port, timeout=30) as smtp:
            smtp.sendmail("a@example.org", ["b@example.com"], message)

    with pytest.raises(smtplib.SMTPDataError) as refused:
        await asyncio.to_thread(send, sent)
    assert refused.value.smtp_code == 554
    assert refused.value.smtp_error.startswith(b"5.4.6 Routing loop detected")
    assert hop.messages == []
    assert metrics.LOOPS.labels("passes")._value.get() == before + 1
    # The same message with two passes so far goes through, one trace more.
    await asyncio.to_thread(
        send, ours(2).replace(b"gw.example.net", app.settings.listener.hostname.encode()) + BODY
    )
    [relayed] = hop.messages
    assert relayed.data.count(b"(bouncegw)") == 3


def test_a_host_name_that_would_break_the_trace_is_a_configuration_error() -> None:
    with pytest.raises(ValidationError, match="not a host name"):
        ListenerSettings(hostname="gw.example.net\r\nX-Injected: 1")
    assert ListenerSettings(hostname="gw-1.example.net").hostname == "gw-1.example.net"


def test_the_longest_trace_fits_the_room_the_pipeline_leaves_for_it() -> None:
    label = "a" * 63
    longest_name = ".".join([label] * 3) + "." + "b" * 61  # 253 octets, as long as a name gets
    guard = LoopGuard(longest_name, max_hops=5, max_passes=2)
    trace = guard.trace(
        helo=longest_name,
        client_address="ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255",
        esmtp=True,
        tls=True,
        authenticated=True,
        transaction_id="01" + "Z" * 24,
        when=datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC),
    )
    assert longest_name.encode() in trace and trace.count(longest_name.encode()) == 2
    assert len(trace) <= TRACE_MAX
    assert size_budget(1_000_000) == 1_000_000 - TRACE_MAX
