"""The text-format table (``gateway.bounce.text_formats.FORMATS``): every row earns its place.

A row is recognised in a sample when its pattern finds an address there that the parser's
entry point reports as a recipient of that text bounce. Each row must be recognised in at least
one sample of the corpus (``tests/corpus/``): a row no sample shows is a guess nobody checked,
and a row added without a sample fails here until one is added.
"""

from __future__ import annotations

import functools

import pytest

from gateway.bounce import text_formats
from gateway.bounce.parse import ParseError, parse
from gateway.bounce.report import FORMAT_TEXT
from tests.corpus_table import CORPUS, samples


@functools.cache
def text_bounces() -> tuple[tuple[str, str, frozenset[str]], ...]:
    """(corpus path, raw text, recipients) of every corpus sample the entry point reads as a text bounce."""
    found = []
    for sample in samples():
        data = sample.path.read_bytes()
        try:
            report = parse(data)
        except ParseError:
            continue
        if report.format == FORMAT_TEXT:
            recipients = frozenset((r.recipient or "").lower() for r in report.recipients)
            found.append(
                (sample.path.relative_to(CORPUS).as_posix(), data.decode("utf-8", "replace"), recipients)
            )
    return tuple(found)


def recognised_in(row: text_formats.TextFormat) -> list[str]:
    return [
        path
        for path, text, recipients in text_bounces()
        if any(m.group("rcpt").strip(".").lower() in recipients for m in row.recipient.finditer(text))
    ]


@pytest.mark.parametrize("row", text_formats.FORMATS, ids=lambda row: row.name)
def test_every_row_is_recognised_in_a_corpus_sample(row: text_formats.TextFormat) -> None:
    assert recognised_in(row), f"no corpus sample shows the {row.name!r} format: add one"


@pytest.mark.parametrize("row", text_formats.FORMATS, ids=lambda row: row.name)
def test_every_row_names_its_source_and_a_recipient_group(row: text_formats.TextFormat) -> None:
    assert "corpus:" in row.source, row.name
    assert "rcpt" in row.recipient.groupindex, row.name
    assert row.code_reach > 0


def test_row_names_are_unique() -> None:
    names = [row.name for row in text_formats.FORMATS]
    assert len(names) == len(set(names))


def test_a_row_is_what_finds_the_recipient() -> None:
    # OpenSMTPD's "rcpt: 550 ..." line: only its row matches, and the code after it is the recipient's.
    text = "Delivery to the following recipients failed.\n\nnobody@example.jp: 550 5.1.1 unknown user\n"
    rows = [row.name for row in text_formats.FORMATS if row.recipient.search(text)]
    assert rows == ["opensmtpd"]
    [found] = text_formats.recipients(text, set())
    assert (found.recipient, found.status) == ("nobody@example.jp", "5.1.1")
    assert found.diagnostic == "5.1.1 unknown user"  # the rest of the line, after the row's match
