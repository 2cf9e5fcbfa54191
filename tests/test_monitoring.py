"""Metrics, health checks and transaction logs of the running gateway, scraped over real HTTP."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway import metrics
from gateway.bounce.parse import parse as parse_bounce
from gateway.logs import setup_logging
from tests.conftest import GatewayFactory
from tests.positives import POSITIVES
from tests.recording_server import RecordingServer
from tests.smtp_client import MESSAGE, asend

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
#: A metric name, not part of a recording rule's name (those contain colons).
METRIC_NAME = re.compile(r"(?<![\w:])bouncegw_[a-z0-9_]+(?![\w:])")

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def get(url: str, **kw: object) -> httpx.Response:
    return httpx.get(url, timeout=10, **kw)  # type: ignore[arg-type]


async def scrape(port: int | None) -> tuple[str, Samples]:
    response = await asyncio.to_thread(get, f"http://127.0.0.1:{port}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return response.text, parse(response.text)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def names_used_in_deploy() -> set[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "bouncegw.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs.append(json.dumps(dashboard["templating"]))
    exprs.append((DEPLOY / "prometheus" / "bouncegw.rules.yml").read_text())
    return {name for expr in exprs for name in METRIC_NAME.findall(expr)}


async def test_live_exposition_has_every_metric_of_the_dashboard_and_rules_and_counters_move(
    hop: RecordingServer, make_gateway: GatewayFactory
) -> None:
    positive = next(p for p in POSITIVES if len(p.expected) == 1)
    report = parse_bounce(positive.data)
    (rcpt,) = report.family
    app = await make_gateway(hop.address)
    _, before = await scrape(app.http_port)

    await asend(app.listener.port, "alice@example.org", ["bob@example.com"], MESSAGE)
    await asend(app.listener.port, "", ["sender@example.org"], positive.data)

    text, after = await scrape(app.http_port)
    exposed = {name for name, _ in after}
    used = names_used_in_deploy()
    assert len(used) >= 15
    assert sorted(used - exposed) == []

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("bouncegw_messages_total", outcome="relayed") == 2
    assert moved("bouncegw_messages_total", outcome="deferred") == 0
    assert moved("bouncegw_message_bytes_total", direction="received") == len(MESSAGE) + len(positive.data)
    assert moved("bouncegw_message_bytes_total", direction="relayed") == sum(
        len(m.data) for m in hop.messages
    )
    assert moved("bouncegw_bounces_total", format=str(report.format)) == 1
    assert (
        moved("bouncegw_family_recipients_total", category=str(rcpt.category), variant=str(rcpt.variant)) == 1
    )
    assert moved("bouncegw_annotations_total", outcome="annotated") == 1
    assert moved("bouncegw_incidents_recorded_total") == 1
    assert moved("bouncegw_storage_incidents_total", path="database") == 1
    assert moved("bouncegw_relay_duration_seconds_count") == 2
    assert moved("bouncegw_processing_duration_seconds_count") == 2
    assert moved("bouncegw_transaction_duration_seconds_count") == 2
    assert value(after, "bouncegw_database_available") == 1
    assert value(after, "bouncegw_next_hop_up") == 1
    assert value(after, "bouncegw_journal_backlog_incidents") == 0
    assert value(after, "bouncegw_journal_capacity_bytes") == app.settings.storage.journal_max_bytes
    # conventions: no address or domain ever becomes a label value
    assert "example.org" not in text and "example.com" not in text
    for family in text_string_to_metric_families(text):
        if family.name.startswith("bouncegw_"):
            assert family.type != "counter" or family.name + "_total" in {s.name for s in family.samples}


def connect_and_wait_for_close(port: int, source: str) -> bytes:
    """Connect from ``source`` and read until the gateway closes the connection."""
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0)) as sock:
        try:
            while chunk := sock.recv(4096):
                received += chunk
        except ConnectionResetError:
            pass
    return received


async def test_refused_connections_and_next_hop_errors_are_counted(
    hop: RecordingServer, make_gateway: GatewayFactory
) -> None:
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    app = await make_gateway(dead, {"listener.allowed_networks": ["127.0.0.1/32"]})
    _, before = await scrape(app.http_port)
    await asyncio.to_thread(connect_and_wait_for_close, app.listener.port, "127.0.0.2")
    with pytest.raises(Exception):  # noqa: B017 - 451 from MAIL: the next hop is unreachable
        await asend(app.listener.port, "a@example.org", ["b@example.com"], MESSAGE)
    _, after = await scrape(app.http_port)
    refused = value(after, "bouncegw_connections_refused_total", reason="network")
    assert refused - value(before, "bouncegw_connections_refused_total", reason="network") == 1
    errors = "bouncegw_next_hop_connection_errors_total"
    assert value(after, errors) - value(before, errors) >= 1
    assert value(after, "bouncegw_next_hop_up") == 0


async def test_healthz_and_readyz_need_no_token(hop: RecordingServer, make_gateway: GatewayFactory) -> None:
    app = await make_gateway(hop.address, {"admin.api_token": "s3cret"})
    base = f"http://127.0.0.1:{app.http_port}"
    assert (await asyncio.to_thread(get, f"{base}/api/v1/incidents")).status_code == 401
    live = await asyncio.to_thread(get, f"{base}/healthz")
    assert live.status_code == 200 and live.json() == {"status": "alive"}
    await asend(app.listener.port, "a@example.org", ["b@example.com"], MESSAGE)  # the hop just answered
    ready = await asyncio.to_thread(get, f"{base}/readyz")
    assert ready.status_code == 200, ready.text
    body = ready.json()
    assert body["failed"] == [] and body["status"] == "ready"
    assert set(body["checks"]) == {"listener", "storage", "next_hop"}
    assert (await asyncio.to_thread(get, f"{base}/metrics")).status_code == 200


async def test_readyz_probes_an_idle_next_hop(hop: RecordingServer, make_gateway: GatewayFactory) -> None:
    app = await make_gateway(hop.address)
    assert hop.connections == 0
    url = f"http://127.0.0.1:{app.http_port}/readyz"
    # The first request starts a NOOP probe; it answers 200 once the probe has come back.
    for _ in range(50):
        ready = await asyncio.to_thread(get, url)
        if ready.status_code == 200:
            break
    assert ready.status_code == 200, ready.text
    assert hop.connections == 1


async def test_readyz_says_which_check_failed(make_gateway: GatewayFactory) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    app = await make_gateway(dead)
    url = f"http://127.0.0.1:{app.http_port}/readyz"
    ready = await asyncio.to_thread(get, url)
    assert ready.status_code == 503
    assert ready.json()["failed"] == ["next_hop"]
    assert ready.json()["checks"]["storage"] == {"ok": True, "detail": "database writable"}
    assert app.listener.server is not None
    app.listener.server.close()  # as at the start of a graceful stop
    ready = await asyncio.to_thread(get, url)
    assert ready.status_code == 503
    assert ready.json()["failed"] == ["listener", "next_hop"]
    live = await asyncio.to_thread(get, f"http://127.0.0.1:{app.http_port}/healthz")
    assert live.status_code == 200


# -- multiprocess mode -------------------------------------------------------------------------

WORKER = """
import os, sys
from gateway import metrics
metrics.MESSAGES.labels("relayed").inc(int(sys.argv[1]))
metrics.SESSIONS.inc()
metrics.RELAY_DURATION.observe(0.02)
metrics.count_family("sender_not_authenticated", "group")
print(os.getpid())
"""


def run_worker(directory: Path, count: int) -> int:
    env = {**os.environ, metrics.MULTIPROC_ENV: str(directory), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", WORKER, str(count)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return int(done.stdout.strip())


def test_multiprocess_exposition_sums_the_workers(tmp_path: Path) -> None:
    directory = tmp_path / "prometheus"
    directory.mkdir()
    (directory / "counter_999999.db").write_bytes(b"stale")  # left by an earlier run
    metrics.prepare_multiprocess_dir(directory)
    assert list(directory.iterdir()) == []
    first = run_worker(directory, 3)
    second = run_worker(directory, 4)
    assert first != second
    samples = parse(metrics.exposition(directory).decode())
    assert value(samples, "bouncegw_messages_total", outcome="relayed") == 7
    assert value(samples, "bouncegw_messages_total", outcome="failed") == 0  # pre-created label
    assert value(samples, "bouncegw_relay_duration_seconds_count") == 2
    assert (
        value(
            samples, "bouncegw_family_recipients_total", category="sender_not_authenticated", variant="group"
        )
        == 2
    )
    assert value(samples, "bouncegw_sessions_active") == 2
    # A worker that exits stops counting in the live gauges; its counters stay in the totals.
    metrics.worker_exited(first, directory)
    samples = parse(metrics.exposition(directory).decode())
    assert value(samples, "bouncegw_sessions_active") == 1
    assert value(samples, "bouncegw_messages_total", outcome="relayed") == 7
    assert any(name == "bouncegw_build_info" for name, _ in samples)


# -- transaction log lines ---------------------------------------------------------------------


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    quiet = {name: logging.getLogger(name).level for name in ("mail.log", "uvicorn.access")}
    yield
    root.handlers[:], level = saved
    root.setLevel(level)
    for name, lvl in quiet.items():
        logging.getLogger(name).setLevel(lvl)


def transaction_lines(err: str) -> list[dict[str, object]]:
    entries = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    return [e for e in entries if e["logger"] == "bouncegw.transaction"]


async def test_one_json_line_per_transaction_without_bodies(
    hop: RecordingServer,
    make_gateway: GatewayFactory,
    capsys: pytest.CaptureFixture[str],
    restore_logging: None,
) -> None:
    positive = next(p for p in POSITIVES if len(p.expected) == 1)
    app = await make_gateway(hop.address)
    setup_logging("INFO", "json")
    await asend(app.listener.port, "alice@example.org", ["bob@example.com", "carol@example.com"], MESSAGE)
    await asend(app.listener.port, "", ["sender@example.org"], positive.data)
    err = capsys.readouterr().err
    ordinary, bounce = transaction_lines(err)
    for line in (ordinary, bounce):
        assert {
            "tx",
            "client",
            "sender",
            "recipients",
            "size",
            "outcome",
            "bounce",
            "bounce_id",
            "incidents",
        } <= set(line)
        assert isinstance(line["duration_ms"], float) and line["level"] == "info"
        assert line["client"] == "127.0.0.1" and line["outcome"] == "relayed"
    assert ordinary["sender"] == "alice@example.org" and ordinary["recipients"] == 2
    assert ordinary["size"] == len(MESSAGE) and ordinary["incidents"] == [] and ordinary["bounce"] is None
    assert bounce["sender"] == "" and bounce["size"] == len(positive.data)
    report = parse_bounce(positive.data)
    assert bounce["bounce"] == report.format and bounce["bounce_id"] == report.message_id
    assert isinstance(bounce["incidents"], list) and len(bounce["incidents"]) == 1
    assert str(bounce["incidents"][0]).encode() in hop.messages[1].data  # the id in the explained bounce
    assert ordinary["tx"] != bounce["tx"]
    # no message content in the logs
    assert "a line that starts with a dot" not in err and "last line" not in err


async def test_text_format_and_level(
    hop: RecordingServer,
    make_gateway: GatewayFactory,
    capsys: pytest.CaptureFixture[str],
    restore_logging: None,
) -> None:
    app = await make_gateway(hop.address)
    setup_logging("INFO", "text")
    await asend(app.listener.port, "alice@example.org", ["bob@example.com"], MESSAGE)
    err = capsys.readouterr().err
    (line,) = [line for line in err.splitlines() if "bouncegw.transaction" in line]
    assert " INFO bouncegw.transaction: transaction " in line
    assert "outcome=relayed" in line and "sender=alice@example.org" in line and "recipients=1" in line
    setup_logging("WARNING", "json")
    await asend(app.listener.port, "alice@example.org", ["bob@example.com"], MESSAGE)
    assert transaction_lines(capsys.readouterr().err) == []
