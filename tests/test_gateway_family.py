"""Family bounces through the running gateway: explained, recorded once, queryable; other mail untouched."""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys

import httpx
import pytest

from gateway.bounce.parse import parse
from storage.db import SchemaOutOfDate, upgrade
from storage.repository import IncidentFilter, Repository
from tests.conftest import GatewayFactory
from tests.explain_checks import delivery_status_fields
from tests.metric_samples import MetricDeltas
from tests.positives import NEGATIVES, POSITIVES
from tests.recording_server import RecordingServer
from tests.smtp_client import MESSAGE, asend

pytest_plugins = ["tests.storage_fixtures"]


def incidents(app_url: str) -> list[dict[str, object]]:
    return httpx.get(f"{app_url}/api/v1/incidents", params={"limit": 100}, timeout=10).json()["items"]


@pytest.mark.parametrize("positive", POSITIVES, ids=[p.name for p in POSITIVES])
async def test_family_bounce_is_explained_and_recorded(
    positive: object, hop: RecordingServer, make_gateway: GatewayFactory
) -> None:
    app = await make_gateway(hop.address)
    await asend(app.listener.port, "", ["sender@example.org"], positive.data)  # type: ignore[attr-defined]
    assert len(hop.messages) == 1
    out = hop.messages[0].message
    first_line = out.split(b"\r\n", 1)[0]
    assert first_line.startswith(b"X-Bouncegw-Explained: ")
    assert out.count(b"X-Bouncegw-Explained:") == 1
    # the machine-readable part reads the same after annotation
    assert delivery_status_fields(out) == delivery_status_fields(positive.data)  # type: ignore[attr-defined]
    # and the output is still the same bounce to the parser
    again = parse(out)
    assert again.already_explained
    assert [(r.recipient, r.variant) for r in again.family] == [
        (r.recipient, r.variant)
        for r in parse(positive.data).family  # type: ignore[attr-defined]
    ]
    # recorded before the upstream heard 250: visible through the admin API at once
    rows = await asyncio.to_thread(incidents, f"http://127.0.0.1:{app.http_port}")
    expected = sorted((rcpt.lower(), variant) for rcpt, _, _, variant in positive.expected)  # type: ignore[attr-defined]
    assert sorted((str(r["failed_recipient"]), str(r["variant"])) for r in rows) == expected
    assert all(r["annotated"] and r["relay_outcome"] == "relayed" for r in rows)
    ids = {str(r["id"]) for r in rows}
    assert all(i.encode() in first_line or i.encode() in out[:400] for i in ids)


async def test_ordinary_mail_and_negatives_pass_byte_identical(
    hop: RecordingServer, make_gateway: GatewayFactory
) -> None:
    app = await make_gateway(hop.address)
    # (near misses that are 5.7.124 bounces get their own explanation: not in this list)
    samples = [MESSAGE, *(n.data for n in NEGATIVES if not n.allowed)]
    assert len(samples) > 4
    for data in samples:
        await asend(app.listener.port, "", ["sender@example.org"], data)
    assert [hashlib.sha256(m.message).hexdigest() for m in hop.messages] == [
        hashlib.sha256(d).hexdigest() for d in samples
    ]
    repo = Repository.from_url(app.settings.database.url)
    try:
        variants = {r.category for r in repo.query(IncidentFilter(), limit=100).items}
    finally:
        repo.close()
    assert variants == set()


async def test_retried_bounce_is_recorded_once_and_explained_bounce_not_again(
    hop: RecordingServer, make_gateway: GatewayFactory
) -> None:
    positive = next(p for p in POSITIVES if len(p.expected) == 1)
    app = await make_gateway(hop.address)
    await asend(app.listener.port, "", ["sender@example.org"], positive.data)
    await asend(app.listener.port, "", ["sender@example.org"], positive.data)  # an upstream retry
    explained = hop.messages[0].message
    await asend(app.listener.port, "", ["sender@example.org"], explained)  # came back through a second hop
    assert len(hop.messages) == 3
    assert hop.messages[2].message == explained  # untouched
    rows = await asyncio.to_thread(incidents, f"http://127.0.0.1:{app.http_port}")
    assert len(rows) == 1


async def test_annotation_failure_relays_the_original(
    hop: RecordingServer, make_gateway: GatewayFactory
) -> None:
    positive = next(p for p in POSITIVES if b"charset=utf-8" in p.data or b'charset="utf-8"' in p.data)
    broken = positive.data.replace(b"charset=utf-8", b"charset=x-no-such-charset").replace(
        b'charset="utf-8"', b'charset="x-no-such-charset"'
    )
    app = await make_gateway(hop.address)
    counted = MetricDeltas()
    await asend(app.listener.port, "", ["sender@example.org"], broken)
    assert hop.messages[0].message == broken
    assert counted("bouncegw_annotations_total", outcome="failed") == 1
    # still recorded, marked as not annotated
    rows = await asyncio.to_thread(incidents, f"http://127.0.0.1:{app.http_port}")
    assert rows and not any(r["annotated"] for r in rows)


async def test_deferred_relay_records_nothing(hop: RecordingServer, make_gateway: GatewayFactory) -> None:
    hop.replies["DATA_END"] = lambda _: "451 4.3.0 try later"
    positive = POSITIVES[0]
    app = await make_gateway(hop.address)
    with pytest.raises(Exception):  # noqa: B017 - smtplib.SMTPDataError
        await asend(app.listener.port, "", ["sender@example.org"], positive.data)
    rows = await asyncio.to_thread(incidents, f"http://127.0.0.1:{app.http_port}")
    assert rows == []


async def test_recorded_on_either_database_and_queryable_at_once(
    db_url: str, hop: RecordingServer, make_gateway: GatewayFactory
) -> None:
    if db_url.startswith("postgresql"):
        # serve refuses a PostgreSQL schema that is not up to date, and says what to run
        with pytest.raises(SchemaOutOfDate, match="bouncegw db upgrade"):
            await make_gateway(hop.address, {"database.url": db_url})
        await asyncio.to_thread(upgrade, db_url)
    app = await make_gateway(hop.address, {"database.url": db_url})
    positive = next(p for p in POSITIVES if len(p.expected) == 1)
    await asend(app.listener.port, "", ["sender@example.org"], positive.data)
    # no waiting: the incident is durable before the upstream hears 250
    rows = await asyncio.to_thread(incidents, f"http://127.0.0.1:{app.http_port}")
    assert [(r["failed_recipient"], r["status"]) for r in rows] == [
        (positive.expected[0][0].lower(), positive.expected[0][1])
    ]
    listed = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "gateway", "incidents", "list", "--database", db_url, "--format", "json"],
        capture_output=True,
        check=True,
    )
    assert [r["id"] for r in json.loads(listed.stdout)] == [rows[0]["id"]]
