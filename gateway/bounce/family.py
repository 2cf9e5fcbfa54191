"""The "recipient only accepts authenticated senders" family: one table, and what derives from it.

Behaviour that varies by code lives here as data; the classifier (``gateway.bounce.classify``),
the prefilter's body pattern (``gateway.bounce.prefilter``), the metric label values and the
explanation's guidance maps only walk this table. Sources: Microsoft's published NDR
documentation (5.7.12, 5.7.124, 5.7.133-5.7.136, legacy RESOLVER.RST.AuthRequired)
and the IANA enhanced status registry (RFC 3463 / RFC 5248, where X.7.12 is
"password transition needed" and X.7.13 is "user account disabled").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from gateway.bounce.report import CATEGORY_SENDER_NOT_ALLOWED, CATEGORY_SENDER_NOT_AUTHENTICATED

#: Codes that only say "permanent failure" / "security or policy" (RFC 3463 section 3.1 X.0.0,
#: section 3.8 X.7.0) or Exchange's catch-all "delivery not authorized" (5.7.1). Exchange Online
#: wraps the specific code in them (``554 5.7.0 < #5.7.133 smtp;550 5.7.133 ...>``): a family code
#: found next to one of these is the recipient's status.
GENERIC_CODES: Final = frozenset({"5.0.0", "5.7.0", "5.7.1", "4.0.0", "4.7.0"})


@dataclass(frozen=True, slots=True)
class FamilyCode:
    """One row of the family table: what one code (or resolver token) means and how it is explained.

    The prefilter's body pattern, the classifier's look-ups, the metric label values and the
    explanation's guidance and default-status maps are all derived from these rows
    (:class:`Family`); nothing else lists the family.
    """

    #: The enhanced status code (RFC 3463), matched whole: 5.7.124 is never 5.7.12 + "4".
    code: str
    category: str
    #: Classifier variant: metric label, incident column, ``--variant`` filter.
    variant: str
    #: The code only has this meaning when the bounce shows Microsoft evidence (IANA registers
    #: X.7.12 and X.7.13 with other meanings; 5.7.193 is Microsoft's own).
    needs_microsoft: bool
    #: Exchange diagnostic tokens naming this case (whole tokens, compared case-insensitively).
    #: A token also classifies a recipient whose codes are only generic wrappers (GENERIC_CODES).
    tokens: tuple[str, ...] = ()
    #: False when the code is generic (5.7.1): then only a token makes the recipient this row's.
    code_alone: bool = True
    #: Words in a diagnostic that are Microsoft evidence by themselves (an agent's name).
    evidence_tokens: tuple[str, ...] = ()
    #: The explanation's guidance entry (``content.j2`` of every language); default: the variant.
    guidance: str | None = None
    #: Where the meaning comes from.
    source: str = ""

    @property
    def explained_as(self) -> str:
        return self.guidance or self.variant


#: The family. Order matters only for the explanation: the first row of a guidance gives the
#: status shown when a bounce names none (a text-only bounce with the token alone).
ROWS: Final[tuple[FamilyCode, ...]] = (
    FamilyCode(
        "5.7.12",
        CATEGORY_SENDER_NOT_AUTHENTICATED,
        "organization",
        needs_microsoft=True,
        # KB 3028012 spells it without "Not"; Exchange Online writes the "Not" form.
        tokens=("RESOLVER.RST.SenderAuthenticated", "RESOLVER.RST.SenderNotAuthenticated"),
        source="Microsoft: Fix email delivery issues for error code 5.7.12 (KB 3028012)",
    ),
    FamilyCode(
        "5.7.133",
        CATEGORY_SENDER_NOT_AUTHENTICATED,
        "group",
        needs_microsoft=False,
        tokens=("RESOLVER.RST.SenderNotAuthenticatedForGroup",),
        source="Microsoft: Fix email delivery issues for error code 5.7.133 in Exchange Online",
    ),
    FamilyCode(
        "5.7.134",
        CATEGORY_SENDER_NOT_AUTHENTICATED,
        "mailbox",
        needs_microsoft=False,
        tokens=("RESOLVER.RST.SenderNotAuthenticatedForMailbox",),
        source="Microsoft: Fix email delivery issues for error code 5.7.134 in Exchange Online",
    ),
    FamilyCode(
        "5.7.135",
        CATEGORY_SENDER_NOT_AUTHENTICATED,
        "public_folder",
        needs_microsoft=False,
        tokens=("RESOLVER.RST.SenderNotAuthenticatedForPublicFolder",),
        source="Microsoft: Fix email delivery issues for error code 5.7.135 in Exchange Online",
    ),
    FamilyCode(
        "5.7.13",
        CATEGORY_SENDER_NOT_AUTHENTICATED,
        "public_folder",
        needs_microsoft=True,
        source="Exchange's older spelling of 5.7.135 (IANA: X.7.13 user account disabled)",
    ),
    FamilyCode(
        "5.7.136",
        CATEGORY_SENDER_NOT_AUTHENTICATED,
        "mail_user",
        needs_microsoft=False,
        tokens=("RESOLVER.RST.SenderNotAuthenticatedForMailUser",),
        source="Microsoft: Fix email delivery issues for error code 5.7.136 in Exchange Online",
    ),
    FamilyCode(
        "5.7.193",
        CATEGORY_SENDER_NOT_AUTHENTICATED,
        "microsoft365_group",
        needs_microsoft=True,
        evidence_tokens=("UnifiedGroupAgent",),
        source="Microsoft: Fix email delivery issues for error code 5.7.193 in Exchange Online",
    ),
    FamilyCode(
        # Exchange 2007-2013 on-premises: "5.7.1 RESOLVER.RST.AuthRequired; authentication required".
        # (5.7.1 RESOLVER.RST.NotAuthorized is the accept-list refusal: not in the family.)
        "5.7.1",
        CATEGORY_SENDER_NOT_AUTHENTICATED,
        "legacy",
        needs_microsoft=False,
        tokens=("RESOLVER.RST.AuthRequired",),
        code_alone=False,
        source="Exchange Server 2007-2013 NDR 5.7.1 RESOLVER.RST.AuthRequired",
    ),
    FamilyCode(
        "5.7.124",
        CATEGORY_SENDER_NOT_ALLOWED,
        "allowed_senders",
        needs_microsoft=False,
        guidance="sender_not_allowed",
        source="Microsoft: Fix email delivery issues for error code 5.7.124 in Exchange Online",
    ),
)

#: Soft line break of quoted-printable ("=" + line break, RFC 2045 section 6.7): it may split a
#: code or a token anywhere in a body the prefilter looks at.
_SOFT_BREAK: Final = rb"(?:=\r?\n)?"


def _soft_pattern(words: list[str]) -> bytes:
    """One bytes alternation of ``words``, a soft break allowed between any two characters.

    Built as a trie so that the engine never backtracks across words sharing a prefix.
    """
    trie: dict[str, dict] = {}  # type: ignore[type-arg]
    for word in words:
        node = trie
        for ch in word.lower():
            node = node.setdefault(ch, {})
        node[""] = {}

    def emit(node: dict) -> bytes:  # type: ignore[type-arg]
        branches = []
        for ch, child in sorted(node.items()):
            if ch == "":
                branches.append(b"")
                continue
            piece = re.escape(ch.encode("ascii"))
            rest = emit(child)
            branches.append(piece + (_SOFT_BREAK + rest if rest else b""))
        if branches == [b""]:
            return b""
        return b"(?:" + b"|".join(branches) + b")"

    return emit(trie)


@dataclass(frozen=True, slots=True)
class TokenMatch:
    """A resolver token that names a row when the codes next to it are generic."""

    token: str
    pattern: re.Pattern[str]
    row: FamilyCode


class Family:
    """The family table and everything derived from it (build one from rows to extend it)."""

    def __init__(self, rows: tuple[FamilyCode, ...]) -> None:
        self.rows = rows
        #: whole code -> row, for codes that identify the case alone.
        self.by_code: dict[str, FamilyCode] = {}
        for row in rows:
            if row.code_alone:
                self.by_code.setdefault(row.code, row)
        self.tokens: tuple[TokenMatch, ...] = tuple(
            TokenMatch(token, re.compile(r"(?<![\w.])" + re.escape(token) + r"(?![\w.])", re.IGNORECASE), row)
            for row in rows
            for token in row.tokens
        )
        #: (category, variant) pairs: the closed set of metric label values.
        self.kinds: tuple[tuple[str, str], ...] = tuple(sorted({(r.category, r.variant) for r in rows}))
        #: (category, variant) -> guidance entry; category -> the guidance of its first row.
        self.guidance: dict[tuple[str, str], str] = {}
        self.category_guidance: dict[str, str] = {}
        #: guidance entry -> the status shown when a bounce gives none.
        self.default_status: dict[str, str] = {}
        for row in rows:
            self.guidance.setdefault((row.category, row.variant), row.explained_as)
            self.category_guidance.setdefault(row.category, row.explained_as)
            self.default_status.setdefault(row.explained_as, row.code)
        evidence = sorted({t for row in rows for t in row.evidence_tokens})
        #: The same words lower-cased (a substring test says first whether there is anything to find).
        self.evidence_words: tuple[str, ...] = tuple(w.lower() for w in evidence)
        #: Words that are Microsoft evidence on their own (beside RESOLVER.* tokens).
        self.evidence_re: re.Pattern[str] | None = (
            re.compile(r"\b(?:" + "|".join(map(re.escape, evidence)) + r")\b", re.IGNORECASE)
            if evidence
            else None
        )
        # The prefilter's body pattern: every whole code that can identify a recipient, and every
        # token (a generic code only counts with its token). A code is whole when no digit or dot
        # precedes it and no digit follows it, even across a soft break.
        codes_ = sorted(self.by_code)
        words = sorted({t for row in rows for t in (*row.tokens, *row.evidence_tokens)})
        alternatives = []
        if codes_:
            alternatives.append(rb"(?<![\d.])" + _soft_pattern(codes_) + rb"(?!" + _SOFT_BREAK + rb"\d)")
        if words:
            alternatives.append(_soft_pattern(words))
        self.body_re: re.Pattern[bytes] = re.compile(b"|".join(alternatives) or rb"(?!)", re.IGNORECASE)

    def with_rows(self, *rows: FamilyCode) -> Family:
        """A family with ``rows`` added (for an operator's extension or a test)."""
        return Family(self.rows + rows)


FAMILY: Family = Family(ROWS)
