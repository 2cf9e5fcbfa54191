"""Bounces without a delivery-status part: where MTAs write the failed recipient and its code.

:data:`FORMATS` is the table, one row per way of writing (flufl.bounce has one detector per MTA,
Sisimai one module per MTA; here a row is a regular expression and the source it was written
from). A notice's text is searched with every row; each address found is a recipient, and its
code is the first 4.x.x/5.x.x enhanced code after it (before the next recipient, within the row's
``code_reach``). The line holding that code (or an SMTP reply code) is the recipient's diagnostic.

A report whose MIME structure broke may carry the RFC 3464 fields as plain text: those are read
as fields first (:func:`pasted_fields`). Amazon SES's JSON notifications are
:mod:`gateway.bounce.ses`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from gateway import textsafe
from gateway.bounce import delivery_status
from gateway.bounce.report import RecipientReport

#: An address as MTAs write it into text (no comments, no quoted local parts, ASCII domain).
ADDRESS: Final = r"[^\s<>()\[\]\"',;:@]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?"


@dataclass(frozen=True, slots=True)
class TextFormat:
    """One way of writing a failed recipient into a notice's text."""

    name: str
    #: How the format is recognised and where the recipient is: the ``rcpt`` group.
    recipient: re.Pattern[str]
    #: Where the codes are: the first failure code this many characters after the recipient at
    #: most (and before the next recipient).
    code_reach: int
    #: What the row was written from (MTA source or documentation, and corpus samples).
    source: str


def _row(name: str, pattern: str, source: str, flags: re.RegexFlag = re.MULTILINE) -> TextFormat:
    return TextFormat(name, re.compile(pattern, flags), 2000, source)


FORMATS: Final[tuple[TextFormat, ...]] = (
    # Postfix's bounce(8) notice, qmail-send's failure notice: "<rcpt>: host mx.example[192.0.2.1]
    # said: 550 5.1.1 ..." or "<rcpt>:" on a line of its own, the reason below it.
    _row(
        "postfix-qmail",
        r"^[ \t]*<(?P<rcpt>" + ADDRESS + r")>[ \t]*:",
        "Postfix bounce(8), qmail-send; corpus: sisimai lhost-postfix-*, lhost-qmail-*, lhost-exim-*, "
        "lhost-mxlogic-*",
    ),
    # OpenSMTPD: "rcpt: 550 5.1.1 ..." at the start of a line.
    _row(
        "opensmtpd",
        r"^(?P<rcpt>" + ADDRESS + r"):[ \t]+[245]\d\d\b",
        "OpenSMTPD's bounce notice; corpus: sisimai lhost-opensmtpd-*",
    ),
    # Exim's indented recipient, Exchange's "Diagnostic information for administrators", bulleted
    # lists ("   * rcpt"), an address with a mailto link: an address alone on a line.
    _row(
        "address-line",
        r"^[ \t]*(?:[*\-][ \t]+)?[<\"]?(?:mailto:)?(?P<rcpt>" + ADDRESS + r")[>\"]?"
        r"(?:[ \t]*<mailto:[^>\s]*>)?[ \t]*:?[ \t]*$",
        "Exim, Exchange Online, Gmail, Yahoo, GMX, Domino; corpus: sisimai lhost-exim-*, "
        "lhost-office365-*, lhost-gmail-*, lhost-yahoo-*, lhost-gmx-*, lhost-domino-*",
    ),
    # sendmail's "Transcript of session follows": ">>> RCPT To:<rcpt>" / ">>> rcpt <rcpt>".
    _row(
        "sendmail-transcript",
        r"^[ \t]*>>>[ \t]*(?:RCPT To:)?[ \t]*<?(?P<rcpt>" + ADDRESS + r")>?",
        "sendmail and its descendants; corpus: sisimai lhost-v5sendmail-*, lhost-activehunter-*, "
        "lhost-trendmicro-*",
        re.MULTILINE | re.IGNORECASE,
    ),
    # Exchange 2000/2003 and GroupWise: "    'rcpt' on 1/2/2003 ..." or "    rcpt on 1/2/2003 ...".
    _row(
        "exchange2003",
        r"^[ \t]*[<']?(?P<rcpt>" + ADDRESS + r")[>']?[ \t]+on[ \t]",
        "Exchange 2000/2003, GroupWise; corpus: sisimai lhost-exchange2003-*, flufl_bounce "
        "microsoft_02, groupwise_01",
    ),
    # "RCPT TO:<rcpt>" anywhere in a quoted SMTP dialogue (the command of RFC 5321 section 4.1.1.3).
    _row(
        "smtp-dialogue",
        r"RCPT[ \t]+TO:[ \t]*<?(?P<rcpt>" + ADDRESS + r")>?",
        "transcripts quoting the RCPT command; corpus: sisimai lhost-postfix-*, lhost-exim-*, "
        "lhost-apachejames-*, cws_mail_bounce_handler bounce_511_*",
        re.IGNORECASE,
    ),
    # A sentence naming the recipient: "Could not be delivered to: <rcpt>", "delivery to <rcpt>
    # failed", MailFoundry's "Unable to deliver message to: <rcpt>".
    _row(
        "delivered-to",
        r"(?:deliver(?:ed|ing|y)?(?:[ \t]+(?:your[ \t]+)?(?:mail|message))?|sent|send)"
        r"[ \t]+to:?[ \t]*<(?P<rcpt>" + ADDRESS + r")>",
        "DragonFly, MailFoundry, KDDI; corpus: sisimai lhost-dragonfly-*, lhost-mailfoundry-*, "
        "lhost-kddi-*, flufl_bounce simple_15",
        re.IGNORECASE,
    ),
    # Zoho's "rcpt Invalid Address, ..." at the very start of a line; x1's "rcpt [Connection timed
    # out]"; "rcpt (reason)".
    _row(
        "address-then-reason",
        r"^(?P<rcpt>" + ADDRESS + r")[ \t]+[A-Z\[(]",
        "Zoho Mail, x1; corpus: sisimai lhost-zoho-*, lhost-x1-*",
    ),
    # Labelled lines: "Failed recipient: rcpt", "Recipient address: rcpt", "Original-Recipient:
    # rfc822;rcpt" (RFC 3464 field names in text), "The following recipients returned permanent
    # errors: rcpt".
    _row(
        "labelled",
        r"(?:(?:failed|invalid|unknown|bad)?[ \t]*recipient(?:[ \t]+address)?"
        r"|Final-Recipient|Original-Recipient|(?:permanent|temporary) errors?"
        r"|Failed address|Address)[ \t]*:[ \t]*(?:rfc822[ \t]*;[ \t]*)?<?(?P<rcpt>" + ADDRESS + r")>?",
        "Sun Messaging Server, Amazon WorkMail, HotPOP; corpus: sisimai lhost-messagingserver-*, "
        "lhost-amazonworkmail-*, flufl_bounce hotpop_01",
        re.IGNORECASE,
    ),
)

#: Where the returned original message starts: nothing after it is diagnostic text.
_CUT_RE: Final = re.compile(
    r"^[ \t-]*(?:Original message headers:|-+ ?Original message|Original message follows"
    r"|-*[ \t]*Below this line is a copy of the message|-*[ \t]*This is a copy of (?:the|your) message"
    # sendmail opens with "The original message was received at ...": not a cut.
    r"|-*[ \t]*The (?:original message(?! was received)|header of the original message)"
    r"|-*[ \t]*Returned message"
    r"|-*[ \t]*Original Message|Message headers follow|-*[ \t]*Unsent Message below"
    r"|-*[ \t]*Undelivered Message Headers|Below is a copy of the original message)",
    re.IGNORECASE | re.MULTILINE,
)

#: An SMTP failure reply code (RFC 5321 §4.2.1: 4yz transient, 5yz permanent).
_FAILURE_REPLY_RE: Final = re.compile(r"(?<![\d.])([45]\d\d)[ -]")


def _failure_status(text: str) -> str | None:
    """The first 4.x.x / 5.x.x code in MTA text: quoted SMTP dialogues also carry 2.x.x successes."""
    for m in delivery_status.STATUS_RE.finditer(text):
        if m.group(1) in "45":
            return ".".join(m.groups())
    return None


def recipients(text: str, skip: set[str]) -> list[RecipientReport]:
    """Recipients and their codes from MTA-written text (addresses in ``skip`` are not recipients)."""
    cut = _CUT_RE.search(text)
    if cut is not None and cut.start() > 0:
        text = text[: cut.start()]
    hits: list[tuple[int, int, str, int]] = []
    for row in FORMATS:
        for m in row.recipient.finditer(text):
            hits.append((m.start("rcpt"), m.end(), m.group("rcpt"), row.code_reach))
    hits.sort()
    seen: dict[str, RecipientReport] = {}
    for i, (_pos, end, rcpt, reach) in enumerate(hits):
        addr = rcpt.strip(".").lower()
        if addr in skip:
            continue
        nxt = len(text)
        for later in hits[i + 1 :]:
            if later[2].strip(".").lower() != addr:
                nxt = later[0]
                break
        block = text[end : min(nxt, end + reach)]
        status = _failure_status(block)
        line = next(
            (ln.strip() for ln in block.splitlines() if _failure_status(ln) or _FAILURE_REPLY_RE.search(ln)),
            None,
        )
        report = seen.get(addr)
        if report is None:
            seen[addr] = RecipientReport(
                recipient=rcpt.strip("."),
                action="failed",
                status=status,
                reported_status=status,
                diagnostic=textsafe.clip(line) if line else None,
            )
        elif report.status is None and status is not None:
            report.status = report.reported_status = status
            report.diagnostic = textsafe.clip(line) if line else report.diagnostic
    return list(seen.values())


_PASTED_FIELD_RE: Final = re.compile(r"^[ \t]*Final-Recipient[ \t]*:", re.IGNORECASE | re.MULTILINE)


def pasted_fields(text: str) -> list[RecipientReport]:
    """RFC 3464 per-recipient fields found in plain text (a report whose MIME structure broke, PMDF)."""
    if not _PASTED_FIELD_RE.search(text):
        return []
    lines = [ln.strip() for ln in text.split("\n")]
    _mta, found = delivery_status.read("\n".join(lines))
    return [r for r in found if r.recipient]


def _is_generic(status: str | None) -> bool:
    """X.0.0 (RFC 3463 §3.1 "other undefined status") says nothing the text may not say better."""
    return status is None or status.endswith(".0.0")


def refine(reported: list[RecipientReport], text: str) -> None:
    """Fill a report's generic statuses from its notice text when the report leaves them vague.

    OpenSMTPD writes "Status: 5.0.0" with no Diagnostic-Code, while its human part
    quotes the remote reply ("rcpt: 550 5.1.1 ..."). Only a code of the same class
    replaces the report's (the report stays authoritative on temporary vs permanent).
    """
    vague = [
        r
        for r in reported
        if _is_generic(r.status) and not (r.diagnostic and delivery_status.status_code(r.diagnostic))
    ]
    if not vague or not text:
        return
    found = {(t.recipient or "").lower(): t for t in recipients(text, set())}
    for r in vague:
        t = found.get((r.recipient or "").lower())
        if t is None or t.status is None:
            continue
        if r.status is None or r.status[0] == t.status[0]:
            r.status = t.status
            r.diagnostic = r.diagnostic or t.diagnostic
