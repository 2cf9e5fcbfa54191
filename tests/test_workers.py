"""``bouncegw serve --workers 2``: one port, several processes, summed metrics, graceful stop, restarts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import smtplib
import socket
import sys
from pathlib import Path

import httpx

from gateway.startup import listening_socket
from gateway.workers import MAX_CRASHES
from tests.positives import POSITIVES
from tests.processes import free_port, start_serve, wait_until
from tests.recording_server import RecordingServer
from tests.smtp_client import MESSAGE


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
        # The workers accept from one socket, whichever is idle first: until both have relayed
        # (each keeps its own next-hop pool, so two relaying workers mean two connections), send
        # concurrent batches. Bounded; the kernel wakes every waiting worker for a connection.
        while hop.connections < 2 and len(hop.messages) < 400:
            await asyncio.gather(*(asyncio.to_thread(send, port, MESSAGE) for _ in range(10)))
        assert hop.connections >= 2
        sent = len(hop.messages)
        text = await asyncio.to_thread(lambda: httpx.get(f"http://127.0.0.1:{http}/metrics", timeout=10).text)
        assert metric(text, 'bouncegw_messages_total{outcome="relayed"}') == sent  # summed over workers
        assert metric(text, "bouncegw_incidents_recorded_total") == 5
        # The same for every worker, so the merge (max) says 1, as with one process.
        build = re.search(r"^bouncegw_build_info\{[^}]*\} ([0-9.e+]+)$", text, re.MULTILINE)
        assert build and float(build.group(1)) == 1
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


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:  # the process has just ended and been reaped
        return []


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its new parent) no longer serves anything.
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


async def test_workers_die_with_a_killed_supervisor(hop: RecordingServer, tmp_path: Path) -> None:
    proc, port, _ = await start_workers(hop, tmp_path)
    workers = children(proc.pid)
    assert len(workers) == 2
    proc.kill()  # SIGKILL: the supervisor cannot pass anything on
    await proc.wait()
    await wait_until(lambda: not any(alive(pid) for pid in workers), "the orphaned workers to exit")
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        pass
    else:
        raise AssertionError("something still accepts on the port of the killed gateway")
    # A restarted gateway on the same port and journals serves, and nothing else answers there.
    again = await start_serve(tmp_path, hop.address, port=port, workers=2)
    try:
        await asyncio.to_thread(send, port, MESSAGE)
        assert len(hop.messages) == 1
    finally:
        again.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(again.communicate(), 30)
    assert again.returncode == 0, err.decode()[-2000:]


async def test_a_crash_loop_ends_the_supervisor_with_one_line(hop: RecordingServer, tmp_path: Path) -> None:
    proc, _, _ = await start_workers(hop, tmp_path)
    killed = 0
    try:
        while proc.returncode is None:  # bounded by MAX_CRASHES and the backoff
            for pid in children(proc.pid) if proc.returncode is None else []:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                    killed += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 0.05)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 1
    text = (tmp_path / "gw.log").read_text()
    assert "Traceback" not in text
    assert text.splitlines()[-1].startswith("Error: worker ")
    assert f"crashed {MAX_CRASHES + 1} times in a row" in text.splitlines()[-1]
    restarts = [line for line in log_lines(tmp_path) if "restarting it in" in str(line["msg"])]
    # Each worker is restarted at most MAX_CRASHES times, with a growing pause.
    assert MAX_CRASHES <= len(restarts) <= 2 * MAX_CRASHES, killed
    pauses = [float(str(line["msg"]).rsplit(" ", 1)[1].rstrip("s")) for line in restarts]
    assert max(pauses) > min(pauses)


async def test_worker_sockets_get_tcp_nodelay() -> None:
    """Accepted connections must have TCP_NODELAY, or every reply waits ~40 ms for Nagle/delayed ACK."""
    sock = listening_socket("127.0.0.1:0", "listener.listen")
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


#: A supervisor without the start-up checks of ``serve``, so that its workers meet the problem.
SUPERVISOR_ONLY = """
import sys
from gateway import workers
workers.use_multiprocess_metrics()
from gateway.config import load_settings
from gateway.logs import setup_logging
from gateway.startup import FatalError, bind
settings = load_settings(None)
setup_logging("INFO", "json")
try:
    workers.supervise(settings, 2, bind(settings))
except FatalError as exc:
    print(exc)
    sys.exit(3)
"""


async def test_a_worker_that_cannot_start_stops_the_supervisor(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    env = {
        **os.environ,
        "BOUNCEGW_LISTENER__LISTEN": f"127.0.0.1:{free_port()}",
        "BOUNCEGW_ADMIN__HTTP": "127.0.0.1:0",
        "BOUNCEGW_NEXT_HOP__ADDRESS": "maildir:outbox",
        "BOUNCEGW_DATABASE__URL": f"sqlite:///{tmp_path / 'gw.sqlite3'}",
        # The journal's directory cannot be created: every worker fails in its start.
        "BOUNCEGW_STORAGE__JOURNAL_PATH": str(tmp_path / "afile" / "journal" / "incidents.jsonl"),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SUPERVISOR_ONLY, cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 3, err.decode()[-2000:]
    line = out.decode().strip()
    assert "\n" not in line and "afile" in line and "not a directory" in line
    assert b"restarting" not in err and b"Traceback" not in err  # given up at once, not retried


async def test_a_worker_that_cannot_restart_is_retried_like_a_crash(
    hop: RecordingServer, tmp_path: Path
) -> None:
    """Only a first start that fails is fatal; a failed restart gets the backoff and another try."""
    proc, port, _ = await start_workers(hop, tmp_path)
    try:
        (lock,) = tmp_path.rglob("*.w0.jsonl.lock")
        (started,) = [line for line in log_lines(tmp_path) if line["msg"] == "worker 0 started"]
        # Worker 0's next start fails: its journal lock cannot be opened (a directory in its place).
        lock.unlink()  # the running worker keeps its lock on the unlinked file
        lock.mkdir()
        os.kill(int(str(started["pid"])), signal.SIGKILL)
        await wait_until(
            lambda: any("could not restart" in str(line["msg"]) for line in log_lines(tmp_path)),
            "the failed restart",
        )
        assert proc.returncode is None, "a failed restart must not stop the gateway"
        lock.rmdir()  # the cause passes: the next restart succeeds
        await wait_until(
            lambda: sum(line["msg"] == "listening" for line in log_lines(tmp_path)) == 3, "the restart"
        )
        for _ in range(4):
            await asyncio.to_thread(send, port, MESSAGE)
        assert len(hop.messages) == 4 and proc.returncode is None
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 30)
    assert proc.returncode == 0
