"""Deeply nested bounces (issue: 3,000 levels, about 240 KB) from 4 clients at once.

Every message is relayed; the bounce whose report sits above the depth cap is explained and
recorded, the one buried below it is relayed untouched; both are counted in
``bouncegw_nesting_capped_total``; ``/healthz`` answers in under half a second throughout; no
parser path hits the recursion limit.
"""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from pathlib import Path

import httpx

from tests.chaos.harness import Msg, check, incidents_by_tag, send_concurrently, tagged
from tests.nesting import buried_bounce, deep_bounce
from tests.processes import free_port, start_serve
from tests.recording_server import RecordingServer
from tests.smtp_client import MESSAGE

#: Polls /healthz until its stdin closes, then prints every answer's latency (seconds).
PROBE = """
import sys, threading, time, httpx
done = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
latencies = []
with httpx.Client(timeout=10) as client:
    assert client.get(sys.argv[1]).status_code == 200
    print("ready", flush=True)
    while not done.is_set():
        start = time.perf_counter()
        assert client.get(sys.argv[1]).status_code == 200
        latencies.append(time.perf_counter() - start)
        time.sleep(0.02)
print(" ".join(f"{x:.4f}" for x in latencies))
"""

LEVELS = 3000
CLIENTS = 4
#: Each client sends this many of each kind (deep, buried, ordinary), interleaved.
ROUNDS = 2
#: The issue's bound for the liveness probe while nested bounces are processed.
HEALTHZ_LIMIT = 0.5


def metric(text: str, name: str) -> float:
    """The sum of a metric's samples in a text exposition."""
    return sum(float(m.group(1)) for m in re.finditer(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.MULTILINE))


async def test_nested_bounces_from_four_clients(hop: RecordingServer, tmp_path: Path) -> None:
    # A real `bouncegw serve` process: the probe measures its event loop alone (the clients
    # and the recording next hop run on this test's loop).
    port, http = free_port(), free_port()
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        proc = await start_serve(tmp_path, hop.address, port=port, http=f"127.0.0.1:{http}", stderr=log)
    base = f"http://127.0.0.1:{http}"
    try:
        deep, buried = deep_bounce(LEVELS), buried_bounce(LEVELS)
        assert 200_000 < len(deep) < 300_000
        messages: list[Msg] = []
        for i in range(CLIENTS * ROUNDS):
            messages.append(
                Msg(f"nested-deep-{i}", tagged(f"nested-deep-{i}", deep, message_id=True), family=1)
            )
            messages.append(Msg(f"nested-buried-{i}", tagged(f"nested-buried-{i}", buried, message_id=True)))
            messages.append(
                Msg(
                    f"nested-plain-{i}",
                    tagged(f"nested-plain-{i}", MESSAGE),
                    sender="a@example.org",
                    rcpt="b@example.com",
                )
            )

        # The probe runs in its own process: a thread here would share this process's GIL with
        # the clients and the recording next hop, and measure their work as well.
        prober = await asyncio.create_subprocess_exec(
            sys.executable, "-c", PROBE, f"{base}/healthz",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert prober.stdout is not None and prober.stdin is not None
        assert await prober.stdout.readline() == b"ready\n"
        try:
            outcomes = await send_concurrently(port, messages, CLIENTS, timeout=60)
        finally:
            prober.stdin.close()
            out, _ = await asyncio.wait_for(prober.communicate(), 30)
        assert prober.returncode == 0
        latencies = [float(x) for x in out.split()]
        exposition = (await asyncio.to_thread(httpx.get, f"{base}/metrics", timeout=10)).text
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 30)
    logged = log_path.read_text(encoding="utf-8", errors="replace")

    figures = check(
        "abuse_nesting",
        outcomes,
        hop.messages,
        incidents_by_tag(f"sqlite:///{tmp_path / 'gw.sqlite3'}"),
        healthz_max_ms=round(max(latencies) * 1000, 1),
        healthz_probes=len(latencies),
    )
    assert figures.accepted == len(messages)
    assert len(latencies) >= 5
    assert max(latencies) < HEALTHZ_LIMIT, [round(x, 3) for x in latencies]
    # Both nested kinds were read up to the cap and counted; none failed to parse.
    assert metric(exposition, "bouncegw_nesting_capped_total") == 2 * CLIENTS * ROUNDS
    assert metric(exposition, "bouncegw_parse_failures_total") == 0
    assert "RecursionError" not in logged and "recursion" not in logged.lower()
    # The buried bounce (no readable report) and ordinary mail pass byte for byte.
    sent = {m.tag: m.data for m in messages}
    for received in hop.messages:
        tag = received.data.split(b"X-Chaos-Tag: ", 1)[1].split(b"\r\n", 1)[0].decode()
        if "-deep-" in tag:
            assert received.message.startswith(b"X-Bouncegw-Explained: ")
            assert received.data.endswith(sent[tag][-2000:])
        else:
            assert received.message == sent[tag]
