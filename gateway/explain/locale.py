"""Dates in the reader's language, and which language of the block comes first.

Dates: the Japanese part writes ``2026年11月30日 15:04 (UTC)``, the English part
``30 Nov 2026 15:04 (UTC)``; both always name the time zone. The original's Date header
(RFC 5322 section 3.3) is shown in the sender's own zone (``UTC+09:00``), as the sender
wrote it; a date that does not parse is shown as it came (sanitised by the caller).

Order: the languages configured in ``[explain] languages`` are kept, but with
``language_order = "auto"`` the language the returned original was written in goes first.
Only header fields the parser already read are looked at, in this order, and the first that
names a configured language decides:

1. the original's ``Content-Language`` (RFC 3282), its first tag;
2. its charset (the Content-Type parameter or an RFC 2047 encoded word in Subject/From):
   ISO-2022-JP, Shift_JIS, EUC-JP and their aliases mean Japanese;
3. the sender's domain: ``.jp`` means Japanese.

When nothing says otherwise the configured order stands (``"configured"`` always keeps it).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Final

from gateway.bounce.report import OriginalMessage
from gateway.explain.commands import address_of

#: Charsets used (almost) only for Japanese text (IANA names and common aliases, lower case).
JAPANESE_CHARSETS: Final = frozenset(
    {
        "iso-2022-jp",
        "iso-2022-jp-1",
        "iso-2022-jp-2",
        "iso-2022-jp-3",
        "iso-2022-jp-2004",
        "csiso2022jp",
        "shift_jis",
        "shift-jis",
        "sjis",
        "x-sjis",
        "ms_kanji",
        "csshiftjis",
        "windows-31j",
        "cp932",
        "ms932",
        "euc-jp",
        "x-euc-jp",
        "cseucpkdfmtjapanese",
    }
)

#: Country-code domains whose mail is usually written in a language of the block.
DOMAIN_LANGUAGES: Final[dict[str, str]] = {"jp": "ja"}

_EN_MONTHS: Final = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _zone(offset: timedelta | None) -> str:
    if not offset:
        return "UTC"
    minutes = int(offset.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    hours, rest = divmod(abs(minutes), 60)
    return f"UTC{sign}{hours:02d}:{rest:02d}"


def format_datetime(when: datetime, lang: str) -> str:
    """``when`` in ``lang``'s usual form, zone stated; naive datetimes are taken as UTC."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    zone = _zone(when.utcoffset())
    # "%H:%M" by hand: strftime() costs more than the rest of the function (every bounce's block
    # shows the time in each language).
    clock = f"{when.hour:02d}:{when.minute:02d}"
    if lang == "ja":
        return f"{when.year}年{when.month}月{when.day}日 {clock} ({zone})"
    return f"{when.day} {_EN_MONTHS[when.month - 1]} {when.year} {clock} ({zone})"


def format_header_date(value: str | None, lang: str) -> str | None:
    """An RFC 5322 Date header in ``lang``'s form (in its own zone), or None when it does not parse."""
    if not value:
        return None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return format_datetime(when, lang)


def _first_tag(value: str | None) -> str | None:
    if not value:
        return None
    first = value.split(",", 1)[0].strip().lower()
    return first.split("-", 1)[0] or None


def _charset_language(charset: str | None) -> str | None:
    if charset and charset.strip().strip('"').lower() in JAPANESE_CHARSETS:
        return "ja"
    return None


def _domain_language(sender: str | None) -> str | None:
    address = address_of(sender)
    if not address or "@" not in address:
        return None
    tld = address.rsplit(".", 1)[-1].lower().rstrip(">")
    return DOMAIN_LANGUAGES.get(tld)


def reader_language(original: OriginalMessage | None, configured: Sequence[str]) -> str | None:
    """The configured language the returned original points to, or None when nothing does."""
    if original is None:
        return None
    bases = {lang.split("-", 1)[0].lower(): lang for lang in configured}
    for found in (
        _first_tag(original.content_language),
        _charset_language(original.charset),
        _domain_language(original.sender),
    ):
        if found and found in bases:
            return bases[found]
    return None


def language_order(original: OriginalMessage | None, configured: Sequence[str], rule: str) -> tuple[str, ...]:
    """The languages to render, first the reader's when ``rule`` is ``"auto"``."""
    order = tuple(configured)
    if rule != "auto" or len(order) < 2:
        return order
    first = reader_language(original, order)
    if first is None or first == order[0]:
        return order
    return (first, *(lang for lang in order if lang != first))
