"""Signs that a message is a bounce, or is not one (an auto-reply, a person forwarding an NDR).

Used for messages without a machine-readable delivery-status part, and for the subject of a
report that names no recipient. Each table is a list of regular-expression fragments joined
into one alternation, so adding an MTA's wording is a data edit.
"""

from __future__ import annotations

import re
from typing import Final

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


def is_daemon(value: str | None) -> bool:
    """The sender (From/Sender) is a mail system's, not a person's."""
    return bool(value) and bool(DAEMON_RE.search(value or ""))
