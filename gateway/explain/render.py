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
import re
import textwrap
import threading
import unicodedata
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
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
    # CR, LF and TAB become spaces first so words they separated stay apart.
    text = str(value).translate(_LINE_BREAKS)
    if text.isascii():
        # In ASCII the stripped categories are only the C0 controls and DEL (Cc).
        text = _ASCII_CONTROLS.sub("", text)
    else:
        text = "".join(ch for ch in text if unicodedata.category(ch) not in _STRIP_CATEGORIES)
    text = _SPACES.sub(" ", text).strip()
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text


@dataclass(frozen=True, slots=True)
class Rendered:
    """The block for one bounce: plain text (LF line ends) and an HTML fragment."""

    text: str
    html: str


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
                "ps_address": powershell_literal(raw_address),
                "variant": variant,
                "status": status_of(recipient),
                "diagnostic": sanitise(recipient.diagnostic),
                "remote_mta": sanitise(recipient.remote_mta, 120),
                "incident": incident,
            }
        )
    original = report.original
    when = now.astimezone(UTC) if now.tzinfo else now.replace(tzinfo=UTC)
    sender_address = address_of(original.sender) if original else None
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
        "ps_sender": powershell_literal(sender_address),
        "ps_contact_name": powershell_literal(sender_address, max_length=MAX_CONTACT_NAME),
        # Dates in each language's own form, zone stated (gateway.explain.locale).
        "times": {lang: locale.format_datetime(when, lang) for lang in languages},
        "dates": {
            lang: sanitise(locale.format_header_date(sent, lang) or sent, 80) if sent else ""
            for lang in languages
        },
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
    languages = locale.language_order(report.original, settings.languages, settings.language_order)
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
# Six sandboxed Jinja renders cost about a millisecond per bounce, yet most of the block is the
# same for every bounce of one recipient: only the incident ids, the time, and the original's
# subject and date change from one bounce to the next. The packaged templates insert those four
# as they are (escaped in HTML, never wrapped or tested except for emptiness), so the block is
# rendered once per "skeleton" (the context with each of them replaced by a sentinel) and the
# values are put in place of the sentinels afterwards. The first use of a skeleton renders the
# real context too and keeps the skeleton only if filling it in gives exactly the same bytes;
# otherwise that skeleton is always rendered in full. An override directory (whose templates may
# use the values differently, and are reloaded when edited) always gets the full render.

#: Sentinels hold a NUL, which sanitise() removes from every value, so no value can forge one.
_SENTINEL = "\x00bgw{}\x00"
_SENTINEL_RE = re.compile("\x00bgw([0-9]+)\x00")
_SKELETON_CACHE_SIZE = 512
#: key -> (rendered skeleton, or None when the skeleton did not reproduce the full render).
_skeletons: OrderedDict[tuple[object, ...], Rendered | None] = OrderedDict()
_skeletons_lock = threading.Lock()


def _freeze(value: object) -> object:
    if isinstance(value, dict):
        return tuple((k, _freeze(v)) for k, v in value.items())
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def _skeleton(context: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """The context with volatile values replaced by sentinels, and (sentinel, value) pairs."""
    fills: list[tuple[str, str]] = []

    def hole(value: str) -> str:
        if not value:
            return value  # emptiness decides what the templates show: keep it
        sentinel = _SENTINEL.format(len(fills))
        fills.append((sentinel, value))
        return sentinel

    recipients = [dict(r, incident=hole(r["incident"])) for r in context["recipients"]]
    skeleton = dict(
        context,
        recipients=recipients,
        incidents=[r["incident"] for r in recipients if r["incident"]],
        time=hole(context["time"]),
        subject=hole(context["subject"]),
        date=hole(context["date"]),
        times={lang: hole(value) for lang, value in context["times"].items()},
        dates={lang: hole(value) for lang, value in context["dates"].items()},
    )
    return skeleton, fills


def _fill(skeleton: Rendered, fills: list[tuple[str, str]]) -> Rendered:
    # One pass over each block, whatever the number of values: a str.replace() per value would
    # copy the whole block once per value, and both grow with the recipients (quadratic).
    values = [value for _, value in fills]
    escaped = [str(escape(value)) for value in values]
    text = _SENTINEL_RE.sub(lambda m: values[int(m.group(1))], skeleton.text)
    html = _SENTINEL_RE.sub(lambda m: escaped[int(m.group(1))], skeleton.html)
    return Rendered(text=text, html=html)


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
    with _skeletons_lock:
        _skeletons[key] = rendered if _fill(rendered, fills) == full else None
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
