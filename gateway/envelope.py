"""Parsing of MAIL FROM / RCPT TO arguments: the reverse-/forward-path and ESMTP parameters.

aiosmtpd refuses every parameter it does not know (RET, ENVID, NOTIFY, ORCPT
get 555) and upper-cases the parameter string, which corrupts ENVID and ORCPT
values (RFC 3461 xtext is case-sensitive). A relay hop must accept them and
pass them on exactly as written, so the listener parses them here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from gateway import replies

#: RFC 5321 section 4.5.3.1.3: a path is at most 256 octets including the brackets.
MAX_PATH = 256
#: RFC 3461 section 4.4: ENVID is at most 100 characters.
MAX_ENVID = 100
#: RFC 3461 section 4.2: ORCPT at most 500 characters.
MAX_ORCPT = 500
#: RFC 4954 section 5: the AUTH parameter adds at most 500 characters to MAIL.
MAX_AUTH = 500
#: RFC 5321 section 4.5.3.1.4: a command line is at most 512 octets including the CRLF.
COMMAND_LINE_MAX = 512

_KEYWORD = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")
#: RFC 3461 section 4: xtext is printable ASCII except "+" and "=", with "+HH" escapes.
_XTEXT = re.compile(r"^(?:[!-*,-<>-~]|\+[0-9A-F]{2})*$")
#: RFC 6533 section 3: utf-8-addr-xtext / unitext additionally allows UTF-8 and \x{HEX}.
_UTF8_XTEXT = re.compile(r"^(?:[!-*,-<>-~]|\+[0-9A-F]{2}|\\x\{[0-9A-Fa-f]{1,6}\}|[^\x00-\x7f])*$")
_NOTIFY = re.compile(r"^(?:NEVER|(?:SUCCESS|FAILURE|DELAY)(?:,(?:SUCCESS|FAILURE|DELAY))*)$", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _check_size(value: str | None) -> bool:
    return value is not None and value.isdigit() and len(value) <= 20


def _one_of(*choices: str) -> object:
    def check(value: str | None) -> bool:
        return value is not None and value.upper() in choices

    return check


def _xtext(limit: int) -> object:
    def check(value: str | None) -> bool:
        return value is not None and len(value) <= limit and bool(_XTEXT.match(value))

    return check


def _no_value(value: str | None) -> bool:
    return value is None


def _notify(value: str | None) -> bool:
    return (
        value is not None
        and bool(_NOTIFY.match(value))
        and len(set(value.upper().split(","))) == len(value.split(","))
    )


def _orcpt(value: str | None) -> bool:
    if value is None or len(value) > MAX_ORCPT:
        return False
    addr_type, sep, address = value.partition(";")
    return bool(sep and _KEYWORD.match(addr_type) and address and _UTF8_XTEXT.match(address))


def _auth(value: str | None) -> bool:
    return value is not None and len(value) <= MAX_AUTH and (value == "<>" or bool(_XTEXT.match(value)))


# Parameter tables: keyword -> validator. Anything else is refused with 555.
MAIL_PARAMETERS: Mapping[str, object] = {
    "SIZE": _check_size,  # RFC 1870
    "BODY": _one_of("7BIT", "8BITMIME"),  # RFC 6152 (BINARYMIME is not offered)
    "SMTPUTF8": _no_value,  # RFC 6531
    "RET": _one_of("FULL", "HDRS"),  # RFC 3461 section 4.3
    "ENVID": _xtext(MAX_ENVID),  # RFC 3461 section 4.4
    "AUTH": _auth,  # RFC 4954 section 5 (accepted, not passed on: we are not the submitter)
}
RCPT_PARAMETERS: Mapping[str, object] = {
    "NOTIFY": _notify,  # RFC 3461 section 4.1
    "ORCPT": _orcpt,  # RFC 3461 section 4.2
}
#: Parameters accepted but not relayed.
NOT_RELAYED = frozenset({"AUTH"})

#: Longest " KEYWORD=value" each parameter adds to its command line. RFC 5321 section 4.5.3.1.4
#: lets an extension raise the 512-octet command line limit, and each of these says by how much
#: (SIZE: RFC 1870, BODY: RFC 6152, SMTPUTF8: RFC 6531, RET/ENVID/NOTIFY/ORCPT: RFC 3461, AUTH:
#: RFC 4954); counted here from the longest value the parser accepts. With aiosmtpd's flat limit
#: a valid RCPT carrying a long ORCPT got a permanent 500.
PARAMETER_LENGTH: Mapping[str, int] = {
    "SIZE": len(" SIZE=") + 20,
    "BODY": len(" BODY=8BITMIME"),
    "SMTPUTF8": len(" SMTPUTF8"),
    "RET": len(" RET=HDRS"),
    "ENVID": len(" ENVID=") + MAX_ENVID,
    "AUTH": len(" AUTH=") + MAX_AUTH,
    "NOTIFY": len(" NOTIFY=SUCCESS,FAILURE,DELAY"),
    "ORCPT": len(" ORCPT=") + MAX_ORCPT,
}


def _line_limit(table: Mapping[str, object]) -> int:
    return COMMAND_LINE_MAX + sum(PARAMETER_LENGTH[keyword] for keyword in table)


#: Longest command line (octets, CRLF included) per command once EHLO has offered the extensions.
COMMAND_LINE_LIMITS: Mapping[str, int] = {
    "MAIL": _line_limit(MAIL_PARAMETERS),
    "RCPT": _line_limit(RCPT_PARAMETERS),
}


class EnvelopeError(Exception):
    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


@dataclass(frozen=True, slots=True)
class Path:
    address: str  # "" for the null reverse-path
    parameters: dict[str, str | None]  # upper-cased keyword -> value as written
    relayed: list[str]  # "KEYWORD=value" strings to send to the next hop, as written

    @property
    def utf8(self) -> bool:
        return "SMTPUTF8" in self.parameters


def _split_path(text: str) -> tuple[str, str]:
    """Split "<path> params" honouring quoted local parts; tolerate a bare address."""
    text = text.lstrip(" ")
    if not text.startswith("<"):
        address, _, rest = text.partition(" ")
        return address, rest
    in_quotes = False
    escaped = False
    for index, char in enumerate(text[1:], start=1):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            in_quotes = not in_quotes
        elif char == ">" and not in_quotes:
            return text[1:index], text[index + 1 :]
    raise EnvelopeError(replies.BAD_ADDRESS)


def _check_address(address: str, *, null_allowed: bool, utf8: bool) -> str:
    if address.startswith("@"):
        # RFC 5321 section 4.1.1.3 / appendix C: source routes are accepted and ignored.
        _, sep, address = address.partition(":")
        if not sep:
            raise EnvelopeError(replies.BAD_ADDRESS)
    if not address:
        if null_allowed:
            return ""
        raise EnvelopeError(replies.BAD_ADDRESS)
    if len(address) + 2 > MAX_PATH or _CONTROL.search(address):
        raise EnvelopeError(replies.BAD_ADDRESS)
    if address.lower() == "postmaster" and not null_allowed:
        return address  # RFC 5321 section 4.1.1.3: "RCPT TO:<Postmaster>" needs no domain
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain or " " in domain:
        raise EnvelopeError(replies.BAD_ADDRESS)
    if " " in local and not (local.startswith('"') and local.endswith('"')):
        raise EnvelopeError(replies.BAD_ADDRESS)
    if not address.isascii() and not utf8:
        raise EnvelopeError(replies.SMTPUTF8_NOT_ALLOWED)
    return address


def _parameters(text: str, table: Mapping[str, object]) -> tuple[dict[str, str | None], list[str]]:
    parameters: dict[str, str | None] = {}
    relayed: list[str] = []
    for item in text.split():
        keyword, eq, value = item.partition("=")
        if not _KEYWORD.match(keyword) or (eq and not value):
            shown = replies.client_text(keyword.upper()) or "empty"
            raise EnvelopeError(replies.BAD_PARAMETER.format(keyword=shown))
        keyword = keyword.upper()
        check = table.get(keyword)
        if check is None:
            raise EnvelopeError(replies.UNKNOWN_PARAMETER.format(keyword=replies.client_text(keyword)))
        if keyword in parameters or not check(value if eq else None):  # type: ignore[operator]
            raise EnvelopeError(replies.BAD_PARAMETER.format(keyword=keyword))
        parameters[keyword] = value if eq else None
        if keyword not in NOT_RELAYED:
            relayed.append(item)
    return parameters, relayed


def parse_mail(argument: str | None) -> Path:
    """Parse what follows "MAIL"; raise :class:`EnvelopeError` with the reply to send."""
    if argument is None or argument[:5].upper() != "FROM:":
        raise EnvelopeError(replies.SYNTAX_MAIL)
    address, rest = _split_path(argument[5:])
    parameters, relayed = _parameters(rest, MAIL_PARAMETERS)
    utf8 = "SMTPUTF8" in parameters
    return Path(_check_address(address, null_allowed=True, utf8=utf8), parameters, relayed)


def parse_rcpt(argument: str | None, *, utf8: bool) -> Path:
    """Parse what follows "RCPT"; raise :class:`EnvelopeError` with the reply to send."""
    if argument is None or argument[:3].upper() != "TO:":
        raise EnvelopeError(replies.SYNTAX_RCPT)
    address, rest = _split_path(argument[3:])
    parameters, relayed = _parameters(rest, RCPT_PARAMETERS)
    if "ORCPT" in parameters and not utf8 and not (parameters["ORCPT"] or "").isascii():
        raise EnvelopeError(replies.BAD_PARAMETER.format(keyword="ORCPT"))
    return Path(_check_address(address, null_allowed=False, utf8=utf8), parameters, relayed)
