"""RFC 3464 delivery-status fields -> one record per recipient (RFC 6533 section 3 for the UTF-8 types).

A ``message/delivery-status`` body is one per-message field group (Reporting-MTA, ...) and one
group per recipient, separated by blank lines. flanker does not split the groups (and its
``bounce.detect`` mixes fields of different recipients), so they are split here.
"""

from __future__ import annotations

import re
import warnings
from typing import Final

# flanker imports deprecated modules (see gateway.bounce.mime): their warnings are not ours.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from flanker.addresslib import address as flanker_address

from gateway.bounce.report import RecipientReport

#: An enhanced status code (RFC 3463 §2) as a whole token: not part of a longer
#: number ("5.7.124" never yields "5.7.12", "v5.7.12.3" yields nothing).
STATUS_RE: Final = re.compile(r"(?<![\w.])([245])\.(\d{1,3})\.(\d{1,3})(?!\.?\d)(?!\w)")

#: RFC 3464 §2.3.3 actions that mean the recipient did not get the message.
#: "expired" is not in the RFC but SendGrid writes it for a queue timeout.
FAILING_ACTIONS: Final = ("failed", "delayed", "expired")

_FIELD_RE: Final = re.compile(r"^([A-Za-z0-9-]+)[ \t]*:[ \t]*(.*)$")
_RECIPIENT_FIELDS: Final = frozenset({"final-recipient", "original-recipient"})
_UTF8_ESCAPE_RE: Final = re.compile(r"\\x\{([0-9A-Fa-f]{1,6})\}")
_LINE_BREAK_RE: Final = re.compile(r"\r\n|\n|\r")
#: The "type;" prefix of a typed field (address-type, mta-name-type, diagnostic-type).
_TYPE_RE: Final = re.compile(r"\s*[A-Za-z0-9-]+\s*")


def _groups(text: str) -> list[dict[str, str]]:
    """Split a delivery-status body into field groups (blank-line separated, folded lines joined)."""
    groups: list[dict[str, str]] = []
    current: dict[str, str] = {}
    last: str | None = None
    for line in _LINE_BREAK_RE.split(text):
        if not line.strip():
            if current:
                groups.append(current)
            current, last = {}, None
            continue
        if line[:1] in (" ", "\t") and last is not None:
            current[last] += " " + line.strip()
            continue
        m = _FIELD_RE.match(line)
        if m:
            last = m.group(1).lower()
            # Some MTAs (AOL) omit the blank line between recipient groups: a second
            # recipient field in one group starts the next recipient (RFC 3464 §2.3).
            if last in _RECIPIENT_FIELDS and last in current:
                groups.append(current)
                current = {}
            # RFC 3464 fields appear once per group; keep the first.
            current.setdefault(last, m.group(2).strip())
    if current:
        groups.append(current)
    return groups


def typed_value(value: str | None) -> str | None:
    """Strip the "type;" prefix of address-type, mta-name-type and diagnostic-type fields."""
    if value is None:
        return None
    if ";" in value:
        kind, rest = value.split(";", 1)
        if _TYPE_RE.fullmatch(kind):
            value = rest
    return value.strip() or None


#: local@domain with a dot-atom local part (RFC 5322 §3.2.3) and LDH domain labels, no IDNA.
_ATOM: Final = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL: Final = r"(?!xn--)[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_PLAIN_ADDRESS_RE: Final = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@{_LABEL}(?:\.{_LABEL})*")


def _address(value: str | None) -> str | None:
    """An addr-spec from a typed address field, via flanker (no network: addr_spec_only)."""
    raw = typed_value(value)
    if raw is None:
        return None
    # RFC 6533 §3: utf-8-addr-xtext/unitext may carry \x{HEX} escapes.
    raw = _UTF8_ESCAPE_RE.sub(lambda m: chr(int(m.group(1), 16)), raw)
    raw = raw.strip().strip("<>").strip()
    if not raw:
        return None
    if _PLAIN_ADDRESS_RE.fullmatch(raw):
        # What flanker makes of a plain dot-atom address (it lower-cases the domain), without
        # its parser: most DSNs name nothing else. IDNA ("xn--") labels go to flanker.
        local, _, domain = raw.rpartition("@")
        return f"{local}@{domain.lower()}"
    try:
        parsed = flanker_address.parse(raw, addr_spec_only=True)
    except Exception:  # flanker's parser on odd input; keep the raw text
        parsed = None
    if parsed is not None:
        return str(parsed.address)
    return raw


def status_code(value: str | None) -> str | None:
    if not value:
        return None
    m = STATUS_RE.search(value)
    return ".".join(m.groups()) if m else None


def _recipients_from_groups(groups: list[dict[str, str]]) -> tuple[str | None, list[RecipientReport]]:
    reporting_mta: str | None = None
    recipients: list[RecipientReport] = []
    for group in groups:
        if "reporting-mta" in group and reporting_mta is None:
            reporting_mta = typed_value(group["reporting-mta"])
        if "final-recipient" not in group and "original-recipient" not in group:
            continue
        diagnostic = typed_value(group.get("diagnostic-code"))
        reported = status = status_code(group.get("status"))
        detailed = status_code(diagnostic)
        # Many MTAs write a generic Status (5.0.0, 4.4.7) next to the remote server's own
        # reply; the reply's code is the precise one when both are of the same class.
        if detailed and (status is None or (detailed[0] == status[0] and detailed != status)):
            status = detailed
        final = _address(group.get("final-recipient"))
        original = _address(group.get("original-recipient"))
        recipients.append(
            RecipientReport(
                recipient=final or original,
                original_recipient=original,
                action=(group.get("action") or "").strip().lower() or None,
                status=status,
                reported_status=reported,
                diagnostic=diagnostic,
                remote_mta=typed_value(group.get("remote-mta")),
                last_attempt=group.get("last-attempt-date"),
            )
        )
    return reporting_mta, recipients


def read(text: str) -> tuple[str | None, list[RecipientReport]]:
    """(Reporting-MTA, one record per recipient group) of a delivery-status body."""
    return _recipients_from_groups(_groups(text))
