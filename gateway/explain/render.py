"""Render the explanation block (text and HTML) from Jinja2 templates.

Templates ship in the package under ``gateway/templates/<lang>/`` and can be
overridden file by file from ``[explain] template_dir`` (same layout): the
loader looks in the override directory first, then in the package.

Every value taken from the bounce is untrusted. It is sanitised here, before
any template sees it (control characters, CR/LF, bidi overrides and zero-width
characters removed, length bounded), and HTML templates are autoescaped, so a
recipient such as ``<script>`` or ``a@b\\r\\nBcc: x`` injects nothing. Values
are data, never template source, so ``{{ 7*7 }}`` in a subject stays literal.
"""

from __future__ import annotations

import functools
import itertools
import re
import string
import textwrap
import threading
import unicodedata
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
from jinja2.nodes import EvalContext
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markupsafe import Markup, escape

from gateway.bounce import family
from gateway.bounce.report import (
    CATEGORY_SENDER_NOT_ALLOWED,
    CATEGORY_SENDER_NOT_AUTHENTICATED,
    BounceReport,
    OriginalMessage,
    RecipientReport,
)
from gateway.config import ExplainSettings
from gateway.explain import locale
from gateway.explain.commands import address_of, powershell_argument, powershell_literal

#: Guidance entries the templates know (``content.j2`` of each language has one entry each),
#: derived from the family table (``gateway.bounce.family``): each row names its guidance. An unknown
#: variant falls back to the generic 5.7.12 text, which tells the admin how to find the
#: recipient's kind.
VARIANTS = tuple(
    dict.fromkeys(
        row.explained_as for row in family.FAMILY.rows if row.category == CATEGORY_SENDER_NOT_AUTHENTICATED
    )
)
SENDER_NOT_ALLOWED = family.FAMILY.category_guidance[CATEGORY_SENDER_NOT_ALLOWED]
FALLBACK_VARIANT = "organization"

#: Status code shown when the bounce did not give one (text-only bounces), per guidance entry.
DEFAULT_STATUS: dict[str, str] = dict(family.FAMILY.default_status)

#: Bounds on values from the bounce (an address is at most 254 octets, RFC 5321 section 4.5.3.1.3).
MAX_ADDRESS = 254
MAX_TEXT = 300

# Unicode general category Cc/Cf covers C0/C1 controls, bidi embeddings and
# overrides (U+202A-U+202E, U+2066-U+2069), zero-width characters (U+200B-U+200F),
# the BOM and soft hyphen; line/paragraph separators are Zl/Zp.
_STRIP_CATEGORIES = frozenset({"Cc", "Cf", "Co", "Cs", "Cn", "Zl", "Zp"})
_SPACES = re.compile(r"\s+")
_LINE_BREAKS = str.maketrans(dict.fromkeys("\r\n\t\v\f", " "))
_ASCII_CONTROLS = re.compile(r"[\x00-\x1f\x7f]")


def sanitise(value: object, limit: int = MAX_TEXT) -> str:
    """One line of plain text: controls and invisible formatting removed, whitespace collapsed, bounded."""
    if value is None:
        return ""
    text = str(value)
    if text.isprintable() and "  " not in text:
        # The usual value, in a fraction of the time (0.3 us instead of 2.3 for ASCII, measured on
        # a family DSN's values, and of 4 us for its Japanese date): printable text holds no
        # character of the categories removed and no whitespace but the space (isprintable()
        # excludes the categories C* and Z*, the space apart), so without a run of spaces
        # _clean() would only strip its ends.
        return _bounded(text.strip(), limit)
    return _bounded(_clean(text), limit)


def _clean(text: str) -> str:
    # CR, LF and TAB become spaces first so words they separated stay apart.
    text = text.translate(_LINE_BREAKS)
    if text.isascii():
        # In ASCII the stripped categories are only the C0 controls and DEL (Cc).
        text = _ASCII_CONTROLS.sub("", text)
    else:
        text = "".join(ch for ch in text if unicodedata.category(ch) not in _STRIP_CATEGORIES)
    return _SPACES.sub(" ", text).strip()


def _bounded(text: str, limit: int) -> str:
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text


@dataclass(frozen=True, slots=True)
class Rendered:
    """The block for one bounce: plain text (LF line ends) and an HTML fragment.

    When the skeleton cache assembled them, ``text_lines`` and ``html_lines`` say how (its
    lines and this bounce's values), so an encoder can reuse what it derived from the lines of
    that skeleton; None after a full render. They never decide equality: the blocks do.
    """

    text: str
    html: str
    text_lines: Filled | None = field(default=None, compare=False)
    html_lines: Filled | None = field(default=None, compare=False)


def variant_of(recipient: RecipientReport) -> str:
    """Which guidance a family recipient gets (the family table's row for its kind)."""
    table = family.FAMILY
    guidance = table.guidance.get((recipient.category or "", recipient.variant or ""))
    if guidance is None:
        guidance = table.category_guidance.get(recipient.category or "", FALLBACK_VARIANT)
    return guidance


def status_of(recipient: RecipientReport) -> str:
    """The recipient's status code (digits and dots only), or its variant's usual code."""
    status = recipient.status or ""
    if re.fullmatch(r"[245]\.\d{1,3}\.\d{1,3}", status):
        return status
    return family.FAMILY.default_status.get(variant_of(recipient), DEFAULT_STATUS[FALLBACK_VARIANT])


_PLACEHOLDER = re.compile(r"\{(address|sender|id|name|first)\}")


@jinja2.pass_eval_context
def fill(eval_ctx: EvalContext, template: str, **values: str) -> str | Markup:
    """Fill the ``{address}``, ``{first}``, ``{sender}``, ``{id}`` and ``{name}`` placeholders in one pass.

    One pass, so a value that itself contains ``{sender}`` is not expanded again;
    in an autoescaped template both the wording and the values are escaped.
    """
    pieces = _PLACEHOLDER.split(template)
    # split() alternates literal wording (even indexes) and placeholder names (odd).
    filled = [piece if i % 2 == 0 else values.get(piece, "{" + piece + "}") for i, piece in enumerate(pieces)]
    if eval_ctx.autoescape:
        return Markup("").join(escape(piece) for piece in filled)
    return "".join(filled)


#: A space before a word shaped like a cmdlet (Verb-Noun, any case): never a line break there.
_BEFORE_CMDLET_LIKE = re.compile(r" (?=[A-Za-z]+-[A-Za-z])")
#: Stands for a space that must not break; sanitise() removes NUL from every value, so none holds it.
_GLUE = "\x00"


def wrap(text: str, width: int, first: str = "", rest: str = "", keep: str = "") -> str:
    """Fill a paragraph to ``width`` columns (0: leave it on one line, as for Japanese).

    No continuation line may look like a command an administrator could paste: the paragraph
    is never broken before a Verb-Noun word, nor inside or just before ``keep`` (a value from
    the bounce, such as the recipient's address, which may hold spaces when it is not a plain
    address), so a value never begins a line.
    """
    if not width:
        return first + text
    if keep and " " in keep:
        text = text.replace(keep, keep.replace(" ", _GLUE))
    if keep:
        text = text.replace(" " + keep.replace(" ", _GLUE), _GLUE + keep.replace(" ", _GLUE))
    text = _BEFORE_CMDLET_LIKE.sub(_GLUE, text)
    filled = textwrap.fill(
        text,
        width,
        initial_indent=first,
        subsequent_indent=rest,
        break_long_words=False,
        break_on_hyphens=False,
    )
    return filled.replace(_GLUE, " ")


@functools.lru_cache(maxsize=8)
def build_environment(template_dir: Path | None) -> jinja2.Environment:
    """The sandboxed environment: override directory first, then the packaged templates.

    Cached per directory; Jinja2 still notices edited template files (auto_reload).
    """
    loaders: list[jinja2.BaseLoader] = []
    if template_dir is not None:
        loaders.append(jinja2.FileSystemLoader(str(template_dir)))
    loaders.append(jinja2.PackageLoader("gateway", "templates"))
    env = ImmutableSandboxedEnvironment(
        loader=jinja2.ChoiceLoader(loaders),
        # Only the HTML templates escape; text templates are sanitised instead.
        autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2", "html"), default=False),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
    )
    env.filters["clean"] = sanitise
    env.filters["fill"] = fill
    env.filters["wrap"] = wrap
    # Values reach PowerShell lines only through gateway.explain.commands.powershell_literal(): the
    # packaged templates get its results in the context (ps_address, ps_sender, ps_contact_name);
    # override templates can use `{{ value | ps("<placeholder>") }}` for the same literal-or-placeholder.
    env.filters["ps"] = powershell_argument
    return env


#: New-MailContact's -Name is at most 64 characters (the sender's address is used as the name).
MAX_CONTACT_NAME = 64

# Pure functions of one value, each reading it character by character or through the stdlib's
# address and date parsers: the same recipients, senders and dates come back bounce after bounce.
_VALUE_CACHE = 1024
_literal = functools.lru_cache(maxsize=_VALUE_CACHE)(powershell_literal)
_address_of = functools.lru_cache(maxsize=_VALUE_CACHE)(address_of)
_header_date = functools.lru_cache(maxsize=_VALUE_CACHE)(locale.format_header_date)


def _language_order(original: OriginalMessage | None, settings: ExplainSettings) -> tuple[str, ...]:
    if original is None:
        return locale.language_order(None, settings.languages, settings.language_order)
    # The reader's language comes from these three fields of the original (gateway.explain.locale).
    return _reader_order(
        original.content_language,
        original.charset,
        original.sender,
        tuple(settings.languages),
        settings.language_order,
    )


@functools.lru_cache(maxsize=_VALUE_CACHE)
def _reader_order(
    content_language: str | None,
    charset: str | None,
    sender: str | None,
    languages: tuple[str, ...],
    rule: str,
) -> tuple[str, ...]:
    original = OriginalMessage(content_language=content_language, charset=charset, sender=sender)
    return locale.language_order(original, languages, rule)


def _context(
    report: BounceReport,
    incident_ids: Sequence[str] | None,
    now: datetime,
    languages: Sequence[str],
    limit: int,
) -> dict[str, Any]:
    family = report.family
    ids = list(incident_ids or [])
    recipients = []
    #: variant -> the address of its first recipient: later ones of that variant get only their
    #: commands ("same steps as for ..."), so the block grows by a few lines per recipient.
    first_of: dict[str, str] = {}
    # Past ``limit`` the block stops listing recipients and says how many more there are
    # (``[explain] max_recipients_explained``): a bounce can list thousands. Each one is still
    # recorded as an incident.
    for index, recipient in enumerate(family[:limit]):
        incident = sanitise(ids[index], 64) if index < len(ids) and ids[index] else ""
        raw_address = recipient.recipient or recipient.original_recipient
        address = sanitise(raw_address or "?", MAX_ADDRESS)
        variant = variant_of(recipient)
        same_as = first_of.get(variant, "")
        first_of.setdefault(variant, address)
        recipients.append(
            {
                "address": address,
                "same_as": same_as,
                # The address as a PowerShell literal, or None (the templates then show a placeholder).
                "ps_address": _literal(raw_address),
                "variant": variant,
                "status": status_of(recipient),
                "diagnostic": sanitise(recipient.diagnostic),
                "remote_mta": sanitise(recipient.remote_mta, 120),
                "incident": incident,
            }
        )
    original = report.original
    when = now.astimezone(UTC) if now.tzinfo else now.replace(tzinfo=UTC)
    sender_address = _address_of(original.sender) if original else None
    sent = original.date if original else None
    # The kinds of recipient come from the whole family, listed or not (the headline and the
    # group owner's line speak for all of them).
    variants = {variant_of(recipient) for recipient in family}
    return {
        "recipients": recipients,
        "more_recipients": len(family) - len(recipients),
        "variants": sorted(variants),
        "only_sender_not_allowed": variants == {SENDER_NOT_ALLOWED},
        "incidents": [r["incident"] for r in recipients if r["incident"]],
        "time": when.strftime("%Y-%m-%d %H:%M UTC"),
        "subject": sanitise(original.subject) if original else "",
        "date": sanitise(original.date, 80) if original else "",
        "original_sender": sanitise(original.sender, MAX_ADDRESS) if original else "",
        "ps_sender": _literal(sender_address),
        "ps_contact_name": _literal(sender_address, max_length=MAX_CONTACT_NAME),
        # Dates in each language's own form, zone stated (gateway.explain.locale).
        "times": {lang: locale.format_datetime(when, lang) for lang in languages},
        "dates": {lang: sanitise(_header_date(sent, lang) or sent, 80) if sent else "" for lang in languages},
        "reporting_mta": sanitise(report.reporting_mta, 120),
    }


def render(
    report: BounceReport,
    *,
    incident_ids: Sequence[str] | None,
    now: datetime,
    settings: ExplainSettings,
    environment: jinja2.Environment | None = None,
) -> Rendered:
    """Render every configured language, in order, into one text block and one HTML block."""
    if not report.family:
        raise ValueError("no recipient of the family to explain")
    languages = _language_order(report.original, settings)
    context = _context(report, incident_ids, now, languages, settings.max_recipients_explained)
    if environment is None and settings.template_dir is None:
        return _cached_render(context, languages)
    env = environment or build_environment(settings.template_dir)
    return _render(env, context, languages)


def _render(env: jinja2.Environment, context: dict[str, Any], languages: Sequence[str]) -> Rendered:
    texts = [env.get_template(f"{lang}/block.txt.j2").render(context) for lang in languages]
    # The output of an autoescaped template is already safe HTML: mark it so the frame keeps it.
    htmls = [
        Markup(env.get_template(f"{lang}/block.html.j2").render(context))  # noqa: S704
        for lang in languages
    ]
    frame_context = dict(context, blocks=texts)
    text = env.get_template("frame.txt.j2").render(frame_context)
    html = env.get_template("frame.html.j2").render(dict(context, blocks=htmls))
    return Rendered(text=_tidy(text), html=_tidy(html))


# -- the skeleton cache ---------------------------------------------------------------------------
#
# Six sandboxed Jinja renders cost about 2 ms per bounce, yet the block depends on few things:
# the kinds of recipient, their status codes and which values are missing. So the block is
# rendered once per "skeleton" (the context with each value from the bounce replaced by a
# sentinel) and the values are put in place of the sentinels afterwards. Two kinds of value:
#
# - Inserted as they are (escaped in HTML), never wrapped, tested only for emptiness: incident
#   ids, the time, the original's subject, date and sender, the diagnostic and MTA names, and the
#   PowerShell literals (command lines are never wrapped). Their sentinel is any short string.
# - Wrapped into prose (the recipient's address, and the first one of its kind it refers to): the
#   text wrap measures them. Their sentinel has the value's length and, like the value, no space,
#   so the lines break at the same places (textwrap breaks only at spaces here); it starts with a
#   Verb-Noun-like "A-A" exactly when the value does (wrap() never breaks before such a word). A
#   value that could still wrap differently stays in the skeleton as it is: one without "@" (the
#   prose has no "@", so no such value can be mistaken for a word of it), one starting with "-"
#   (a line may start with it: _tidy() then indents it), one with a space, one shorter than a
#   sentinel, and one that begins another such value of the block (wrap() glues the space before
#   every occurrence of the value it keeps together, a longer value that begins with it too; a
#   value that occurs twice gets one sentinel, glued or not at both places as the value is).
#
# The first use of a skeleton renders the real context too and keeps the skeleton only if filling
# it in gives exactly the same text; otherwise that skeleton is always rendered in full. An
# override directory (whose templates may use the values differently, and are reloaded when
# edited) always gets the full render. tests/test_explain_render_cache.py compares the two on
# adversarial values.

#: Sentinels start with SOH or EOT and hold STX/ETX, control characters sanitise() removes from
#: every value, so no value can forge one; none is whitespace to textwrap.
_SENTINEL = "\x01{}\x02"
_SENTINEL_VERB_NOUN = "A-A\x04{}\x02"
_PAD = "\x03"
_SENTINEL_RE = re.compile("(?:\x01|A-A\x04)([0-9]+)\x02\x03*")
_SKELETON_CACHE_SIZE = 512


@dataclass(frozen=True, slots=True)
class _Pieces:
    """A rendered block split at its sentinels: ``literals[i]`` comes before value ``indexes[i]``."""

    literals: tuple[str, ...]  # one more than indexes: the text after the last value
    indexes: tuple[int, ...]

    @classmethod
    def split(cls, text: str) -> _Pieces:
        # split() alternates literal text (even indexes) and the captured value index (odd).
        pieces = _SENTINEL_RE.split(text)
        return cls(tuple(pieces[0::2]), tuple(int(i) for i in pieces[1::2]))

    def join(self, values: Sequence[str]) -> str:
        # One pass over the pieces: a str.replace() per value would copy the whole block once
        # per value, and both grow with the recipients (quadratic).
        out = [""] * (2 * len(self.literals) - 1)
        out[0::2] = self.literals
        out[1::2] = [values[i] for i in self.indexes]
        return "".join(out)

    def lines(self) -> BlockLines:
        """The same block line by line (see :class:`BlockLines`)."""
        # The block as one format string ("{i}" for value i, literal braces doubled), cut at LF:
        # each line is a format string of its own.
        template = [""] * (2 * len(self.literals) - 1)
        template[0::2] = [literal.replace("{", "{{").replace("}", "}}") for literal in self.literals]
        template[1::2] = [f"{{{index}}}" for index in self.indexes]
        lines: list[str | Line] = []
        for line in "".join(template).split("\n"):
            if any(name is not None for _, name, _, _ in _FORMATTER.parse(line)):
                lines.append(Line(line))
            else:
                lines.append(line.format())  # no value: the line's text, braces undoubled
        return BlockLines(tuple(lines))


_FORMATTER = string.Formatter()


@dataclass(frozen=True, slots=True)
class Line:
    """A line of a cached block that holds values: ``template.format(*values)`` fills it in.

    A format string, not the skeleton's pieces: filling a line of one or two values this way costs
    half as much (measured on the lines of the minimal family DSN's block), and there are a few
    dozen of them per block. Literal braces are doubled; a value is never parsed.
    """

    template: str

    def fill(self, values: Sequence[str]) -> str:
        return self.template.format(*values)


@dataclass(frozen=True, slots=True, eq=False)
class BlockLines:
    """A cached block line by line, each without its LF: the line itself where it holds no value
    from the bounce, else a :class:`Line` to fill with the values.

    Built once per skeleton and kept with it; compared and hashed by identity, so an encoder can
    key what it derives from one skeleton's lines (splice's quoted-printable) by the object.
    """

    lines: tuple[str | Line, ...]


@dataclass(frozen=True, slots=True)
class Filled:
    """A block as its skeleton's lines and one bounce's values: line ``i`` is ``lines.lines[i]``,
    or ``lines.lines[i].fill(values)`` when that is a :class:`Line`; the lines are joined by LF."""

    lines: BlockLines
    values: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Skeleton:
    text: _Pieces
    html: _Pieces
    text_lines: BlockLines
    html_lines: BlockLines


#: key -> the skeleton, or None when it did not reproduce the full render.
_skeletons: OrderedDict[tuple[object, ...], _Skeleton | None] = OrderedDict()
_skeletons_lock = threading.Lock()


_CONTAINERS = (dict, list)


def _freeze(value: object) -> object:
    # Recursing only into containers (most values are strings) makes the key a quarter cheaper.
    if isinstance(value, dict):
        return tuple([(k, _freeze(v) if isinstance(v, _CONTAINERS) else v) for k, v in value.items()])
    if isinstance(value, list):
        return tuple([_freeze(v) if isinstance(v, _CONTAINERS) else v for v in value])
    return value


def _wrappable(values: Sequence[str]) -> set[str]:
    """The values among ``values`` that may be replaced by a same-length sentinel (see above)."""
    fit = sorted({v for v in values if "@" in v and " " not in v and not v.startswith("-")})
    keep = set(fit)
    # A value that begins another one is glued wherever either occurs: keep both. (Equal values
    # share one sentinel.) Sorted, a value begins a later one only if it begins the next one.
    for a, b in itertools.pairwise(fit):
        if b.startswith(a):
            keep.discard(a)
            keep.discard(b)
    return keep


_VERB_NOUN_START = re.compile(r"[A-Za-z]+-[A-Za-z]")


def _skeleton(context: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The context with the bounce's values replaced by sentinels, and the values by index."""
    fills: list[str] = []

    def hole(value: str | None) -> str | None:
        if not value:
            return value  # emptiness decides what the templates show: keep it
        sentinel = _SENTINEL.format(len(fills))
        fills.append(value)
        return sentinel

    recipients = context["recipients"]
    wrappable = _wrappable([r[k] for r in recipients for k in ("address", "same_as") if r[k]])

    sentinels: dict[str, str] = {}

    def wrapped(value: str) -> str:
        if value not in wrappable:
            return value
        if value in sentinels:
            return sentinels[value]
        form = _SENTINEL_VERB_NOUN if _VERB_NOUN_START.match(value) else _SENTINEL
        sentinel = form.format(len(fills))
        if len(sentinel) > len(value):
            return value  # too short to stand for
        fills.append(value)
        sentinels[value] = sentinel = sentinel + _PAD * (len(value) - len(sentinel))
        return sentinel

    holes = [
        dict(
            r,
            address=wrapped(r["address"]),
            same_as=wrapped(r["same_as"]),
            ps_address=hole(r["ps_address"]),
            diagnostic=hole(r["diagnostic"]),
            remote_mta=hole(r["remote_mta"]),
            incident=hole(r["incident"]),
        )
        for r in recipients
    ]
    skeleton = dict(
        context,
        recipients=holes,
        incidents=[r["incident"] for r in holes if r["incident"]],
        time=hole(context["time"]),
        subject=hole(context["subject"]),
        date=hole(context["date"]),
        original_sender=hole(context["original_sender"]),
        ps_sender=hole(context["ps_sender"]),
        ps_contact_name=hole(context["ps_contact_name"]),
        reporting_mta=hole(context["reporting_mta"]),
        times={lang: hole(value) for lang, value in context["times"].items()},
        dates={lang: hole(value) for lang, value in context["dates"].items()},
    )
    return skeleton, fills


def _fill(skeleton: _Skeleton, fills: list[str]) -> Rendered:
    values = tuple(fills)
    escaped = tuple([str(escape(value)) for value in fills])
    return Rendered(
        text=skeleton.text.join(values),
        html=skeleton.html.join(escaped),
        text_lines=Filled(skeleton.text_lines, values),
        html_lines=Filled(skeleton.html_lines, escaped),
    )


def _cached_render(context: dict[str, Any], languages: tuple[str, ...]) -> Rendered:
    skeleton, fills = _skeleton(context)
    key = (languages, _freeze(skeleton))
    # Large bounces are annotated in worker threads: the cache is shared, so lock it.
    with _skeletons_lock:
        hit = key in _skeletons
        cached = _skeletons.get(key)
        if hit:
            _skeletons.move_to_end(key)
    if cached is not None:
        return _fill(cached, fills)
    env = build_environment(None)
    full = _render(env, context, languages)
    if hit:
        return full
    rendered = _render(env, skeleton, languages)
    text, html = _Pieces.split(rendered.text), _Pieces.split(rendered.html)
    split = _Skeleton(text=text, html=html, text_lines=text.lines(), html_lines=html.lines())
    with _skeletons_lock:
        _skeletons[key] = split if _fill(split, fills) == full else None
        if len(_skeletons) > _SKELETON_CACHE_SIZE:
            _skeletons.popitem(last=False)
    return full


#: RFC 2046 section 5.1.1: a boundary delimiter ("--" + boundary) must not start any line of a part.
BOUNDARY_PREFIX = "--"


def _tidy(text: str) -> str:
    """LF line ends, no trailing spaces (quoted-printable would have to escape them), no "--" line start.

    The packaged templates never start a line with "--" or with a value from the bounce; this
    guard covers override templates and any wrapping: such a line gets one leading space.
    """
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    tidy = (line.rstrip() for line in lines)
    return (
        "\n".join(" " + line if line.startswith(BOUNDARY_PREFIX) else line for line in tidy).strip("\n")
        + "\n"
    )
