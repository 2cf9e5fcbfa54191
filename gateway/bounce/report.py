"""The one normalised bounce type.

Parsing (``gateway.bounce.parse``) produces a :class:`BounceReport` and classification
(``gateway.bounce.classify``) fills in each recipient's category and variant; the
explanation block (``gateway.explain``) and incident storage (``storage``) read
it. No later step re-parses what the parser already read, which is why the report
also records *where* the human-readable parts sit in the raw bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

#: The one root header bouncegw adds to a bounce it explained (``gateway.explain.headers``);
#: a message that carries it is never explained or recorded again.
EXPLAINED_HEADER: Final = "X-Bouncegw-Explained"

#: Content types of the human-readable parts: what the parser lists in ``human_parts`` and the
#: explanation block is spliced into (RFC 2046 section 4.1; text/html per RFC 2854).
HUMAN_CONTENT_TYPES: Final = ("text/plain", "text/html")

#: Formats a report can come in.
FORMAT_RFC3464 = "rfc3464"  # multipart/report with message/delivery-status
FORMAT_RFC6533 = "rfc6533"  # multipart/report with message/global-delivery-status
FORMAT_TEXT = "text"  # a bounce with no machine-readable part

#: Categories the classifier assigns (``None`` means "not ours to explain").
CATEGORY_SENDER_NOT_AUTHENTICATED = "sender_not_authenticated"
CATEGORY_SENDER_NOT_ALLOWED = "sender_not_allowed"


@dataclass(frozen=True, slots=True)
class Evidence:
    """Where a classification came from: which field or line, and what it said."""

    source: str  # e.g. "delivery-status:Status", "delivery-status:Diagnostic-Code", "text:line 14"
    text: str  # the matched text, sanitised and truncated


@dataclass(slots=True)
class RecipientReport:
    """One failed (or delayed, relayed, ...) recipient of a bounce."""

    recipient: str | None  # Final-Recipient, without the "rfc822;" type
    original_recipient: str | None = None
    action: str | None = None  # failed | delayed | delivered | relayed | expanded
    #: Enhanced status code, e.g. "5.7.133": after classification the most specific family code
    #: the bounce gives for this recipient (an inner code beats a generic 5.7.0 wrapper).
    status: str | None = None
    #: The code the bounce's Status field gave (text bounces: the first failure code of the
    #: recipient's text), kept as reported whatever ``status`` became.
    reported_status: str | None = None
    diagnostic: str | None = None  # Diagnostic-Code text, without the "smtp;" type
    remote_mta: str | None = None
    last_attempt: str | None = None
    category: str | None = None
    variant: str | None = None
    evidence: tuple[Evidence, ...] = ()

    @property
    def in_family(self) -> bool:
        return self.category is not None


@dataclass(frozen=True, slots=True)
class HumanPart:
    """Where one human-readable part sits in the raw message bytes.

    Offsets index the original ``bytes`` given to the parser, so the explanation
    block can be spliced into the message without re-serialising anything else.
    For a message that is not multipart, ``headers_start`` is 0 and the "part"
    is the whole message (its headers are the root headers).
    """

    content_type: str  # "text/plain" or "text/html"
    charset: str | None  # lower-cased charset parameter, None when absent
    transfer_encoding: str  # lower-cased: 7bit, 8bit, binary, quoted-printable, base64
    headers_start: int  # offset of the part's first header line
    body_start: int  # offset of the first body byte (just after the blank line)
    body_end: int  # offset just past the body (before the CRLF preceding the next boundary)


@dataclass(frozen=True, slots=True)
class OriginalMessage:
    """What the bounce tells about the message that failed (from message/rfc822 or text/rfc822-headers)."""

    message_id: str | None = None
    sender: str | None = None  # the From header, decoded
    subject: str | None = None  # decoded
    date: str | None = None
    #: Content-Language (RFC 3282) as written, e.g. "ja-JP"; picks the block's first language.
    content_language: str | None = None
    #: Lower-cased charset of its Content-Type, else of the first RFC 2047 word in Subject/From.
    charset: str | None = None


@dataclass(frozen=True, slots=True)
class RootIdentity:
    """The root header fields that name a bounce, as written, and where its body starts.

    ``gateway.identity.bounce_digest`` hashes these with the body; the parser has read the root
    header block already, so the digest need not read it again (ARCHITECTURE.md, invariant 5).
    """

    message_id: str | None
    date: str | None
    body_start: int


@dataclass(slots=True)
class BounceReport:
    """Everything bouncegw knows about one message after parsing and classification."""

    is_bounce: bool
    format: str | None = None  # FORMAT_* or None when not a bounce
    reporting_mta: str | None = None
    message_id: str | None = None  # the bounce's own Message-ID
    date: str | None = None  # the bounce's own Date header, as written
    original: OriginalMessage | None = None
    recipients: list[RecipientReport] = field(default_factory=list)
    human_parts: tuple[HumanPart, ...] = ()
    #: The bounce already carries X-Bouncegw-Explained (never explain or record twice).
    already_explained: bool = False
    #: The bounce shows signs of Exchange / Exchange Online (RESOLVER.RST.* token,
    #: a Microsoft reporting or remote MTA, Exchange's wording). Needed before a
    #: bare 5.7.12 or 5.7.13 is treated as Microsoft's meaning.
    microsoft_evidence: tuple[Evidence, ...] = ()
    #: The MIME structure goes deeper than the parser reads (``gateway.bounce.mime.MAX_DEPTH``): parts
    #: below that depth were not read; what sits above it was.
    nesting_capped: bool = False
    #: The root's identifying fields (None when the message has no header block and body).
    root_identity: RootIdentity | None = None

    @property
    def family(self) -> list[RecipientReport]:
        """Recipients in the "only authenticated senders" family (or its 5.7.124 sibling)."""
        return [r for r in self.recipients if r.in_family]
