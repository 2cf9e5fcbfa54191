"""The closed sets of what can happen to a session, a message or a bounce.

Each is a ``StrEnum``: its values are the label values of the metrics in ``gateway.metrics``
(which creates every series from these at import, so they exist before the first event) and the
words of the transaction log line. One definition per set; callers pass the members, never the
strings.
"""

from __future__ import annotations

import enum


class MessageOutcome(enum.StrEnum):
    """A transaction that reached the end of DATA (``bouncegw_messages_total``)."""

    RELAYED = "relayed"  # the next hop said 2xx
    REJECTED = "rejected"  # the next hop said 5xx (or we refused it, e.g. a mail loop)
    DEFERRED = "deferred"  # 4xx: the upstream keeps the message and retries
    FAILED = "failed"  # our processing failed (451, nothing relayed)


class ByteDirection(enum.StrEnum):
    """Message octets counted by ``bouncegw_message_bytes_total``."""

    RECEIVED = "received"
    RELAYED = "relayed"


class RefusalReason(enum.StrEnum):
    """Why the listener refused a connection at admission."""

    NETWORK = "network"  # the client is outside listener.allowed_networks
    MAX_SESSIONS = "max_sessions"  # listener.max_sessions sessions are open


class LoopReason(enum.StrEnum):
    """Why a message was refused as a mail loop (``gateway.loops``)."""

    HOPS = "hops"  # relay.max_hops Received: fields
    PASSES = "passes"  # our own trace relay.max_passes times


class ParseStage(enum.StrEnum):
    """Where reading a candidate bounce failed."""

    PARSE = "parse"  # the message is malformed
    INTERNAL = "internal"  # a bug in the parser


class AnnotationOutcome(enum.StrEnum):
    """What the explain step did with a family bounce."""

    ANNOTATED = "annotated"
    ALREADY_EXPLAINED = "already_explained"  # an earlier hop explained it: passed on untouched
    TOO_LARGE = "too_large"  # explained it would exceed max_message_size: the original went out
    FAILED = "failed"  # annotation raised: the original went out


class MilterOutcome(enum.StrEnum):
    """What the milter listener (``bouncegw milter``) answered for a message."""

    HEADERS_ONLY = "headers_only"  # accepted at the end of the headers: cannot be a bounce, no body sent
    CONTINUED = "continued"  # read whole and left as it is
    EXPLAINED = "explained"  # headers and body changed
    UNEXPRESSIBLE = "unexpressible"  # left untouched: milter actions cannot say the change
    TOO_LARGE = "too_large"  # left untouched: over listener.max_message_size
    FAILED = "failed"  # left untouched after a processing error or timeout
    TEMPFAILED = "tempfailed"  # a family bounce that could not be recorded: the MTA keeps it, retries
