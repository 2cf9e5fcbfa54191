"""The family is defined once (``gateway.family.ROWS``); everything else is derived from it.

A row added to the table is seen by the prefilter, classified, explained and recorded with no
other edit: shown here end to end through a running gateway and a real SQLite database.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
from prometheus_client import REGISTRY

from gateway import metrics
from gateway.bounce import family, prefilter
from gateway.bounce.parse import parse
from gateway.bounce.report import CATEGORY_SENDER_NOT_AUTHENTICATED
from gateway.explain import render
from tests.conftest import GatewayFactory
from tests.positives import exo_reply_ndr, qp
from tests.recording_server import RecordingServer
from tests.smtp_client import asend

LANGUAGES = ("en", "ja")


def bounce_for(row: family.FamilyCode, rcpt: str = "someone@contoso.example") -> bytes:
    token = row.tokens[0] if row.tokens else (row.evidence_tokens[0] if row.evidence_tokens else "")
    reply = f"550 {row.code} {token}; refused".replace("  ", " ")
    return exo_reply_ndr(rcpt, row.code, reply, "refused")


@pytest.mark.parametrize("row", family.ROWS, ids=lambda r: f"{r.code}-{r.variant}")
def test_every_row_passes_the_prefilter_and_is_classified(row: family.FamilyCode) -> None:
    data = bounce_for(row)
    assert prefilter.might_be_family_bounce(data)
    got = [(r.status, r.category, r.variant) for r in parse(data).family]
    assert got == [(row.code, row.category, row.variant)]


def test_the_prefilter_matches_whole_codes_across_soft_breaks() -> None:
    pattern = family.FAMILY.body_re
    for code in family.FAMILY.by_code:
        assert pattern.search(f"said: 550 {code} x".encode())
        broken = qp(f"said: 550 {code[:4]}\x00{code[4:]} x")
        assert pattern.search(broken.encode()), broken
        assert not pattern.search(f"version {code}9 or 1{code}".encode())
    assert not pattern.search(b"5.7.1 RESOLVER.RST.NotAuthorized")


def test_metric_labels_and_render_maps_are_derived() -> None:
    rows = family.ROWS
    assert set(metrics.FAMILY_KINDS) == {(r.category, r.variant) for r in rows}
    not_auth = [r for r in rows if r.category == CATEGORY_SENDER_NOT_AUTHENTICATED]
    assert set(render.VARIANTS) == {r.explained_as for r in not_auth}
    assert "microsoft365_group" in render.VARIANTS
    for row in rows:
        assert render.DEFAULT_STATUS[row.explained_as] in {
            r.code for r in rows if r.explained_as == row.explained_as
        }
    assert render.SENDER_NOT_ALLOWED in render.DEFAULT_STATUS


@pytest.mark.parametrize("lang", LANGUAGES)
def test_every_guidance_has_wording_in_every_language(lang: str) -> None:
    content = render.build_environment(None).get_template(f"{lang}/content.j2").module
    guidance = {r.explained_as for r in family.ROWS}
    for table in ("kind", "meaning", "advice"):
        missing = guidance - set(getattr(content, table))
        assert not missing, (lang, table, missing)


def test_every_row_cites_its_source() -> None:
    assert all(row.source for row in family.ROWS)


def family_count(category: str, variant: str) -> float:
    labels = {"category": category, "variant": variant}
    return REGISTRY.get_sample_value("bouncegw_family_recipients_total", labels) or 0.0


async def test_a_row_added_to_the_table_flows_through_the_gateway(
    monkeypatch: pytest.MonkeyPatch, hop: RecordingServer, make_gateway: GatewayFactory
) -> None:
    row = family.FamilyCode(
        "5.7.177",
        CATEGORY_SENDER_NOT_AUTHENTICATED,
        "example_kind",
        needs_microsoft=True,
        tokens=("RESOLVER.RST.ExampleOnly",),
        guidance="group",
        source="a row made up for this test",
    )
    rcpt = "example-list@contoso.example"
    data = bounce_for(row, rcpt)
    # Unknown to the shipped table: the prefilter lets it pass unparsed.
    assert not prefilter.might_be_family_bounce(data)

    monkeypatch.setattr(family, "FAMILY", family.FAMILY.with_rows(row))
    assert prefilter.might_be_family_bounce(data)
    before = family_count(CATEGORY_SENDER_NOT_AUTHENTICATED, "example_kind")
    app = await make_gateway(hop.address)
    await asend(app.listener.port, "", ["sender@example.org"], data)

    out = hop.messages[0].message
    assert out.startswith(b"X-Bouncegw-Explained: ")
    explained = parse(out)
    assert explained.already_explained
    # The block explains it with the row's guidance ("group") and the row's code.
    text = b"".join(out[hp.body_start : hp.body_end] for hp in explained.human_parts)
    assert b"5.7.177" in text.replace(b"=\r\n", b"")
    assert b"Set-DistributionGroup" in text.replace(b"=\r\n", b"")
    rows = await asyncio.to_thread(
        lambda: httpx.get(f"http://127.0.0.1:{app.http_port}/api/v1/incidents", timeout=10).json()["items"]
    )
    assert [(r["failed_recipient"], r["status"], r["variant"]) for r in rows] == [
        (rcpt, "5.7.177", "example_kind")
    ]
    assert family_count(CATEGORY_SENDER_NOT_AUTHENTICATED, "example_kind") == before + 1
