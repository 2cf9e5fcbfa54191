"""Mark each recipient of a parsed bounce with its family category and variant.

Everything that varies by code lives in :mod:`gateway.codes`; this module only
looks codes and tokens up. Rules (from the Microsoft notes):

* a recipient counts only when it failed (action "failed", or a 5.x.x status);
* codes are matched whole (5.7.124 is its own code, never "5.7.12" + "4");
* 5.7.12 and 5.7.13 carry Microsoft's meaning only when the report shows
  Microsoft evidence (IANA registers X.7.12 and X.7.13 with other meanings);
* every match keeps the field or line it came from as evidence.
"""

from __future__ import annotations

from gateway import codes
from gateway.report import BounceReport, Evidence, RecipientReport
from gateway.textsafe import clip

_EVIDENCE_MAX = 200


def _clip(text: str) -> str:
    return clip(text, _EVIDENCE_MAX)


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
        for m in codes.STATUS_RE.finditer(recipient.diagnostic):
            found.append((".".join(m.groups()), "delivery-status:Diagnostic-Code", recipient.diagnostic))
    return found


def _mark(recipient: RecipientReport, row: codes.FamilyCode, evidence: Evidence) -> RecipientReport:
    recipient.category, recipient.variant = row.category, row.variant
    recipient.evidence = (evidence,)
    return recipient


def classify_recipient(
    recipient: RecipientReport, *, microsoft: bool, family: codes.Family | None = None
) -> RecipientReport:
    """Fill ``category``/``variant``/``evidence`` of one recipient in place (and return it).

    The recipient's ``status`` becomes the most specific family code found: Exchange Online
    wraps the real code in a generic one (``554 5.7.0 < #5.7.133 smtp;550 5.7.133 ...>``), and
    the wrapper says less. ``reported_status`` keeps what the bounce's Status field said.
    """
    table = family or codes.FAMILY
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
        return _mark(recipient, row, Evidence(source, _clip(text)))
    # A token names the case only when every code beside it is a generic wrapper (or there is
    # none): "5.7.1 RESOLVER.RST.AuthRequired" is the legacy case, "5.1.1 ..." never is.
    seen_codes = {code for code, _, _ in found}
    diagnostic = recipient.diagnostic or ""
    for match in table.tokens:
        row = match.row
        if not seen_codes <= codes.GENERIC_CODES | {row.code}:
            continue
        if row.needs_microsoft and not microsoft:
            continue
        if not match.pattern.search(diagnostic):
            continue
        if row.code in seen_codes or recipient.status is None:
            recipient.status = row.code
        return _mark(recipient, row, Evidence("delivery-status:Diagnostic-Code", _clip(diagnostic)))
    return recipient


def classify(report: BounceReport) -> BounceReport:
    """Classify every recipient of ``report`` (in place; the same object is returned)."""
    microsoft = bool(report.microsoft_evidence)
    table = codes.FAMILY  # read once: one bounce is classified against one table
    for recipient in report.recipients:
        if report.is_bounce:
            classify_recipient(recipient, microsoft=microsoft, family=table)
        else:
            recipient.category = recipient.variant = None
            recipient.evidence = ()
    return report


__all__ = ["classify", "classify_recipient"]
