"""What a bounce costs: time linear in its recipients, the loop free while it is processed, the
explanation capped, the annotated size within ``max_message_size``, memory within the documented
multiple of the message size (a real ``bouncegw serve`` process, measured from /proc)."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from pathlib import Path

import httpx

from gateway.explain import MAX_PART_SIZE
from tests.benchmarks import messages
from tests.benchmarks.procs import reset_peak_rss, status_kib
from tests.chaos.harness import Msg, Outcome, check, incidents_by_tag, send_all, tagged
from tests.conftest import GatewayFactory, need
from tests.explain_checks import human_texts, strip_explained_header
from tests.metric_samples import MetricDeltas
from tests.positives import POSITIVES, TOKEN, exo_ndr
from tests.processes import free_port, start_serve
from tests.recording_server import RecordingServer

GROUP = "5.7.133"
MIB = 1024 * 1024


def members(count: int, tag: str) -> bytes:
    """An Exchange Online NDR refusing ``count`` members of a group (one status group each)."""
    extra = [
        (f"member{i:05d}@contoso.example", GROUP, f"550 {GROUP} {TOKEN[GROUP]}") for i in range(1, count)
    ]
    return tagged(tag, exo_ndr("member00000@contoso.example", GROUP, extra=extra), message_id=True)


def family_msg(tag: str, count: int) -> Msg:
    return Msg(tag, members(count, tag), family=count)


async def timed(port: int, msg: Msg) -> tuple[Outcome, float]:
    """The outcome and the CPU time it cost (gateway, client and next hop all run in this
    process; CPU time is less disturbed than wall time by whatever else the machine runs)."""
    started = time.process_time()
    (out,) = await send_all(port, [msg], timeout=120)
    return out, time.process_time() - started


async def test_eight_times_the_recipients_costs_about_eight_times_the_time(
    hop: RecordingServer, make_gateway: GatewayFactory
) -> None:
    # Every recipient explained (no cap in the way), so rendering the block is measured too:
    # a quadratic step anywhere (render, fill, splice, check, record) shows as a ratio near 64.
    app = await make_gateway(hop.address, {"explain.max_recipients_explained": 10_000})
    small, large = 60, 480
    outcomes: list[Outcome] = []
    best: dict[int, float] = {}
    for round_ in range(4):  # the first round fills the template cache; the best of the rest counts
        for count in (small, large):
            out, seconds = await timed(app.listener.port, family_msg(f"scale-{count}-{round_}", count))
            outcomes.append(out)
            if round_:
                best[count] = min(best.get(count, seconds), seconds)
    ratio = best[large] / best[small]
    rec = await asyncio.to_thread(incidents_by_tag, app.settings.database.url)
    # The header names all 480 incidents here and pushes the tag past where the harness looks.
    received = [dataclasses.replace(m, data=strip_explained_header(m.message)) for m in hop.messages]
    check(
        "cost_recipients_8x",
        outcomes,
        received,
        rec,
        cpu_seconds_small=round(best[small], 3),
        cpu_seconds_large=round(best[large], 3),
        ratio=round(ratio, 1),
    )
    assert all(o.accepted for o in outcomes)
    assert ratio <= 12, f"8x the recipients took {ratio:.1f}x the CPU time ({best})"


async def test_healthz_answers_while_a_bounce_with_many_recipients_is_processed(
    hop: RecordingServer, make_gateway: GatewayFactory
) -> None:
    app = await make_gateway(hop.address)
    msg = family_msg("healthz-many", 4000)
    sending = asyncio.create_task(send_all(app.listener.port, [msg], timeout=120))
    worst, polls = 0.0, 0
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.http_port}", timeout=10) as http:
        while not sending.done():
            started = time.perf_counter()
            assert (await http.get("/healthz")).status_code == 200
            worst = max(worst, time.perf_counter() - started)
            polls += 1
            await asyncio.sleep(0.02)
    (out,) = await sending
    rec = await asyncio.to_thread(incidents_by_tag, app.settings.database.url)
    check("cost_healthz_many_recipients", [out], hop.messages, rec, worst_healthz_ms=round(worst * 1000))
    assert out.accepted and rec["healthz-many"] == 4000
    assert polls >= 3, "the bounce was processed too fast to observe"
    assert worst < 0.5, f"/healthz took {worst:.2f} s while the bounce was processed"


async def test_annotation_over_the_size_limit_relays_the_original(
    hop: RecordingServer, make_gateway: GatewayFactory
) -> None:
    msg = family_msg("too-large", 3)
    # The original fits; the original plus the block (several KB per recipient) does not.
    app = await make_gateway(hop.address, {"listener.max_message_size": len(msg.data) + 2048})
    counted = MetricDeltas()
    (out,) = await send_all(app.listener.port, [msg])
    rec = await asyncio.to_thread(incidents_by_tag, app.settings.database.url)
    check("cost_annotation_too_large", [out], hop.messages, rec)
    assert out.accepted and [m.message for m in hop.messages] == [msg.data]  # byte-identical
    assert counted("bouncegw_annotations_total", outcome="too_large") == 1
    assert rec["too-large"] == 3  # still recorded, as not annotated


async def test_a_huge_notice_is_relayed_unexplained_and_recorded(
    hop: RecordingServer, make_gateway: GatewayFactory
) -> None:
    app = await make_gateway(hop.address)
    ndr = members(1, "huge-notice")
    # The bounce's own text/plain notice (quoted-printable) grows past MAX_PART_SIZE.
    anchor = b"Diagnostic information for administrators:"
    filler = b"More diagnostic text, line after line, as a notice quoting a whole message.\r\n"
    assert ndr.count(anchor) == 1
    msg = Msg(
        "huge-notice", ndr.replace(anchor, filler * (MAX_PART_SIZE // len(filler) + 1) + anchor), family=1
    )
    counted = MetricDeltas()
    (out,) = await send_all(app.listener.port, [msg])
    rec = await asyncio.to_thread(incidents_by_tag, app.settings.database.url)
    check("cost_huge_notice", [out], hop.messages, rec)
    assert out.accepted and [m.message for m in hop.messages] == [msg.data]
    assert counted("bouncegw_annotations_total", outcome="too_large") == 1


async def test_recipients_past_the_cap_are_summed_up_and_all_recorded(
    hop: RecordingServer, make_gateway: GatewayFactory
) -> None:
    cap, more = 5, 7
    app = await make_gateway(hop.address, {"explain.max_recipients_explained": cap})
    msg = family_msg("capped", cap + more)
    (out,) = await send_all(app.listener.port, [msg])
    rec = await asyncio.to_thread(incidents_by_tag, app.settings.database.url)
    check("cost_recipients_capped", [out], hop.messages, rec)
    assert out.accepted and rec["capped"] == cap + more
    relayed = hop.messages[0].message
    texts = human_texts(relayed)
    # The bounce's own parts come first; the returned message's text follows.
    for text in (texts["text/plain"][0], texts["text/html"][0]):
        explained = [i for i in range(cap + more) if f"member{i:05d}@contoso.example" in block_of(text)]
        assert explained == list(range(cap)), explained
        assert f"and {more} more recipients refused for the same reason" in text
        assert f"ほか {more} 件の宛先も同じ理由で拒否されました" in text
    # The header names the incidents the block explains.
    field = re.match(rb"X-Bouncegw-Explained:((?:[^\r\n]|\r\n[ \t])*)", relayed)
    assert field is not None
    named = re.sub(rb"\r\n[ \t]", b"", field.group(1)).decode().partition("incident=")[2].split(",")
    assert len(named) == cap and all(named)


def block_of(text: str) -> str:
    """The explanation block of a decoded human part: all before the bounce's own words."""
    return text[: text.index("couldn't be delivered")]


# -- memory -----------------------------------------------------------------------------------

#: The documented bound (README "Limits per message", deploy/kubernetes/statefulset.yaml): peak memory
#: growth while one large family bounce is in flight, as a multiple of its size.
MEMORY_MULTIPLE = 3.0


def large_bounce(tag: str, size: int) -> Msg:
    """A family bounce of about ``size`` octets (a large returned message), as ``make bench`` sends."""
    data = messages.family(size).replace(messages.SEQ, tag.encode())
    return Msg(tag, tagged(tag, data, message_id=True), family=1)


async def test_peak_memory_of_a_large_bounce_stays_within_the_documented_multiple(
    hop: RecordingServer, tmp_path: Path
) -> None:
    port = free_port()
    proc = await start_serve(
        tmp_path,
        hop.address,
        port=port,
        env={"BOUNCEGW_LISTENER__MAX_MESSAGE_SIZE": str(40 * MIB), "BOUNCEGW_LOG__LEVEL": "WARNING"},
    )
    outcomes: list[Outcome] = []
    figures: dict[str, float] = {}
    try:
        # One small bounce first: templates, parsers and database connections are loaded.
        outcomes += await send_all(
            port,
            [Msg("memory-warm-up", tagged("memory-warm-up", POSITIVES[0].data, message_id=True), family=1)],
        )
        for size in (16, 32):
            msg = large_bounce(f"memory-{size}mb", size * MIB)
            before = status_kib(proc.pid, "VmRSS")
            need(reset_peak_rss(proc.pid), "resetting VmHWM through /proc/PID/clear_refs")
            outcomes += await send_all(port, [msg], timeout=120)
            peak = status_kib(proc.pid, "VmHWM")
            after = status_kib(proc.pid, "VmRSS")
            figures[f"growth_{size}mb"] = round((peak - before) * 1024 / len(msg.data), 2)
            figures[f"kept_{size}mb_mib"] = round((after - before) / 1024, 1)
            assert (peak - before) * 1024 <= MEMORY_MULTIPLE * len(msg.data), figures
            # The memory goes back to the system once the message is gone (gateway.memory).
            assert (after - before) * 1024 <= 0.5 * len(msg.data), figures
    finally:
        proc.terminate()
        await proc.wait()
    rec = await asyncio.to_thread(incidents_by_tag, f"sqlite:///{tmp_path / 'gw.sqlite3'}")
    check("cost_memory_large_bounce", outcomes, hop.messages, rec, **figures)
    assert all(o.accepted for o in outcomes)
    assert all(m.message.startswith(b"X-Bouncegw-Explained: ") for m in hop.messages)
