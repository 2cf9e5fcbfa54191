"""normalise_address: its shortcut for bare addr-specs gives what parseaddr gives."""

from __future__ import annotations

from email.utils import parseaddr

import pytest
from hypothesis import given
from hypothesis import strategies as st

from storage.incidents import normalise_address

_ATEXT = "A-Za-z0-9!#$%&'*+/=?^_`{|}~-"


def reference(value: str) -> str | None:
    """What normalise_address returned before its shortcut: parseaddr's addr-spec, lower-cased."""
    _, addr = parseaddr(value)
    return (addr or value).strip().strip("<>").strip().lower() or None


@given(st.from_regex(rf"[{_ATEXT}]+(\.[{_ATEXT}]+)*@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*", fullmatch=True))
def test_bare_addr_specs_read_as_parseaddr_reads_them(address: str) -> None:
    assert normalise_address(address) == reference(address)


@pytest.mark.parametrize(
    "value",
    [
        "Sales Team <Sales-Team@Contoso.example>",
        "<a@example.jp>",
        '"a b"@example.jp',
        "a@[192.0.2.1]",
        "a..b@example.jp",
        " a@example.jp ",
        "a@example.jp (comment)",
        "not an address",
    ],
)
def test_other_values_still_go_through_parseaddr(value: str) -> None:
    assert normalise_address(value) == reference(value)


def test_empty_is_none() -> None:
    assert normalise_address("") is None
    assert normalise_address(None) is None
