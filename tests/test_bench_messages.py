"""The benchmark's full-size Exchange Online NDR: its size, its form, and what bouncegw reads in it."""

from __future__ import annotations

import email
import re
from collections.abc import Callable
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from pathlib import Path

import pytest

from gateway.bounce.parse import parse
from gateway.bounce.prefilter import might_be_family_bounce
from gateway.bounce.report import BounceReport
from gateway.config import ExplainSettings
from gateway.explain import annotate
from tests.benchmarks import messages
from tests.benchmarks.messages import KIB, SEQ, exchange_online, family

SIZES = [12 * KIB, 20 * KIB, 40 * KIB]
FAMILY = [("sales-team@contoso.example", "5.7.133", "group")]
NOW = datetime(2025, 6, 3, 1, 0, tzinfo=UTC)


def family_of(report: BounceReport) -> list[tuple[str | None, str | None, str | None]]:
    return [(r.recipient, r.status, r.variant) for r in report.family]


def sent(size: int) -> bytes:
    """One copy as the load generator sends it: the SEQ token replaced."""
    return exchange_online(size).replace(SEQ, b"1")


def mime(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


def leaf(message: EmailMessage, content_type: str) -> EmailMessage:
    """The first part of ``content_type`` in the NDR itself (not inside the returned message)."""
    for part in message.walk():
        if part.get_content_type() == content_type:
            assert isinstance(part, EmailMessage)
            return part
        if part.get_content_type() == "message/rfc822":
            break
    raise AssertionError(f"no {content_type} part")


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s // KIB}KiB")
def test_size_is_within_ten_percent(size: int) -> None:
    assert abs(len(exchange_online(size)) - size) <= size // 10


def test_default_size_is_20_kib() -> None:
    assert exchange_online() == exchange_online(20 * KIB)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s // KIB}KiB")
def test_well_formed_7bit_crlf_mime(size: int) -> None:
    data = exchange_online(size)
    assert data.count(b"\n") == data.count(b"\r\n") == data.count(b"\r"), "CRLF line ends only"
    assert all(byte < 0x80 for byte in data), "7-bit clean"
    lines = data.split(b"\r\n")
    assert max(len(line) for line in lines) < 998
    assert not any(line.startswith(b".") for line in lines)  # nothing for SMTP transparency
    message = mime(data)
    for part in message.walk():
        assert not part.defects, (part.get_content_type(), part.defects)
    # Both multiparts are closed by their close delimiters.
    boundaries = re.findall(rb'boundary="([^"]+)"', data.split(b"Content-Type: message/rfc822")[0])
    assert len(boundaries) == 2
    for boundary in boundaries:
        assert b"\r\n--" + boundary + b"--\r\n" in data
    structure = [part.get_content_type() for part in message.walk()]
    assert structure[:5] == [
        "multipart/report",
        "multipart/alternative",
        "text/plain",
        "text/html",
        "message/delivery-status",
    ]
    assert structure[-2:] == ["message/rfc822", "text/plain"]
    assert leaf(message, "text/plain")["Content-Transfer-Encoding"] == "quoted-printable"
    assert leaf(message, "text/html")["Content-Transfer-Encoding"] == "quoted-printable"


@pytest.mark.parametrize("build", [exchange_online, family], ids=["exchange_online", "family"])
def test_seq_token_in_the_message_id_and_every_boundary(build: Callable[[], bytes]) -> None:
    data = build()
    head = data.split(b"\r\n\r\n", 1)[0]
    assert re.search(rb"^Message-ID: <" + re.escape(SEQ) + rb"-[^>\r\n]+>\r?$", head, re.MULTILINE)
    boundaries = re.findall(rb'boundary="([^"]+)"', data)
    assert len(boundaries) >= 2 and all(b.endswith(b"-" + SEQ) for b in boundaries)
    # The Message-ID, each boundary parameter, and each boundary's delimiter lines (2 or more).
    assert data.count(SEQ) >= 1 + 3 * len(boundaries)
    one, two = build().replace(SEQ, b"1.1"), build().replace(SEQ, b"1.2")
    assert one != two
    for copy in (one, two):
        tree = [p.get_content_type() for p in email.message_from_bytes(copy).walk()]
        assert tree[:2] == ["multipart/report", "multipart/alternative"]
        assert "message/delivery-status" in tree


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s // KIB}KiB")
def test_bouncegw_reads_one_group_recipient(size: int) -> None:
    data = sent(size)
    assert len(data.split(b"\r\n\r\n", 1)[0]) >= 5 * KIB, "a real-sized root header block"
    assert might_be_family_bounce(data)
    report = parse(data)
    assert report.is_bounce
    assert report.format == "rfc3464"
    assert family_of(report) == FAMILY
    assert [p.content_type for p in report.human_parts] == ["text/plain", "text/html"]


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s // KIB}KiB")
def test_annotate_keeps_the_family_recipient(size: int) -> None:
    data = sent(size)
    report = parse(data)
    out = annotate(data, report, incident_ids=["01J0INCIDENT"], now=NOW, settings=ExplainSettings())
    assert out.startswith(b"X-Bouncegw-Explained: ")
    again = parse(out)
    assert again.already_explained
    assert family_of(again) == FAMILY


def test_human_parts_quote_the_returned_message_headers() -> None:
    message = mime(exchange_online())
    payload = leaf(message, "message/rfc822").get_payload()
    assert isinstance(payload, list)
    returned = payload[0]
    assert isinstance(returned, EmailMessage)
    assert returned.get_content_type() == "text/plain"
    assert returned["To"] == "Sales Team <sales-team@contoso.example>"
    raw = exchange_online().split(b"Content-Type: message/rfc822\r\n\r\n", 1)[1]
    original_headers = raw.split(b"\r\n\r\n", 1)[0].decode().replace("\r\n", "\n")
    assert original_headers.count("\nReceived: ") >= 1 and "DKIM-Signature: " in original_headers
    text = leaf(message, "text/plain").get_content().replace("\r\n", "\n")
    assert "Original Message Headers\n\n" + original_headers in text
    html = leaf(message, "text/html").get_content().replace("\r\n", "\n")
    pre = html.split("<pre>", 1)[1].split("</pre>", 1)[0]
    unescaped = pre.replace("&#43;", "+").replace("&lt;", "<").replace("&gt;", ">")
    assert unescaped.replace("&quot;", '"').replace("&#x27;", "'").replace("&amp;", "&") == (
        original_headers + "\n"
    )


def test_write_for_smtp_source(tmp_path: Path) -> None:
    path = messages.write_for_smtp_source(tmp_path / "exo.lf", exchange_online())
    written = path.read_bytes()
    assert b"\r" not in written and SEQ not in written
    assert b"Message-ID: <static-" in written
