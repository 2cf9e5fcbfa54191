"""``--next-hop maildir:PATH``: deliver into a local Maildir instead of relaying.

It exists so that a gateway runs on a fresh machine with nothing else
installed (``make run``) and a newcomer can look at what came out. Each
message is written once per transaction, the way a local delivery agent
writes it: a ``Return-Path`` line (RFC 5321 section 4.4) followed by the
message bytes, through ``tmp/`` and a rename into ``new/`` (the Maildir rule
that makes a half-written file invisible). File I/O runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from itertools import count
from pathlib import Path

from gateway.relay import Reply, Transaction

_sequence = count()

RCPT_OK = Reply(250, "2.1.5 Ok")
MAIL_OK = Reply(250, "2.1.0 Ok")
WRITE_FAILED = Reply(451, "4.3.0 Cannot write to the local outbox, try again later")


class MaildirNextHop:
    def __init__(self, path: Path) -> None:
        self.path = path
        for sub in ("tmp", "new", "cur"):
            (path / sub).mkdir(parents=True, exist_ok=True)

    async def begin(self, mail_from: str, parameters: list[str], *, utf8: bool) -> tuple[Reply, Transaction]:
        return MAIL_OK, MaildirTransaction(self, mail_from)

    # A local directory: nothing to reach, probe or prune (a write that fails answers 451 itself).
    def reachable(self, window: float) -> bool:
        return True

    def failing(self) -> bool:
        return False

    async def probe(self) -> bool:
        return True

    def prune(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def deliver(self, mail_from: str, message: bytes, trace: bytes = b"") -> str:
        name = f"{time.time_ns()}.P{os.getpid()}Q{next(_sequence)}.{socket.gethostname()}"
        tmp = self.path / "tmp" / name
        with tmp.open("xb") as fh:
            fh.write(b"Return-Path: <" + mail_from.encode("utf-8", "surrogateescape") + b">\r\n")
            fh.write(trace)
            fh.write(message)
            fh.flush()
            os.fsync(fh.fileno())
        os.rename(tmp, self.path / "new" / name)
        return name


class MaildirTransaction:
    def __init__(self, hop: MaildirNextHop, mail_from: str) -> None:
        self.hop = hop
        self.mail_from = mail_from

    async def rcpt(self, address: str, parameters: list[str]) -> Reply:
        return RCPT_OK

    async def data(self, message: bytes, trace: bytes = b"") -> Reply:
        try:
            name = await asyncio.to_thread(self.hop.deliver, self.mail_from, message, trace)
        except OSError:
            return WRITE_FAILED
        return Reply(250, f"2.0.0 Ok: delivered as {name}")

    async def abort(self) -> None:
        return None
