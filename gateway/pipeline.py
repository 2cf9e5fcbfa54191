"""The processing step between the end of DATA and the relay.

The listener hands every message to :meth:`Pipeline.before_relay` and relays
whatever bytes come back; once the next hop has answered, it calls
:meth:`Pipeline.after_relay` with that reply. Steps are plugged in as a list
so each stays small and testable.

Failure policy (ARCHITECTURE.md, invariants 1 and 2):
- a step that cannot do its job falls back on its own to the bytes it was
  given (the original message reaches the next hop untouched) and counts it;
- so does a step whose result would break a promise made to the upstream:
  an annotated bounce longer than ``listener.max_message_size`` (the SIZE
  the upstream was offered, RFC 1870) is dropped for the original, and
  counted as ``too_large``;
- an exception that escapes a step anyway makes the listener answer
  ``451 4.3.0`` (``gateway.replies.PROCESSING_FAILED``): the upstream keeps
  the message and retries, and nothing was relayed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from gateway.bounce.report import BounceReport
from gateway.relay import Reply
from gateway.transaction import MessageContext


class Deferred(Exception):
    """A step decided the message must wait: the upstream gets ``reply`` (a 4xx) and retries."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


@dataclass(slots=True)
class Processed:
    """A message on its way through the steps."""

    original: bytes
    data: bytes  # what will be relayed: the original, or the annotated bounce
    report: BounceReport | None = None
    incident_ids: tuple[str, ...] = ()
    #: The identity digest of ``original`` (gateway.identity.bounce_digest), once a step needed it.
    digest: str | None = None
    annotated: bool = False
    notes: dict[str, str] = field(default_factory=dict)  # per-step outcomes, for the log line


class Step(Protocol):
    async def before_relay(self, ctx: MessageContext, message: Processed) -> None:
        """Inspect or change ``message`` (its ``data``, ``report``, ...)."""
        ...

    async def after_relay(self, ctx: MessageContext, message: Processed, reply: Reply) -> None:
        """React to the next hop's final reply (e.g. record what happened)."""
        ...


class Pipeline:
    def __init__(self, steps: Sequence[Step] = ()) -> None:
        self.steps = tuple(steps)

    async def before_relay(self, ctx: MessageContext, data: bytes) -> Processed:
        message = Processed(original=data, data=data)
        for step in self.steps:
            await step.before_relay(ctx, message)
        return message

    async def after_relay(self, ctx: MessageContext, message: Processed, reply: Reply) -> None:
        for step in self.steps:
            await step.after_relay(ctx, message, reply)
