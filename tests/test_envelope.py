"""MAIL FROM / RCPT TO arguments (gateway.envelope): paths, parameters, and the reply for each refusal."""

from __future__ import annotations

import pytest

from gateway import replies
from gateway.envelope import (
    COMMAND_LINE_LIMITS,
    COMMAND_LINE_MAX,
    MAX_ENVID,
    MAX_ORCPT,
    EnvelopeError,
    parse_mail,
    parse_rcpt,
)

# (argument, address, relayed parameters as written)
MAIL_ACCEPTED = [
    ("FROM:<alice@example.org>", "alice@example.org", []),
    ("from:<>", "", []),  # the null reverse-path (RFC 5321 section 4.5.5)
    ("FROM: <a@example.org>", "a@example.org", []),
    ("FROM:a@example.org", "a@example.org", []),  # a bare address is tolerated
    ("FROM:<@relay.example:a@example.org>", "a@example.org", []),  # source route dropped
    ('FROM:<"john doe"@example.org>', '"john doe"@example.org', []),
    ('FROM:<"a>b"@example.org>', '"a>b"@example.org', []),  # ">" inside quotes
    ("FROM:<a@example.org> SIZE=1000 BODY=8bitmime", "a@example.org", ["SIZE=1000", "BODY=8bitmime"]),
    # ENVID is xtext: case kept as written (aiosmtpd would upper-case it)
    ("FROM:<a@example.org> RET=hdrs ENVID=QQ+2Bx-id", "a@example.org", ["RET=hdrs", "ENVID=QQ+2Bx-id"]),
    ("FROM:<a@example.org> AUTH=<>", "a@example.org", []),  # accepted, never relayed
    ("FROM:<jörg@example.org> SMTPUTF8", "jörg@example.org", ["SMTPUTF8"]),
]


@pytest.mark.parametrize(("argument", "address", "relayed"), MAIL_ACCEPTED)
def test_mail_accepted(argument: str, address: str, relayed: list[str]) -> None:
    path = parse_mail(argument)
    assert (path.address, path.relayed) == (address, relayed)
    assert path.utf8 == ("SMTPUTF8" in argument)


MAIL_REFUSED = [
    (None, replies.SYNTAX_MAIL),
    ("TO:<a@example.org>", replies.SYNTAX_MAIL),
    ("FROM:<a@example.org", replies.BAD_ADDRESS),  # no closing bracket
    ("FROM:<a>", replies.BAD_ADDRESS),  # no domain
    ("FROM:<a@exa mple.org>", replies.BAD_ADDRESS),
    ("FROM:<a\x01@example.org>", replies.BAD_ADDRESS),
    ("FROM:<" + "a" * 250 + "@example.org>", replies.BAD_ADDRESS),  # longer than 256 octets
    ("FROM:<jörg@example.org>", replies.SMTPUTF8_NOT_ALLOWED),
    ("FROM:<a@example.org> FOO=1", replies.UNKNOWN_PARAMETER.format(keyword="FOO")),
    ("FROM:<a@example.org> SIZE=big", replies.BAD_PARAMETER.format(keyword="SIZE")),
    ("FROM:<a@example.org> SIZE=1 SIZE=2", replies.BAD_PARAMETER.format(keyword="SIZE")),
    ("FROM:<a@example.org> BODY=BINARYMIME", replies.BAD_PARAMETER.format(keyword="BODY")),
    ("FROM:<a@example.org> RET=ALL", replies.BAD_PARAMETER.format(keyword="RET")),
    ("FROM:<a@example.org> ENVID=" + "x" * (MAX_ENVID + 1), replies.BAD_PARAMETER.format(keyword="ENVID")),
    ("FROM:<a@example.org> ENVID=a=b", replies.BAD_PARAMETER.format(keyword="ENVID")),  # "=" is not xtext
    ("FROM:<a@example.org> SMTPUTF8=yes", replies.BAD_PARAMETER.format(keyword="SMTPUTF8")),
    ("FROM:<a@example.org> SIZE=", replies.BAD_PARAMETER.format(keyword="SIZE")),
]


@pytest.mark.parametrize(("argument", "reply"), MAIL_REFUSED)
def test_mail_refused(argument: str | None, reply: str) -> None:
    with pytest.raises(EnvelopeError) as info:
        parse_mail(argument)
    assert info.value.reply == reply


RCPT_ACCEPTED = [
    ("TO:<bob@example.com>", False, "bob@example.com", []),
    ("TO:<Postmaster>", False, "Postmaster", []),  # RFC 5321 section 4.1.1.3: no domain needed
    (
        "TO:<bob@example.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;Bob+40example.com",
        False,
        "bob@example.com",
        ["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;Bob+40example.com"],
    ),
    ("TO:<bob@example.com> NOTIFY=never", False, "bob@example.com", ["NOTIFY=never"]),
    (
        "TO:<jörg@example.com> ORCPT=utf-8;jörg@example.com",
        True,
        "jörg@example.com",
        ["ORCPT=utf-8;jörg@example.com"],
    ),
]


@pytest.mark.parametrize(("argument", "utf8", "address", "relayed"), RCPT_ACCEPTED)
def test_rcpt_accepted(argument: str, utf8: bool, address: str, relayed: list[str]) -> None:
    path = parse_rcpt(argument, utf8=utf8)
    assert (path.address, path.relayed) == (address, relayed)


RCPT_REFUSED = [
    (None, False, replies.SYNTAX_RCPT),
    ("FROM:<b@example.com>", False, replies.SYNTAX_RCPT),
    ("TO:<>", False, replies.BAD_ADDRESS),  # the null path is for MAIL only
    ("TO:<b@example.com> SIZE=1", False, replies.UNKNOWN_PARAMETER.format(keyword="SIZE")),
    ("TO:<b@example.com> NOTIFY=NEVER,SUCCESS", False, replies.BAD_PARAMETER.format(keyword="NOTIFY")),
    ("TO:<b@example.com> NOTIFY=FAILURE,FAILURE", False, replies.BAD_PARAMETER.format(keyword="NOTIFY")),
    ("TO:<b@example.com> ORCPT=b@example.com", False, replies.BAD_PARAMETER.format(keyword="ORCPT")),
    (
        "TO:<b@example.com> ORCPT=rfc822;" + "x" * MAX_ORCPT,
        False,
        replies.BAD_PARAMETER.format(keyword="ORCPT"),
    ),
    # A UTF-8 ORCPT needs SMTPUTF8 on the transaction (RFC 6533 section 3).
    ("TO:<b@example.com> ORCPT=utf-8;jörg@example.com", False, replies.BAD_PARAMETER.format(keyword="ORCPT")),
]


@pytest.mark.parametrize(("argument", "utf8", "reply"), RCPT_REFUSED)
def test_rcpt_refused(argument: str | None, utf8: bool, reply: str) -> None:
    with pytest.raises(EnvelopeError) as info:
        parse_rcpt(argument, utf8=utf8)
    assert info.value.reply == reply


def test_an_unknown_keyword_is_quoted_safely() -> None:
    with pytest.raises(EnvelopeError) as info:
        parse_mail("FROM:<a@example.org> X" + "Y" * 100 + "=1")
    quoted = info.value.reply.removeprefix("555 5.5.4 ").removesuffix(
        " parameter not recognized or not implemented"
    )
    assert quoted.startswith("XYYY") and len(quoted) < 100  # bounded, not echoed whole


def test_command_line_limits_make_room_for_the_longest_valid_parameters() -> None:
    rcpt = "RCPT TO:<b@example.com> NOTIFY=SUCCESS,FAILURE,DELAY ORCPT=rfc822;" + "x" * (MAX_ORCPT - 7)
    assert len(rcpt) + 2 > COMMAND_LINE_MAX  # over the plain limit ...
    assert len(rcpt) + 2 <= COMMAND_LINE_LIMITS["RCPT"]  # ... within RCPT's
    assert parse_rcpt(rcpt[5:], utf8=False).address == "b@example.com"
    assert COMMAND_LINE_LIMITS["MAIL"] > COMMAND_LINE_LIMITS["RCPT"] > COMMAND_LINE_MAX
