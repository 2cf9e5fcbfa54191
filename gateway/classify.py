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

_EVIDENCE_MAX = 200


def _clip(text: str) -> str:
    return " ".join(text.split())[:_EVIDENCE_MAX]


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


def classify_recipient(recipient: RecipientReport, *, microsoft: bool) -> RecipientReport:
    """Fill ``category``/``variant``/``evidence`` of one recipient in place (and return it)."""
    recipient.category = recipient.variant = None
    recipient.evidence = ()
    if not _failed(recipient):
        return recipient
    found = _codes_in(recipient)
    for code, source, text in found:
        rule = codes.CODE_RULES.get(code)
        if rule is None or (rule.needs_microsoft and not microsoft):
            continue
        recipient.category, recipient.variant = rule.category, rule.variant
        recipient.evidence = (Evidence(source, _clip(text)),)
        return recipient
    seen_codes = {code for code, _, _ in found}
    diagnostic = recipient.diagnostic or ""
    for token_rule in codes.TOKEN_RULES:
        if token_rule.token.lower() not in diagnostic.lower():
            continue
        if not (
            seen_codes & {c for c in token_rule.statuses if c}
            or (None in token_rule.statuses and not seen_codes)
        ):
            continue
        recipient.category, recipient.variant = token_rule.category, token_rule.variant
        recipient.evidence = (Evidence("delivery-status:Diagnostic-Code", _clip(diagnostic)),)
        return recipient
    return recipient


def classify(report: BounceReport) -> BounceReport:
    """Classify every recipient of ``report`` (in place; the same object is returned)."""
    microsoft = bool(report.microsoft_evidence)
    for recipient in report.recipients:
        if report.is_bounce:
            classify_recipient(recipient, microsoft=microsoft)
        else:
            recipient.category = recipient.variant = None
            recipient.evidence = ()
    return report


__all__ = ["classify", "classify_recipient"]
