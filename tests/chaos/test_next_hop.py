"""The next hop fails: down, flapping, slower than the timeouts, closing in the middle of DATA.

Whatever the next hop does, a message is acknowledged only when the next hop took it, and every
other message gets a 4xx (never a 5xx: the fault is not the client's).
"""

from __future__ import annotations

import asyncio
import socket
from collections import Counter

from tests.chaos.conftest import Mix
from tests.chaos.harness import Rules, check, incidents_by_tag, send_all, send_concurrently
from tests.conftest import GatewayFactory
from tests.processes import wait_until
from tests.recording_server import RecordingServer

#: Short next-hop timeouts keep the scenarios quick; the behaviour is the same at any length.
FAST = {
    "next_hop.connect_timeout": 1.0,
    "next_hop.command_timeout": 1.0,
    "next_hop.data_timeout": 1.0,
    "storage.db_timeout": 2.0,
}


async def recorded(app_url: str) -> Counter[str]:
    return await asyncio.to_thread(incidents_by_tag, app_url)


async def test_next_hop_down(make_gateway: GatewayFactory, mix: Mix) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]
    app = await make_gateway(f"127.0.0.1:{dead}", FAST)
    outcomes = await send_concurrently(app.listener.port, mix.batch(60), 3)
    rec = await asyncio.to_thread(incidents_by_tag, app.settings.database.url)
    figures = check("next_hop_down", outcomes, [], rec)
    assert figures.accepted == 0 and figures.replies_4xx == 60
    assert all(o.stage == "MAIL" and o.code == 451 and o.text.startswith("4.4.1") for o in outcomes)


async def _restart(hop: RecordingServer, port: int) -> None:
    # RecordingServer.start() always takes a fresh port; a flapping hop must come back on its own.
    hop._server = await asyncio.start_server(
        hop._session, "127.0.0.1", port, limit=64 * 1024 * 1024, reuse_address=True
    )


async def _halt(hop: RecordingServer) -> None:
    assert hop._server is not None
    hop._server.close()
    for writer in list(hop._writers):  # established sessions are cut too, mid-transaction
        writer.close()
    await hop._server.wait_closed()


async def test_next_hop_flapping(hop: RecordingServer, make_gateway: GatewayFactory, mix: Mix) -> None:
    app = await make_gateway(hop.address, FAST)
    done = asyncio.Event()
    flaps = 0

    async def flap() -> None:
        nonlocal flaps
        for _ in range(12):  # bounded: at most 12 outages
            await asyncio.sleep(0.25)
            if done.is_set():
                return
            await _halt(hop)
            flaps += 1
            await asyncio.sleep(0.15)
            await _restart(hop, hop.port)

    flapper = asyncio.create_task(flap())
    outcomes = []
    try:
        # Traffic for as long as the hop flaps (bounded: at most 60 rounds of 40 messages).
        for _ in range(60):
            outcomes += await send_concurrently(app.listener.port, mix.batch(40), 4)
            if flapper.done():
                break
            await asyncio.sleep(0.05)
    finally:
        done.set()
        await flapper
    rec = await recorded(app.settings.database.url)
    figures = check("next_hop_flapping", outcomes, hop.messages, rec, outages=flaps)
    assert flaps >= 6, "the hop must actually have flapped during the run"
    assert figures.accepted > 0 and figures.replies_4xx > 0 and figures.replies_5xx == 0


async def test_next_hop_slower_than_timeout(
    hop: RecordingServer, make_gateway: GatewayFactory, mix: Mix
) -> None:
    app = await make_gateway(
        hop.address, {**FAST, "next_hop.command_timeout": 0.3, "next_hop.data_timeout": 0.3}
    )
    hop.delays["DATA_END"] = 0.8  # the final dot is answered after the gateway gave up
    slow_data = await send_concurrently(app.listener.port, mix.batch(12), 4)
    # The next hop still takes each message after its delay: the duplicate a retry will make.
    await wait_until(lambda: len(hop.messages) == 12, "the slow hop to store its messages")
    hop.delays.pop("DATA_END")
    hop.delays["RCPT"] = 0.8
    slow_rcpt = await send_concurrently(app.listener.port, mix.batch(12), 4)
    hop.delays.pop("RCPT")
    after = await send_all(app.listener.port, mix.batch(6))  # and once the hop is quick again
    outcomes = slow_data + slow_rcpt + after
    rec = await recorded(app.settings.database.url)
    figures = check("next_hop_slow", outcomes, hop.messages, rec, Rules(allow_unacked_arrival=True))
    assert all(o.code == 451 for o in slow_data + slow_rcpt)
    assert all(o.text.startswith("4.4.2") for o in slow_data)
    assert figures.accepted == 6 and figures.extra["arrived_unacked"] == 12


async def test_next_hop_closes_mid_data(hop: RecordingServer, make_gateway: GatewayFactory, mix: Mix) -> None:
    app = await make_gateway(hop.address, FAST)
    outcomes = []
    for round_ in range(8):  # bounded: 8 rounds of 8 messages, every other round the hop drops DATA
        hop.close_on["DATA_BODY"] = round_ % 2 == 1
        outcomes += await send_all(app.listener.port, mix.batch(8))
    rec = await recorded(app.settings.database.url)
    figures = check("next_hop_closes_mid_data", outcomes, hop.messages, rec)
    assert figures.accepted == 32 and figures.replies_4xx == 32
