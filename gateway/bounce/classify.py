"""Mark each recipient of a parsed bounce with its family category and variant.

Everything that varies by code lives in :mod:`gateway.bounce.family`; this module only
looks codes and tokens up, and reads the vendor evidence those need. Rules (from the
Microsoft notes):

* a recipient counts only when it failed (action "failed", or a 5.x.x status);
* codes are matched whole (5.7.124 is its own code, never "5.7.12" + "4");
* 5.7.12 and 5.7.13 carry Microsoft's meaning only when the report shows
  Microsoft evidence (IANA registers X.7.12 and X.7.13 with other meanings);
* every match keeps the field or line it came from as evidence.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.message import Message
from typing import Final

from gateway import textsafe
from gateway.bounce import family
from gateway.bounce.delivery_status import STATUS_RE
from gateway.bounce.report import BounceReport, Evidence, RecipientReport


@dataclass(slots=True)
class Parsed:
    """What the parser read of one message, handed to the classifier (nothing is read twice)."""

    report: BounceReport
    #: The root header block.
    root: Message
    #: (source label, decoded text) of the human-readable parts.
    texts: list[tuple[str, str]]
    #: The NDR a relaying gateway's notice carried, when the report's recipients came from it.
    enclosed: Parsed | None = None


# ---------------------------------------------------------------------------
# Microsoft evidence: signs that Exchange / Exchange Online wrote the bounce.

#: Resolver tokens that are Microsoft-only; any of them is Microsoft evidence.
MICROSOFT_TOKEN_RE: Final = re.compile(r"RESOLVER\.[A-Z]{2,5}\.\w+", re.IGNORECASE)

#: Host names that mark Exchange Online / Outlook.com as the reporting or remote MTA.
MICROSOFT_HOST_RE: Final = re.compile(
    r"(?:^|[.\s;])(?:[\w-]+\.)*(?:protection\.outlook\.com|prod\.outlook\.com|outlook\.com"
    r"|exchangelabs\.com|outbound\.protection\.outlook\.com|hotmail\.com)\b",
    re.IGNORECASE,
)

#: Exchange's own wording in human parts and diagnostics: (source label, phrases). A text that
#: holds any of an entry's phrases (case-insensitively) is evidence; the first entry found counts.
MICROSOFT_TEXT_PHRASES: Final[tuple[tuple[str, tuple[str, ...]], ...]] = (
    ("exchange-wording", ("Diagnostic information for administrators",)),
    ("exchange-wording", ("Remote Server returned '",)),
    ("exchange-wording", ("Microsoft SMTP Server",)),
    ("exchange-wording", ("Sender was not authenticated by organization",)),
    ("exchange-wording", ("the sender was not authenticated when sending to",)),
    ("exchange-wording", ("delivery to this address is restricted",)),
    ("exchange-wording", ("Office 365", "Exchange Online", "Microsoft Exchange")),
)
#: The same as (label, lower-cased phrases, pattern finding the leftmost of them).
MICROSOFT_TEXT_PATTERNS: Final[tuple[tuple[str, tuple[str, ...], re.Pattern[str]], ...]] = tuple(
    (label, tuple(p.lower() for p in phrases), re.compile("|".join(map(re.escape, phrases)), re.IGNORECASE))
    for label, phrases in MICROSOFT_TEXT_PHRASES
)

#: Root header fields that only Exchange writes on its NDRs.
MICROSOFT_HEADER_RE: Final = re.compile(r"^X-MS-Exchange-", re.IGNORECASE)


#: Every match of MICROSOFT_TOKEN_RE starts with this (lower-cased).
_TOKEN_WORDS: Final = ("resolver.",)


def _search(
    pattern: re.Pattern[str], text: str, lowered: str | None, words: tuple[str, ...]
) -> re.Match[str] | None:
    """``pattern.search(text)`` for a case-insensitive pattern each of whose matches starts with
    one of ``words`` (lower-cased). ``lowered`` is ``text.lower()`` when ``text`` is ASCII (then
    the lower-cased text has the same offsets, and the case-insensitive match is a substring of
    it): the search starts at the first of the words, or is skipped when none occurs. The
    regular expression's scan of the text before that costs several times ``str.find``'s (an
    Exchange Online NDR's 3.5 KB notice: 13 us for one phrase pattern)."""
    if lowered is None:
        return pattern.search(text)
    starts = [at for word in words if (at := lowered.find(word)) >= 0]
    return pattern.search(text, min(starts)) if starts else None


def _all_evidence(parsed: Parsed, table: family.Family) -> tuple[Evidence, ...]:
    """The message's Microsoft evidence, then that of the NDR its notice carried (one entry each)."""
    found = _microsoft_evidence(parsed.root, parsed.report, parsed.texts, table)
    if parsed.enclosed is None:
        return found  # one entry each already
    return tuple(dict.fromkeys(found + _all_evidence(parsed.enclosed, table)))


def _microsoft_evidence(
    root: Message, report: BounceReport, texts: list[tuple[str, str]], table: family.Family
) -> tuple[Evidence, ...]:
    """Exchange's root headers, Microsoft hosts as reporting or remote MTA, resolver tokens and
    Exchange's wording in the diagnostics and the human-readable text."""
    found: list[Evidence] = []
    # Words the family table names as Microsoft's own (e.g. the UnifiedGroupAgent of 5.7.193).
    evidence_re = table.evidence_re
    for name in root:
        if MICROSOFT_HEADER_RE.match(name):
            found.append(Evidence(f"header:{name}", textsafe.clip(str(root.get(name, "")))))
            break
    if report.reporting_mta and MICROSOFT_HOST_RE.search(report.reporting_mta):
        found.append(Evidence("delivery-status:Reporting-MTA", textsafe.clip(report.reporting_mta)))
    for r in report.recipients:
        if r.remote_mta and MICROSOFT_HOST_RE.search(r.remote_mta):
            found.append(Evidence("delivery-status:Remote-MTA", textsafe.clip(r.remote_mta)))
        if r.diagnostic:
            m = MICROSOFT_TOKEN_RE.search(r.diagnostic) or (
                evidence_re.search(r.diagnostic) if evidence_re is not None else None
            )
            if m:
                found.append(Evidence("delivery-status:Diagnostic-Code", textsafe.clip(m.group(0))))
    for source, text in texts:
        # Case-insensitive regular expressions crawl through kilobytes of notice text; in ASCII
        # text a lower-cased substring search says first where the first match can start.
        lowered = text.lower() if text.isascii() else None
        m = _search(MICROSOFT_TOKEN_RE, text, lowered, _TOKEN_WORDS)
        if m is None and evidence_re is not None:
            m = _search(evidence_re, text, lowered, table.evidence_words)
        if m:
            found.append(Evidence(source, textsafe.clip(m.group(0))))
        for label, phrases, pattern in MICROSOFT_TEXT_PATTERNS:
            m = _search(pattern, text, lowered, phrases)
            if m:
                found.append(Evidence(f"{source}:{label}", textsafe.clip(m.group(0))))
                break
    # Keep one entry per (source, text).
    return tuple(dict.fromkeys(found))


# ---------------------------------------------------------------------------
# Recipients.


def _failed(recipient: RecipientReport) -> bool:
    action = (recipient.action or "").lower()
    if action and not action.startswith("failed"):
        return False
    return recipient.status is None or recipient.status.startswith("5")


def _codes_in(recipient: RecipientReport) -> list[tuple[str, str, str]]:
    """(code, source, text) for every whole enhanced code in the recipient's fields."""
    found: list[tuple[str, str, str]] = []
    if recipient.status:
        found.append((recipient.status, "delivery-status:Status", recipient.status))
    if recipient.diagnostic:
        for m in STATUS_RE.finditer(recipient.diagnostic):
            found.append((".".join(m.groups()), "delivery-status:Diagnostic-Code", recipient.diagnostic))
    return found


def _mark(recipient: RecipientReport, row: family.FamilyCode, evidence: Evidence) -> RecipientReport:
    recipient.category, recipient.variant = row.category, row.variant
    recipient.evidence = (evidence,)
    return recipient


def _classify_recipient(
    recipient: RecipientReport, *, microsoft: bool, table: family.Family
) -> RecipientReport:
    """Fill ``category``/``variant``/``evidence`` of one recipient in place (and return it).

    The recipient's ``status`` becomes the most specific family code found: Exchange Online
    wraps the real code in a generic one (``554 5.7.0 < #5.7.133 smtp;550 5.7.133 ...>``), and
    the wrapper says less. ``reported_status`` keeps what the bounce's Status field said.
    """
    recipient.category = recipient.variant = None
    recipient.evidence = ()
    if not _failed(recipient):
        return recipient
    found = _codes_in(recipient)
    for code, source, text in found:
        row = table.by_code.get(code)
        if row is None or (row.needs_microsoft and not microsoft):
            continue
        recipient.status = code
        return _mark(recipient, row, Evidence(source, textsafe.clip(text)))
    # A token names the case only when every code beside it is a generic wrapper (or there is
    # none): "5.7.1 RESOLVER.RST.AuthRequired" is the legacy case, "5.1.1 ..." never is.
    seen_codes = {code for code, _, _ in found}
    diagnostic = recipient.diagnostic or ""
    for match in table.tokens:
        row = match.row
        if not seen_codes <= family.GENERIC_CODES | {row.code}:
            continue
        if row.needs_microsoft and not microsoft:
            continue
        if not match.pattern.search(diagnostic):
            continue
        if row.code in seen_codes or recipient.status is None:
            recipient.status = row.code
        return _mark(recipient, row, Evidence("delivery-status:Diagnostic-Code", textsafe.clip(diagnostic)))
    return recipient


def classify(parsed: Parsed) -> BounceReport:
    """Microsoft evidence, then every recipient's category (in place; the parser's report is returned)."""
    report = parsed.report
    table = family.FAMILY  # read once: one bounce is classified against one table
    if report.is_bounce:
        report.microsoft_evidence = _all_evidence(parsed, table)
    microsoft = bool(report.microsoft_evidence)
    for recipient in report.recipients:
        if report.is_bounce:
            _classify_recipient(recipient, microsoft=microsoft, table=table)
        else:
            recipient.category = recipient.variant = None
            recipient.evidence = ()
    return report


__all__ = ["Parsed", "classify"]
