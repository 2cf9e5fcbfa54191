"""One milter connection from the MTA: the events of its messages, and bouncegw's answers.

Per message (RFC-less, as libmilter defines it: MAIL, RCPT..., header..., end of headers,
body chunks, end of message):

- at the end of the headers, a message whose root headers carry no sign of a bounce
  (``gateway.bounce.prefilter.might_be_bounce_headers``) is accepted: the MTA sends no body and
  applies no change (SMFIR_ACCEPT), so ordinary mail costs one round trip;
- otherwise the body is buffered (up to ``listener.max_message_size``), and at the end of the
  message the relay's steps run on the rebuilt message (:func:`gateway.milter.edits.assemble`):
  Detect, Explain, then Record with the MTA's acceptance standing in for the next hop's reply,
  so incidents are durable before the MTA hears the answer;
- the explained message goes back as header and body actions (:mod:`gateway.milter.edits`).

Failure policy (the relay's, in milter terms; a milter must never reject or discard a
bounce, Postfix's MILTER_README on ``internal_mail_filter_classes``): whatever fails, the
message continues untouched (SMFIR_CONTINUE with no action), counted by outcome; the one
exception is a family bounce that cannot be recorded (the recorder's journal is full with the
database down, or recording fails), which is tempfailed with ``451 4.3.0`` so the MTA keeps
it and retries, exactly as the relay answers its upstream. An answer is always sent within
:data:`END_OF_MESSAGE_BUDGET`, below Postfix's ``milter_command_timeout`` (30 s) and
``milter_content_timeout`` (300 s); a packet that cannot be read closes the connection, and
the MTA applies its ``milter_default_action``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from ipaddress import IPv4Address, IPv6Address

from kilter.protocol import messages as m
from ulid import ULID

from gateway import metrics, replies
from gateway.bounce import prefilter
from gateway.milter import edits
from gateway.milter.edits import Unexpressible
from gateway.milter.protocol import (
    ACTIONS,
    NO_REPLY_FLAGS,
    VERSION,
    WANTED,
    Frames,
    ProtocolError,
    Undecodable,
    pack,
    reply_code,
)
from gateway.outcomes import MilterOutcome
from gateway.pipeline import Deferred, Pipeline, Processed
from gateway.relay import Reply
from gateway.transaction import MessageContext

log = logging.getLogger(__name__)
txlog = logging.getLogger("bouncegw.transaction")

#: The whole end-of-message work (detect, explain, record) must answer within this many
#: seconds: Postfix waits milter_command_timeout = 30 s for most answers and
#: milter_content_timeout = 300 s for the end of the message; past the budget the message
#: continues untouched.
END_OF_MESSAGE_BUDGET = 25.0
#: A connection with no packet for this long is closed. Postfix keeps its milter connection
#: for the whole SMTP session, whose idle time smtpd_timeout bounds (300 s by default).
IDLE_TIMEOUT = 900.0
#: The answers most packets get, packed once.
_CONTINUE = pack(m.Continue())
_ACCEPT = pack(m.Accept())
#: Linux's TCP_QUICKACK (0: not available on this platform).
_TCP_QUICKACK: int = getattr(socket, "TCP_QUICKACK", 0)
#: What the Record step is told the "next hop" answered: the MTA queues the message once the
#: milter says continue (incidents record relay_outcome "relayed").
MTA_ACCEPTS = Reply(250, "2.0.0 queued by the MTA after the milter")


#: Events whose packet may be skipped when the codec cannot read it (no reply is due).
_ENVELOPE_EVENTS: dict[int, type[m.Message]] = {
    ord("C"): m.Connect,
    ord("H"): m.Helo,
    ord("M"): m.EnvelopeFrom,
    ord("R"): m.EnvelopeRecipient,
}


def now() -> datetime:
    """The time a message is taken as received (the explanation block shows it)."""
    return datetime.now(UTC)


@dataclass(slots=True)
class _Message:
    """One message's events so far."""

    mail_from: str = ""
    rcpt_tos: list[str] = field(default_factory=list)
    headers: list[bytes] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    size: int = 0
    too_large: bool = False


def _address(raw: bytes | memoryview) -> str:
    """An envelope address as the MTA gives it (``<a@b>``), without brackets.

    UTF-8 (RFC 6531); anything else is replaced, never passed on as raw bytes to storage.
    """
    text = bytes(raw).decode("utf-8", "replace").strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    return text


class Session:
    """One connection; :meth:`run` serves it until the MTA closes it."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        pipeline: Pipeline,
        *,
        max_message_size: int,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.pipeline = pipeline
        self.max_message_size = max_message_size
        self.options = m.ProtocolFlags(0)
        self.can_edit = False
        self.client_address: str | None = None
        self.helo: str | None = None
        self.message = _Message()
        self.macros: dict[str, str] = {}
        self._last_packet = 0.0
        #: Working on an end of message (the service lets it finish before closing).
        self.busy = False
        self._no_reply: frozenset[type[m.Message]] = frozenset()
        self._leading_space = False
        self._watchdog: asyncio.TimerHandle | None = None
        sock = writer.get_extra_info("socket")
        tcp = sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6) and _TCP_QUICKACK
        self._sock = sock if tcp else None

    async def run(self) -> None:
        metrics.MILTER_SESSIONS.inc()
        try:
            await self._serve()
        except (ProtocolError, Undecodable) as exc:
            metrics.MILTER_PROTOCOL_ERRORS.inc()
            log.warning("milter connection closed: %s", exc)
        except (ConnectionError, TimeoutError) as exc:
            log.info("milter connection ended: %r", exc)
        finally:
            metrics.MILTER_SESSIONS.dec()
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        self._last_packet = loop.time()
        self._watchdog = loop.call_later(IDLE_TIMEOUT, self._idle_check)
        try:
            await self._packets(loop)
        finally:
            self._watchdog.cancel()

    def _idle_check(self) -> None:
        """Close a connection silent for IDLE_TIMEOUT (one timer per connection, not per packet)."""
        loop = asyncio.get_running_loop()
        idle = loop.time() - self._last_packet
        if idle >= IDLE_TIMEOUT:
            log.info("milter connection idle for %.0fs: closed", idle)
            self.writer.close()
            return
        self._watchdog = loop.call_later(IDLE_TIMEOUT - idle, self._idle_check)

    def _quick_ack(self) -> None:
        # The MTA sends several small packets in a row that need no answer (the NR_* options);
        # an ACK delayed by our kernel then holds back its next write under Nagle's algorithm
        # (tens of milliseconds a message). TCP_QUICKACK is not sticky on Linux: set before each
        # wait for more data.
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)

    async def _packets(self, loop: asyncio.AbstractEventLoop) -> None:
        frames = Frames(self.reader, self._quick_ack)
        while True:
            try:
                message = await frames.next()
            except Undecodable as exc:
                if self._ignorable(exc.command):
                    # An envelope detail the codec rejects (an odd HELO name): the message is
                    # still seen, without that detail.
                    log.info("milter: unreadable %r packet ignored: %s", chr(exc.command), exc)
                    continue
                raise
            self._last_packet = loop.time()
            if message is None or isinstance(message, m.Close):
                return
            answer = await self._handle(message)
            if answer:
                self.writer.write(answer)
                await self.writer.drain()

    def _ignorable(self, command: int) -> bool:
        # Connect, HELO and the envelope need no reply once NR_* is negotiated.
        return _ENVELOPE_EVENTS.get(command) in self._no_reply

    async def _handle(self, message: m.Message) -> bytes | None:
        match message:
            case m.Negotiate():
                return pack(self._negotiate(message))
            case m.Macro():
                self.macros.update(message.macros)
                return None
            case m.Connect():
                address = message.address
                self.client_address = str(address) if isinstance(address, IPv4Address | IPv6Address) else None
            case m.Helo():
                self.helo = message.hostname
            case m.EnvelopeFrom():
                self.message = _Message(mail_from=_address(message.sender))
            case m.EnvelopeRecipient():
                self.message.rcpt_tos.append(_address(message.recipient))
            case m.Header():
                self._header(message)
            case m.EndOfHeaders():
                if self.message.too_large:
                    return self._let_through(MilterOutcome.TOO_LARGE)
                if not prefilter.might_be_bounce_headers(b"".join(self.message.headers)):
                    return self._let_through(MilterOutcome.HEADERS_ONLY)
                self.message.size += 2
            case m.Body():
                return self._body(bytes(message.content))
            case m.EndOfMessage():
                # Sendmail may send the last body chunk with the end of the message.
                if message.content and self._body(bytes(message.content)) is _ACCEPT:
                    return _ACCEPT
                self.busy = True
                try:
                    return await self._end_of_message()
                finally:
                    self.busy = False
            case m.Abort():
                self.message = _Message()
                return None
        return None if type(message) in self._no_reply else _CONTINUE

    def _negotiate(self, offer: m.Negotiate) -> m.Negotiate:
        self.options = offer.protocol_flags & WANTED
        self._no_reply = frozenset(kind for kind, flag in NO_REPLY_FLAGS.items() if flag & self.options)
        self._leading_space = bool(self.options & m.ProtocolFlags.HEADER_LEADING_SPACE)
        actions = offer.action_flags & ACTIONS
        self.can_edit = actions == ACTIONS
        if not self.can_edit:
            log.warning(
                "the MTA does not offer header and body changes (actions %#x): bounces are recorded, "
                "not explained",
                int(offer.action_flags),
            )
        # No macro list is asked for (SMFIF_SETSYMLIST): Postfix 3.7 sends a macro packet before
        # each event whatever the list says (seen with empty lists); gateway.milter.protocol
        # skips them unread, except the end of the message's (the queue id, for the log line).
        return m.Negotiate(min(offer.version, VERSION), actions, self.options)

    def _header(self, header: m.Header) -> None:
        msg = self.message
        if msg.too_large:
            return
        line = edits.header_line(header.name, bytes(header.value), leading_space=self._leading_space)
        msg.size += len(line)
        if msg.size > self.max_message_size:
            # No reply is due to a header (NR_HEADER): the answer waits for the end of the headers.
            msg.too_large = True
            msg.headers.clear()
            return
        msg.headers.append(line)

    def _body(self, chunk: bytes) -> bytes | None:
        msg = self.message
        msg.size += len(chunk)
        if msg.size > self.max_message_size:
            # The relay would have refused it (SIZE); here the MTA already took it: let it through.
            return self._let_through(MilterOutcome.TOO_LARGE)
        msg.body += chunk
        return None if m.Body in self._no_reply else _CONTINUE

    def _let_through(self, outcome: MilterOutcome) -> bytes:
        """SMFIR_ACCEPT: the rest of the message is not sent, and nothing is changed."""
        self._count(outcome)
        self.message = _Message()
        return _ACCEPT

    async def _end_of_message(self) -> bytes:
        msg = self.message
        self.message = _Message()
        started = time.perf_counter()
        data = edits.assemble(msg.headers, bytes(msg.body))
        ctx = MessageContext(
            transaction_id=str(ULID()),
            mail_from=msg.mail_from,
            rcpt_tos=tuple(msg.rcpt_tos),
            client_address=self.client_address,
            helo=self.helo,
            received_at=now(),
            size=len(data),
        )
        processed: Processed | None = None
        answer: list[m.Message] = []
        try:
            async with asyncio.timeout(END_OF_MESSAGE_BUDGET):
                processed = await self.pipeline.before_relay(ctx, data)
                answer = self._actions(ctx, processed)
                # Durable before the MTA hears the answer (the Record step); ids are stable,
                # so the MTA's retry of a message it then failed to queue names the same ones.
                await self.pipeline.after_relay(ctx, processed, MTA_ACCEPTS)
        except Deferred as exc:
            return self._finish(ctx, processed, MilterOutcome.TEMPFAILED, [reply_code(exc.reply)], started)
        except Exception as exc:
            timed_out = isinstance(exc, TimeoutError)
            what = f"no answer within {END_OF_MESSAGE_BUDGET:.0f}s" if timed_out else "failed"
            trace = None if timed_out else exc  # a bug's traceback, as the relay logs it
            tx = ctx.transaction_id
            if processed is not None and processed.incident_ids:
                # A family bounce whose incidents were not made durable (recording failed or
                # overran the budget): the MTA keeps it and retries; the ids will be the same.
                log.warning("transaction %s: recording %s; tempfailed", tx, what, exc_info=trace)
                reply = reply_code(replies.STORAGE_UNAVAILABLE)
                return self._finish(ctx, processed, MilterOutcome.TEMPFAILED, [reply], started)
            log.warning("transaction %s: processing %s; continues untouched", tx, what, exc_info=trace)
            return self._finish(ctx, processed, MilterOutcome.FAILED, [m.Continue()], started)
        outcome = MilterOutcome.EXPLAINED if answer else MilterOutcome.CONTINUED
        if processed.notes.get("milter") == "unexpressible":
            outcome = MilterOutcome.UNEXPRESSIBLE
        return self._finish(ctx, processed, outcome, [*answer, m.Continue()], started)

    def _actions(self, ctx: MessageContext, processed: Processed) -> list[m.Message]:
        if processed.data is processed.original or processed.data == processed.original:
            return []
        if not self.can_edit:
            processed.data, processed.annotated = processed.original, False
            return []
        try:
            return edits.actions(processed.original, processed.data)
        except Unexpressible as exc:
            log.warning("transaction %s: %s; the bounce continues unexplained", ctx.transaction_id, exc)
            processed.data, processed.annotated = processed.original, False
            processed.notes["milter"] = "unexpressible"
            return []

    def _finish(
        self,
        ctx: MessageContext,
        processed: Processed | None,
        outcome: MilterOutcome,
        answer: list[m.Message],
        started: float,
    ) -> bytes:
        duration = time.perf_counter() - started
        metrics.MILTER_DURATION.observe(duration)
        self._count(outcome)
        report = processed.report if processed else None
        # Envelope and outcome only, as the relay's transaction line: never a header value beyond
        # the bounce's Message-ID, never a body.
        txlog.info(
            "milter transaction",
            extra={
                "tx": ctx.transaction_id,
                "queue_id": self.macros.get("i"),
                "client": ctx.client_address,
                "sender": ctx.mail_from,
                "recipients": len(ctx.rcpt_tos),
                "size": ctx.size,
                "outcome": outcome,
                "bounce": report.format if report else None,
                "bounce_id": report.message_id if report else None,
                "incidents": list(processed.incident_ids) if processed else [],
                "duration_ms": round(duration * 1000, 2),
                **(processed.notes if processed else {}),
            },
        )
        return pack(*answer)

    @staticmethod
    def _count(outcome: MilterOutcome) -> None:
        metrics.MILTER_MESSAGES.labels(outcome).inc()
