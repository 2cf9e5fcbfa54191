"""Data tables for recognising the "recipient only accepts authenticated senders" family.

Behaviour that varies by case lives here as data; ``gateway.classify`` and
``gateway.dsn`` only walk these tables. Sources: Microsoft's published NDR
documentation (5.7.12, 5.7.124, 5.7.133-5.7.136, legacy RESOLVER.RST.AuthRequired)
and the IANA enhanced status registry (RFC 3463 / RFC 5248, where X.7.12 is
"password transition needed" and X.7.13 is "user account disabled").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from gateway.report import CATEGORY_SENDER_NOT_ALLOWED, CATEGORY_SENDER_NOT_AUTHENTICATED


@dataclass(frozen=True, slots=True)
class CodeRule:
    """What one whole enhanced status code means when it fails a recipient."""

    category: str
    variant: str
    #: The code only has Microsoft's meaning when the bounce shows Microsoft evidence
    #: (5.7.12 and 5.7.13 are registered by IANA with other meanings).
    needs_microsoft: bool


#: Whole-code table: 5.7.124 is not 5.7.12 (the regex below never matches a prefix).
CODE_RULES: Final[dict[str, CodeRule]] = {
    "5.7.12": CodeRule(CATEGORY_SENDER_NOT_AUTHENTICATED, "organization", needs_microsoft=True),
    "5.7.133": CodeRule(CATEGORY_SENDER_NOT_AUTHENTICATED, "group", needs_microsoft=False),
    "5.7.134": CodeRule(CATEGORY_SENDER_NOT_AUTHENTICATED, "mailbox", needs_microsoft=False),
    "5.7.135": CodeRule(CATEGORY_SENDER_NOT_AUTHENTICATED, "public_folder", needs_microsoft=False),
    "5.7.13": CodeRule(CATEGORY_SENDER_NOT_AUTHENTICATED, "public_folder", needs_microsoft=True),
    "5.7.136": CodeRule(CATEGORY_SENDER_NOT_AUTHENTICATED, "mail_user", needs_microsoft=False),
    "5.7.124": CodeRule(CATEGORY_SENDER_NOT_ALLOWED, "allowed_senders", needs_microsoft=False),
}


@dataclass(frozen=True, slots=True)
class TokenRule:
    """An Exchange resolver token that names the case when the code alone is generic."""

    token: str  # compared case-insensitively
    #: Status codes the token may qualify (None: also when the recipient has no status).
    statuses: frozenset[str | None]
    category: str
    variant: str


TOKEN_RULES: Final[tuple[TokenRule, ...]] = (
    # Exchange 2007-2013 on-premises: "5.7.1 RESOLVER.RST.AuthRequired; authentication required".
    TokenRule(
        "RESOLVER.RST.AuthRequired",
        frozenset({"5.7.1", None}),
        CATEGORY_SENDER_NOT_AUTHENTICATED,
        "legacy",
    ),
)

#: An enhanced status code (RFC 3463 §2) as a whole token: not part of a longer
#: number ("5.7.124" never yields "5.7.12", "v5.7.12.3" yields nothing).
STATUS_RE: Final = re.compile(r"(?<![\w.])([245])\.(\d{1,3})\.(\d{1,3})(?!\.?\d)(?!\w)")
STATUS_BYTES_RE: Final = re.compile(rb"(?<![\w.])([245])\.(\d{1,3})\.(\d{1,3})(?!\.?\d)(?!\w)")

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


# ---------------------------------------------------------------------------
# Bounce detection heuristics (used by ``gateway.dsn`` for messages without a
# machine-readable delivery-status part). Each table is a list of regex
# fragments joined into one alternation, so adding an MTA's wording is a data edit.

#: RFC 3464 §2.3.3 actions that mean the recipient did not get the message.
#: "expired" is not in the RFC but SendGrid writes it for a queue timeout.
FAILING_ACTIONS: Final = ("failed", "delayed", "expired")

#: Local parts and display names of the senders that write bounces.
DAEMON_SENDERS: Final = (
    r"mailer[-_ ]?daemon",
    r"post_?master",
    r"mail[-_ ]?delivery[-_ ]?(?:system|subsystem)",
    r"mdaemon",
    r"microsoftexchange[0-9a-f]*",
    r"mailadmin",
    r"mail administrator",
)

#: Subject wordings of bounces (English and Japanese).
BOUNCE_SUBJECTS: Final = (
    r"undeliver",
    r"delivery (?:status )?notification",
    r"delivery (?:has )?failed",
    r"failure notice",
    r"returned mail",
    r"mail delivery (?:failed|failure|system)",
    r"delivery failure",
    r"non[- ]?delivery",
    r"could not be delivered",
    r"not delivered",
    r"nondeliverable",
    r"bounced",
    r"rejected",
    r"delivery problem",
    r"mail system error",
    r"message status",
    r"could not send",  # sendmail "Warning: could not send message for past 4 hours"
    r"delayed",
    r"delivery (?:status|delay)",
    r"returned",
    r"failed",
    r"permanent error",
    r"error sending",
    r"errors? from",  # Postfix "Postfix SMTP server: errors from host[addr]"
    r"delivery report",
    r"配信不能",
    r"配信できませんでした",
    r"配送エラー",
    r"エラー",
    r"不達",
    r"返送",
    r"送信できません",
    r"未配達",
)

#: Auto-replies are not bounces (RFC 3834).
AUTO_REPLY_SUBJECTS: Final = (
    r"out of (?:the )?office",
    r"auto(?:matic)?[- ]?reply",
    r"autoresponse",
    r"vacation",
    r"abwesend",
    r"away from",
    r"不在",
)

#: Subject prefixes of a person forwarding a message (a forwarded NDR is not a bounce).
FORWARD_PREFIXES: Final = (r"fwd?", r"fw", r"tr", r"wg", r"rv", r"enc", r"転送")

#: Body wordings that say a delivery failed.
FAILURE_TEXTS: Final = (
    r"could not be delivered",
    r"couldn't be delivered",
    r"can't be delivered",
    r"cannot be delivered",
    r"permanent(?:ly)? (?:error|fatal|failure)",
    r"delivery (?:to the following recipients? )?failed",
    r"undeliverable",
    r"unable to deliver",
    r"user unknown",
    r"no such user",
    r"mailbox (?:unavailable|full|is full)",
    r"failed recipient",
    r"said:",
    r"returned to sender",
    r"delivery has failed",
    r"message could not",
    r"not be delivered",
    r"could not deliver",
    r"was not delivered",
    r"delivery failure",
    r"host unknown",
    r"rejected",
    r"bounce",
    r"delayed",
    r"not yet been",
    r"did not reach the following recipient",  # Exchange 2003
    r"had (?:permanent )?(?:fatal |delivery )?errors",  # sendmail-like "addresses had delivery errors"
    r"transcript of session follows",  # sendmail, Postfix
    r"送信できませんでした",
    r"配信できませんでした",
    r"届きませんでした",
    r"宛先不明",
    r"存在しません",
)


def alternation(fragments: tuple[str, ...]) -> str:
    """One regex alternation of the fragments of a table."""
    return "|".join(f"(?:{f})" for f in fragments)


DAEMON_RE: Final = re.compile(alternation(DAEMON_SENDERS), re.IGNORECASE)
BOUNCE_SUBJECT_RE: Final = re.compile(alternation(BOUNCE_SUBJECTS), re.IGNORECASE)
AUTO_REPLY_SUBJECT_RE: Final = re.compile(alternation(AUTO_REPLY_SUBJECTS), re.IGNORECASE)
FORWARD_RE: Final = re.compile(r"^\s*(?:" + alternation(FORWARD_PREFIXES) + r")\s*[:：]", re.IGNORECASE)
FAILURE_TEXT_RE: Final = re.compile(alternation(FAILURE_TEXTS), re.IGNORECASE)


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
