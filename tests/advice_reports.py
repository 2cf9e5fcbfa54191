"""Bounce reports built directly for the advice tests (no bytes, no parser): one per variant."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from html import unescape

from gateway.bounce.report import (
    CATEGORY_SENDER_NOT_ALLOWED,
    CATEGORY_SENDER_NOT_AUTHENTICATED,
    FORMAT_RFC3464,
    BounceReport,
    OriginalMessage,
    RecipientReport,
)
from gateway.config import ExplainSettings
from gateway.explain import render

NOW = datetime(2026, 11, 30, 15, 4, tzinfo=UTC)

#: Variant of the block -> (classifier variant, category, status). "sender_not_allowed" is the
#: block's name for the classifier's 5.7.124 "allowed_senders"; 5.7.193 is "microsoft365_group".
VARIANTS: dict[str, tuple[str, str, str]] = {
    "organization": ("organization", CATEGORY_SENDER_NOT_AUTHENTICATED, "5.7.12"),
    "group": ("group", CATEGORY_SENDER_NOT_AUTHENTICATED, "5.7.133"),
    "microsoft365_group": ("microsoft365_group", CATEGORY_SENDER_NOT_AUTHENTICATED, "5.7.193"),
    "mailbox": ("mailbox", CATEGORY_SENDER_NOT_AUTHENTICATED, "5.7.134"),
    "public_folder": ("public_folder", CATEGORY_SENDER_NOT_AUTHENTICATED, "5.7.135"),
    "mail_user": ("mail_user", CATEGORY_SENDER_NOT_AUTHENTICATED, "5.7.136"),
    "legacy": ("legacy", CATEGORY_SENDER_NOT_AUTHENTICATED, "5.7.1"),
    "sender_not_allowed": ("allowed_senders", CATEGORY_SENDER_NOT_ALLOWED, "5.7.124"),
}


def report(
    variant: str,
    address: str = "team@contoso.example",
    *,
    sender: str | None = "Taro Yamada <taro.yamada@example.org>",
    subject: str = "Quarterly report",
    date: str | None = "Mon, 30 Nov 2026 10:02:00 +0900",
    content_language: str | None = None,
    charset: str | None = None,
) -> BounceReport:
    classifier_variant, category, status = VARIANTS[variant]
    rcpt = RecipientReport(
        recipient=address,
        action="failed",
        status=status,
        diagnostic=f"smtp; 550 {status} test",
        remote_mta="dns; TYCPR01MB0001.jpnprd01.prod.outlook.com",
        category=category,
        variant=classifier_variant,
    )
    return BounceReport(
        is_bounce=True,
        format=FORMAT_RFC3464,
        reporting_mta="dns; TYCPR01MB0001.jpnprd01.prod.outlook.com",
        original=OriginalMessage(
            message_id="<orig@example.org>",
            sender=sender,
            subject=subject,
            date=date,
            content_language=content_language,
            charset=charset,
        ),
        recipients=[rcpt],
    )


def rendered(bounce: BounceReport, lang: str | None = None, **settings: object) -> render.Rendered:
    languages = [lang] if lang else ["en", "ja"]
    return render.render(
        bounce,
        incident_ids=["01JTESTINCIDENT"],
        now=NOW,
        settings=ExplainSettings(languages=languages, **settings),  # type: ignore[arg-type]
    )


_TAG = re.compile(r"<[^>]+>")


def flat_text(text: str) -> str:
    """Whitespace collapsed (the English text is wrapped at 72 columns)."""
    return " ".join(text.split())


def flat_html(fragment: str) -> str:
    """The HTML block's readable text: tags dropped, entities undone, whitespace collapsed."""
    return " ".join(unescape(_TAG.sub(" ", fragment)).split())
