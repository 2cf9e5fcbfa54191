"""A plain SMTP client for the relay tests: a sample message, sending it, raw dialogues."""

from __future__ import annotations

import asyncio
import smtplib
import socket
from typing import Any

MESSAGE = (
    b"From: Alice <alice@example.org>\r\n"
    b"To: bob@example.com\r\n"
    b"Subject: =?utf-8?q?r=C3=A9sum=C3=A9?=\r\n"
    b"Message-ID: <m1@example.org>\r\n"
    b"\r\n"
    b".a line that starts with a dot\r\n"
    b"..two dots\r\n"
    b".\r\n"
    b"\tindented line with trailing space \r\n"
    b"\r\n"
    b"last line\r\n"
)


#: A client's transaction up to the DATA command, for raw dialogues.
UP_TO_DATA = [b"EHLO c\r\n", b"MAIL FROM:<a@example.org>\r\n", b"RCPT TO:<b@example.com>\r\n", b"DATA\r\n"]


def send(port: int, sender: str, rcpts: list[str], data: bytes, **kw: Any) -> dict[str, tuple[int, bytes]]:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        return client.sendmail(sender, rcpts, data, **kw)


async def asend(
    port: int, sender: str, rcpts: list[str], data: bytes, **kw: Any
) -> dict[str, tuple[int, bytes]]:
    return await asyncio.to_thread(send, port, sender, rcpts, data, **kw)


def dialogue(
    port: int, lines: list[bytes], *, source: str | None = None, read_final: bool = True
) -> list[str]:
    """Send raw command lines (pipelined in one write) and collect every reply line."""
    with socket.create_connection(
        ("127.0.0.1", port), timeout=10, source_address=(source, 0) if source else None
    ) as sock:
        reader = sock.makefile("rb")
        out = [reader.readline().decode()]
        sock.sendall(b"".join(lines))
        try:
            while True:
                line = reader.readline()
                if not line:
                    break
                out.append(line.decode().rstrip("\r\n"))
                if out[-1].startswith("221"):
                    break
        except (TimeoutError, ConnectionError):
            pass  # the gateway closed the connection (after a 421/554)
        return out
