"""gateway.explain.commands: only a strict plain address reaches a PowerShell line, single-quoted.

Unit cases for the grammar, then a hypothesis fuzz over the whole render: whatever the
recipient and the original sender are, every command line of both parts and both languages is
one statement (``tests.powershell_tokens``), its literals are plain addresses or placeholders,
and no line outside the commands starts with a value from the bounce or looks like a command.
"""

from __future__ import annotations

import re
from html import unescape

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.explain import render
from gateway.explain.commands import (
    address_of,
    is_plain_address,
    placeholder_literal,
    powershell_argument,
    powershell_literal,
)
from tests.advice_reports import VARIANTS, rendered, report
from tests.powershell_tokens import command_lines, html_command_lines, literals, tokenize

ATTACKS = [
    'a"; Remove-Mailbox ceo -Confirm:$false; "b@contoso.example',
    "x$(Start-Process calc)@contoso.example",
    "a'; Remove-Mailbox ceo; 'b@contoso.example",
    "a`; calc@contoso.example",
    "a;calc@contoso.example",
    "a|calc@contoso.example",
    "a b@contoso.example",
    "a\tb@contoso.example",
    "a\r\nb@contoso.example",
    "a\x00b@contoso.example",
    "a\u2019;calc;\u2018@contoso.example",  # PowerShell reads U+2018/U+2019 as single quotes
    "a\u201c;calc;\u201d@contoso.example",
    "a{b}@contoso.example",
    "$env:USERNAME@contoso.example",
    '"quoted local"@contoso.example',
    "a@[192.0.2.1]",
    "a@contoso",
    "a@-contoso.example",
    "a@contoso-.example",
    "a@contoso..example",
    ".a@contoso.example",
    "a.@contoso.example",
    "a..b@contoso.example",
    "a@b@contoso.example",
    "@contoso.example",
    "a@",
    "",
    "a@1.2.3.4",
    "x" * 65 + "@contoso.example",
    "a@" + "b" * 64 + ".example",
    "a@" + ".".join(["b" * 60] * 5) + ".example",
]

PLAIN = [
    "team@contoso.example",
    "first.last+tag@sub.contoso.example",
    "o'brien@contoso.example",
    "--rep-b1@contoso.example",
    "a!#%&*/=?^_~-b@xn--bcher-kva.example",
    "ユーザー@例え.jp",
    "x" * 64 + "@contoso.example",
]


@pytest.mark.parametrize("value", ATTACKS)
def test_attacks_and_non_plain_addresses_never_become_literals(value: str) -> None:
    assert not is_plain_address(value)
    assert powershell_literal(value) is None
    assert powershell_argument(value, "<recipient address>") == "'<recipient address>'"


@pytest.mark.parametrize("value", PLAIN)
def test_plain_addresses_become_single_quoted_literals(value: str) -> None:
    literal = powershell_literal(value)
    assert literal == "'" + value.replace("'", "''") + "'"
    assert literals(tokenize(f"Set-Mailbox -Identity {literal}")) == [value]


def test_angle_brackets_and_surrounding_blanks_are_ignored_nothing_else() -> None:
    assert powershell_literal(" <team@contoso.example> ") == "'team@contoso.example'"
    assert powershell_literal("<team@contoso.example") is None
    assert powershell_literal(None) is None
    assert powershell_literal(b"team@contoso.example") is None
    assert powershell_literal("a" * 60 + "@contoso.example", max_length=64) is None


def test_placeholders_are_quote_free_literals() -> None:
    assert placeholder_literal("<recipient address>") == "'<recipient address>'"
    assert placeholder_literal("<x'; calc; '>") == "'<x calc >'"


def test_the_sender_address_is_read_from_the_from_header() -> None:
    assert address_of("Taro Yamada <taro.yamada@example.org>") == "taro.yamada@example.org"
    assert address_of(None) is None
    evil = address_of('"a" <x$(calc)@contoso.example>')
    assert evil is not None and powershell_literal(evil) is None


_DANGEROUS = "\"'`$;|&(){}[]<>@. \t\r\n\x00\u2018\u2019\u201c\u201d-#%!"
_ADDRESS_PIECES = st.text(
    alphabet=st.sampled_from(list(_DANGEROUS) + list("abcXYZ019") + ["ü", "ー", "例"]), max_size=30
)
_ADDRESSES = st.one_of(
    st.builds(lambda local, domain: f"{local}@{domain}", _ADDRESS_PIECES, _ADDRESS_PIECES),
    st.builds(lambda local: f"{local}@contoso.example", _ADDRESS_PIECES),
    st.sampled_from(ATTACKS + PLAIN),
    st.text(max_size=60),
)
_CMDLET_START = re.compile(r"^\s*[A-Za-z]+-[A-Za-z]")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    variant=st.sampled_from(list(VARIANTS)),
    address=_ADDRESSES,
    sender_address=_ADDRESSES,
)
def test_fuzz_no_attacker_character_outside_a_doubled_single_quoted_literal(
    variant: str, address: str, sender_address: str
) -> None:
    bounce = report(variant, address, sender=f"Someone <{sender_address}>")
    bounce.recipients += report(variant, address).recipients  # the short "same as above" form too
    block = rendered(bounce)
    text_commands = command_lines(block.text)
    html_commands = html_command_lines(block.html)
    assert [c.strip() for c in text_commands] == [c.strip() for c in html_commands]
    for line in text_commands:
        for value in literals(tokenize(line)):  # one statement, quoted arguments
            assert is_plain_address(value) or value.startswith(("<", "\\<")), line
            if is_plain_address(value):
                assert value in (address.strip(" \t").strip("<>"), address_of(f"Someone <{sender_address}>"))
    shown = render.sanitise(address, render.MAX_ADDRESS)
    for line in block.text.split("\n"):
        if line in text_commands:
            continue
        # Outside the commands, no line starts like a command, nor (after its indentation) with
        # the value: a list marker ("- ", "1. ") or a label always comes first.
        assert not _CMDLET_START.match(line), line
        if len(shown) > 2:
            assert not line.lstrip(" ").startswith(shown), line
        assert not line.startswith("--"), line
    for line in block.html.split("\n"):
        assert not line.startswith("--"), line


def test_the_ps_filter_for_override_templates() -> None:
    env = render.build_environment(None)
    # (A template from a string is autoescaped, as an HTML override would be.)
    template = env.from_string("Set-Mailbox -Identity {{ value | ps('<recipient address>') }}")
    rendered_ok = unescape(template.render(value="o'brien@contoso.example"))
    assert rendered_ok == "Set-Mailbox -Identity 'o''brien@contoso.example'"
    assert unescape(template.render(value=ATTACKS[0])) == "Set-Mailbox -Identity '<recipient address>'"
