"""The explanation block's public helpers (gateway.explain.render): sanitising, wrapping, guidance."""

from __future__ import annotations

import sys
import unicodedata

import jinja2
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from gateway.bounce.report import CATEGORY_SENDER_NOT_AUTHENTICATED, RecipientReport
from gateway.explain import render
from gateway.explain.render import MAX_TEXT, fill, sanitise, status_of, variant_of, wrap


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, ""),
        ("plain text", "plain text"),
        ("line\r\nbreak\ttab", "line break tab"),  # separators become spaces, words stay apart
        ("  many   spaces  ", "many spaces"),
        ("bell\x07 esc\x1b[31m", "bell esc[31m"),  # C0 controls removed
        ("evil\u202egnp.exe", "evilgnp.exe"),  # a bidi override cannot reorder the text
        ("zero\u200bwidth", "zerowidth"),
        ("para\u2029graph", "paragraph"),
        ("日本語の説明", "日本語の説明"),  # letters of any script stay
        (42, "42"),
    ],
)
def test_sanitise(value: object, expected: str) -> None:
    assert sanitise(value) == expected


def test_sanitise_bounds_the_length_with_an_ellipsis() -> None:
    assert sanitise("x" * 1000) == "x" * (MAX_TEXT - 1) + "…"
    assert sanitise("abc def", limit=5) == "abc…"
    assert len(sanitise("y" * 1000, limit=20)) == 20


@given(
    text=st.lists(
        st.sampled_from(
            [
                "a",
                "~",
                " ",
                "\t",
                "\r\n",
                "\x00",
                "\x7f",
                "\x85",
                "é",
                "日",
                "\xa0",
                "\u3000",
                "\u2028",
                "\u202e",
            ]
        )
    ).map("".join),
    limit=st.integers(1, 12),
)
@example(text=" plain value ", limit=MAX_TEXT)
@example(text="a \x1f b", limit=MAX_TEXT)
def test_sanitise_of_printable_text_is_the_general_cleaning(text: str, limit: int) -> None:
    """Printable text without a run of spaces skips the general cleaning, and gets its result."""
    assert sanitise(text, limit) == render._bounded(render._clean(text), limit)


def test_printable_characters_are_none_that_sanitise_removes_or_collapses() -> None:
    """The premise of sanitise()'s shortcut, over every code point: a printable character is in
    no category it removes, and is no whitespace but the space."""
    wrong = [
        hex(cp)
        for cp in range(sys.maxunicode + 1)
        if chr(cp).isprintable()
        and (unicodedata.category(chr(cp)) in render._STRIP_CATEGORIES or (chr(cp).isspace() and cp != 0x20))
    ]
    assert wrong == []


def test_wrap_without_width_keeps_one_line() -> None:
    assert wrap("a b c " * 30, 0, first="> ") == "> " + "a b c " * 30


def test_wrap_fills_to_the_width_with_indents() -> None:
    out = wrap("one two three four five six seven eight nine ten", 20, first="* ", rest="  ")
    lines = out.split("\n")
    assert len(lines) > 1 and all(len(line) <= 20 for line in lines)
    assert lines[0].startswith("* one") and all(line.startswith("  ") for line in lines[1:])


def test_wrap_never_starts_a_line_with_a_command_or_the_kept_value() -> None:
    text = "Run the command Set-DistributionGroup for the group called Sales Team Europe now please"
    out = wrap(text, 16, keep="Sales Team Europe")
    lines = out.split("\n")
    assert len(lines) > 2
    assert not any(line.startswith(("Set-", "Sales", "Team", "Europe")) for line in lines)
    assert " ".join(lines) == text  # only where the lines break changed


@pytest.mark.parametrize(
    ("category", "variant", "status", "guidance", "shown"),
    [
        (CATEGORY_SENDER_NOT_AUTHENTICATED, "group", "5.7.133", "group", "5.7.133"),
        (
            CATEGORY_SENDER_NOT_AUTHENTICATED,
            "mailbox",
            None,
            "mailbox",
            "5.7.134",
        ),  # no status: its usual code
        (CATEGORY_SENDER_NOT_AUTHENTICATED, "no-such-variant", "junk", "organization", "5.7.12"),
        ("sender_not_allowed", "allowed_senders", "5.7.124", "sender_not_allowed", "5.7.124"),
        (None, None, "5.7.12 extra", "organization", "5.7.12"),  # only digits and dots are shown
    ],
)
def test_guidance_and_status(
    category: str | None, variant: str | None, status: str | None, guidance: str, shown: str
) -> None:
    recipient = RecipientReport(recipient="a@example.com", status=status, category=category, variant=variant)
    assert variant_of(recipient) == guidance
    assert status_of(recipient) == shown


@pytest.mark.parametrize(
    ("autoescape", "expected"),
    [
        (False, "Ask <b>{sender}</b> about S, not {unknown}."),
        (True, "Ask &lt;b&gt;{sender}&lt;/b&gt; about S, not {unknown}."),
    ],
)
def test_fill_expands_each_placeholder_once(autoescape: bool, expected: str) -> None:
    env = jinja2.Environment(autoescape=autoescape)
    env.filters["fill"] = fill
    template = env.from_string("{{ wording | fill(address=address, sender=sender) }}")
    # The address itself holds a placeholder: it is not expanded again; an unknown one stays.
    out = template.render(
        wording="Ask {address} about {sender}, not {unknown}.", address="<b>{sender}</b>", sender="S"
    )
    assert out == expected
