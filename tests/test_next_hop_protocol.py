"""Both next hops through the one ``NextHop`` protocol: what the handler, /readyz and metrics ask."""

from __future__ import annotations

import time
from pathlib import Path

from gateway.config import NextHopSettings
from gateway.health import NextHopCheck
from gateway.maildir import MaildirNextHop
from gateway.relay import NextHop, SmtpNextHop
from tests.processes import free_port
from tests.recording_server import RecordingServer


async def test_maildir_delivers_and_always_counts_as_reachable(tmp_path: Path) -> None:
    hop: NextHop = MaildirNextHop(tmp_path / "out")
    reply, transaction = await hop.begin("a@example.org", [], utf8=False)
    assert reply.code == 250 and transaction is not None
    assert (await transaction.rcpt("b@example.com", [])).code == 250
    done = await transaction.data(b"Subject: x\r\n\r\nbody\r\n", b"Received: by test\r\n")
    assert done.code == 250
    (written,) = (tmp_path / "out" / "new").iterdir()
    assert (
        written.read_bytes()
        == b"Return-Path: <a@example.org>\r\nReceived: by test\r\nSubject: x\r\n\r\nbody\r\n"
    )
    assert hop.reachable(0.001) and not hop.failing() and await hop.probe()
    hop.prune()
    check = NextHopCheck(hop, window=0.001)
    assert check.kick() is None  # nothing to probe
    assert (await check.check()).ok
    await hop.close()


def smtp_hop(port: int) -> SmtpNextHop:
    settings = NextHopSettings(address=f"127.0.0.1:{port}", tls="none", connect_timeout=5)
    return SmtpNextHop(settings, helo_name="gw.test")


def test_smtp_reachability_follows_the_latest_contact() -> None:
    hop = smtp_hop(free_port())
    assert not hop.reachable(60) and not hop.failing()  # no contact yet
    hop.last_success = time.monotonic()
    assert hop.reachable(60) and not hop.failing()
    hop.count_connection_error()
    assert hop.failing()
    hop.last_success = time.monotonic() + 1  # a good reply after the failure
    assert not hop.failing()
    hop.last_success = time.monotonic() - 120
    assert not hop.reachable(60)


async def test_smtp_probe_reaches_a_live_hop_and_not_a_closed_port() -> None:
    server = RecordingServer()
    await server.start()
    try:
        live = smtp_hop(int(server.address.rpartition(":")[2]))
        assert await live.probe() and live.reachable(60) and not live.failing()
        await live.close()
    finally:
        await server.stop()
    dead = smtp_hop(free_port())
    assert not await dead.probe()
    assert dead.failing() and not dead.reachable(60)
    await dead.close()
