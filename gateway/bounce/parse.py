"""Raw message bytes -> one normalised, classified :class:`~gateway.bounce.report.BounceReport`.

:func:`parse` is the bounce package's one entry point. Three ways a bounce arrives, tried in
this order:

1. RFC 3464 ``multipart/report; report-type=delivery-status`` (or RFC 6533
   ``message/global-delivery-status``): the per-recipient groups of the delivery-status part
   (:mod:`.delivery_status`).
2. A bounce without a machine-readable part (``format="text"``): recipients and codes come from
   the text, one table row per MTA's way of writing them (:mod:`.text_formats`), or from an
   Amazon SES JSON notification (:mod:`.ses`); whether it is a bounce at all is decided from
   the signs in :mod:`.signs`.
3. Anything else is "not a bounce".

The MIME tree comes from :mod:`.mime`; the classifier (:mod:`.classify`) then marks each
recipient from what was read here (nothing is parsed twice).
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from email.header import decode_header, make_header
from email.message import Message
from typing import Final

from gateway import header_block
from gateway.bounce import delivery_status, mime, ses, signs, text_formats
from gateway.bounce.classify import Parsed, classify
from gateway.bounce.mime import MAX_DEPTH
from gateway.bounce.report import (
    EXPLAINED_HEADER,
    FORMAT_RFC3464,
    FORMAT_RFC6533,
    FORMAT_TEXT,
    HUMAN_CONTENT_TYPES,
    BounceReport,
    HumanPart,
    OriginalMessage,
    RecipientReport,
    RootIdentity,
)

log = logging.getLogger(__name__)


class ParseError(Exception):
    """The input cannot be parsed as a message at all (e.g. empty, or not bytes)."""


_SCRIPT_RE: Final = re.compile(r"(?is)<(script|style)\b.*?</\1>")
_LINE_END_TAG_RE: Final = re.compile(r"(?i)<br\s*/?>|</p>|</div>|</tr>")
_TAG_RE: Final = re.compile(r"<[^>]+>")


def _clean_html(text: str) -> str:
    text = _SCRIPT_RE.sub(" ", text)
    text = _LINE_END_TAG_RE.sub("\n", text)
    return html.unescape(_TAG_RE.sub("", text))


def _decoded(value: object) -> str | None:
    if value is None:
        return None
    text = str(value)
    if "=?" not in text:
        # No RFC 2047 encoded word can start (every one opens with "=?"): decode_header returns
        # the text as one unencoded chunk, which make_header and str() give back unchanged; the
        # round trip cost about 3 us per field, eight fields per bounce.
        return " ".join(text.split()) or None
    try:
        text = str(make_header(decode_header(text)))
    except Exception:  # a broken encoded-word keeps its raw text
        log.debug("undecodable header %r", text[:80])
    return " ".join(text.split()) or None


def _original_to(src: mime.Source, nodes: list[mime.Node]) -> list[str]:
    """Addresses in the To: of the returned message (message/rfc822 or its headers)."""
    for node in nodes:
        if node.ctype not in ("message/rfc822", "text/rfc822-headers", "message/global"):
            continue
        to = _decoded(src.enclosed_headers(node).get("To"))
        if to:
            return list(dict.fromkeys(re.findall(text_formats.ADDRESS, to)))
    return []


# ---------------------------------------------------------------------------
# Human-readable parts.


def _human_nodes(node: mime.Node, max_depth: int, depth: int = 0) -> list[mime.Node]:
    """text/plain and text/html under a human-readable node (alternative, related, mixed)."""
    if node.ctype in HUMAN_CONTENT_TYPES:
        return [node]
    if not node.ctype.startswith("multipart/") or depth >= max_depth:
        return []
    found: list[mime.Node] = []
    if node.ctype in ("multipart/mixed", "multipart/report"):
        # Only the leading text of a mixed part is the notice; later ones are attachments.
        # In a report only the first part is human-readable (RFC 6522 §3); text after it
        # is the returned message or headers.
        return _human_nodes(node.children[0], max_depth, depth + 1) if node.children else []
    for child in node.children:
        found.extend(_human_nodes(child, max_depth, depth + 1))
    return found


def _human_part(node: mime.Node) -> HumanPart | None:
    if node.headers_start is None or node.body_start is None or node.body_end is None:
        return None
    charset = node.params.get("charset")
    return HumanPart(
        content_type=node.ctype,
        charset=charset.lower() if charset else None,
        transfer_encoding=node.cte,
        headers_start=node.headers_start,
        body_start=node.body_start,
        body_end=node.body_end,
    )


# ---------------------------------------------------------------------------
# Original message (message/rfc822, text/rfc822-headers, message/global-headers).


def _original(src: mime.Source, node: mime.Node) -> OriginalMessage | None:
    headers = header_block.first_values(src.enclosed_headers(node))
    if not any(headers.get(h) for h in ("message-id", "from", "subject", "date")):
        return None
    return OriginalMessage(
        message_id=_decoded(headers.get("message-id")),
        sender=_decoded(headers.get("from")),
        subject=_decoded(headers.get("subject")),
        date=_decoded(headers.get("date")),
        content_language=_decoded(headers.get("content-language")),
        charset=_original_charset(headers.get("content-type"), headers.get("subject"), headers.get("from")),
    )


#: A charset parameter (RFC 2045 section 5.1) and an RFC 2047 encoded word's charset.
_CHARSET_PARAM: Final = re.compile(r";\s*charset\s*=\s*\"?([^\s\";]+)", re.IGNORECASE)
_ENCODED_WORD_CHARSET: Final = re.compile(r"=\?([^?*\s]+)(?:\*[^?]*)?\?[BbQq]\?")


def _original_charset(content_type: object, *encoded: object) -> str | None:
    """The original's charset, read from header values the parser already holds (cheap)."""
    found = _CHARSET_PARAM.search(str(content_type or ""))
    if found is None:
        found = next((m for v in encoded if v and (m := _ENCODED_WORD_CHARSET.search(str(v)))), None)
    return found.group(1).lower()[:40] if found else None


# ---------------------------------------------------------------------------
# Entry point.


def parse(data: bytes, *, max_depth: int = MAX_DEPTH, envelope_sender: str | None = None) -> BounceReport:
    """Parse raw message bytes into a classified BounceReport.

    ``envelope_sender`` is the SMTP MAIL FROM when known ("" for the null sender of
    RFC 5321 section 4.5.5); without it, a ``Return-Path: <>`` header says the same.

    Raises :class:`ParseError` only when the input is not a message at all;
    anything else yields a report (``is_bounce=False`` when nothing was recognised).
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ParseError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data or data.isspace():  # (data.strip() would copy the message)
        raise ParseError("empty message")
    try:
        return classify(_read(data, max_depth, envelope_sender, _MAX_ENCLOSED))
    except RecursionError as exc:
        raise ParseError("message nesting too deep") from exc
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as exc:  # the parser must never let an error through
        log.debug("parse failed", exc_info=True)
        raise ParseError(f"cannot parse message: {type(exc).__name__}") from exc


#: How many gateway wrappings (a notice with the NDR attached as message/rfc822) are opened.
_MAX_ENCLOSED: Final = 2

#: Types of the part that holds the returned message, or its header block.
_ORIGINAL_TYPES: Final = ("message/rfc822", "text/rfc822-headers", "message/global-headers", "message/global")


@dataclass(frozen=True, slots=True)
class _Sender:
    """What the root header block and the envelope say about who wrote the message."""

    subject: str
    #: From and Sender, as written.
    sender: str
    #: The null reverse-path (RFC 5321 section 4.5.5) that bounces are sent with.
    null_sender: bool
    #: A mail system's sender (MAILER-DAEMON, postmaster, ...).
    daemon: bool
    auto_reply: bool
    #: A person passing a message on ("Fw: ...").
    forwarded: bool


def _sender(root: dict[str, str], envelope_sender: str | None) -> _Sender:
    """``root``: the root header block's fields (:func:`gateway.header_block.first_values`)."""
    subject = _decoded(root.get("subject")) or ""
    sender = " ".join(str(root.get(h, "")) for h in ("from", "sender"))
    daemon = signs.is_daemon(sender)
    return_path = str(root.get("return-path", "")).strip()
    # The null reverse-path: from the envelope when known, else from Return-Path (written at
    # delivery). A non-null Return-Path wins over a null envelope: a stored message re-sent.
    header_null = return_path in ("<>", "") and root.get("return-path") is not None
    if envelope_sender is not None:
        null_sender = envelope_sender == "" and (root.get("return-path") is None or header_null)
    else:
        null_sender = header_null
    # Exim marks its own bounces "Auto-Submitted: auto-replied", so the header alone
    # does not make a vacation reply (RFC 3834 §5).
    auto_reply = not (daemon or root.get("x-failed-recipients") is not None) and (
        bool(signs.AUTO_REPLY_SUBJECT_RE.search(subject))
        or str(root.get("auto-submitted", "")).lower().startswith("auto-replied")
    )
    forwarded = bool(signs.FORWARD_RE.match(subject)) and not null_sender and not daemon
    return _Sender(subject, sender, null_sender, daemon, auto_reply, forwarded)


def _read(data: bytes, max_depth: int, envelope_sender: str | None, enclosed_left: int) -> Parsed:
    """Everything the classifier needs from one message; the report says whether it is a bounce."""
    src = mime.Source(data)
    root = src.root_headers
    root_fields = header_block.first_values(root)
    report = BounceReport(
        is_bounce=False,
        message_id=_decoded(root_fields.get("message-id")),
        date=_decoded(root_fields.get("date")),
    )
    if 0 < src.header_end < src.body_start:  # fields, then the empty line: as the digest reads it
        report.root_identity = RootIdentity(
            root_fields.get("message-id"), root_fields.get("date"), src.body_start
        )
    report.already_explained = EXPLAINED_HEADER.lower() in root_fields

    tree = mime.build_tree(src, root, max_depth)
    report.nesting_capped = src.capped
    nodes = list(tree.walk(max_depth=max_depth))
    human = _human_of(tree, max_depth)
    texts = _texts(src, tree, human)

    for node in nodes:
        if node.ctype in ("message/delivery-status", "message/global-delivery-status"):
            mta, recipients = delivery_status.read(src.node_body(node).decode("utf-8", "replace"))
            report.reporting_mta = report.reporting_mta or mta
            report.recipients.extend(recipients)
            if report.format is None:
                report.format = FORMAT_RFC6533 if node.ctype.startswith("message/global") else FORMAT_RFC3464
    report.original = next(
        (found for n in nodes if n.ctype in _ORIGINAL_TYPES and (found := _original(src, n)) is not None),
        None,
    )

    who = _sender(root_fields, envelope_sender)
    text = "\n".join(t for _, t in texts)
    enclosed: Parsed | None = None
    if report.format is not None:
        _judge_report(report, text, who)
    elif (
        enclosed_left
        and who.null_sender
        and not who.forwarded
        and not who.auto_reply
        and (
            enclosed := _enclosed_bounce(
                src, root, tree, who, max_depth, enclosed_left - 1, report.nesting_capped
            )
        )
        is not None
    ):
        # A relaying gateway's notice with the NDR attached: the NDR says who failed and why;
        # the gateway's notice stays the human part (the attachment is never edited).
        inner = enclosed.report
        report.is_bounce, report.format = True, inner.format
        report.recipients, report.reporting_mta = inner.recipients, inner.reporting_mta
        report.original = inner.original
        report.nesting_capped = inner.nesting_capped
    elif (notification := ses.read(text)) is not None:
        report.is_bounce, report.recipients = notification
        report.format = FORMAT_TEXT if report.is_bounce else None
    elif (
        not who.forwarded
        and not who.auto_reply
        and not any(n.ctype == "message/feedback-report" for n in nodes)
    ):
        _judge_text(report, root, text, who, lambda: _original_to(src, nodes))

    if report.is_bounce:
        report.human_parts = tuple(hp for hp in map(_human_part, human) if hp is not None)
    return Parsed(report, root, texts, enclosed)


def _human_of(tree: mime.Node, max_depth: int) -> list[mime.Node]:
    """Human-readable parts: those of a report's first subpart; otherwise the leading text."""
    if tree.ctype == "multipart/report" and tree.children:
        return _human_nodes(tree.children[0], max_depth)
    if tree.ctype in HUMAN_CONTENT_TYPES:
        return [tree]
    if tree.ctype.startswith("multipart/") and tree.children:
        return _human_nodes(tree.children[0], max_depth)
    return []


def _texts(src: mime.Source, tree: mime.Node, human: list[mime.Node]) -> list[tuple[str, str]]:
    """(source label, decoded text) of each human-readable part, HTML reduced to its text."""
    texts = []
    for i, node in enumerate(human):
        text = src.node_text(node)
        if node.ctype == "text/html":
            text = _clean_html(text)
        texts.append((f"text:{node.ctype}#{i}", text))
    if not tree.children and tree.ctype.startswith("multipart/"):
        # A multipart whose delimiters cannot be found at all: its body is still
        # the MTA's text (scanned for recipients; never annotated).
        texts.append(("text:body", mime.charset_decode(src.node_body(tree), None)))
    return texts


def _judge_report(report: BounceReport, text: str, who: _Sender) -> None:
    """A delivery-status report is a bounce when a recipient failed or was delayed (RFC 3464
    section 2.3.3), or, naming none, when its subject says so; its text may name them."""
    failing = [
        r
        for r in report.recipients
        if (r.action or "").startswith(delivery_status.FAILING_ACTIONS)
        or (r.status or "").startswith(("4", "5"))
    ]
    report.is_bounce = bool(failing) or (
        not report.recipients and bool(signs.BOUNCE_SUBJECT_RE.search(who.subject))
    )
    if not report.recipients:
        report.recipients = text_formats.recipients(text, set())
    else:
        text_formats.refine(report.recipients, text)
    if not report.is_bounce:
        report.format = None


def _judge_text(
    report: BounceReport, root: Message, text: str, who: _Sender, original_to: Callable[[], list[str]]
) -> None:
    """A message without a delivery-status part: a bounce when its headers and words say so."""
    bounce_headers = root.get("X-Failed-Recipients") is not None or who.daemon or who.null_sender
    subject_hit = bool(signs.BOUNCE_SUBJECT_RE.search(who.subject))
    failure_hit = bool(signs.FAILURE_TEXT_RE.search(text[:20000]))
    if not ((bounce_headers and (subject_hit or failure_hit)) or (subject_hit and failure_hit)):
        return
    skip = {a.lower() for a in re.findall(text_formats.ADDRESS, who.sender)}
    # A delivery-status block pasted into the text (broken MIME, PMDF) is still
    # the MTA's own per-recipient record: prefer it to wording heuristics.
    recipients = text_formats.pasted_fields(text) or text_formats.recipients(text, skip)
    failed = [a.strip() for a in str(root.get("X-Failed-Recipients", "")).split(",") if "@" in a]
    known = {r.recipient.lower() for r in recipients if r.recipient}
    for addr in failed:
        if addr.lower() not in known:
            recipients.append(RecipientReport(recipient=addr, action="failed"))
    if not recipients and subject_hit and failure_hit:
        # Japanese carrier notices (au/KDDI) name no recipient in the text; the
        # returned message's To: is who it failed for.
        recipients = [RecipientReport(recipient=a, action="failed") for a in original_to()]
    if recipients or bounce_headers:
        report.is_bounce = True
        report.format = FORMAT_TEXT
        report.recipients = recipients


#: Root header signs that a machine, not a person, wrote the notice around an attached NDR.
_MACHINE_NOTICE_HEADERS: Final = ("X-MS-Exchange-Message-Is-Ndr", "X-Failed-Recipients")


def _enclosed_bounce(
    src: mime.Source,
    root: Message,
    tree: mime.Node,
    who: _Sender,
    max_depth: int,
    enclosed_left: int,
    capped: bool,
) -> Parsed | None:
    """The NDR a relaying gateway attached to its own short notice, if this is such a message.

    The layout: null sender, ``multipart/mixed``, the gateway's notice first, the NDR as a
    ``message/rfc822`` part of the root. The notice must look machine-written (a daemon
    sender, Auto-Submitted, a bounce subject or Exchange's NDR header): a person forwarding
    an NDR writes neither the null sender nor these, and stays a non-bounce.
    """
    if tree.ctype != "multipart/mixed" or len(tree.children) < 2 or capped:
        return None
    if signs.FORWARD_RE.match(who.subject):
        return None  # "Fw: Undeliverable: ...": a person passing an NDR on
    if tree.children[0].ctype.startswith("message/"):
        return None  # no notice of its own: not a gateway's wrapping
    machine = (
        who.daemon
        or str(root.get("Auto-Submitted", "")).lower().startswith("auto-")
        or bool(signs.BOUNCE_SUBJECT_RE.search(who.subject))
        or any(root.get(h) is not None for h in _MACHINE_NOTICE_HEADERS)
    )
    if not machine:
        return None
    for child in tree.children[1:]:
        if child.ctype not in ("message/rfc822", "message/global"):
            continue
        inner = _read(src.node_body(child), max(1, max_depth - 1), "", enclosed_left)
        if inner.report.is_bounce and inner.report.recipients:
            return inner
    return None


__all__ = ["MAX_DEPTH", "ParseError", "parse"]
