"""annotate(): the bilingual block in every layout and encoding, nothing else touched."""

from __future__ import annotations

import email
import re
from datetime import UTC, datetime
from email import policy
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from gateway.bounce.report import HumanPart
from gateway.config import ExplainSettings, load_settings
from gateway.explain import AlreadyExplained, ExplainError, annotate, headers, render, splice, validate
from tests.explain_checks import (
    assert_outside_identical,
    delivery_status_fields,
    human_texts,
    leaves,
    longest_line,
    parse,
)
from tests.explain_samples import VARIANT_CODES, make, recipient

NOW = datetime(2025, 1, 2, 3, 4, tzinfo=UTC)
BOTH = ExplainSettings()
EN = ExplainSettings(languages=["en"])
JA = ExplainSettings(languages=["ja"])

#: Words each variant's guidance must contain (after the address is filled in).
EXPECTED: dict[tuple[str, str], list[str]] = {
    ("organization", "en"): [
        "Get-Recipient -Identity 'x@example.jp'",
        "Require that all senders are authenticated",
    ],
    ("organization", "ja"): ["Get-Recipient -Identity 'x@example.jp'", "[すべての送信者に認証を要求する]"],
    ("group", "en"): [
        "Set-DistributionGroup -Identity 'x@example.jp' -RequireSenderAuthenticationEnabled $false",
        "Senders inside and outside of my organization",
        "group's owner",
    ],
    ("group", "ja"): [
        "Set-UnifiedGroup -Identity 'x@example.jp'",
        "[配信管理]",
        "[組織内および組織外の送信者]",
    ],
    ("mailbox", "en"): ["Set-Mailbox -Identity 'x@example.jp' -RequireSenderAuthenticationEnabled $false"],
    ("mailbox", "ja"): [
        "[メールボックスの機能] を開き、[メッセージの配信制限] の [詳細の表示]",
        "[次の一覧の送信者のみ]",
    ],
    ("public_folder", "en"): [
        "Set-MailPublicFolder -Identity 'x@example.jp' -RequireSenderAuthenticationEnabled $false",
        "Add-PublicFolderClientPermission",
        "Folder permissions",
        "Anonymous",
    ],
    ("public_folder", "ja"): [
        "Add-PublicFolderClientPermission",
        "[フォルダーのアクセス許可]",
        "[パブリック フォルダー]",
    ],
    ("mail_user", "en"): ["Set-MailUser -Identity 'x@example.jp'", "Mail flow settings"],
    ("mail_user", "ja"): ["Set-MailUser -Identity 'x@example.jp'", "[メール フローの設定]", "[連絡先]"],
    ("legacy", "en"): ["Exchange Management Console", "delivery to this address is restricted"],
    ("legacy", "ja"): ["Exchange 管理コンソール", "このアドレスへの配信は制限されています"],
    ("sender_not_allowed", "en"): ["-AcceptMessagesOnlyFromSendersOrMembers @{Add=", "listed senders"],
    ("sender_not_allowed", "ja"): ["New-MailContact", "[配信管理] で [追加] (+)", "許可された送信者"],
}


def run(sample, settings=BOTH, ids=("01J0INCIDENT",)):  # type: ignore[no-untyped-def]
    out = annotate(sample.data, sample.report, incident_ids=list(ids), now=NOW, settings=settings)
    assert_outside_identical(sample.data, out, sample.report.human_parts)
    assert delivery_status_fields(out) == delivery_status_fields(sample.data)
    assert out.count(b"X-Bouncegw-Explained:") == 1
    assert headers.already_explained(out)
    return out


@pytest.mark.parametrize("lang", ["en", "ja"])
@pytest.mark.parametrize("variant", list(VARIANT_CODES))
def test_each_variant_in_each_language(variant: str, lang: str) -> None:
    sample = make([recipient("x@example.jp", variant)])
    out = run(sample, ExplainSettings(languages=[lang]))
    texts = human_texts(out)
    plain, html = texts["text/plain"][0], texts["text/html"][0]
    # English text is wrapped at 72 columns: compare with whitespace collapsed.
    plain, html = " ".join(plain.split()), " ".join(html.split())
    for needle in EXPECTED[(variant, lang)]:
        assert needle in plain, needle
        assert needle.replace('"', "&#34;").replace("'", "&#39;").replace(">", "&gt;") in html, needle
    status = VARIANT_CODES[variant][0]
    assert f"X-Bouncegw-Explained: {status}; incident=01J0INCIDENT".encode() in out
    # The other language is absent when only one is configured.
    other = "メッセージは配信されませんでした" if lang == "en" else "Your message was not delivered"
    assert other not in plain and other not in html
    # Reference line: incident, time, original subject and date.
    # Dates in the reader's language, the zone stated.
    when, sent = (
        ("2 Jan 2025 03:04 (UTC)", "3 Jun 2024 10:00 (UTC+09:00)")
        if lang == "en"
        else ("2025年1月2日 03:04 (UTC)", "2024年6月3日 10:00 (UTC+09:00)")
    )
    for needle in ("01J0INCIDENT", when, "Quarterly report", sent):
        assert needle in plain and needle in html
    # The block comes first in text/plain and right after <body ...> in HTML.
    assert plain.startswith("=====")
    assert html.index('<body dir="ltr" style="font-family: Calibri">') < html.index("bouncegw-explained")
    assert html.index("bouncegw-explained") < html.index("couldn't be delivered")


def test_both_languages_by_default_in_order() -> None:
    out = run(make([recipient("x@example.jp", "mailbox")]))
    plain = human_texts(out)["text/plain"][0]
    assert plain.index("Your message was not delivered") < plain.index("メッセージは配信されませんでした")
    out = run(make([recipient("x@example.jp", "mailbox")]), ExplainSettings(languages=["ja", "en"]))
    plain = human_texts(out)["text/plain"][0]
    assert plain.index("メッセージは配信されませんでした") < plain.index("Your message was not delivered")


def test_multi_recipient_one_block_each_with_its_guidance() -> None:
    rcpts = [
        recipient("team@example.jp", "group"),
        recipient("boss@example.jp", "mailbox"),
        recipient("pf@example.jp", "public_folder"),
    ]
    out = run(make(rcpts), ids=("ID-A", "ID-B", "ID-C"))
    plain = human_texts(out)["text/plain"][0]
    assert plain.count("Your message was not delivered") == 1  # one block per bounce
    assert "Set-DistributionGroup -Identity 'team@example.jp'" in plain
    assert "Set-Mailbox -Identity 'boss@example.jp'" in plain
    assert "Add-PublicFolderClientPermission" in plain and "pf@example.jp" in plain
    for incident, address in (("ID-A", "team"), ("ID-B", "boss"), ("ID-C", "pf")):
        assert f"{incident} ({address}@example.jp)" in plain
    assert b"X-Bouncegw-Explained: 5.7.133,5.7.134,5.7.135; incident=ID-A,ID-B,ID-C" in out


def test_long_incident_list_is_folded_within_78_columns() -> None:
    rcpts = [recipient(f"user{i}@example.jp", "mailbox") for i in range(12)]
    ids = [f"01J{i:023d}" for i in range(12)]
    out = run(make(rcpts, layout="text"), ids=ids)
    field = parse(out)["X-Bouncegw-Explained"]
    assert [i.strip() for i in field.split("incident=")[1].split(",")] == ids
    header_block = out.split(b"\r\n\r\n", 1)[0]
    assert all(len(line) <= 78 for line in header_block.split(b"\r\n")[:5])


def test_no_incident_recorded_omits_the_parameter() -> None:
    sample = make([recipient("x@example.jp", "group")])
    out = annotate(sample.data, sample.report, incident_ids=None, now=NOW, settings=BOTH)
    assert out.startswith(b"X-Bouncegw-Explained: 5.7.133\r\nFrom: ")
    out = annotate(sample.data, sample.report, incident_ids=[], now=NOW, settings=BOTH)
    assert out.startswith(b"X-Bouncegw-Explained: 5.7.133\r\n")


@pytest.mark.parametrize(
    ("charset", "cte", "expect_charset", "expect_cte"),
    [
        ("us-ascii", "7bit", "utf-8", "quoted-printable"),
        ("us-ascii", "quoted-printable", "utf-8", "quoted-printable"),
        ("us-ascii", "base64", "utf-8", "base64"),
        ("utf-8", "base64", "utf-8", "base64"),
        ("utf-8", "8bit", "utf-8", "8bit"),
        ("iso-8859-1", "quoted-printable", "utf-8", "quoted-printable"),
        ("windows-1252", "7bit", "utf-8", "quoted-printable"),
    ],
)
def test_encodings(charset: str, cte: str, expect_charset: str, expect_cte: str) -> None:
    sample = make([recipient("x@example.jp", "mailbox")], charset=charset, cte=cte)
    out = run(sample)
    for part in leaves(parse(out)):
        if part.get_content_type() in ("text/plain", "text/html"):
            assert part.get_content_charset() == expect_charset
            assert part["Content-Transfer-Encoding"] == expect_cte
    texts = human_texts(out)
    assert "Diagnostic information for administrators" in texts["text/plain"][0]  # original text kept
    assert "メッセージは配信されませんでした" in texts["text/plain"][0]
    if expect_cte != "8bit":
        assert out.isascii()  # 7-bit clean
    assert longest_line(out) <= 998


def test_iso_2022_jp_stays_iso_2022_jp() -> None:
    for cte in ("7bit", "quoted-printable", "base64"):
        sample = make([recipient("x@example.jp", "group")], charset="iso-2022-jp", cte=cte, japanese=True)
        out = run(sample)
        assert out.isascii()
        for part in leaves(parse(out)):
            if part.get_content_type() in ("text/plain", "text/html"):
                assert part.get_content_charset() == "iso-2022-jp"
                assert part["Content-Transfer-Encoding"] == cte
        plain = human_texts(out)["text/plain"][0]
        assert "[組織内および組織外の送信者]" in plain
        assert "次の受信者またはグループへの配信に失敗しました" in plain  # the original Japanese text


def test_lf_line_endings_are_kept() -> None:
    sample = make([recipient("x@example.jp", "mailbox")], nl=b"\n", cte="quoted-printable")
    out = run(sample)
    assert b"\r" not in out
    assert out.startswith(b"X-Bouncegw-Explained: 5.7.134; incident=01J0INCIDENT\nFrom:")


def test_text_only_report() -> None:
    sample = make([recipient("x@example.jp", "mail_user")], layout="text", cte="base64")
    out = run(sample)
    assert len(human_texts(out)["text/plain"]) == 1
    assert "Set-MailUser" in human_texts(out)["text/plain"][0]


def test_rfc6533_global_delivery_status() -> None:
    rcpt = recipient("ユーザー@例え.jp", "mailbox")
    sample = make([rcpt], layout="rfc6533", charset="utf-8", cte="8bit")
    out = run(sample)
    plain = human_texts(out)["text/plain"][0]
    assert "Set-Mailbox -Identity 'ユーザー@例え.jp'" in plain  # RFC 6531 addresses qualify too
    gds = [p for p in parse(out).walk() if p.get_content_type() == "message/global-delivery-status"]
    assert len(gds) == 1


def test_non_mime_text_bounce_gets_mime_headers() -> None:
    sample = make([recipient("x@example.jp", "legacy")], layout="non_mime")
    out = run(sample)
    msg = parse(out)
    assert msg.get_content_charset() == "utf-8"
    assert msg["Content-Transfer-Encoding"] == "quoted-printable"
    assert msg["MIME-Version"] == "1.0"
    assert "Exchange Management Console" in human_texts(out)["text/plain"][0]


def test_html_without_body_tag_gets_block_first() -> None:
    sample = make([recipient("x@example.jp", "mailbox")], html_without_body=True)
    html = human_texts(run(sample))["text/html"][0]
    assert html.lstrip().startswith('<div class="bouncegw-explained"')


def test_html_meta_charset_follows_the_switch_to_utf8() -> None:
    html = human_texts(run(make([recipient("x@example.jp", "mailbox")])))["text/html"][0]
    assert 'content="text/html; charset=utf-8"' in html
    assert "charset=us-ascii" not in html


def test_preamble_and_epilogue_kept() -> None:
    sample = make(
        [recipient("x@example.jp", "mailbox")], preamble=b"preamble text\r\n", epilogue=b"epilogue text\r\n"
    )
    out = run(sample)
    assert out.endswith(b"--rpt-b1c2d3--\r\nepilogue text\r\n")
    assert b"\r\n\r\npreamble text\r\n--rpt-b1c2d3\r\n" in out


@pytest.mark.parametrize(
    "evil",
    [
        "<script>alert(1)</script>@example.jp",
        "x@example.jp\r\nBcc: victim@example.org",
        "x@example.jp\x00\x1b[31m\x07",
        "{{ 7*7 }}@example.jp",
        "{% raw %}x{% endraw %}@example.jp",
        "x\u202eevil\u200b@example.jp",
    ],
)
def test_injection_attempts_are_neutralised(evil: str) -> None:
    rcpt = recipient(evil, "mailbox")
    rcpt.diagnostic = "smtp; 550 5.7.134 <img src=x onerror=alert(1)>\r\nX-Injected: 1"
    sample = make([recipient("x@example.jp", "mailbox")], subject="{{ 7*7 }} <b>bold</b>")
    sample.report.recipients = [rcpt]
    out = run(sample)
    texts = human_texts(out)
    html, plain = texts["text/html"][0], texts["text/plain"][0]
    block_html = html[html.index("bouncegw-explained") : html.index("couldn't be delivered")]
    assert "<script>" not in block_html and "<b>bold" not in block_html and "<img" not in block_html
    assert "&lt;b&gt;bold&lt;/b&gt;" in block_html
    assert "{{ 7*7 }}" in plain and "49" not in plain  # data is never template source
    block_plain = plain.split("Delivery has failed")[0]
    for bad in ("\x00", "\x1b", "\x07", "\u202e", "\u200b", "\nBcc:", "\nX-Injected"):
        assert bad not in block_plain and bad not in block_html
    # The root headers are untouched apart from the one we add.
    assert parse(out)["Bcc"] is None


def test_template_override_directory(tmp_path: Path) -> None:
    (tmp_path / "en").mkdir()
    (tmp_path / "en" / "block.txt.j2").write_text(
        "LOCAL POLICY: write to it-help@example.com about {{ recipients[0].address }}\n", encoding="utf-8"
    )
    settings = ExplainSettings(languages=["en"], template_dir=tmp_path)
    out = run(make([recipient("x@example.jp", "mailbox")]), settings)
    texts = human_texts(out)
    assert "LOCAL POLICY: write to it-help@example.com about x@example.jp" in texts["text/plain"][0]
    # Files not overridden still come from the package.
    assert "Set-Mailbox" in texts["text/html"][0]


def test_override_html_is_still_autoescaped(tmp_path: Path) -> None:
    (tmp_path / "en").mkdir()
    (tmp_path / "en" / "block.html.j2").write_text("<p>{{ subject }}</p>", encoding="utf-8")
    settings = ExplainSettings(languages=["en"], template_dir=tmp_path)
    out = run(make([recipient("x@example.jp", "mailbox")], subject="<script>x</script>"), settings)
    assert "<p>&lt;script&gt;x&lt;/script&gt;</p>" in human_texts(out)["text/html"][0]


def test_idempotency_second_pass_refused() -> None:
    sample = make([recipient("x@example.jp", "mailbox")])
    out = run(sample)
    with pytest.raises(AlreadyExplained):
        annotate(out, sample.report, incident_ids=None, now=NOW, settings=BOTH)
    sample.report.already_explained = True
    with pytest.raises(AlreadyExplained):
        annotate(sample.data, sample.report, incident_ids=None, now=NOW, settings=BOTH)


#: Header lines and separators for already_explained(): the field in any case, folded, after a
#: space (no field then), in the body; empty lines of every kind, in either style of line break.
_HEADER_PIECES = st.sampled_from(
    [
        "From: a@example.org",
        "X-Bouncegw-Explained: 5.7.133",
        "x-BOUNCEGW-explained\t: 5.7.133",
        " X-Bouncegw-Explained: folded",
        "X-Bouncegw-Explained-Not: 1",
        "Subject: X-Bouncegw-Explained: no",
        "",
        "\r",
    ]
)


def _explained_by_the_exact_block(data: bytes) -> bool:
    """The check as defined: the field at a line start of the exact root header block."""
    block = headers.root_headers(data)
    return re.search(rb"(?:\A|\n)x-bouncegw-explained[ \t]*:", block, re.IGNORECASE) is not None


@given(
    lines=st.lists(_HEADER_PIECES, max_size=8), newline=st.sampled_from(["\r\n", "\n"]), mixed=st.booleans()
)
@example(lines=["From: a", "", "X-Bouncegw-Explained: 1"], newline="\r\n", mixed=False)
@example(lines=["From: a", "", "X-Bouncegw-Explained: 1"], newline="\r\n", mixed=True)
def test_already_explained_reads_only_the_root_header_block(
    lines: list[str], newline: str, mixed: bool
) -> None:
    # ``mixed``: the first line ends in the other style (the prefix looked at then is a guess).
    other = "\n" if newline == "\r\n" else "\r\n"
    text = "".join(line + (other if mixed and i == 0 else newline) for i, line in enumerate(lines))
    data = text.encode("ascii")
    assert headers.already_explained(data) == _explained_by_the_exact_block(data)


def test_nothing_in_family_is_refused() -> None:
    sample = make([recipient("x@example.jp", "mailbox")])
    sample.report.recipients[0].category = None
    with pytest.raises(ExplainError, match="nothing to explain"):
        annotate(sample.data, sample.report, incident_ids=None, now=NOW, settings=BOTH)


@pytest.mark.parametrize("damage", ["bad-offsets", "bad-charset", "bad-base64", "undecodable", "overlap"])
def test_failures_raise_instead_of_returning_damage(damage: str) -> None:
    sample = make([recipient("x@example.jp", "mailbox")], cte="base64" if damage == "bad-base64" else "7bit")
    parts = list(sample.report.human_parts)
    first = parts[0]
    if damage == "bad-offsets":
        parts[0] = HumanPart(first.content_type, first.charset, first.transfer_encoding, 10, 5, 3)
    elif damage == "bad-charset":
        parts[0] = HumanPart(first.content_type, "x-no-such-charset", first.transfer_encoding, *_offs(first))
    elif damage == "bad-base64":
        data = bytearray(sample.data)
        data[first.body_start : first.body_start + 5] = b"A===="
        sample.data = bytes(data)
    elif damage == "undecodable":
        parts[0] = HumanPart(first.content_type, "utf-8", first.transfer_encoding, *_offs(first))
        data = bytearray(sample.data)
        data[first.body_start] = 0xFF
        sample.data = bytes(data)
    else:
        parts.append(parts[0])
    sample.report.human_parts = tuple(parts)
    with pytest.raises(ExplainError):
        annotate(sample.data, sample.report, incident_ids=None, now=NOW, settings=BOTH)


def test_offsets_pointing_at_the_wrong_part_are_caught() -> None:
    """If the parser's offsets landed on the delivery-status part, validation refuses the output."""
    sample = make([recipient("x@example.jp", "mailbox")], layout="text")
    ds_start = sample.data.index(b"Content-Type: message/delivery-status")
    ds_body = sample.data.index(b"\r\n\r\n", ds_start) + 4
    ds_end = sample.data.index(b"\r\n--rpt-b1c2d3", ds_body)
    sample.report.human_parts = (HumanPart("text/plain", "us-ascii", "7bit", ds_start, ds_body, ds_end),)
    with pytest.raises(ExplainError):
        annotate(sample.data, sample.report, incident_ids=None, now=NOW, settings=BOTH)


def _offs(part: HumanPart) -> tuple[int, int, int]:
    return part.headers_start, part.body_start, part.body_end


def test_settings_section_and_environment() -> None:
    settings = load_settings(environ={"BOUNCEGW_EXPLAIN__LANGUAGES": "ja"})
    assert settings.explain.languages == ["ja"]
    assert load_settings(environ={}).explain.languages == ["en", "ja"]
    with pytest.raises(ValueError):
        ExplainSettings(languages=[])
    with pytest.raises(ValueError):
        ExplainSettings(languages=["en", "en"])
    with pytest.raises(ValueError):
        ExplainSettings(dkim_selector="s1")


@pytest.mark.parametrize(
    ("span", "found"),
    [
        (b"--outer\r\ntext\r\n", True),  # at the very start
        (b"text\r\n--outer--  \r\nmore", True),  # close delimiter, trailing blanks
        (b"text\n--inner\n", True),  # bare LF
        (b"text\r--inner\rmore", True),  # bare CR
        (b"text --outer\r\n", False),  # not at the start of a line
        (b"a--\r\n--other\r\n", False),  # a dash line, but not a boundary of this message
        (b"--outerx\r\n", False),  # a longer token is not the delimiter
        (b"no dashes at all", False),
    ],
)
def test_delimiter_lines_are_found_as_the_stdlib_splits_lines(span: bytes, found: bool) -> None:
    assert validate._has_delimiter(span, {b"outer", b"inner"}) is found


@pytest.mark.parametrize(
    "entity",
    [
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
        b"caf=C3=A9 =\r\nsoft\r\n",
        b"Content-Type: text/html; charset=iso-2022-jp\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        b"GyRCJUYlOSVIGyhC\r\n",
        b"Content-Type: text/plain\n\nLF only\n",
        b"\r\nno header fields\r\n",
        b"Content-Type: text/plain; charset=latin-1\r\n\r\n\xe9t\xe9\r\n",
    ],
)
def test_entity_parse_decodes_as_the_full_stdlib_parse(entity: bytes) -> None:
    ours, stdlib = validate._parse(entity), email.message_from_bytes(entity, policy=policy.compat32)
    assert ours.items() == stdlib.items()
    assert ours.get_content_type() == stdlib.get_content_type()
    assert ours.get_payload(decode=True) == stdlib.get_payload(decode=True)


def test_boundaries_are_read_in_their_own_case() -> None:
    data = (
        b'Content-Type: multipart/Mixed; BOUNDARY="Outer-AbC"\r\n\r\n--Outer-AbC\r\n'
        b"Content-Type: multipart/alternative; Boundary=In_Xy\r\n\r\n--In_Xy--\r\n--Outer-AbC--\r\n"
    )
    assert validate._boundaries(data) == {b"Outer-AbC", b"In_Xy"}


@pytest.mark.parametrize("piece", [8, 13, 100, 1024 * 1024])
def test_boundaries_are_found_in_every_piece_and_across_seams(
    monkeypatch: pytest.MonkeyPatch, piece: int
) -> None:
    fields = [b'Content-Type: multipart/mixed; BOUNDARY="b%d"' % i for i in range(12)]
    data = b"".join(b"x" * (i * 7 % 23) + b"\r\n" + field + b"\r\n" for i, field in enumerate(fields))
    data += b"Content-Type: text/plain; boundary=last"
    expected = {m.group(1) or m.group(2) for m in validate._BOUNDARY_PARAM.finditer(data)}
    assert len(expected) == 13
    monkeypatch.setattr(validate, "_PIECE", piece)
    assert validate._boundaries(data) == expected


def _spliced(cte: str) -> tuple[bytes, bytes, list[splice.Edit], list[str], dict[str, str]]:
    """A correct splice of a sample, checked as annotate() checks it."""
    sample = make([recipient("x@example.jp", "mailbox")], cte=cte)
    parts = list(sample.report.human_parts)
    rendered = render.render(sample.report, incident_ids=["01J0INCIDENT"], now=NOW, settings=BOTH)
    edits = [splice.edit_part(sample.data, part, rendered) for part in parts]
    markers = {"text/plain": rendered.text.split("\n", 2)[1], "text/html": 'class="bouncegw-explained"'}
    return (
        sample.data,
        headers.header_line(sample.report, None, b"\r\n"),
        edits,
        [p.content_type for p in parts],
        markers,
    )


def _corrupt(replacement: bytes, damage: str) -> bytes:
    head, sep, body = replacement.partition(b"\r\n\r\n")
    if damage == "header-added":  # a field other than charset/encoding changed
        return b"X-Added: 1\r\n" + replacement
    if damage == "type-changed":
        return re.sub(rb"text/(plain|html)", b"application/octet-stream", replacement, count=1)
    if damage == "block-dropped":  # the encoded body without the block: the original's body
        return head + sep + b"plain text only\r\n"
    if damage == "body-undecodable":  # a charset the body does not decode in
        return head.replace(b"charset=", b"charset=x-no-such-charset; was=", 1) + sep + body
    assert damage == "delimiter-added"
    return head + sep + b"--rpt-b1c2d3\r\n" + body


@pytest.mark.parametrize("cte", ["7bit", "quoted-printable", "base64"])
@pytest.mark.parametrize(
    "damage", ["header-added", "type-changed", "block-dropped", "body-undecodable", "delimiter-added"]
)
def test_validation_fails_on_a_corrupted_splice(cte: str, damage: str) -> None:
    data, prefix, edits, types, markers = _spliced(cte)
    output = splice.apply(data, edits, prefix=prefix)
    validate.check_bytes(data, output, prefix, edits)
    validate.check_structure(data, output, prefix, edits, types=types, markers=markers)  # the good one passes
    first = edits[0]
    broken = [splice.Edit(first.start, first.end, _corrupt(first.replacement, damage)), *edits[1:]]
    assert broken[0].replacement != first.replacement
    output = splice.apply(data, broken, prefix=prefix)
    validate.check_bytes(data, output, prefix, broken)  # in the edited range only: the bytes check passes
    with pytest.raises(validate.ValidationFailed):
        validate.check_structure(data, output, prefix, broken, types=types, markers=markers)
