"""The processing steps a configured gateway runs: detect, explain, record.

Each step does one thing and, on failure, leaves the message as it was
(ARCHITECTURE.md, invariant 2), counting what happened in ``gateway.metrics``:

1. :class:`Detect` - the cheap prefilter, then parse + classify only for
   messages that can be a family bounce (ordinary mail never gets MIME-parsed).
2. :class:`Explain` - incident ids are derived (from the bounce's identity and each recipient,
   so a retried bounce names the same ids on any replica), the block is spliced in (the
   original goes out instead when the result would exceed ``max_message_size``).
3. :class:`Record` - once the next hop has answered, the incidents are made
   durable (database or journal) *before* the upstream hears the reply.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from gateway import loops, metrics, offload, replies
from gateway.bounce import prefilter
from gateway.bounce.parse import ParseError, parse
from gateway.bounce.report import BounceReport
from gateway.config import Settings
from gateway.explain import AlreadyExplained, TooLarge, annotate, arc
from gateway.identity import bounce_digest
from gateway.incidents import build_incidents, stable_ids
from gateway.outcomes import AnnotationOutcome, MessageOutcome, ParseStage
from gateway.pipeline import Deferred, Processed, Step
from gateway.relay import Reply
from gateway.transaction import MessageContext
from storage.incidents import IncidentRecord
from storage.recorder import Recorder

#: ARC sealing's own threads. Its DNS lookups go to domains the bounce's sender chose and may
#: take up to arc.DNS_BUDGET per message: on asyncio's default executor, shared with parsing,
#: annotation and large relays, a few crafted bounces would hold up all mail. Two threads
#: bound the sealing in progress; further bounces wait for them, nothing else does.
ARC_EXECUTOR = ThreadPoolExecutor(max_workers=2, thread_name_prefix="bouncegw-arc")

log = logging.getLogger(__name__)


async def _digest(message: Processed) -> str:
    if message.digest is None:
        root = message.report.root_identity if message.report else None
        message.digest = await offload.by_size(len(message.original), bounce_digest, message.original, root)
    return message.digest


def _detect(data: bytes, envelope_sender: str) -> BounceReport:
    # The envelope's null sender (RFC 5321 section 4.5.5) marks a bounce in transit, where no
    # Return-Path header has been written yet.
    return parse(data, envelope_sender=envelope_sender)


#: Family recipients named one by one in the transaction's log line; the rest are counted.
LOGGED_RECIPIENTS = 20


def _family_note(report: BounceReport) -> str:
    shown = ",".join(f"{r.status}:{r.variant}" for r in report.family[:LOGGED_RECIPIENTS])
    more = len(report.family) - LOGGED_RECIPIENTS
    return f"{shown},+{more} more" if more > 0 else shown


def _incidents(
    report: BounceReport,
    ctx: MessageContext,
    message: Processed,
    *,
    relay_outcome: str,
    instance: str,
    store_subjects: bool,
) -> list[IncidentRecord]:
    return build_incidents(
        report,
        ctx,
        ids=message.incident_ids,
        annotated=message.annotated,
        relay_outcome=relay_outcome,
        instance=instance,
        store_subjects=store_subjects,
        # Explain derived the ids from this digest already (a copy it relayed untouched has none).
        bounce_digest=message.digest or bounce_digest(message.original, report.root_identity),
    )


class Detect:
    async def before_relay(self, ctx: MessageContext, message: Processed) -> None:
        data = message.data
        # A body with many near-misses of the family's codes keeps the prefilter's regular
        # expression busy for about 40 ms per MB: off the loop once it is large.
        if not await offload.by_size(len(data), prefilter.might_be_family_bounce, data):
            return
        try:
            # Off the loop unless small: parsing is linear in the octets (gateway.offload).
            report = await offload.for_parsing(len(data), _detect, data, ctx.mail_from)
        except ParseError as exc:
            metrics.PARSE_FAILURES.labels(ParseStage.PARSE).inc()
            log.info("transaction %s: not parseable as a bounce: %s", ctx.transaction_id, exc)
            return
        except Exception:
            # A bug in parsing must not cost the message: relay it as it came.
            metrics.PARSE_FAILURES.labels(ParseStage.INTERNAL).inc()
            log.exception("transaction %s: bounce detection failed", ctx.transaction_id)
            return
        message.report = report
        if report.nesting_capped:
            metrics.NESTING_CAPPED.inc()
        if report.is_bounce and report.format:
            metrics.count_bounce(report.format)
        # Counted by kind, not one metric call per recipient: a bounce can list thousands.
        kinds = Counter((rcpt.category, rcpt.variant) for rcpt in report.family)
        for (category, variant), count in kinds.items():
            metrics.count_family(category, variant, count)
        if report.family:
            message.notes["family"] = _family_note(report)

    async def after_relay(self, ctx: MessageContext, message: Processed, reply: Reply) -> None:
        return None


class Explain:
    def __init__(self, settings: Settings, recorder: Recorder) -> None:
        self.settings = settings
        self.recorder = recorder

    async def before_relay(self, ctx: MessageContext, message: Processed) -> None:
        report = message.report
        if report is None or not report.family:
            return
        if report.already_explained:
            # Explained (and recorded) by an earlier gateway hop: pass it on untouched.
            metrics.ANNOTATIONS.labels(AnnotationOutcome.ALREADY_EXPLAINED).inc()
            return
        if not self.recorder.can_accept(len(report.family)):
            # Chosen policy: a family bounce we could not record is deferred (451),
            # the upstream keeps it and retries; ordinary mail is not affected.
            raise Deferred(replies.STORAGE_UNAVAILABLE)
        # Each id is derived from the incident's fingerprint (the bounce's bytes plus the
        # recipient): a recipient listed twice, or the same bounce relayed again after a 4xx or
        # through another replica, names the id of the one incident the database keeps.
        message.digest = await _digest(message)
        message.incident_ids = stable_ids(report, message.digest)
        try:
            message.data = await offload.for_annotating(
                len(message.original),
                len(report.family),
                annotate,
                message.original,
                report,
                incident_ids=message.incident_ids,
                now=ctx.received_at,
                settings=self.settings.explain,
                # The upstream was promised (SIZE) that this many octets get through, our trace included.
                max_size=loops.size_budget(self.settings.listener.max_message_size),
            )
        except AlreadyExplained:
            metrics.ANNOTATIONS.labels(AnnotationOutcome.ALREADY_EXPLAINED).inc()
            return
        except TooLarge as exc:
            # Chosen policy: the original goes out untouched (it fitted the limit when it
            # came in), counted apart from failures; its incidents are still recorded.
            metrics.ANNOTATIONS.labels(AnnotationOutcome.TOO_LARGE).inc()
            log.warning("transaction %s: %s; relaying the original", ctx.transaction_id, exc)
            message.data = message.original
            return
        except Exception as exc:  # any failure: the original goes out untouched
            metrics.ANNOTATIONS.labels(AnnotationOutcome.FAILED).inc()
            log.warning(
                "transaction %s: annotation failed, relaying the original: %r", ctx.transaction_id, exc
            )
            message.data = message.original
            return
        message.annotated = True
        metrics.ANNOTATIONS.labels(AnnotationOutcome.ANNOTATED).inc()
        if arc.enabled(self.settings.explain):
            await self._seal(ctx, message)

    async def _seal(self, ctx: MessageContext, message: Processed) -> None:
        """ARC-seal the edited bounce; whatever goes wrong, it is relayed explained but unsealed."""
        try:
            # DNS lookups and RSA signing: never on the event loop.
            sealed = await asyncio.get_running_loop().run_in_executor(
                ARC_EXECUTOR, arc.seal, message.original, message.data, self.settings.explain
            )
        except Exception as exc:
            sealed = arc.Sealed(message.data, arc.Outcome.FAILED, repr(exc))
        if len(sealed.data) > loops.size_budget(self.settings.listener.max_message_size):
            # The size the upstream was promised holds for the sealed bounce too.
            sealed = arc.Sealed(
                message.data, arc.Outcome.FAILED, "the sealed bounce would exceed max_message_size"
            )
        metrics.ARC_SEALS.labels(sealed.outcome).inc()
        if sealed.outcome is arc.Outcome.FAILED:
            log.warning("transaction %s: relayed unsealed: %s", ctx.transaction_id, sealed.detail)
        elif sealed.outcome is not arc.Outcome.SEALED:
            log.info("transaction %s: not ARC-sealed: %s", ctx.transaction_id, sealed.detail)
        message.data = sealed.data

    async def after_relay(self, ctx: MessageContext, message: Processed, reply: Reply) -> None:
        return None


class Record:
    def __init__(self, settings: Settings, recorder: Recorder) -> None:
        self.settings = settings
        self.recorder = recorder

    async def before_relay(self, ctx: MessageContext, message: Processed) -> None:
        return None

    async def after_relay(self, ctx: MessageContext, message: Processed, reply: Reply) -> None:
        report = message.report
        if report is None or not message.incident_ids or reply.transient:
            # A deferred relay is not an incident yet: the upstream retries, and the
            # retry is recorded (once: the fingerprint is the bounce's bytes).
            return
        # Hashing grows with the octets and building the records with the recipients: off the
        # loop when either is large (for the usual bounce the thread hop would cost more).
        records = await offload.by_count(
            len(message.original),
            len(report.family),
            _incidents,
            report,
            ctx,
            message,
            relay_outcome=MessageOutcome.RELAYED if reply.positive else MessageOutcome.REJECTED,
            instance=self.settings.instance,
            store_subjects=self.settings.storage.store_subjects,
        )
        try:
            await self.recorder.submit(records)
        except Exception:
            metrics.RECORD_FAILURES.inc()
            raise
        metrics.INCIDENTS.inc(len(records))


def processing_steps(settings: Settings, recorder: Recorder) -> list[Step]:
    """The steps every listener runs on a message, in order (the relay and the milter alike)."""
    return [Detect(), Explain(settings, recorder), Record(settings, recorder)]
