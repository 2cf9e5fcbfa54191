"""``bouncegw serve --workers 2``: one port, several processes, summed metrics, graceful stop, restarts."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import smtplib
import socket
from pathlib import Path

import httpx

from gateway.workers import reuseport_socket
from tests.positives import POSITIVES
from tests.processes import free_port, start_serve, wait_until
from tests.recording_server import RecordingServer
from tests.test_relay import MESSAGE


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.MULTILINE)
    assert match, f"{name} not in the exposition"
    return float(match.group(1))


def log_lines(tmp_path: Path) -> list[dict[str, object]]:
    """The JSON log lines the gateway wrote so far."""
    text = (tmp_path / "gw.log").read_text()
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


async def start_workers(
    hop: RecordingServer, tmp_path: Path, workers: int = 2
) -> tuple[asyncio.subprocess.Process, int, int]:
    port, http = free_port(), free_port()
    with (tmp_path / "gw.log").open("wb") as log:
        proc = await start_serve(
            tmp_path,
            hop.address,
            port=port,
            http=f"127.0.0.1:{http}",
            workers=workers,
            env={"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")},
            stderr=log,
            start_new_session=True,
        )
    # The port answers as soon as the first worker listens: wait for every one of them.
    await wait_until(
        lambda: sum(line["msg"] == "listening" for line in log_lines(tmp_path)) == workers, "every worker"
    )
    return proc, port, http


def send(port: int, data: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        smtp.sendmail("", ["sender@example.org"], data)


async def test_two_workers_share_the_port_and_the_metrics(hop: RecordingServer, tmp_path: Path) -> None:
    proc, port, http = await start_workers(hop, tmp_path)
    try:
        family = POSITIVES[0].data
        for index in range(20):
            await asyncio.to_thread(send, port, family if index % 4 == 0 else MESSAGE)
        assert len(hop.messages) == 20
        # each worker keeps its own pool, so two workers mean at least two next-hop connections
        assert hop.connections >= 2
        text = await asyncio.to_thread(lambda: httpx.get(f"http://127.0.0.1:{http}/metrics", timeout=10).text)
        assert metric(text, 'bouncegw_messages_total{outcome="relayed"}') == 20  # summed over workers
        assert metric(text, "bouncegw_incidents_recorded_total") == 5
        journals = sorted(p.name for p in (tmp_path / "var" / "journal").iterdir() if p.suffix == ".lock")
        assert journals == ["incidents.w0.jsonl.lock", "incidents.w1.jsonl.lock"]  # one journal each
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 30)
    assert proc.returncode == 0, log_lines(tmp_path)[-5:]
    stopped = [
        line
        for line in log_lines(tmp_path)
        if str(line["msg"]).startswith("worker") and "stopped" in str(line["msg"])
    ]
    assert len(stopped) == 2


async def test_a_killed_worker_is_replaced(hop: RecordingServer, tmp_path: Path) -> None:
    proc, port, _ = await start_workers(hop, tmp_path)
    try:
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        assert len(children) == 2
        os.kill(int(children[0]), signal.SIGKILL)
        for _ in range(100):
            now = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
            if len(now) == 2 and children[0] not in now:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the killed worker was not replaced")
        await asyncio.sleep(1.5)  # the new worker binds its sockets
        for _ in range(10):
            await asyncio.to_thread(send, port, MESSAGE)
        assert len(hop.messages) == 10
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 30)


async def test_worker_sockets_get_tcp_nodelay() -> None:
    """Accepted connections must have TCP_NODELAY, or every reply waits ~40 ms for Nagle/delayed ACK."""
    sock = reuseport_socket("127.0.0.1:0", listen=True)
    accepted: list[asyncio.BaseTransport] = []

    class Grab(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            accepted.append(transport)

    server = await asyncio.get_running_loop().create_server(Grab, sock=sock)
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", sock.getsockname()[1])
        while not accepted:
            await asyncio.sleep(0.01)
        peer = accepted[0].get_extra_info("socket")
        assert peer.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        writer.close()
        accepted[0].close()
    finally:
        server.close()
        await server.wait_closed()
