"""Dates in the reader's language, and the language that comes first, chosen from the original."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.bounce.parse import parse
from gateway.bounce.report import OriginalMessage
from gateway.config import ExplainSettings, load_settings
from gateway.explain import locale
from tests.advice_reports import flat_html, flat_text, rendered, report
from tests.positives import crlf, delivery_status, multipart, part, root_headers, status_group

EN_FIRST, JA_FIRST = ("en", "ja"), ("ja", "en")


def test_dates_in_each_language_with_the_zone() -> None:
    when = datetime(2026, 11, 30, 15, 4, tzinfo=UTC)
    assert locale.format_datetime(when, "ja") == "2026年11月30日 15:04 (UTC)"
    assert locale.format_datetime(when, "en") == "30 Nov 2026 15:04 (UTC)"
    tokyo = when.astimezone(timezone(timedelta(hours=9)))
    assert locale.format_datetime(tokyo, "ja") == "2026年12月1日 00:04 (UTC+09:00)"
    india = datetime(2026, 1, 2, 3, 4, tzinfo=timezone(timedelta(hours=-3, minutes=-30)))
    assert locale.format_datetime(india, "en") == "2 Jan 2026 03:04 (UTC-03:30)"
    assert locale.format_datetime(datetime(2026, 1, 2, 3, 4), "en") == "2 Jan 2026 03:04 (UTC)"  # naive: UTC


@given(when=st.datetimes(timezones=st.none() | st.timezones()), lang=st.sampled_from(["en", "ja"]))
def test_the_time_of_day_is_what_strftime_writes(when: datetime, lang: str) -> None:
    """format_datetime() writes the hour and minute by hand: as strftime("%H:%M") would."""
    assert f" {when:%H:%M} (" in locale.format_datetime(when, lang)


@pytest.mark.parametrize(
    ("header", "en", "ja"),
    [
        (
            "Mon, 30 Nov 2026 10:02:00 +0900",
            "30 Nov 2026 10:02 (UTC+09:00)",
            "2026年11月30日 10:02 (UTC+09:00)",
        ),
        ("30 Nov 2026 01:02:03 -0000", "30 Nov 2026 01:02 (UTC)", "2026年11月30日 01:02 (UTC)"),
        ("Tue, 1 Dec 2026 23:59:59 GMT", "1 Dec 2026 23:59 (UTC)", "2026年12月1日 23:59 (UTC)"),
    ],
)
def test_the_original_date_header_in_each_language(header: str, en: str, ja: str) -> None:
    assert locale.format_header_date(header, "en") == en
    assert locale.format_header_date(header, "ja") == ja


@pytest.mark.parametrize("header", ["", "yesterday", "Mon, 99 Foo 2026 99:99:99 +9999", "\x00"])
def test_an_unreadable_date_header_is_shown_as_it_came(header: str) -> None:
    assert locale.format_header_date(header, "ja") is None
    block = rendered(report("mailbox", date=header or None))
    if header.strip("\x00"):
        assert f"送信日時: {header}" in block.text and f"sent: {header}" in block.text
    else:
        assert "送信日時" not in block.text and "sent:" not in block.text


def test_the_block_dates_follow_the_reader() -> None:
    block = rendered(report("group"))
    text, html = flat_text(block.text), flat_html(block.html)
    assert "explained at: 30 Nov 2026 15:04 (UTC)" in text and "explained at 30 Nov 2026 15:04 (UTC)" in html
    assert (
        "説明の追加日時: 2026年11月30日 15:04 (UTC)" in text
        and "説明の追加日時 2026年11月30日 15:04 (UTC)" in html
    )
    for part_text in (text, html):
        assert (
            "30 Nov 2026 10:02 (UTC+09:00)" in part_text and "2026年11月30日 10:02 (UTC+09:00)" in part_text
        )


@pytest.mark.parametrize(
    ("original", "order"),
    [
        (None, EN_FIRST),
        (OriginalMessage(sender="a@example.org"), EN_FIRST),
        (OriginalMessage(content_language="ja-JP"), JA_FIRST),
        (OriginalMessage(content_language="ja, en"), JA_FIRST),
        (OriginalMessage(content_language="en", sender="a@example.co.jp", charset="iso-2022-jp"), EN_FIRST),
        (OriginalMessage(charset="iso-2022-jp"), JA_FIRST),
        (OriginalMessage(charset="Shift_JIS"), JA_FIRST),
        (OriginalMessage(charset="cp932"), JA_FIRST),
        (OriginalMessage(charset="euc-jp"), JA_FIRST),
        (OriginalMessage(charset="utf-8", sender="Taro <taro@example.co.jp>"), JA_FIRST),
        (OriginalMessage(charset="utf-8", sender="taro@example.jp.evil.example"), EN_FIRST),
        (OriginalMessage(content_language="fr", sender="a@example.org"), EN_FIRST),  # not configured
        (OriginalMessage(content_language="de", charset="shift_jis"), JA_FIRST),  # the next signal decides
    ],
)
def test_language_order_from_the_original(original: OriginalMessage | None, order: tuple[str, str]) -> None:
    assert locale.language_order(original, ["en", "ja"], "auto") == order
    # "configured" always keeps the configured order, and one language is one language.
    assert locale.language_order(original, ["en", "ja"], "configured") == EN_FIRST
    assert locale.language_order(original, ["en"], "auto") == ("en",)


def test_a_japanese_original_puts_japanese_first_in_both_parts() -> None:
    block = rendered(report("mailbox", content_language="ja"))
    for part_text in (block.text, block.html):
        assert part_text.index("お送りいただいたメッセージ") < part_text.index(
            "Your message was not delivered"
        )
    block = rendered(report("mailbox", content_language="ja"), language_order="configured")
    assert block.text.index("Your message was not delivered") < block.text.index("お送りいただいたメッセージ")
    block = rendered(report("mailbox"))
    assert block.text.index("Your message was not delivered") < block.text.index("お送りいただいたメッセージ")


def test_the_setting() -> None:
    assert ExplainSettings().language_order == "auto"
    assert load_settings(
        environ={"BOUNCEGW_EXPLAIN__LANGUAGE_ORDER": "configured"}
    ).explain.language_order == ("configured")
    with pytest.raises(ValueError, match="language_order"):
        ExplainSettings(language_order="ja-first")  # type: ignore[arg-type]


def _bounce_with_original(headers: str) -> bytes:
    rcpt = "team@contoso.example"
    human = part("text/plain", "Your message couldn't be delivered.\r\n")
    ds = "Content-Type: message/delivery-status\r\n\r\n" + delivery_status(
        [status_group(rcpt, "5.7.133", "550 5.7.133 RESOLVER.RST.SenderNotAuthenticatedForGroup")]
    )
    original = part("text/rfc822-headers", crlf(headers))
    body = multipart("report", "rep-b1", [human, ds, original]).split("\r\n\r\n", 1)[1]
    return (root_headers("Undeliverable", "rep-b1") + "\r\n" + body).encode("utf-8")


def test_the_parser_reads_the_originals_language_and_charset() -> None:
    data = _bounce_with_original(
        "From: =?ISO-2022-JP?B?GyRCOzNFRBsoQg==?= <taro@example.org>\nSubject: x\n"
        "Content-Language: ja-JP\nMessage-ID: <o@example.org>\n"
    )
    original = parse(data).original
    assert original is not None
    assert original.content_language == "ja-JP" and original.charset == "iso-2022-jp"
    data = _bounce_with_original(
        'From: a@example.org\nSubject: x\nContent-Type: text/plain; charset="Shift_JIS"\nMessage-ID: <o@x>\n'
    )
    original = parse(data).original
    assert original is not None and original.charset == "shift_jis" and original.content_language is None
    original = parse(_bounce_with_original("From: a@example.org\nSubject: plain\n")).original
    assert original is not None and original.charset is None
