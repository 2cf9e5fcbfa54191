"""Amazon SES event notifications: a JSON body (optionally inside an SNS envelope) instead of a report.

SES mails bounce and delivery events as plain text whose body is the event's JSON
(https://docs.aws.amazon.com/ses/latest/dg/notification-contents.html); the table says, per
``notificationType``, where the recipients and the SMTP reply are.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Final

from gateway.bounce import delivery_status
from gateway.bounce.report import RecipientReport


@dataclass(frozen=True, slots=True)
class JsonNotification:
    """How one kind of Amazon SES event notification (JSON body, optionally SNS-wrapped) lists recipients.

    SES sends these as plain-text mail instead of RFC 3464 reports.
    """

    section: str  # the object holding the event's details
    recipients: str  # the list inside ``section``: objects or bare addresses
    action: str  # RFC 3464 action for each recipient
    is_bounce: bool
    response: str | None = None  # field of ``section`` with the SMTP reply (status source)


JSON_NOTIFICATIONS: Final[dict[str, JsonNotification]] = {
    "Bounce": JsonNotification("bounce", "bouncedRecipients", "failed", is_bounce=True),
    "Delivery": JsonNotification(
        "delivery", "recipients", "delivered", is_bounce=False, response="smtpResponse"
    ),
}


def read(text: str) -> tuple[bool, list[RecipientReport]] | None:
    """An Amazon SES event notification (JSON body, possibly inside an SNS envelope).

    Returns (is_bounce, recipients), or None when the text is not such a notification.
    """
    start = text.find("{")
    if start < 0 or text[:start].strip() or "notificationType" not in text:
        return None
    try:
        doc, _ = json.JSONDecoder(strict=False).raw_decode(text, start)
        if isinstance(doc, dict) and isinstance(doc.get("Message"), str):  # SNS envelope
            doc = json.loads(doc["Message"], strict=False)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    rule = JSON_NOTIFICATIONS.get(str(doc.get("notificationType")))
    section = doc.get(rule.section) if rule is not None else None
    if rule is None or not isinstance(section, dict):
        return None
    response = str(section.get(rule.response, "")) if rule.response else ""
    recipients: list[RecipientReport] = []
    for item in section.get(rule.recipients) or []:
        entry = item if isinstance(item, dict) else {"emailAddress": item}
        diagnostic = delivery_status.typed_value(str(entry.get("diagnosticCode") or response)) or None
        status = delivery_status.status_code(str(entry.get("status") or "")) or delivery_status.status_code(
            diagnostic
        )
        recipients.append(
            RecipientReport(
                recipient=str(entry.get("emailAddress") or "") or None,
                action=str(entry.get("action") or rule.action),
                status=status,
                reported_status=status,
                diagnostic=diagnostic,
                remote_mta=delivery_status.typed_value(str(section.get("reportingMTA") or "")) or None,
            )
        )
    return rule.is_bounce and bool(recipients), recipients
