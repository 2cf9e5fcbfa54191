"""The replies bouncegw writes itself (gateway.replies): well-formed, enhanced, safe."""

from __future__ import annotations

import re

import pytest

from gateway import replies
from gateway.replies import DEFAULT_ENHANCED, final_reply, with_enhanced_code

#: Every reply constant: "NNN X.Y.Z text" (RFC 5321 section 4.2, RFC 3463), the classes agreeing.
CONSTANTS = {
    name: value
    for name, value in vars(replies).items()
    if name.isupper() and isinstance(value, str) and re.match(r"^\d{3} ", value)
}
ENHANCED = re.compile(r"^([245])\d\d ([245])\.\d{1,3}\.\d{1,3} \S")


def test_there_are_constants_to_check() -> None:
    assert {"PROCESSING_FAILED", "NEXT_HOP_CONNECTION_LOST", "MESSAGE_TOO_BIG"} <= set(CONSTANTS)


@pytest.mark.parametrize("name", sorted(CONSTANTS))
def test_each_constant_is_a_well_formed_reply(name: str) -> None:
    value = CONSTANTS[name]
    assert value.isascii() and value.isprintable()
    if value.startswith("354"):  # the DATA go-ahead carries no enhanced code (RFC 2034 section 3)
        return
    match = ENHANCED.match(value)
    assert match is not None, value
    assert match.group(1) == match.group(2), value  # 4xx replies carry 4.x.x, 5xx carry 5.x.x


def test_failures_on_our_side_are_transient() -> None:
    # ARCHITECTURE.md, invariant 1: the upstream keeps the message and retries.
    for name in (
        "PROCESSING_FAILED",
        "STORAGE_UNAVAILABLE",
        "NEXT_HOP_UNREACHABLE",
        "NEXT_HOP_CONNECTION_LOST",
    ):
        assert CONSTANTS[name].startswith("451 4."), name


def test_default_enhanced_codes_share_the_reply_class() -> None:
    assert DEFAULT_ENHANCED
    for code, enhanced in DEFAULT_ENHANCED.items():
        assert str(code)[0] == enhanced[0], (code, enhanced)


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("250 Ok", "250 2.0.0 Ok"),
        ("550 Access denied", "550 5.0.0 Access denied"),
        ("250 2.1.0 Ok", "250 2.1.0 Ok"),  # already has one
        ("503 Error: send HELO first", "503 5.5.1 Error: send HELO first"),
        ("599 odd", "599 5.0.0 odd"),  # not in the table: the class's x.0.0
        ("250-first\r\n250 last", "250-2.0.0 first\r\n250 2.0.0 last"),
        # Any 2xx line gets one: the listener keeps the greeting plain by not asking.
        ("220 greeting", "220 2.0.0 greeting"),
        ("354 go ahead", "354 go ahead"),  # 3xx never gets one
        ("not a reply", "not a reply"),
    ],
)
def test_with_enhanced_code(reply: str, expected: str) -> None:
    assert with_enhanced_code(reply) == expected


def test_final_reply_adds_the_code_only_when_asked() -> None:
    assert final_reply("250 Ok", enhanced=False) == "250 Ok"
    assert final_reply("250 Ok", enhanced=True) == "250 2.0.0 Ok"
    assert final_reply("500 Command line too long", enhanced=False) == replies.COMMAND_TOO_LONG
