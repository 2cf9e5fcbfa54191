"""A small, strict PowerShell tokenizer for the command lines of the explanation block.

PowerShell itself is not available to the tests, so this accepts only the narrow shape the
templates may produce, and rejects everything else: one statement, ``Verb-Noun`` followed
by ``-Parameter`` / argument pairs, where an argument is a single-quoted literal (``''`` is
its only escape, about_Quoting_Rules), ``$true`` / ``$false`` / ``$null``, a bare word
(``Anonymous``, ``CreateItems``) or a hashtable ``@{Add=<literal>[,<literal>...]}``.
Anything that could start a second statement or an expansion outside a literal (``;``,
``|``, ``&``, ``$(``, ``"``, a backtick, a newline, a comment) is a parse error. PowerShell
also treats U+2018-U+201B as single quotes and U+201C-U+201E as double quotes, so they are
refused even inside a literal.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

CMDLET = re.compile(r"(Get|Set|New|Add|Remove)-[A-Z][A-Za-z0-9]+")
_PARAM = re.compile(r"-[A-Za-z][A-Za-z0-9]*")
_LITERAL = re.compile(r"'((?:[^']|'')*)'")
_CONSTANT = re.compile(r"\$(?:true|false|null)(?![\w(])")
_BARE = re.compile(r"[A-Za-z][A-Za-z0-9]*(?![^\s])")
_HASH_OPEN = re.compile(r"@\{(Add|Remove)=")
_OTHER_QUOTES = frozenset("\u2018\u2019\u201a\u201b\u201c\u201d\u201e")

#: A line of the block that is meant as a command: it starts (after indentation) with a cmdlet.
COMMAND_LINE = re.compile(r"^\s*(?:Get|Set|New|Add|Remove)-[A-Z][A-Za-z]+(?:\s|$)")


class NotOneStatement(ValueError):
    """The line is not a single statement of the accepted shape."""


@dataclass(frozen=True)
class Token:
    kind: str  # cmdlet | param | literal | constant | bare | hash
    text: str  # for literals: the value, '' already undone; for hash: the literals' values joined by \0


def _literal(line: str, pos: int) -> tuple[str, int]:
    match = _LITERAL.match(line, pos)
    if not match:
        raise NotOneStatement(f"expected a single-quoted literal at {pos}: {line[pos : pos + 40]!r}")
    body = match.group(1)
    if _OTHER_QUOTES & set(body) or "\n" in body or "\r" in body:
        raise NotOneStatement(f"a quotation mark PowerShell also reads as a quote, or a line break: {body!r}")
    return body.replace("''", "'"), match.end()


def tokenize(line: str) -> list[Token]:
    """The tokens of one command line; raise NotOneStatement for anything else."""
    if "\n" in line or "\r" in line:
        raise NotOneStatement("a command is one line")
    text = line.strip(" ")
    match = CMDLET.match(text)
    if not match:
        raise NotOneStatement(f"no cmdlet at the start: {text[:40]!r}")
    tokens = [Token("cmdlet", match.group(0))]
    pos = match.end()
    expect_value = False
    while pos < len(text):
        if text[pos] != " ":
            raise NotOneStatement(f"expected a space at {pos}: {text[pos : pos + 40]!r}")
        while pos < len(text) and text[pos] == " ":
            pos += 1
        if pos >= len(text):
            break
        ch = text[pos]
        if ch == "-" and not expect_value:
            match = _PARAM.match(text, pos)
            if not match:
                raise NotOneStatement(f"bad parameter at {pos}: {text[pos : pos + 40]!r}")
            tokens.append(Token("param", match.group(0)))
            pos, expect_value = match.end(), True
            continue
        if not expect_value:
            raise NotOneStatement(f"an argument without a parameter at {pos}: {text[pos : pos + 40]!r}")
        if ch == "'":
            value, pos = _literal(text, pos)
            tokens.append(Token("literal", value))
        elif ch == "$":
            match = _CONSTANT.match(text, pos)
            if not match:
                raise NotOneStatement(f"a variable or expansion at {pos}: {text[pos : pos + 40]!r}")
            tokens.append(Token("constant", match.group(0)))
            pos = match.end()
        elif ch == "@":
            match = _HASH_OPEN.match(text, pos)
            if not match:
                raise NotOneStatement(f"bad hashtable at {pos}: {text[pos : pos + 40]!r}")
            pos = match.end()
            values = []
            while True:
                value, pos = _literal(text, pos)
                values.append(value)
                if text.startswith(",", pos):
                    pos += 1
                    continue
                if text.startswith("}", pos):
                    pos += 1
                    break
                raise NotOneStatement(f"hashtable not closed at {pos}: {text[pos : pos + 40]!r}")
            tokens.append(Token("hash", "\0".join(values)))
        else:
            match = _BARE.match(text, pos)
            if not match:
                raise NotOneStatement(f"unexpected {ch!r} at {pos}: {text[pos : pos + 40]!r}")
            tokens.append(Token("bare", match.group(0)))
            pos = match.end()
        expect_value = False
    return tokens


def literals(tokens: list[Token]) -> list[str]:
    """Every literal value in the tokens (hashtable entries included)."""
    found: list[str] = []
    for token in tokens:
        if token.kind == "literal":
            found.append(token.text)
        elif token.kind == "hash":
            found.extend(token.text.split("\0"))
    return found


def command_lines(text: str) -> list[str]:
    """Lines of a plain-text block that start (after indentation) with a cmdlet."""
    return [line for line in text.split("\n") if COMMAND_LINE.match(line)]


_PRE = re.compile(r"<pre[^>]*>(.*?)</pre>", re.DOTALL)


def html_command_lines(fragment: str) -> list[str]:
    """The lines inside every <pre> of an HTML block, unescaped (all of them must be commands)."""
    lines: list[str] = []
    for block in _PRE.findall(fragment):
        lines.extend(html.unescape(line) for line in block.split("\n") if line.strip())
    return lines
