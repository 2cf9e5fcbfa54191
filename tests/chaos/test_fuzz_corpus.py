"""10,000 mutated corpus bounces through the whole pipeline (seeded, so every run is the same).

For every message: never a 5xx caused by our own failure (only 552 for size and 500 5.5.2 for an
over-long line, both the client's), never a 4xx (the next hop is healthy), and what arrived is
either the message as sent or an explained bounce whose delivery-status fields read the same.
Every incident an explained bounce names is in the database; the gateway still answers afterwards.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
from collections import Counter

from sqlalchemy import create_engine, select

from gateway.outcomes import ParseStage
from storage.models import Incident
from tests.chaos.harness import LINE_ENDINGS, TAG_RE, Msg, Rules, check, send_all, send_concurrently, tagged
from tests.chaos.mutations import corpus_samples, mutate
from tests.conftest import GatewayFactory
from tests.explain_checks import delivery_status_fields
from tests.metric_samples import MetricDeltas
from tests.positives import POSITIVES
from tests.recording_server import RecordingServer
from tests.smtp_client import MESSAGE

SEED = 20261127
COUNT = int(os.environ.get("BOUNCEGW_CHAOS_FUZZ", "10000"))
SESSIONS = 8


def ds_fields(data: bytes) -> object:
    try:
        return delivery_status_fields(data)
    except Exception as exc:  # the stdlib's own verdict on broken input; must be the same both sides
        return type(exc).__name__


def build(rng: random.Random) -> tuple[list[Msg], Counter[str]]:
    corpus = corpus_samples()
    positives = [p.data for p in POSITIVES]
    messages, kinds = [], Counter[str]()
    for n in range(COUNT):
        source = rng.choice(positives) if rng.random() < 0.4 else rng.choice(corpus)
        names, data = mutate(rng, source)
        for name in names.split("+"):
            kinds[name] += 1
        tag = f"fuzz-{n}"
        messages.append(Msg(tag, tagged(tag, data)))
    return messages, kinds


_EXPLAINED = re.compile(rb"\AX-Bouncegw-Explained:((?:[^\r\n]|\r\n[ \t])*)")


def explained_ids(data: bytes) -> set[str]:
    """The incident ids an explained bounce names (the header may be folded)."""
    found = _EXPLAINED.match(data)
    assert found is not None
    value = re.sub(rb"\r\n[ \t]", b" ", found.group(1)).decode()
    _, _, ids = value.partition("incident=")
    return {i.strip() for i in ids.split(",") if i.strip()}


def incident_ids(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return set(conn.execute(select(Incident.id)).scalars())
    finally:
        engine.dispose()


async def test_mutated_corpus_bounces(hop: RecordingServer, make_gateway: GatewayFactory) -> None:
    messages, kinds = build(random.Random(SEED))
    app = await make_gateway(hop.address)
    counted = MetricDeltas()
    outcomes = await send_concurrently(app.listener.port, messages, SESSIONS, timeout=60)
    sent = {o.msg.tag: o.msg.data for o in outcomes}
    identical = explained = 0
    named: set[str] = set()
    for received in hop.messages:
        found = TAG_RE.search(received.data[:4096])
        assert found is not None
        original = sent[found.group(1).decode()]
        expected = LINE_ENDINGS.sub(b"\r\n", original if original.endswith(b"\r\n") else original + b"\r\n")
        if received.message == expected:
            identical += 1
            continue
        head, _, _ = received.message.partition(b"\r\n")
        assert head.startswith(b"X-Bouncegw-Explained: "), (
            f"changed without being explained: {found.group(1)!r}"
        )
        assert ds_fields(received.message) == ds_fields(expected), (
            f"delivery-status changed: {found.group(1)!r}"
        )
        explained += 1
        named.update(explained_ids(received.message))
    stored = await asyncio.to_thread(incident_ids, app.settings.database.url)
    figures = check(
        "fuzz_10k_mutated_corpus",
        outcomes,
        hop.messages,
        None,
        Rules(allowed_5xx=("552 5.3.4", "500 5.5.2")),
        recorded_total=len(stored),
        identical=identical,
        explained=explained,
        parse_failures=sum(counted("bouncegw_parse_failures_total", stage=s) for s in ParseStage),
        annotation_failures=counted("bouncegw_annotations_total", outcome="failed"),
        mutations=dict(sorted(kinds.items())),
    )

    def stored_by(path: str) -> float:
        return counted("bouncegw_storage_incidents_total", path=path)

    assert figures.sent == COUNT and figures.replies_4xx == 0
    assert named <= stored, "an explained bounce names an incident that was not recorded"
    # bouncegw_incidents_recorded_total counts records submitted; a recipient listed twice in one
    # bounce is one row
    recorded = counted("bouncegw_incidents_recorded_total")
    assert len(stored) == stored_by("database") + stored_by("replayed") <= recorded
    assert counted("bouncegw_record_failures_total") == 0
    assert explained > 0 and identical > 0
    # the gateway is still there and still relays
    after = await send_all(app.listener.port, [Msg("fuzz-after", tagged("fuzz-after", MESSAGE))])
    assert after[0].accepted
