"""What every chaos scenario shares: a raw SMTP client, message tagging, counting and the figures.

Every message a scenario sends carries a unique ``X-Chaos-Tag`` header (and, for family bounces,
a unique root ``Message-ID``, which incidents keep as ``bounce_message_id``). :func:`check` then
holds the scenario to the suite's rules, message by message:

- accepted (250 after DATA) -> arrived at the recording next hop exactly once;
- not accepted -> a 4xx or 5xx reply the client can act on; a 5xx only where the scenario
  allows it (a legitimate limit such as 552 or 500 5.5.2), never one caused by our own failure;
- an accepted family bounce -> exactly one incident per family recipient in the database;
- nothing is ever delivered twice from one send.

The client is written here on asyncio from RFC 5321 (not smtplib, not aiosmtplib) so that it
sends exactly the bytes a scenario asks for (bare LF, NUL, 8-bit, broken dot-stuffing on purpose).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, select

from storage.models import Incident
from tests.recording_server import Received

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "bench-results" / "chaos.json"
#: Figures of every scenario run in this session, by scenario name (written by conftest.py).
FIGURES: dict[str, dict[str, Any]] = {}

TAG_RE = re.compile(rb"X-Chaos-Tag: ([A-Za-z0-9_.-]+)")
#: What aiosmtplib (the relay's next-hop client) does to a message: bare CR and LF become CRLF
#: (RFC 5321 section 2.3.8 forbids them on the wire).
LINE_ENDINGS = re.compile(rb"(?:\r\n|\n|\r(?!\n))")


@dataclass
class Msg:
    tag: str
    data: bytes
    family: int = 0  # family recipients expected to be recorded (0: not a family bounce)
    sender: str = ""
    rcpt: str = "sender@example.org"
    mail_params: str = ""


@dataclass
class Outcome:
    msg: Msg
    code: int | None = None  # the reply that ended this message's transaction; None: no reply
    text: str = ""
    stage: str = "unsent"  # unsent | connect | MAIL | RCPT | DATA | END | dropped

    @property
    def accepted(self) -> bool:
        return self.stage == "END" and self.code == 250

    @property
    def sent(self) -> bool:
        return self.stage != "unsent"


def tagged(tag: str, data: bytes, *, message_id: bool = False) -> bytes:
    """``data`` with the tag header on top (and its own root Message-ID when ``message_id``)."""
    head = b"X-Chaos-Tag: " + tag.encode() + b"\r\n"
    if message_id:
        header, sep, body = data.partition(b"\r\n\r\n")
        lines = header.split(b"\r\n")
        kept: list[bytes] = []
        skipping = False
        for line in lines:
            if line[:1] in (b" ", b"\t") and skipping:
                continue
            skipping = line.lower().startswith(b"message-id:")
            if not skipping:
                kept.append(line)
        data = b"\r\n".join(kept) + sep + body
        head += b"Message-ID: <" + tag.encode() + b"@chaos.test>\r\n"
    return head + data


def stuff(data: bytes) -> bytes:
    """RFC 5321 section 4.5.2 transparency, on CRLF-delimited lines only, plus the terminator."""
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    if data.startswith(b"."):
        data = b"." + data
    return data.replace(b"\r\n.", b"\r\n..") + b".\r\n"


class SmtpClient:
    """One SMTP session over loopback; every read is bounded by ``timeout``."""

    def __init__(self, port: int, *, source: str | None = None, timeout: float = 30.0) -> None:
        self.port = port
        self.source = source
        self.timeout = timeout
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self, ehlo: str | None = "chaos.test") -> tuple[int, str]:
        self.reader, self.writer = await asyncio.wait_for(
            asyncio.open_connection(
                "127.0.0.1", self.port, local_addr=(self.source, 0) if self.source else None
            ),
            self.timeout,
        )
        greeting = await self.reply()
        if greeting[0] != 220 or ehlo is None:
            return greeting
        return await self.command(f"EHLO {ehlo}")

    async def reply(self) -> tuple[int, str]:
        assert self.reader is not None
        lines: list[str] = []
        while True:
            line = await asyncio.wait_for(self.reader.readline(), self.timeout)
            if not line:
                raise ConnectionResetError("connection closed by the server")
            text = line.decode("utf-8", "replace").rstrip("\r\n")
            lines.append(text[4:])
            if text[3:4] != "-":
                return int(text[:3]), "\n".join(lines)

    async def write(self, data: bytes) -> None:
        assert self.writer is not None
        self.writer.write(data)
        await asyncio.wait_for(self.writer.drain(), self.timeout)

    async def command(self, line: str | bytes) -> tuple[int, str]:
        await self.write((line.encode() if isinstance(line, str) else line) + b"\r\n")
        return await self.reply()

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(self.writer.wait_closed(), 5)
            self.writer = None

    async def transaction(self, msg: Msg, out: Outcome) -> None:
        """MAIL, RCPT, DATA for one message; ``out`` says how far it got and the last reply."""
        out.stage = "MAIL"
        out.code, out.text = await self.command(f"MAIL FROM:<{msg.sender}>{msg.mail_params}")
        if out.code != 250:
            return await self._rset(out)
        out.stage = "RCPT"
        out.code, out.text = await self.command(f"RCPT TO:<{msg.rcpt}>")
        if out.code not in (250, 251):
            return await self._rset(out)
        out.stage = "DATA"
        out.code, out.text = await self.command("DATA")
        if out.code != 354:
            return await self._rset(out)
        await self.write(stuff(msg.data))
        out.code, out.text = await self.reply()
        out.stage = "END"

    async def _rset(self, out: Outcome) -> None:
        if out.code != 421:
            await self.command("RSET")


CLIENT_ERRORS: tuple[type[Exception], ...] = (
    ConnectionError,
    OSError,
    TimeoutError,
    asyncio.IncompleteReadError,
)


async def send_all(
    port: int,
    messages: Sequence[Msg],
    *,
    source: str | None = None,
    timeout: float = 30.0,
    stop: asyncio.Event | None = None,
) -> list[Outcome]:
    """Send ``messages`` in order on as few sessions as possible (a new one after a 421 or a drop).

    A message cut off without a reply is ``dropped``; when the gateway cannot be reached at all
    the rest stay ``unsent`` (never counted as sent). ``stop`` ends the run early.
    """
    outcomes = [Outcome(m) for m in messages]
    client: SmtpClient | None = None
    try:
        for out in outcomes:
            if stop is not None and stop.is_set():
                break
            if client is None:
                client = SmtpClient(port, source=source, timeout=timeout)
                try:
                    code, text = await client.connect()
                except CLIENT_ERRORS:
                    await client.close()
                    client = None
                    break
                if code != 250:
                    out.stage, out.code, out.text = "connect", code, text
                    await client.close()
                    client = None
                    continue
            try:
                await client.transaction(out.msg, out)
            except CLIENT_ERRORS:
                out.stage, out.code = "dropped", None
                await client.close()
                client = None
                continue
            if out.code == 421:
                await client.close()
                client = None
        if client is not None:
            with contextlib.suppress(*CLIENT_ERRORS):
                await client.command("QUIT")
    finally:
        if client is not None:
            await client.close()
    return outcomes


async def send_concurrently(port: int, messages: Sequence[Msg], sessions: int, **kw: Any) -> list[Outcome]:
    """Spread ``messages`` round-robin over ``sessions`` concurrent sessions."""
    shares = [list(messages[i::sessions]) for i in range(sessions)]
    results = await asyncio.gather(*(send_all(port, share, **kw) for share in shares if share))
    return [o for r in results for o in r]


# -- counting -------------------------------------------------------------------------------------


def arrivals(received: Iterable[Received]) -> Counter[str]:
    """How many times each tag reached the recording next hop."""
    counts: Counter[str] = Counter()
    for message in received:
        found = TAG_RE.search(message.data[:4096])
        counts[found.group(1).decode() if found else "<untagged>"] += 1
    return counts


def incidents_by_tag(database_url: str) -> Counter[str]:
    """Incidents in the database per tag (the tag is the local part of the bounce's Message-ID)."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            ids = conn.execute(select(Incident.bounce_message_id)).scalars().all()
    finally:
        engine.dispose()
    counts: Counter[str] = Counter()
    for mid in ids:
        counts[(mid or "").strip().strip("<>").split("@", 1)[0]] += 1
    return counts


@dataclass
class Rules:
    """What a scenario allows beyond the defaults (all strict)."""

    #: 5xx replies that are legitimate here, as reply prefixes ("552 5.3.4", "500 5.5.2", "554 5.7.1").
    allowed_5xx: tuple[str, ...] = ()
    #: Messages may be cut off without a reply (the gateway was killed).
    allow_dropped: bool = False
    #: A message not accepted may still have reached the next hop (the next hop took it, then
    #: its reply was lost or came too late): the unavoidable duplicate on the client's retry.
    allow_unacked_arrival: bool = False
    #: Accepted family bounces whose incident may be missing (counted, never silent).
    allowed_unrecorded: int = 0


@dataclass
class Figures:
    scenario: str
    sent: int = 0
    accepted: int = 0
    arrived: int = 0
    recorded: int = 0
    replies_4xx: int = 0
    replies_5xx: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        extra = " ".join(f"{k}={v}" for k, v in self.extra.items())
        return (
            f"[chaos] {self.scenario}: sent={self.sent} accepted={self.accepted} arrived={self.arrived} "
            f"recorded={self.recorded} 4xx={self.replies_4xx} 5xx={self.replies_5xx} {extra}"
        ).rstrip()


def check(
    scenario: str,
    outcomes: Sequence[Outcome],
    received: Iterable[Received],
    recorded: Counter[str] | None = None,
    rules: Rules | None = None,
    recorded_total: int | None = None,
    **extra: Any,
) -> Figures:
    """Assert the suite's rules message by message, then print and keep the figures."""
    rules = rules or Rules()
    arrived = arrivals(received)
    recorded = recorded if recorded is not None else Counter()
    sent = [o for o in outcomes if o.sent]
    figures = Figures(scenario, sent=len(sent))
    tags = {o.msg.tag for o in sent}
    assert len(tags) == len(sent), "tags must be unique"
    unrecorded = 0
    unacked_arrivals = 0
    dropped = 0
    for out in sent:
        tag = out.msg.tag
        where = f"{scenario}: {tag} ({out.stage} {out.code} {out.text[:80]!r})"
        assert arrived[tag] <= 1, f"delivered {arrived[tag]} times: {where}"
        if out.accepted:
            figures.accepted += 1
            assert arrived[tag] == 1, f"accepted but never arrived: {where}"
            if out.msg.family:
                if recorded[tag] == 0 and unrecorded < rules.allowed_unrecorded:
                    unrecorded += 1
                else:
                    assert recorded[tag] == out.msg.family, f"recorded {recorded[tag]} times: {where}"
            else:
                assert recorded[tag] == 0, f"an incident for a message that is no family bounce: {where}"
            continue
        if arrived[tag]:
            unacked_arrivals += 1
            assert rules.allow_unacked_arrival, f"arrived although not accepted: {where}"
        assert recorded[tag] in (0, out.msg.family), f"recorded {recorded[tag]} times: {where}"
        if out.code is None:
            dropped += 1
            assert rules.allow_dropped, f"no reply at all: {where}"
            continue
        assert 400 <= out.code < 600, f"not an actionable reply: {where}"
        if out.code >= 500:
            figures.replies_5xx += 1
            line = f"{out.code} {out.text}"
            assert line.startswith(rules.allowed_5xx) if rules.allowed_5xx else False, (
                f"a permanent failure the scenario does not allow: {where}"
            )
        else:
            figures.replies_4xx += 1
    figures.arrived = sum(arrived[t] for t in tags)
    figures.recorded = sum(recorded[t] for t in tags) if recorded_total is None else recorded_total
    assert arrived.get("<untagged>", 0) == 0
    if dropped:
        figures.extra["dropped"] = dropped
    if unacked_arrivals:
        figures.extra["arrived_unacked"] = unacked_arrivals
    if unrecorded:
        figures.extra["accepted_unrecorded"] = unrecorded
    figures.extra.update(extra)
    report(figures)
    return figures


def report(figures: Figures) -> None:
    print(figures.line())
    FIGURES[figures.scenario] = {
        "sent": figures.sent,
        "accepted": figures.accepted,
        "arrived": figures.arrived,
        "recorded": figures.recorded,
        "4xx": figures.replies_4xx,
        "5xx": figures.replies_5xx,
        **figures.extra,
    }


def write_results() -> None:
    """Merge this session's figures into bench-results/chaos.json (other scenarios' kept)."""
    if not FIGURES:
        return
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    try:
        data = json.loads(RESULTS.read_text())
    except (OSError, ValueError):
        data = {}
    data.update(FIGURES)
    RESULTS.write_text(json.dumps(dict(sorted(data.items())), indent=2) + "\n")
