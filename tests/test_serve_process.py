"""``bouncegw serve`` as a real process, and third-party SMTP clients (swaks, Postfix's smtp-source)."""

from __future__ import annotations

import asyncio
import shutil
import signal
import smtplib
import socket
import sys
from pathlib import Path

from tests.conftest import GatewayFactory, need
from tests.processes import free_port, start_serve
from tests.recording_server import RecordingServer
from tests.smtp_client import MESSAGE


async def test_sigterm_lets_the_transaction_in_flight_finish(hop: RecordingServer, tmp_path: Path) -> None:
    hop.delays["DATA_END"] = 1.5  # the next hop takes its time over the final dot
    port = free_port()
    proc = await start_serve(
        tmp_path, hop.address, port=port, workers=2, env={"BOUNCEGW_LISTENER__GRACE_PERIOD": "10"}
    )
    try:

        def client() -> dict[str, tuple[int, bytes]]:
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
                return smtp.sendmail("a@example.org", ["b@example.com"], MESSAGE)

        sending = asyncio.create_task(asyncio.to_thread(client))
        while not any(c == "DATA" for c in hop.commands):
            await asyncio.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        try:
            refused = await sending
        finally:
            _, err = await asyncio.wait_for(proc.communicate(), 20)
        assert refused == {}, err.decode()  # the upstream got its 250 after SIGTERM
        assert proc.returncode == 0, err.decode()
        assert [m.message for m in hop.messages] == [MESSAGE]
        # and nothing listens any more
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            pass
        else:
            raise AssertionError("the listener is still accepting after SIGTERM")
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_serve_refuses_a_bad_configuration(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "serve",
        "--listen",
        "not-an-address",
        cwd=tmp_path,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode != 0
    assert b"listener.listen" in err and b"--listen" in err


async def test_swaks_delivers_through_the_gateway(hop: RecordingServer, make_gateway: GatewayFactory) -> None:
    need(shutil.which("swaks") is not None, "swaks (Debian package swaks) is not installed")
    app = await make_gateway(hop.address)
    proc = await asyncio.create_subprocess_exec(
        "swaks",
        "--server",
        "127.0.0.1",
        "--port",
        str(app.listener.port),
        "--from",
        "<>",
        "--to",
        "b@example.com",
        "--header",
        "Subject: swaks test",
        "--body",
        "sent by swaks",
        "--pipeline",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, out.decode()
    assert len(hop.messages) == 1
    assert hop.messages[0].mail_from.startswith("FROM:<>")
    assert b"sent by swaks" in hop.messages[0].data


async def test_smtp_source_sessions_all_arrive(hop: RecordingServer, make_gateway: GatewayFactory) -> None:
    need(shutil.which("smtp-source") is not None, "smtp-source (Debian package postfix) is not installed")
    app = await make_gateway(hop.address)
    # 40 messages over 4 parallel sessions, 5 messages per session, 2 recipients each
    proc = await asyncio.create_subprocess_exec(
        "smtp-source",
        "-m",
        "40",
        "-s",
        "4",
        "-r",
        "2",
        "-l",
        "5000",
        "-f",
        "src@example.org",
        "-t",
        "dst@example.com",
        f"127.0.0.1:{app.listener.port}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, out.decode()
    assert len(hop.messages) == 40
    assert all(len(m.rcpts) == 2 for m in hop.messages)
