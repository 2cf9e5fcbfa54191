"""The one way a value from a bounce reaches a PowerShell line in the explanation block.

The block gives the recipient's administrator lines to paste into Exchange Online PowerShell
or the Exchange Management Shell. Bounces are attacker-controlled: a Final-Recipient of
``a"; Remove-Mailbox ceo -Confirm:$false; "b@contoso.example`` must never become a second
statement, and ``x$(Start-Process calc)@contoso.example`` must never sit inside double quotes,
where PowerShell expands ``$(...)``. So a value goes into a command only when

* it is a plain address under a strict grammar: RFC 5321 section 4.1.2 ``Mailbox`` with a
  Dot-string local part (no quoted string) and a Domain of letter-digit-hyphen labels (no
  address literal), restricted further to an allow-list of characters that have no meaning
  inside a PowerShell single-quoted string (no ``$``, backtick, ``"``, ``;``, whitespace,
  controls, braces, pipes or Unicode quotation marks), and within RFC 5321 section 4.5.3.1's
  lengths (local part 64, domain 255, path 256 octets: an address of at most 254 characters);
* and then only inside a single-quoted literal with every ``'`` doubled, the one escape
  PowerShell's single-quoted strings know (about_Quoting_Rules): nothing in it is expanded.

Otherwise the template shows a placeholder such as ``'<recipient address>'`` and says why.
Non-ASCII letters are allowed (RFC 6531 addresses), but not PowerShell's other quotation marks
(U+2018, U+2019, U+201A, U+201B, which it treats as ``'``; U+201C-U+201E, as ``"``): only
letters, marks and decimal digits are, and those are never quotes.
"""

from __future__ import annotations

import re
import unicodedata
from email.utils import parseaddr
from typing import Final

#: RFC 5321 section 4.5.3.1.1 / 4.5.3.1.2 / 4.5.3.1.3 (a 256-octet path holds <, > and 254).
MAX_LOCAL_PART: Final = 64
MAX_DOMAIN: Final = 253
MAX_ADDRESS: Final = 254
MAX_LABEL: Final = 63

#: ASCII atext (RFC 5321 section 4.1.2 / RFC 5322 section 3.2.3) minus what means something to
#: PowerShell or is easily misread: "$", "`", "{", "}", "|" are left out. "'" stays: the
#: literal doubles it.
_LOCAL_ASCII: Final = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#%&'*+-/=?^_~"
)
_DOMAIN_ASCII: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")
#: Unicode categories allowed beyond ASCII: letters, combining marks, decimal digits.
_UNICODE_OK: Final = ("Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Nd")
_LDH_LABEL: Final = re.compile(r"[^-](?:.{0,61}[^-])?", re.DOTALL)


def _allowed(ch: str, ascii_set: frozenset[str]) -> bool:
    if ch.isascii():
        return ch in ascii_set
    return unicodedata.category(ch) in _UNICODE_OK


def is_plain_address(value: str) -> bool:
    """True when ``value`` is an address under the strict grammar above (and nothing else)."""
    if not value or len(value) > MAX_ADDRESS or value.count("@") != 1:
        return False
    local, domain = value.split("@")
    if not local or len(local) > MAX_LOCAL_PART or not domain or len(domain) > MAX_DOMAIN:
        return False
    # Dot-string: atoms separated by single dots, none empty (no leading/trailing/double dot).
    if any(not atom for atom in local.split(".")):
        return False
    if not all(_allowed(ch, _LOCAL_ASCII) for ch in local if ch != "."):
        return False
    labels = domain.split(".")
    # At least two labels: a bare host name is not an address anyone outside can have written to.
    if len(labels) < 2:
        return False
    for label in labels:
        if not label or len(label) > MAX_LABEL or not _LDH_LABEL.fullmatch(label):
            return False
        if not all(_allowed(ch, _DOMAIN_ASCII) for ch in label):
            return False
    # The top-level label is not all digits (RFC 3696 section 2): "1.2.3.4" is no domain.
    return not labels[-1].isdigit()


def powershell_literal(value: object, *, max_length: int = MAX_ADDRESS) -> str | None:
    """``value`` as a PowerShell single-quoted literal, or None when it may not reach a command.

    Only a plain address (``is_plain_address``) of at most ``max_length`` characters qualifies;
    surrounding whitespace and one pair of angle brackets (``<addr>``, as DSN fields and From
    headers write it) are ignored, nothing else is corrected.
    """
    if not isinstance(value, str):
        return None
    text = value.strip(" \t")
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    if len(text) > max_length or not is_plain_address(text):
        return None
    return "'" + text.replace("'", "''") + "'"


def placeholder_literal(placeholder: str) -> str:
    """A placeholder such as ``<recipient address>`` as a literal (kept free of quotes)."""
    cleaned = "".join(ch for ch in placeholder if ch.isalnum() or ch in " <>_-")
    return "'" + cleaned + "'"


def powershell_argument(value: object, placeholder: str, *, max_length: int = MAX_ADDRESS) -> str:
    """The Jinja filter ``ps``: the value's literal, or the placeholder's when it does not qualify."""
    literal = powershell_literal(value, max_length=max_length)
    return literal if literal is not None else placeholder_literal(placeholder)


def address_of(header_value: str | None) -> str | None:
    """The address in a From header value (``Name <addr>``), or None; validation happens later."""
    if not header_value:
        return None
    _, address = parseaddr(header_value)
    return address or None
