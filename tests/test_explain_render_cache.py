"""The render's skeleton cache gives exactly the block a full render gives, whatever the values.

``gateway.explain.render`` renders the packaged templates once per skeleton (the context with
the bounce's values replaced by sentinels) and fills the values in afterwards; addresses are
wrapped into prose, so their sentinels must break lines where the addresses would. Each case
renders a report through the cache (twice: the first call checks the skeleton, the second uses
it) and compares it with a full render of the same context.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest

from gateway.bounce.report import (
    CATEGORY_SENDER_NOT_ALLOWED,
    CATEGORY_SENDER_NOT_AUTHENTICATED,
    BounceReport,
    OriginalMessage,
    RecipientReport,
)
from gateway.config import ExplainSettings
from gateway.explain import render

NOW = datetime(2026, 11, 30, 9, 30, tzinfo=UTC)

#: Addresses whose wrapping or escaping a same-length sentinel could get wrong.
ADDRESSES = [
    "sales-team@contoso.example",  # starts like a Verb-Noun word: never a line break before it
    "Set-Mailbox@contoso.example",
    "a@b.example",
    "x@y",  # shorter than a sentinel
    "--boundary@contoso.example",  # a line may start with it
    "-x@contoso.example",
    "two words@contoso.example",
    "no-at-sign.contoso.example",
    "<script>&amp;\"'@contoso.example",
    "山田太郎@例え.jp",
    "very.long.local.part." * 12 + "@contoso.example",
    "sales@contoso.example",
    "sales@contoso.exampl",  # begins the previous one
    "?",
]

VARIANTS = [
    (CATEGORY_SENDER_NOT_AUTHENTICATED, "group", "5.7.133"),
    (CATEGORY_SENDER_NOT_AUTHENTICATED, "mailbox", "5.7.134"),
    (CATEGORY_SENDER_NOT_ALLOWED, "sender_not_allowed", "5.7.124"),
]


def _report(recipients: list[tuple[str, int]], sender: str | None, subject: str) -> BounceReport:
    rcpts = []
    for address, kind in recipients:
        category, variant, status = VARIANTS[kind]
        rcpts.append(
            RecipientReport(
                recipient=address,
                action="failed",
                status=status,
                diagnostic=f"550 {status} {address} [HOST 2026-11-30T09:30:00.{len(rcpts)}Z]",
                remote_mta="mx.contoso.example",
                category=category,
                variant=variant,
            )
        )
    return BounceReport(
        is_bounce=True,
        format="rfc3464",
        reporting_mta="dsn.contoso.example",
        message_id=f"<{subject}@bounce.example>",
        original=OriginalMessage(
            message_id="<orig@example.org>",
            sender=sender,
            subject=subject,
            date="Mon, 30 Nov 2026 09:29:00 +0900",
        ),
        recipients=rcpts,
    )


def _cases() -> list[tuple[list[tuple[str, int]], str | None]]:
    cases: list[tuple[list[tuple[str, int]], str | None]] = []
    for address in ADDRESSES:
        cases.append(([(address, 0)], "Taro <taro@example.org>"))
        cases.append(([(address, 1)], address))  # the sender's literal from the same odd value
    # Several recipients: later ones of a kind refer to the first ("same steps as for ...").
    for a, b in itertools.permutations(ADDRESSES[:6] + ADDRESSES[11:13], 2):
        cases.append(([(a, 0), (b, 0), (a, 0), (b, 1)], None))
    cases.append(([(a, 2) for a in ADDRESSES], "not an address"))
    return cases


def _from_lines(filled: render.Filled) -> str:
    lines = filled.lines.lines
    return "\n".join(line.fill(filled.values) if isinstance(line, render.Line) else line for line in lines)


@pytest.mark.parametrize("languages", [["en", "ja"], ["ja"]])
def test_cached_block_equals_the_full_render(languages: list[str]) -> None:
    settings = ExplainSettings(languages=languages, language_order="configured")
    full_env = render.build_environment(None)
    render._skeletons.clear()
    cases = _cases()
    assert len(cases) > 50
    for n, (recipients, sender) in enumerate(cases):
        report = _report(recipients, sender, f"Subject {n} <b>&</b> {{0}} }}{{")
        ids = [f"01JWQ2HWP8K09VEX330RBX{n:04d}"[:26]] * len(report.family)
        expected = render.render(report, incident_ids=ids, now=NOW, settings=settings, environment=full_env)
        for _ in range(2):
            got = render.render(report, incident_ids=ids, now=NOW, settings=settings)
            assert got == expected, (recipients, sender)
        # From the cache, the block also comes line by line (what splice encodes once per skeleton).
        assert got.text_lines is not None and got.html_lines is not None
        assert (_from_lines(got.text_lines), _from_lines(got.html_lines)) == (got.text, got.html)
    # Every skeleton reproduced its full render on first use (None: it did not, and that
    # shape of values is rendered in full each time).
    assert render._skeletons
    assert all(value is not None for value in render._skeletons.values())


def test_one_skeleton_serves_other_addresses_of_the_same_shape() -> None:
    """The point of the cache: a new recipient of a known kind costs no new Jinja render."""
    settings = ExplainSettings()
    render._skeletons.clear()
    for n in range(5):
        report = _report([(f"user{n}-team@contoso.example", 0)], f"sender{n}@example.org", f"s{n}")
        render.render(report, incident_ids=[f"id{n}"], now=NOW, settings=settings)
    assert len(render._skeletons) == 1
    assert all(value is not None for value in render._skeletons.values())
