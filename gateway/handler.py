"""aiosmtpd handler hooks: each one mirrors one upstream command on the next hop.

The handler is the one owner of the downstream (next-hop) transaction, kept in
``RelaySession.transaction``: only this module sets, clears, finishes or aborts it.

- MAIL opens the downstream transaction; its reply is the next hop's.
- RCPT is proxied one to one; its reply is the next hop's.
- DATA refuses a looping message (``gateway.loops``), runs the processing step,
  relays the result under our ``Received:`` trace, and answers with the next
  hop's reply to the final dot, so the upstream hears 250 only after the next
  hop said 250 (ARCHITECTURE.md, invariant 1).
- An SMTP transaction that ends otherwise (RSET, HELO/EHLO, STARTTLS, a refused
  DATA, a lost connection) aborts the downstream one (:meth:`RelayHandler.transaction_ended`,
  called by the listener).
- Anything unexpected becomes ``451 4.3.0`` with no internals in the text.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import Any

from ulid import ULID

from gateway import metrics, replies
from gateway.loops import LoopGuard
from gateway.outcomes import ByteDirection, MessageOutcome
from gateway.pipeline import Deferred, Pipeline, Processed
from gateway.relay import NextHop, NextHopError, Reply, Transaction
from gateway.server import RelayEnvelope, RelaySession, RelaySMTP
from gateway.transaction import MessageContext

log = logging.getLogger(__name__)
txlog = logging.getLogger("bouncegw.transaction")

#: Extensions added to aiosmtpd's EHLO reply (it already offers SIZE, 8BITMIME,
#: SMTPUTF8, STARTTLS and AUTH). Pipelined input is processed in order.
EXTRA_EXTENSIONS = ("PIPELINING", "ENHANCEDSTATUSCODES", "DSN")


class RelayHandler:
    def __init__(
        self, next_hop: NextHop, pipeline: Pipeline, *, offer_auth: bool, loops: LoopGuard | None = None
    ) -> None:
        self.next_hop = next_hop
        self.pipeline = pipeline
        self.offer_auth = offer_auth
        self.loops = loops or LoopGuard("localhost")

    async def handle_EHLO(
        self, server: Any, session: RelaySession, envelope: RelayEnvelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        keep = [r for r in responses[1:-1] if self.offer_auth or not r.startswith("250-AUTH")]
        extras = [f"250-{ext}" for ext in EXTRA_EXTENSIONS]
        return [responses[0], *extras, *keep, responses[-1]]

    async def handle_MAIL(
        self,
        server: Any,
        session: RelaySession,
        envelope: RelayEnvelope,
        address: str,
        parameters: list[str],
        utf8: bool,
    ) -> str:
        try:
            reply, transaction = await self.next_hop.begin(address, parameters, utf8=utf8)
        except NextHopError as exc:
            log.warning("%r next hop: %s", session.peer, exc)
            return exc.reply.render()
        session.transaction = transaction
        return reply.render()

    def transaction_ended(self, server: RelaySMTP, session: RelaySession) -> None:
        """The SMTP transaction ended before DATA finished it: abort the downstream one.

        In the background (the listener keeps the task until it ends), since RSET and a lost
        connection cannot wait for the next hop's reply.
        """
        transaction, session.transaction = session.transaction, None
        if transaction is not None:
            server.listener.spawn(transaction.abort())

    async def _abort(self, session: RelaySession) -> None:
        transaction, session.transaction = session.transaction, None
        if transaction is not None:
            await transaction.abort()

    async def handle_RCPT(
        self, server: Any, session: RelaySession, envelope: RelayEnvelope, address: str, parameters: list[str]
    ) -> str:
        transaction = session.transaction
        if transaction is None:
            # The downstream transaction was lost (next hop closed it): say so, transiently.
            return replies.NEXT_HOP_CONNECTION_LOST
        try:
            reply = await transaction.rcpt(address, parameters)
        except NextHopError as exc:
            log.warning("%r next hop: %s", session.peer, exc)
            session.transaction = None
            return exc.reply.render()
        return reply.render()

    async def handle_DATA(self, server: Any, session: RelaySession, envelope: RelayEnvelope) -> str:
        started = time.perf_counter()
        data = envelope.original_content
        assert data is not None and envelope.mail_from is not None  # set by RelaySMTP.smtp_DATA / smtp_MAIL
        ctx = MessageContext(
            transaction_id=str(ULID()),
            mail_from=envelope.mail_from,
            rcpt_tos=tuple(envelope.rcpt_tos),
            client_address=session.peer[0] if isinstance(session.peer, tuple) else None,
            helo=session.host_name,
            received_at=datetime.now(UTC),
            size=len(data),
            mail_options=tuple(envelope.mail_options),
        )
        transaction = session.transaction
        if transaction is None:
            return self._log(
                ctx, None, Reply.parse(replies.NEXT_HOP_CONNECTION_LOST), MessageOutcome.DEFERRED, started
            )
        if (loop := self.loops.check(data)) is not None:
            metrics.LOOPS.labels(loop.reason).inc()
            log.warning("transaction %s refused: mail loop (%s)", ctx.transaction_id, loop.reason)
            await self._abort(session)
            return self._log(ctx, None, Reply.parse(loop.reply), MessageOutcome.REJECTED, started)
        trace = self.loops.trace(
            helo=ctx.helo,
            client_address=ctx.client_address,
            esmtp=session.extended_smtp,
            tls=session.ssl is not None,
            authenticated=bool(session.authenticated),
            transaction_id=ctx.transaction_id,
            when=ctx.received_at,
        )
        try:
            with metrics.PROCESSING_DURATION.time():
                message = await self.pipeline.before_relay(ctx, data)
        except Deferred as exc:
            log.warning("transaction %s deferred by the processing step", ctx.transaction_id)
            await self._abort(session)
            return self._log(ctx, None, Reply.parse(exc.reply), MessageOutcome.DEFERRED, started)
        except Exception:
            log.exception("processing step failed; transaction %s deferred", ctx.transaction_id)
            await self._abort(session)
            return self._log(
                ctx, None, Reply.parse(replies.PROCESSING_FAILED), MessageOutcome.FAILED, started
            )
        if session.transaction is not transaction:
            # The upstream went away (or reset) while the message was processed: the downstream
            # transaction was aborted then and nothing was relayed; the upstream retries.
            reply = Reply.parse(replies.NEXT_HOP_CONNECTION_LOST)
            return self._log(ctx, message, reply, MessageOutcome.DEFERRED, started)
        # From here the relay owns the downstream transaction and must run to its end even if
        # the upstream disconnects meanwhile: a transaction cut mid-DATA is the surest way to a
        # duplicate.
        session.transaction = None
        relay = asyncio.ensure_future(self._relay(ctx, message, transaction, trace))
        server.listener.spawn(_wait(relay))
        reply = await asyncio.shield(relay)
        outcome = (
            MessageOutcome.RELAYED
            if reply.positive
            else MessageOutcome.DEFERRED
            if reply.transient
            else MessageOutcome.REJECTED
        )
        return self._log(ctx, message, reply, outcome, started)

    async def _relay(
        self, ctx: MessageContext, message: Processed, transaction: Transaction, trace: bytes
    ) -> Reply:
        try:
            with metrics.RELAY_DURATION.time():
                # Our trace goes in front (RFC 5321 section 4.4), written before the message
                # rather than copied into it.
                reply: Reply = await transaction.data(message.data, trace)
        except NextHopError as exc:
            log.warning("transaction %s: next hop: %s", ctx.transaction_id, exc)
            reply = exc.reply
        if reply.positive:
            metrics.BYTES.labels(ByteDirection.RELAYED).inc(len(trace) + len(message.data))
        try:
            await self.pipeline.after_relay(ctx, message, reply)
        except Exception:
            log.exception("after-relay step failed for transaction %s", ctx.transaction_id)
            if reply.positive:
                # The next hop has the message; a 4xx now would make the upstream send
                # it again (a duplicate). What failed is logged and counted.
                return reply
            raise
        return reply

    def _log(
        self,
        ctx: MessageContext,
        message: Processed | None,
        reply: Reply,
        outcome: MessageOutcome,
        started: float,
    ) -> str:
        duration = time.perf_counter() - started
        metrics.MESSAGES.labels(outcome).inc()
        metrics.BYTES.labels(ByteDirection.RECEIVED).inc(ctx.size)
        metrics.TRANSACTION_DURATION.observe(duration)
        report = message.report if message else None
        # Envelope and outcome only: never a header value beyond the bounce's
        # Message-ID, never a body.
        txlog.info(
            "transaction",
            extra={
                "tx": ctx.transaction_id,
                "client": ctx.client_address,
                "helo": ctx.helo,
                "sender": ctx.mail_from,
                "recipients": len(ctx.rcpt_tos),
                "size": ctx.size,
                "outcome": outcome,
                "reply": reply.render().split("\r\n")[-1][:200],
                "bounce": report.format if report else None,
                "bounce_id": report.message_id if report else None,
                "incidents": list(message.incident_ids) if message else [],
                "duration_ms": round(duration * 1000, 2),
                **(message.notes if message else {}),
            },
        )
        return reply.render()

    async def handle_exception(self, error: Exception) -> str:
        # aiosmtpd's default is "500 Error: (ExcType) text": permanent and leaking internals.
        log.error("unexpected error in SMTP session", exc_info=error)
        return replies.PROCESSING_FAILED


async def _wait(task: asyncio.Future[Any]) -> None:
    """Keep a shielded relay referenced until it ends (the gateway waits for it at shutdown)."""
    try:
        await task
    except Exception:  # already reported to whoever awaited it
        return
