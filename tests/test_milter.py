"""The milter listener against a stand-in MTA on loopback (tests/milter_client.py).

What is checked: ordinary mail is accepted at the end of its headers (no body sent, no change);
every built family bounce (tests/positives.py) comes out, after the milter's actions are
applied, byte for byte as the relay's own steps produce it, and its incidents are in the
database before the final answer; failures leave the message untouched, and a family bounce
that cannot be recorded is tempfailed.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kilter.protocol import messages as m
from kilter.protocol.buffer import SimpleBuffer
from sqlalchemy import create_engine, text

from gateway.app import build_recorder
from gateway.milter import session as milter_session
from gateway.milter.edits import Unexpressible, actions
from gateway.milter.protocol import _header, decode, pack
from gateway.milter.service import Address, MilterService, build_pipeline
from gateway.pipeline import Processed
from gateway.transaction import MessageContext
from tests.conftest import gateway_settings
from tests.metric_samples import sample
from tests.milter_client import MilterClient, apply
from tests.positives import POSITIVES

FIXED = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)

ORDINARY = (
    b"From: Alice <alice@example.com>\r\n"
    b"To: bob@fabrikam.test\r\n"
    b"Subject: lunch\r\n"
    b"Message-ID: <1@example.com>\r\n"
    b"\r\n"
    b"See you at noon.\r\n"
)


@pytest.fixture
async def service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[MilterService]:
    monkeypatch.setattr(milter_session, "now", lambda: FIXED)
    settings = gateway_settings(tmp_path, "127.0.0.1:9")
    svc = MilterService(settings, Address.parse("inet:127.0.0.1:0"))
    await svc.start()
    yield svc
    await svc.stop()


async def client_for(svc: MilterService) -> MilterClient:
    assert svc.port is not None
    client = await MilterClient.connect("127.0.0.1", svc.port)
    await client.negotiate()
    return client


async def relay_output(tmp_path: Path, data: bytes) -> Processed:
    """What the relay's own steps make of ``data`` (received at FIXED), on a database of their own."""
    settings = gateway_settings(tmp_path / "relay", "127.0.0.1:9")
    (tmp_path / "relay").mkdir(exist_ok=True)
    recorder = build_recorder(settings)
    await recorder.start()
    try:
        ctx = MessageContext("tx", "", ("a@example.com",), "192.0.2.7", "client.test", FIXED, len(data))
        return await build_pipeline(settings, recorder).before_relay(ctx, data)
    finally:
        await recorder.stop(1.0)


async def fetch(url: str) -> bytes:
    """GET off the loop (the admin server runs on this test's loop)."""

    def get() -> bytes:
        with urllib.request.urlopen(url, timeout=10) as response:
            return bytes(response.read())

    return await asyncio.to_thread(get)


def incident_ids(svc: MilterService) -> list[str]:
    engine = create_engine(svc.settings.database.url)
    try:
        with engine.connect() as conn:
            return [row[0] for row in conn.execute(text("SELECT id FROM incidents"))]
    finally:
        engine.dispose()


async def test_negotiation_asks_for_header_and_body_changes_and_no_replies_before_the_headers_end(
    service: MilterService,
) -> None:
    client = await MilterClient.connect("127.0.0.1", service.port or 0)
    answer = await client.negotiate()
    assert answer.version == 6
    edits = m.ActionFlags.ADD_HEADERS | m.ActionFlags.CHANGE_HEADERS | m.ActionFlags.CHANGE_BODY
    assert answer.action_flags == edits
    for flag in (
        m.ProtocolFlags.NR_HEADER,
        m.ProtocolFlags.NR_RECIPIENT,
        m.ProtocolFlags.HEADER_LEADING_SPACE,
    ):
        assert flag in answer.protocol_flags
    # The end of the headers is answered: that is where ordinary mail is accepted.
    assert m.ProtocolFlags.NR_END_OF_HEADERS not in answer.protocol_flags
    await client.close()


async def test_ordinary_mail_is_accepted_at_the_end_of_its_headers(service: MilterService) -> None:
    before = sample("bouncegw_milter_messages_total", outcome="headers_only")
    client = await client_for(service)
    outcome = await client.message(ORDINARY, mail_from="alice@example.com")
    assert isinstance(outcome.final, m.Accept)
    assert not outcome.body_sent and outcome.edits == []
    # The same connection serves the next message.
    outcome = await client.message(ORDINARY, mail_from="alice@example.com")
    assert isinstance(outcome.final, m.Accept)
    await client.close()
    assert sample("bouncegw_milter_messages_total", outcome="headers_only") == before + 2
    assert incident_ids(service) == []


@pytest.mark.parametrize("positive", POSITIVES, ids=[p.name for p in POSITIVES])
async def test_a_family_bounce_comes_out_as_the_relay_makes_it(
    service: MilterService, tmp_path: Path, positive: Any
) -> None:
    client = await client_for(service)
    outcome = await client.message(positive.data)
    await client.close()
    expected = await relay_output(tmp_path, positive.data)
    assert isinstance(outcome.final, m.Continue)
    if not expected.annotated:
        # The relay too leaves it as it came (e.g. already explained): no action at all.
        assert outcome.edits == []
        return
    assert outcome.edits, "an explained bounce must come with actions"
    assert apply(positive.data, outcome.edits) == expected.data
    # Durable before the answer, under the ids the header names.
    assert sorted(incident_ids(service)) == sorted(expected.incident_ids)


async def test_an_explained_bounce_is_never_explained_twice(service: MilterService, tmp_path: Path) -> None:
    explained = (await relay_output(tmp_path, POSITIVES[0].data)).data
    assert explained != POSITIVES[0].data
    client = await client_for(service)
    outcome = await client.message(explained)
    await client.close()
    assert isinstance(outcome.final, m.Continue) and outcome.edits == []
    assert incident_ids(service) == []


async def test_a_bounce_whose_headers_are_not_in_order_continues_untouched() -> None:
    original = b"From: a\r\nSubject: b\r\n\r\nbody\r\n"
    reordered = b"Subject: b\r\nFrom: a\r\n\r\nbody\r\n"
    with pytest.raises(Unexpressible):
        actions(original, reordered)


async def test_single_part_bounce_changes_its_own_headers_in_place() -> None:
    original = b"From: a\r\nContent-Type: text/plain\r\nSubject: b\r\n\r\nbody\r\n"
    annotated = (
        b"X-Bouncegw-Explained: 5.7.133\r\nFrom: a\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Subject: b\r\nMIME-Version: 1.0\r\n\r\nnew body\r\n"
    )
    edits = actions(original, annotated)
    assert [type(e).__name__ for e in edits] == ["InsertHeader", "ChangeHeader", "AddHeader", "ReplaceBody"]
    assert apply(original, edits) == annotated


async def test_a_processing_failure_lets_the_bounce_continue_untouched(
    service: MilterService, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(ctx: MessageContext, data: bytes) -> Processed:
        raise RuntimeError("a bug")

    monkeypatch.setattr(service.pipeline, "before_relay", broken)
    before = sample("bouncegw_milter_messages_total", outcome="failed")
    client = await client_for(service)
    outcome = await client.message(POSITIVES[0].data)
    await client.close()
    assert isinstance(outcome.final, m.Continue) and outcome.edits == []
    assert sample("bouncegw_milter_messages_total", outcome="failed") == before + 1


async def test_a_family_bounce_that_cannot_be_recorded_is_tempfailed(
    service: MilterService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service.recorder, "can_accept", lambda incidents=1: False)
    client = await client_for(service)
    outcome = await client.message(POSITIVES[0].data)
    # Ordinary mail is not affected by the storage outage.
    ordinary = await client.message(ORDINARY)
    await client.close()
    assert isinstance(outcome.final, m.ReplyCode)
    assert bytes(outcome.final.content).startswith(b"451 4.3.0 ")
    assert outcome.edits == []
    assert isinstance(ordinary.final, m.Accept)


async def test_a_family_bounce_whose_recording_fails_is_tempfailed(
    service: MilterService, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def refuse(records: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(service.recorder, "submit", refuse)
    client = await client_for(service)
    outcome = await client.message(POSITIVES[0].data)
    await client.close()
    assert isinstance(outcome.final, m.ReplyCode)
    assert bytes(outcome.final.content).startswith(b"451 4.3.0 ")
    assert outcome.edits == []  # nothing explained that is not recorded


async def test_processing_that_overruns_its_budget_lets_the_message_continue_untouched(
    service: MilterService, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def stuck(ctx: MessageContext, data: bytes) -> Processed:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    monkeypatch.setattr(milter_session, "END_OF_MESSAGE_BUDGET", 0.05)
    monkeypatch.setattr(service.pipeline, "before_relay", stuck)
    before = sample("bouncegw_milter_messages_total", outcome="failed")
    client = await client_for(service)
    outcome = await client.message(POSITIVES[0].data)
    await client.close()
    assert isinstance(outcome.final, m.Continue) and outcome.edits == []
    assert sample("bouncegw_milter_messages_total", outcome="failed") == before + 1


async def test_health_and_metrics_on_the_admin_port(service: MilterService) -> None:
    client = await client_for(service)
    await client.message(ORDINARY)
    await client.close()
    base = f"http://127.0.0.1:{service.http_port}"
    assert json.loads(await fetch(base + "/healthz")) == {"status": "alive"}
    body = json.loads(await fetch(base + "/readyz"))
    assert body["status"] == "ready" and body["checks"]["listener"]["ok"]
    exposition = (await fetch(base + "/metrics")).decode()
    assert 'bouncegw_milter_messages_total{outcome="headers_only"}' in exposition
    assert "bouncegw_milter_sessions_active" in exposition


def test_listen_addresses() -> None:
    assert str(Address.parse("inet:127.0.0.1:10030")) == "inet:127.0.0.1:10030"
    assert Address.parse("unix:/run/bouncegw/milter.sock").path == "/run/bouncegw/milter.sock"
    with pytest.raises(ValueError, match="inet:HOST:PORT"):
        Address.parse("127.0.0.1:10030")


async def test_a_unix_socket_listener_serves_the_same(tmp_path: Path) -> None:
    settings = gateway_settings(tmp_path, "127.0.0.1:9")
    path = tmp_path / "milter.sock"
    svc = MilterService(settings, Address.parse(f"unix:{path}"))
    await svc.start()
    try:
        client = await MilterClient.connect_unix(str(path))
        await client.negotiate()
        outcome = await client.message(ORDINARY)
        explained = await client.message(POSITIVES[0].data)
        await client.close()
    finally:
        await svc.stop()
    assert isinstance(outcome.final, m.Accept)
    assert isinstance(explained.final, m.Continue) and explained.edits
    assert not path.exists()  # removed at stop


async def test_a_unix_socket_in_use_is_not_taken_over(tmp_path: Path) -> None:
    path = tmp_path / "milter.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as other:
        other.bind(str(path))
        other.listen()
        svc = MilterService(gateway_settings(tmp_path, "127.0.0.1:9"), Address.parse(f"unix:{path}"))
        with pytest.raises(OSError, match="in use"):
            await svc.start()
        await svc.stop()
        assert path.is_socket()  # still the other program's
    stale = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as gone:
        gone.bind(str(stale))  # bound, never listening, closed: a file left behind
    svc = MilterService(gateway_settings(tmp_path / "2", "127.0.0.1:9"), Address.parse(f"unix:{stale}"))
    (tmp_path / "2").mkdir()
    await svc.start()
    await svc.stop()


async def test_garbage_closes_the_connection_and_is_counted(service: MilterService) -> None:
    before = sample("bouncegw_milter_protocol_errors_total")
    reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
    writer.write(b"\xff\xff\xff\xffGET / HTTP/1.1\r\n\r\n")
    await writer.drain()
    assert await reader.read() == b""  # closed, nothing answered
    writer.close()
    assert sample("bouncegw_milter_protocol_errors_total") == before + 1


async def test_a_message_over_the_size_limit_is_let_through_untouched(tmp_path: Path) -> None:
    settings = gateway_settings(tmp_path, "127.0.0.1:9", {"listener.max_message_size": 4096})
    svc = MilterService(settings, Address.parse("inet:127.0.0.1:0"))
    await svc.start()
    try:
        client = await client_for(svc)
        big = POSITIVES[0].data + b"x" * 8192 + b"\r\n"
        outcome = await client.message(big)
        # Over the limit in its headers alone: answered when the headers end, body never sent.
        many = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"y" * 60) for i in range(100)) + POSITIVES[0].data
        headers_outcome = await client.message(many)
        after = await client.message(POSITIVES[0].data)
        await client.close()
    finally:
        await svc.stop()
    assert isinstance(outcome.final, m.Accept) and outcome.edits == []
    assert isinstance(headers_outcome.final, m.Accept) and not headers_outcome.body_sent
    # The next message on the connection is read afresh (whole: it fits; too large to explain
    # within 4096 octets, so it continues as it came).
    assert isinstance(after.final, m.Continue) and after.body_sent and after.edits == []


def test_the_command_says_in_one_line_what_is_wrong(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    base = [sys.executable, "-m", "gateway", "milter", "--database", f"sqlite:///{tmp_path / 'db.sqlite3'}"]
    base += ["--http", "127.0.0.1:0"]
    wrong = subprocess.run(
        [*base, "--listen", "127.0.0.1:10030"], capture_output=True, text=True, cwd=tmp_path, env=env
    )
    assert wrong.returncode == 2
    assert "--listen" in wrong.stderr and "inet:HOST:PORT" in wrong.stderr and "Traceback" not in wrong.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = subprocess.run(
            [*base, "--listen", f"inet:127.0.0.1:{port}"],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=env,
        )
    assert busy.returncode == 1
    [line] = [line for line in busy.stderr.splitlines() if line.startswith("Error:")]
    assert f"inet:127.0.0.1:{port}" in line and "--listen" in line and "Traceback" not in busy.stderr


@pytest.mark.parametrize(
    "value", [b" plain", b"", b" caf\xc3\xa9 \xff 8-bit", b" folded\n\tline", b":colon: inside"]
)
def test_header_packets_read_directly_as_the_codec_reads_them(value: bytes) -> None:
    payload = b"L" + b"Subject\0" + value + b"\0"
    buffer = SimpleBuffer(len(payload) + 4)
    buffer[:] = struct.pack("!L", len(payload)) + payload
    expected, _ = m.Message.unpack(buffer)
    expected.freeze()
    assert _header(payload) == expected


@pytest.mark.parametrize(
    "payload", [b"LSubject\0va\0lue\0", b"LSubject\0value", b"L\0value\0", b"LSubj\xe9\0v\0"]
)
def test_odd_header_packets_are_left_to_the_codec(payload: bytes) -> None:
    assert _header(payload) is None


def test_macro_packets_are_read_only_at_the_end_of_the_message() -> None:
    macros = {"i": "4Q1ABC", "{mail_addr}": "a@example.com"}
    for stage, read in ((ord("M"), False), (ord("L"), False), (ord("E"), True)):
        message = decode(pack(m.Macro(stage, macros)))
        assert isinstance(message, m.Macro) and message.stage == stage
        assert message.macros == (macros if read else {})
