"""Helpers for tests that run real processes: free ports, waiting, and ``bouncegw serve``."""

from __future__ import annotations

import asyncio
import os
import random
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def free_port() -> int:
    """A loopback port nobody listens on right now, below the kernel's ephemeral range.

    A port the kernel picks for ``bind(0)`` comes from the range it also picks the source ports
    of outgoing connections from: between this check and the server's own bind (Postfix's master
    starts a second later) any process's connection can take it, and the server fails with
    "Address already in use" (seen under load). Ports below ``ip_local_port_range`` are never
    handed out as source ports, so only another explicit bind can collide.
    """
    low = _ephemeral_low()
    for _ in range(200):
        port = random.randrange(min(10000, low // 2), low)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:  # a crowded range: fall back to the kernel's choice
        sock.bind(("127.0.0.1", 0))
        chosen: int = sock.getsockname()[1]
        return chosen


async def wait_until(condition: Callable[[], bool], what: str, limit: float = 60.0) -> None:
    """Poll until ``condition`` holds; the limit only stops a hung test, it asserts no speed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(0.05)


async def wait_for_smtp(
    port: int, proc: asyncio.subprocess.Process | None = None, limit: float = 120.0
) -> None:
    """Until a 220 greeting arrives on ``port``; fail if ``proc`` exits first.

    The limit only stops a hung test (a loaded CI machine starting Postfix can take a while).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while loop.time() < deadline:
        if proc is not None and proc.returncode is not None:
            raise AssertionError(f"process exited early with {proc.returncode}")
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        try:
            greeting = await asyncio.wait_for(reader.readline(), max(0.0, deadline - loop.time()))
            writer.write(b"QUIT\r\n")
        except ConnectionError:
            # A listener that went away with this connection in its queue (a process starting or
            # stopping on that port): not ready yet.
            greeting = b""
        finally:
            writer.close()
        if greeting.startswith(b"220"):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"nothing answered SMTP on port {port}")


async def start_serve(
    tmp_path: Path,
    next_hop: str,
    *,
    port: int,
    http: str = "127.0.0.1:0",
    workers: int = 1,
    database: str | None = None,
    env: Mapping[str, str] | None = None,
    stderr: int | IO[Any] = asyncio.subprocess.PIPE,
    program: Sequence[str] = (sys.executable, "-m", "gateway"),
    **kwargs: Any,
) -> asyncio.subprocess.Process:
    """``bouncegw serve`` as a real process in ``tmp_path`` (SQLite there too, unless ``database``),
    once it listens.

    ``program`` is the command that stands for ``bouncegw`` (default: this checkout's package).
    """
    proc = await asyncio.create_subprocess_exec(
        *program, "serve", "--workers", str(workers),
        "--listen", f"127.0.0.1:{port}", "--next-hop", next_hop, "--http", http,
        "--database", database or f"sqlite:///{tmp_path / 'gw.sqlite3'}",
        cwd=tmp_path,
        env={**os.environ, "BOUNCEGW_NEXT_HOP__TLS": "none", **(env or {})},
        stderr=stderr,
        **kwargs,
    )  # fmt: skip
    await wait_for_smtp(port, proc)
    return proc


async def run_bouncegw(
    *args: str, cwd: Path, env: Mapping[str, str] | None = None, limit: float = 120.0, **kwargs: Any
) -> tuple[int, str, str]:
    """Run ``bouncegw ARGS`` to its end: (exit status, stdout, stderr). The limit only stops a hang."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", *args,
        cwd=cwd,
        env={**os.environ, "BOUNCEGW_NEXT_HOP__TLS": "none", **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        **kwargs,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(proc.communicate(), limit)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()
