"""A stand-in MTA for the milter tests: it talks the milter protocol and applies the answers.

It speaks as Postfix does (version 6, every action and option offered, header values with
their leading space when that option is taken, folded values with bare LF) and applies the
actions the way libmilter documents them (smfi_insheader, smfi_chgheader, smfi_addheader,
smfi_replacebody). The Postfix end-to-end test (tests/test_milter_postfix.py) checks the same
against the real MTA.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from kilter.protocol import messages as m
from kilter.protocol.buffer import SimpleBuffer

FINAL = (m.Continue, m.Accept, m.Reject, m.Discard, m.TemporaryFailure, m.ReplyCode)
EDITS = (m.InsertHeader, m.ChangeHeader, m.AddHeader, m.ReplaceBody)


def split_message(data: bytes) -> tuple[list[tuple[str, bytes]], bytes]:
    """Header fields as an MTA sends them (value after the colon, folding as bare LF), and the body."""
    head, _, body = data.partition(b"\r\n\r\n")
    headers: list[tuple[str, bytes]] = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            name, value = headers[-1]
            headers[-1] = (name, value + b"\n" + line)
        else:
            name, _, value = line.partition(b":")
            headers.append((name.decode("ascii").rstrip(), value))
    return headers, body


def join_message(headers: list[tuple[str, bytes]], body: bytes) -> bytes:
    lines = []
    for name, value in headers:
        # Postfix puts a space after the colon when the value does not start with one.
        sep = b":" if value[:1] in (b"", b" ", b"\t") else b": "
        lines.append(name.encode("ascii") + sep + value.replace(b"\n", b"\r\n") + b"\r\n")
    return b"".join(lines) + b"\r\n" + body


def apply(data: bytes, edits: list[m.Message]) -> bytes:
    """``data`` after the milter's actions, as libmilter's documentation defines each."""
    headers, body = split_message(data)
    new_body: bytearray | None = None
    for edit in edits:
        if isinstance(edit, m.InsertHeader):
            headers.insert(edit.index, (edit.name, bytes(edit.value)))
        elif isinstance(edit, m.ChangeHeader):
            positions = [i for i, (name, _) in enumerate(headers) if name.lower() == edit.name.lower()]
            at = positions[edit.index - 1]
            if edit.value:
                headers[at] = (headers[at][0], bytes(edit.value))
            else:
                del headers[at]
        elif isinstance(edit, m.AddHeader):
            headers.append((edit.name, bytes(edit.value)))
        elif isinstance(edit, m.ReplaceBody):
            new_body = (new_body or bytearray()) + bytes(edit.content)
    return join_message(headers, bytes(new_body) if new_body is not None else body)


@dataclass
class Outcome:
    final: m.Message
    edits: list[m.Message] = field(default_factory=list)
    body_sent: bool = True


class MilterClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.options = m.ProtocolFlags(0)

    @classmethod
    async def connect(cls, host: str, port: int) -> MilterClient:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    @classmethod
    async def connect_unix(cls, path: str) -> MilterClient:
        reader, writer = await asyncio.open_unix_connection(path)
        return cls(reader, writer)

    async def close(self) -> None:
        self.send(m.Close())
        self.writer.close()
        await self.writer.wait_closed()

    def send(self, message: m.Message) -> None:
        buffer = SimpleBuffer(1 << 18)
        message.pack(buffer)
        self.writer.write(buffer[:].tobytes())

    async def receive(self) -> m.Message:
        head = await self.reader.readexactly(4)
        (length,) = struct.unpack("!L", head)
        payload = await self.reader.readexactly(length)
        buffer = SimpleBuffer(4 + length)
        buffer[:] = head + payload
        message, _ = m.Message.unpack(buffer)
        message.freeze()
        return message

    async def negotiate(
        self, actions: m.ActionFlags = m.ActionFlags.ALL, options: m.ProtocolFlags | None = None
    ) -> m.Negotiate:
        offered = options if options is not None else m.ProtocolFlags(0x1FFFFF)
        self.send(m.Negotiate(6, actions, offered))
        answer = await self.receive()
        assert isinstance(answer, m.Negotiate)
        self.options = answer.protocol_flags
        return answer

    async def event(self, message: m.Message, no_reply: m.ProtocolFlags | None) -> m.Message | None:
        self.send(message)
        if no_reply is not None and no_reply in self.options:
            return None
        await self.writer.drain()
        return await self.receive()

    async def message(
        self, data: bytes, mail_from: str = "", rcpts: tuple[str, ...] = ("a@example.com",)
    ) -> Outcome:
        """One whole message; the milter's answers until its final one."""
        flags = m.ProtocolFlags
        await self.event(m.Connect("mta.test", IPv4Address("192.0.2.7"), 25), flags.NR_CONNECT)
        await self.event(m.Helo("client.test"), flags.NR_HELO)
        await self.event(m.EnvelopeFrom(f"<{mail_from}>".encode()), flags.NR_SENDER)
        for rcpt in rcpts:
            await self.event(m.EnvelopeRecipient(f"<{rcpt}>".encode()), flags.NR_RECIPIENT)
        headers, body = split_message(data)
        for name, value in headers:
            if flags.HEADER_LEADING_SPACE not in self.options:
                value = value.lstrip(b" ")
            answer = await self.event(m.Header(name, value), flags.NR_HEADER)
            assert answer is None or isinstance(answer, m.Continue), answer
        answer = await self.event(m.EndOfHeaders(), flags.NR_END_OF_HEADERS)
        if answer is not None and not isinstance(answer, m.Continue):
            return Outcome(answer, body_sent=False)
        for at in range(0, len(body), 65535):
            answer = await self.event(m.Body(body[at : at + 65535]), flags.NR_BODY)
            if answer is not None and not isinstance(answer, m.Continue):
                return Outcome(answer)
        self.send(m.EndOfMessage(b""))
        await self.writer.drain()
        edits: list[m.Message] = []
        while True:
            reply = await self.receive()
            if isinstance(reply, FINAL):
                return Outcome(reply, edits)
            assert isinstance(reply, EDITS), reply
            edits.append(reply)
