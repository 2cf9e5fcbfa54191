"""A recording SMTP server: the next hop that the tests start themselves.

It is written here from RFC 5321 rather than on top of aiosmtpd or bouncegw
code, so that it cannot share a bug with the gateway under test. It records
every command line and every message exactly as it arrived on the wire, and
answers from a script the test can change:

    hop.replies["RCPT"] = lambda arg: "550 5.1.1 no such user" if "bad@" in arg else None
    hop.replies["DATA"] = lambda _: "421 4.3.2 bye"  # answer DATA itself (no 354)
    hop.delays["DATA_END"] = 30          # hang before answering the final dot
    hop.close_on["DATA_BODY"] = True     # drop the connection in the middle of DATA
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Received:
    mail_from: str  # the MAIL argument exactly as sent (e.g. "FROM:<> RET=HDRS")
    rcpts: list[str]  # RCPT arguments of accepted recipients, exactly as sent
    data: bytes  # the message after removing the transparency dots (RFC 5321 section 4.5.2)
    raw: bytes  # the DATA section exactly as sent, dot-stuffed, up to and including CRLF.CRLF
    tls: bool

    @property
    def message(self) -> bytes:
        """``data`` without the one ``Received:`` field bouncegw puts on top (RFC 5321 section
        4.4): the message as the gateway received it, or as it explained it. Fails when the
        first field is not bouncegw's trace."""
        head, sep, rest = self.data.partition(b"\r\n\t")  # the trace is folded after its "from"
        assert head.startswith(b"Received: from ") and sep, self.data[:200]
        line, _, after = rest.partition(b"\r\n\t")  # "by HOST (bouncegw) with ... id ...;"
        assert b" (bouncegw) with " in line, self.data[:200]
        _date, _, message = after.partition(b"\r\n")
        return message


@dataclass
class RecordingServer:
    extensions: list[str] = field(
        default_factory=lambda: [
            "PIPELINING",
            "SIZE 52428800",
            "8BITMIME",
            "SMTPUTF8",
            "DSN",
            "ENHANCEDSTATUSCODES",
        ]
    )
    tls_context: ssl.SSLContext | None = None
    replies: dict[str, Callable[[str], str | None]] = field(default_factory=dict)
    delays: dict[str, float] = field(default_factory=dict)
    close_on: dict[str, bool] = field(default_factory=dict)
    messages: list[Received] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    connections: int = 0
    host: str = "127.0.0.1"  # another loopback address plays another server of the "internet"
    port: int = 0  # 0: any free port; set it to listen on a chosen one
    _server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._session, self.host, self.port, limit=64 * 1024 * 1024)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        if self._server is not None:
            await self._server.wait_closed()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def _reply(self, verb: str, arg: str, default: str) -> str:
        script = self.replies.get(verb)
        scripted = script(arg) if script else None
        return scripted or default

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        tls = False
        mail_from: str | None = None
        rcpts: list[str] = []

        async def send(text: str) -> None:
            writer.write(text.encode("utf-8") + b"\r\n")
            await writer.drain()

        try:
            await send(self._reply("GREETING", "", "220 sink.test ESMTP recording server"))
            while True:
                line = await reader.readuntil(b"\r\n")
                text = line[:-2].decode("utf-8", "surrogateescape")
                self.commands.append(text)
                verb, _, arg = text.partition(" ")
                verb = verb.upper()
                if delay := self.delays.get(verb):
                    await asyncio.sleep(delay)
                if verb == "EHLO":
                    exts = [*self.extensions, *(["STARTTLS"] if self.tls_context and not tls else [])]
                    lines = ["sink.test", *exts]
                    await send("\r\n".join(f"250-{x}" for x in lines[:-1]) + f"\r\n250 {lines[-1]}")
                elif verb == "HELO":
                    await send("250 sink.test")
                elif verb == "STARTTLS" and self.tls_context and not tls:
                    await send("220 2.0.0 Ready to start TLS")
                    await writer.start_tls(self.tls_context)
                    tls = True
                    mail_from, rcpts = None, []
                elif verb == "MAIL":
                    reply = self._reply("MAIL", arg, "250 2.1.0 Ok")
                    if reply.startswith("2"):
                        mail_from, rcpts = arg, []
                    await send(reply)
                elif verb == "RCPT":
                    reply = self._reply("RCPT", arg, "250 2.1.5 Ok")
                    if reply.startswith("2"):
                        rcpts.append(arg)
                    await send(reply)
                elif verb == "DATA":
                    if mail_from is None or not rcpts:
                        await send("554 5.5.1 Error: no valid recipients")
                        continue
                    reply = self._reply("DATA", "", "354 End data with <CR><LF>.<CR><LF>")
                    await send(reply)
                    if not reply.startswith("354"):
                        mail_from, rcpts = None, []
                        continue
                    if self.close_on.get("DATA_BODY"):
                        await reader.read(10)
                        writer.close()
                        return
                    raw = await reader.readuntil(b"\r\n.\r\n")
                    if delay := self.delays.get("DATA_END"):
                        await asyncio.sleep(delay)
                    body = b"\r\n" + raw[:-3]  # CRLF + stuffed body (each line CRLF-terminated)
                    body = body.replace(b"\r\n..", b"\r\n.")[2:]
                    reply = self._reply("DATA_END", "", "250 2.0.0 Ok: queued")
                    if reply.startswith("2"):
                        self.messages.append(Received(mail_from, rcpts, body, raw, tls))
                    mail_from, rcpts = None, []
                    await send(reply)
                elif verb == "RSET":
                    mail_from, rcpts = None, []
                    await send("250 2.0.0 Ok")
                elif verb == "NOOP":
                    await send("250 2.0.0 Ok")
                elif verb == "QUIT":
                    await send("221 2.0.0 Bye")
                    break
                elif verb == "AUTH":
                    await send(self._reply("AUTH", arg, "235 2.7.0 Authentication successful"))
                else:
                    await send("502 5.5.1 Command not implemented")
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
