"""Python SMTP clients for what smtp-source cannot do; each prints one JSON line.

``python -m tests.benchmarks.loadgen throughput|latency|idle PORT [options]``

- ``throughput``: closed loop, S sessions, a fixed message count, every message distinct
  (the SEQ token in the template is replaced), optionally every K-th one a family DSN, and
  optionally each family DSN naming a recipient of its own (``--vary-recipient ADDRESS``: every
  occurrence of ADDRESS gets the message's sequence number in its local part).
  MAIL, RCPT and DATA go in one write (RFC 2920 pipelining, DATA last in the group).
- ``latency``: open loop at a fixed rate: message i is due at start + i/rate whether or not
  earlier ones have finished; its latency runs from that due time (so time spent waiting for a
  free session counts, avoiding coordinated omission) to the reply to the final dot.
- ``idle``: open N sessions (greeting + EHLO), print, hold them until stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import resource
import sys
import time
from pathlib import Path

from tests.benchmarks.messages import SEQ

HELO = b"EHLO loadgen.bench.example\r\n"
RCPT = b"rcpt@bench.example"


class SMTPError(Exception):
    pass


def dot_stuff(data: bytes) -> bytes:
    """RFC 5321 section 4.5.2 transparency, plus the final CRLF the terminator needs."""
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    data = data.replace(b"\r\n.", b"\r\n..")
    return b"." + data if data.startswith(b".") else data


class Session:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int, host: str = "127.0.0.1") -> Session:
        reader, writer = await asyncio.open_connection(host, port)
        session = cls(reader, writer)
        await session.expect(220)
        writer.write(HELO)
        await session.expect(250)
        return session

    async def reply(self) -> int:
        while True:  # multi-line replies: "250-..." until "250 ..." (RFC 5321 section 4.2.1)
            line = await self.reader.readline()
            if len(line) < 4:
                raise SMTPError(f"connection closed or bad reply {line!r}")
            if line[3:4] != b"-":
                return int(line[:3])

    async def expect(self, code: int) -> None:
        got = await self.reply()
        if got != code:
            raise SMTPError(f"expected {code}, got {got}")

    async def send(self, sender: bytes, body: bytes) -> None:
        self.writer.write(b"MAIL FROM:<" + sender + b">\r\nRCPT TO:<" + RCPT + b">\r\nDATA\r\n")
        codes = [await self.reply() for _ in range(3)]
        if codes != [250, 250, 354]:
            if codes[2] == 354:  # cannot happen on a conforming server, but never leave DATA open
                self.writer.write(b".\r\n")
                await self.reply()
            raise SMTPError(f"MAIL/RCPT/DATA got {codes}")
        self.writer.write(body + b".\r\n")
        await self.expect(250)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def throughput(
    port: int, sessions: int, count: int, ordinary: bytes, family: bytes, every: int, vary: bytes = b""
) -> dict[str, object]:
    tag = str(os.getpid()).encode()
    seq = itertools.count()
    errors: list[str] = []
    family_sent = 0

    async def worker() -> None:
        nonlocal family_sent
        session = await Session.open(port)
        while (i := next(seq)) < count:
            is_family = every > 0 and i % every == 0
            template = family if is_family else ordinary
            token = b"%s.%d" % (tag, i)
            body = template.replace(SEQ, token)
            if is_family and vary:
                local, _, domain = vary.partition(b"@")
                body = body.replace(vary, local + b"." + token + b"@" + domain)
            try:
                await session.send(b"" if is_family else b"sender@bench.example", body)
                family_sent += is_family
            except (SMTPError, OSError) as exc:
                errors.append(str(exc))
                await session.close()
                session = await Session.open(port)
        await session.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(sessions)))
    elapsed = time.perf_counter() - start
    return {
        "count": count,
        "elapsed": elapsed,
        "errors": len(errors),
        "family": family_sent,
        "first_error": errors[:1],
    }


async def latency(
    port: int, sessions: int, rate: float, seconds: float, warmup: float, template: bytes
) -> dict[str, object]:
    idle: asyncio.Queue[Session] = asyncio.Queue()
    for s in await asyncio.gather(*(Session.open(port) for _ in range(sessions))):
        idle.put_nowait(s)
    loop = asyncio.get_running_loop()
    samples: list[float] = []
    errors = sent = 0

    async def one(i: int, due: float) -> None:
        nonlocal errors, sent
        session = await idle.get()
        try:
            await session.send(b"sender@bench.example", template.replace(SEQ, b"lat.%d" % i))
            sent += 1
            if due - start >= warmup:
                samples.append(loop.time() - due)
        except (SMTPError, OSError):
            errors += 1
            await session.close()
            session = await Session.open(port)
        idle.put_nowait(session)

    start = loop.time()
    tasks = []
    for i in range(int(rate * (warmup + seconds))):
        due = start + i / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, due)))
    await asyncio.gather(*tasks)
    while not idle.empty():
        await idle.get_nowait().close()
    samples.sort()

    def pct(p: float) -> float:
        return 1000 * samples[min(len(samples) - 1, int(p * len(samples)))] if samples else float("nan")

    return {
        "rate": rate,
        "n": len(samples),
        "sent": sent,
        "errors": errors,
        "p50_ms": pct(0.50),
        "p90_ms": pct(0.90),
        "p99_ms": pct(0.99),
        "max_ms": pct(1.0),
    }


async def hold_idle(port: int, count: int) -> None:
    _raise_nofile()
    opened: list[Session] = []
    failed = 0
    gate = asyncio.Semaphore(64)  # stay under the listener's accept backlog

    async def connect() -> None:
        nonlocal failed
        async with gate:
            try:
                opened.append(await Session.open(port))
            except (SMTPError, OSError):
                failed += 1

    await asyncio.gather(*(connect() for _ in range(count)))
    print(json.dumps({"open": len(opened), "failed": failed}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until stdin closes
    # Are they all still open (none cut off while idle)? A NOOP each answers that.
    alive = 0
    for s in opened:
        try:
            s.writer.write(b"NOOP\r\n")
            alive += await s.reply() == 250
        except (SMTPError, OSError):
            pass
    await asyncio.gather(*(s.close() for s in opened))
    print(json.dumps({"alive": alive}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=["throughput", "latency", "idle"])
    parser.add_argument("port", type=int)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--ordinary", type=Path)
    parser.add_argument("--family", type=Path)
    parser.add_argument("--family-every", type=int, default=0, help="every K-th message is a family DSN")
    parser.add_argument(
        "--vary-recipient", default="", help="give each family DSN its own copy of this address"
    )
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--warmup", type=float, default=0.5)
    args = parser.parse_args()
    ordinary = dot_stuff(args.ordinary.read_bytes()) if args.ordinary else b""
    family = dot_stuff(args.family.read_bytes()) if args.family else b""
    result: dict[str, object] | None = None
    if args.mode == "throughput":
        result = asyncio.run(
            throughput(
                args.port,
                args.sessions,
                args.count,
                ordinary,
                family,
                args.family_every,
                args.vary_recipient.encode(),
            )
        )
    elif args.mode == "latency":
        result = asyncio.run(
            latency(args.port, args.sessions, args.rate, args.seconds, args.warmup, ordinary)
        )
    else:
        asyncio.run(hold_idle(args.port, args.count))
    if result is not None:
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
