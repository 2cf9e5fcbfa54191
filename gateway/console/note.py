"""What the console shows of one incident: its explanation block, and the recipient admin's note.

The explanation block is not stored with the incident; it is rendered again by
:mod:`gateway.explain.render` from the stored fields (one recipient, the time it was recorded),
so it reads as the sender received it for this recipient. What the stored fields do not keep
(the original's Content-Language and charset, other recipients of the same bounce) makes the
only possible difference: the language order, and the other recipients' lines.

The note for the recipient's administrator is a short cover in one language (what refuses,
since when, how often) followed by the administrator's part of the block rendered in that
language alone (its steps and references; the part addressed to the sender is left out).
:func:`note_message` wraps it as a draft message (``.eml``, ``X-Unsent: 1`` so mail programs
open it for editing) addressed to the domain's postmaster (RFC 5321 section 4.5.1), ready to
forward.
"""

from __future__ import annotations

import re
import textwrap
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from typing import Final

from gateway.bounce.report import BounceReport, OriginalMessage, RecipientReport
from gateway.config import ExplainSettings
from gateway.explain import locale
from gateway.explain.render import MAX_ADDRESS, build_environment, render, sanitise
from storage.incidents import IncidentRecord
from storage.problems import ProblemRow

#: A host name fit for a To: header (LDH labels, RFC 1035 section 2.3.1); anything else gets no To:.
_HOSTNAME = re.compile(r"(?=.{1,253}\Z)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}\Z")

_COVER: Final[dict[str, str]] = {
    "en": (
        "Hello,\n\n"
        "Mail from our organisation to {address} is refused by your Microsoft 365 / Exchange "
        "organisation with status {status}: the address accepts mail only from authenticated "
        "senders.\n"
        "We have seen {bounces} such {bounce_word} between {first} and {last}, for {senders} of "
        "our senders.\n\n"
        "The steps below change the setting. Could you make the change, or tell us if refusing "
        "outside mail is intended? Thank you.\n"
    ),
    "ja": (
        "ご担当者様\n\n"
        "当方から {address} 宛てのメールが、貴組織の Microsoft 365 / Exchange によりステータス "
        "{status} で拒否されています。このアドレスは認証済みの送信者からのメールだけを受け付ける設定です。\n"
        "{first} から {last} までに、当方の送信者 {senders} 名に対して"
        "この通知を {bounces} 件受け取っています。\n\n"
        "設定の変更手順を以下に記します。変更をお願いできますでしょうか。外部からのメールを"
        "拒否する設定が意図どおりでしたら、その旨お知らせください。\n"
    ),
}

_SUBJECT: Final[dict[str, str]] = {
    "en": "Mail to {address} is refused: it accepts only authenticated senders",
    "ja": "{address} 宛てのメールが拒否されています（認証済みの送信者のみ受信）",
}


def _report(record: IncidentRecord) -> BounceReport:
    """The stored fields as the one-recipient report the explanation is rendered from."""
    recipient = RecipientReport(
        recipient=record.failed_recipient,
        original_recipient=record.original_recipient,
        action="failed",
        status=record.status,
        reported_status=record.reported_status,
        diagnostic=record.diagnostic,
        remote_mta=record.remote_mta,
        category=record.category,
        variant=record.variant,
    )
    original = OriginalMessage(
        message_id=record.original_message_id,
        sender=record.original_from or record.sender,
        subject=record.original_subject,
        date=record.original_date,
    )
    return BounceReport(
        is_bounce=True,
        reporting_mta=record.reporting_mta,
        message_id=record.bounce_message_id,
        original=original,
        recipients=[recipient],
    )


def explanation(record: IncidentRecord, settings: ExplainSettings) -> str:
    """The block's plain text as the gateway's settings render it for this incident."""
    if not record.category:
        return ""
    return render(_report(record), incident_ids=[record.id], now=record.recorded_at, settings=settings).text


def _for_the_admin(block: str, lang: str, settings: ExplainSettings) -> str:
    """The block from its "steps for the administrator" heading on: the sender's part and the
    frame's rules dropped. The heading is the templates' own (``label.admin_for`` of
    ``<lang>/content.j2``, an override directory's if it has one); not found, the whole block."""
    content = build_environment(settings.template_dir).get_template(f"{lang}/content.j2")
    heading = str(content.module.label["admin_for"]).split("{", 1)[0]  # type: ignore[attr-defined]
    lines = block.splitlines()
    start = next((i for i, line in enumerate(lines) if heading and line.startswith(heading)), 0)
    return "\n".join(line for line in lines[start:] if not (line and not line.strip("="))) + "\n"


def note_text(record: IncidentRecord, group: ProblemRow | None, lang: str, settings: ExplainSettings) -> str:
    """The cover and the administrator's part of the block, both in ``lang``."""
    only = settings.model_copy(update={"languages": [lang], "language_order": "configured"})
    first = group.first_seen if group else record.recorded_at
    last = group.last_seen if group else record.recorded_at
    cover = _COVER[lang].format(
        address=sanitise(record.failed_recipient or "?", MAX_ADDRESS),
        status=sanitise(record.status or "?", 16),
        bounces=group.bounces if group else 1,
        bounce_word="bounce" if group is None or group.bounces == 1 else "bounces",
        senders=group.senders if group else 1,
        first=locale.format_datetime(first, lang),
        last=locale.format_datetime(last, lang),
    )
    if lang == "en":  # the block's width (gateway/templates/en/content.j2); Japanese is not wrapped
        cover = "\n".join(textwrap.fill(line, 72) if line else line for line in cover.split("\n"))
    return cover + "\n" + _for_the_admin(explanation(record, only), lang, only)


def note_message(record: IncidentRecord, text: str, lang: str, *, now: datetime | None = None) -> bytes:
    """A draft message holding ``text``: To the domain's postmaster when the domain is a host name."""
    message = EmailMessage(policy=SMTP)
    domain = (record.recipient_domain or "").lower()
    if _HOSTNAME.match(domain):
        message["To"] = f"postmaster@{domain}"
    message["Subject"] = _SUBJECT[lang].format(address=sanitise(record.failed_recipient or "?", MAX_ADDRESS))
    message["Date"] = (now or datetime.now(UTC)).strftime("%a, %d %b %Y %H:%M:%S +0000")
    message["X-Unsent"] = "1"
    message["Content-Language"] = lang
    message.set_content(text, charset="utf-8")
    return message.as_bytes()
