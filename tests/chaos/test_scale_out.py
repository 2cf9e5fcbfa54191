"""Two gateways, one PostgreSQL behind a proxy the test cuts: retries across instances, an outage,
a SIGKILL, a pod deletion.

- ``gw-a`` and ``gw-b`` run two workers each; both write to one PostgreSQL schema reached
  through a :class:`~tests.tcp_proxy.TcpProxy`.
- Every family bounce is sent to one gateway and then again to the other (the upstream's retry
  landing on another replica), before and during the outage.
- During the outage ``gw-b``'s supervisor is killed with SIGKILL and ``gw-b`` started again
  (with the database still down; workers the kill left behind are stopped first: what happens
  to them is not this test's subject), and ``gw-a`` is stopped with SIGTERM while its journals
  hold incidents (a pod deleted during the outage), then a new ``gw-a`` starts on the same
  journal directory (the volume that comes back with the pod).
- Then the database comes back.

Checks: every bounce was accepted and every incident is stored exactly once; both copies of a
bounce name the same incident ids, and every id a relayed bounce names resolves through both
gateways' API; the SIGTERM said how many incidents it left and where; the connection attempts
during the outage stay within what the backoff allows.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from storage.db import upgrade
from tests.chaos.conftest import Mix
from tests.chaos.harness import Figures, Msg, Outcome, incidents_by_tag, report, send_concurrently
from tests.outage import explained_ids, most_attempts, postgres_proxy, through
from tests.processes import free_port, start_serve
from tests.recording_server import RecordingServer
from tests.tcp_proxy import TcpProxy

pytest_plugins = ["tests.storage_fixtures"]

FIRST, CAP = 0.2, 1.0
GRACE = 2.0
SESSIONS = 2
STOPPED = re.compile(r"stopping with (\d+) incidents not yet in the database .* journal (\S+) ")


class Gateway:
    """One ``bouncegw serve`` (a pod): its ports, its journal directory, its log."""

    def __init__(self, name: str, workers: int, root: Path, hop: RecordingServer, database: str) -> None:
        self.name, self.workers, self.hop, self.database = name, workers, hop, database
        self.dir = root / name
        self.dir.mkdir()
        self.journal = self.dir / "journal" / "incidents.jsonl"
        self.log = self.dir / "gateway.log"
        self.port, self.http = free_port(), free_port()
        self.proc: asyncio.subprocess.Process | None = None
        self.starts = 0

    async def start(self) -> None:
        with self.log.open("ab") as err:
            self.proc = await start_serve(
                self.dir,
                self.hop.address,
                port=self.port,
                http=f"127.0.0.1:{self.http}",
                workers=self.workers,
                database=self.database,
                env={
                    "BOUNCEGW_INSTANCE": self.name,
                    "BOUNCEGW_STORAGE__JOURNAL_PATH": str(self.journal),
                    "BOUNCEGW_STORAGE__DB_TIMEOUT": "1",
                    "BOUNCEGW_STORAGE__RETRY_INTERVAL": str(FIRST),
                    "BOUNCEGW_STORAGE__RETRY_MAX_INTERVAL": str(CAP),
                    "BOUNCEGW_LISTENER__GRACE_PERIOD": str(GRACE),
                    "BOUNCEGW_LOG__FORMAT": "text",
                },
                stdout=asyncio.subprocess.DEVNULL,
                stderr=err,
            )
        self.starts += 1

    async def stop(self, sig: signal.Signals) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return await asyncio.wait_for(self.proc.wait(), 60)

    def workers_pids(self) -> list[int]:
        """The supervisor's child processes (from /proc: each ``stat`` names its parent)."""
        assert self.proc is not None
        pids = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rpartition(")")[2].split()
            except OSError:
                continue  # exited meanwhile
            if int(fields[1]) == self.proc.pid:
                pids.append(int(stat.parent.name))
        return pids

    async def kill_supervisor(self) -> int:
        """SIGKILL the supervisor; then make sure none of its workers still holds port or journal.

        Returns how many workers outlived their supervisor by 5 s (and were killed here).
        """
        workers = self.workers_pids()
        assert len(workers) == self.workers
        assert await self.stop(signal.SIGKILL) == -signal.SIGKILL
        for _ in range(50):  # a worker that watches its parent exits by itself
            if not any(_alive(pid) for pid in workers):
                return 0
            await asyncio.sleep(0.1)
        orphans = [pid for pid in workers if _alive(pid)]
        for pid in orphans:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        while any(_alive(pid) for pid in workers):
            await asyncio.sleep(0.05)
        return len(orphans)

    def journaled(self) -> int:
        """Incident lines in this gateway's journals (every worker's)."""
        return sum(
            sum(1 for line in p.read_bytes().splitlines() if line.strip())
            for p in self.journal.parent.glob("incidents*.jsonl*")
            if not p.name.endswith(".lock")
        )


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (gone, or a zombie nobody reaped yet: not running)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture
async def proxy() -> AsyncIterator[TcpProxy]:
    p = await postgres_proxy()
    yield p
    await p.close()


async def both(first: Gateway, second: Gateway, msgs: list[Msg]) -> list[Outcome]:
    """Each bounce to ``first``, then the same bytes to ``second`` (the upstream's retry)."""
    return [
        *await send_concurrently(first.port, msgs, SESSIONS),
        *await send_concurrently(second.port, msgs, SESSIONS),
    ]


@pytest.mark.postgres
async def test_two_gateways_one_database_outage_kill_and_pod_deletion(
    pg_schema_url: str, proxy: TcpProxy, hop: RecordingServer, tmp_path: Path, mix: Mix
) -> None:
    await asyncio.to_thread(upgrade, pg_schema_url)
    url = through(proxy, pg_schema_url)
    a, b = Gateway("gw-a", 2, tmp_path, hop, url), Gateway("gw-b", 2, tmp_path, hop, url)
    sent: list[Msg] = []
    outcomes: list[Outcome] = []
    try:
        await asyncio.gather(a.start(), b.start())

        # Database up: retries across instances.
        batch = [mix.family() for _ in range(12)]
        sent += batch
        outcomes += await both(a, b, batch)

        # The outage.
        proxy.cut()
        began, refused = time.monotonic(), proxy.refused
        batch = [mix.family() for _ in range(12)]
        sent += batch
        outcomes += await both(b, a, batch)
        orphans = await b.kill_supervisor()
        assert orphans == 0, f"{orphans} workers outlived their SIGKILLed supervisor by 5 s"
        await b.start()  # the database is still down: it starts anyway and journals
        batch = [mix.family() for _ in range(8)]
        sent += batch
        outcomes += await both(b, a, batch)
        # Pod deletion: SIGTERM with incidents in the journals, then a new process on the volume.
        left_behind = a.journaled()
        assert left_behind > 0
        assert await a.stop(signal.SIGTERM) == 0
        stopped = [(int(m[1]), m[2]) for m in STOPPED.finditer(a.log.read_text())]
        assert sum(n for n, _ in stopped) == left_behind == a.journaled()
        assert all(Path(path).parent == a.journal.parent for _, path in stopped)
        await a.start()
        batch = [mix.family() for _ in range(8)]
        sent += batch
        outcomes += await both(a, b, batch)
        outage = time.monotonic() - began
        attempts = proxy.refused - refused
        proxy.restore()

        expected = sum(m.family for m in sent)
        rec: Counter[str] = Counter()

        def caught_up() -> bool:
            nonlocal rec
            rec = incidents_by_tag(pg_schema_url)
            return sum(rec.values()) >= expected and a.journaled() == b.journaled() == 0

        for _ in range(600):  # bounded: the replays follow the backoff (at most CAP apart)
            if await asyncio.to_thread(caught_up):
                break
            await asyncio.sleep(0.1)

        # Every id that a relayed bounce names resolves, on either gateway.
        named: dict[str, set[tuple[str, ...]]] = {}
        for received in hop.messages:
            tag = re.search(rb"X-Chaos-Tag: (\S+)", received.data)
            assert tag is not None
            named.setdefault(tag[1].decode(), set()).add(tuple(explained_ids(received.data)))
        resolved = 0
        async with httpx.AsyncClient(timeout=10) as client:
            for ids in named.values():
                for incident_id in {i for t in ids for i in t}:
                    for gw in (a, b):
                        answer = await client.get(
                            f"http://127.0.0.1:{gw.http}/api/v1/incidents/{incident_id}"
                        )
                        assert answer.status_code == 200, (gw.name, incident_id, answer.text)
                        resolved += 1
            stats = (
                await client.get(f"http://127.0.0.1:{b.http}/api/v1/stats", params={"by": "instance"})
            ).json()
    finally:
        for gw in (a, b):
            if gw.proc is not None and gw.proc.returncode is None:
                await gw.stop(signal.SIGTERM)

    # Each stopped process, and each of the 6 recorders that lived through the outage (gw-a's two
    # workers, twice; gw-b, twice), may try once at start, once when its first write fails, and
    # then as the backoff allows (plus the supervisors' start-up schema checks).
    recorders = 2 * a.workers + 2 * b.workers
    bound = recorders * (2 + most_attempts(outage, FIRST, CAP)) + a.starts + b.starts
    accepted = sum(o.accepted for o in outcomes)
    figures = Figures(
        "scale_out_two_gateways",
        sent=len(outcomes),
        accepted=accepted,
        arrived=len(hop.messages),
        recorded=sum(rec.values()),
        replies_4xx=sum(1 for o in outcomes if o.code is not None and 400 <= o.code < 500),
        replies_5xx=sum(1 for o in outcomes if o.code is not None and o.code >= 500),
        extra={
            "bounces": len(sent),
            "incidents_expected": expected,
            "left_at_sigterm": left_behind,
            "workers_outliving_sigkill": orphans,
            "outage_s": round(outage, 1),
            "db_connection_attempts": attempts,
            "attempts_bound": bound,
            "ids_resolved": resolved,
        },
    )
    report(figures)
    assert accepted == len(outcomes) == 2 * len(sent), "every copy of every bounce is accepted"
    assert len(hop.messages) == len(outcomes)
    # Exactly once: every bounce's incidents are stored, none twice (both copies, replays).
    assert {m.tag: m.family for m in sent} == dict(rec), "an incident lost or duplicated"
    # Both copies of a bounce (through either gateway) name the same ids, and those exist.
    assert all(len(ids) == 1 and next(iter(ids)) for ids in named.values())
    assert resolved == 2 * expected
    assert sum(r["count"] for r in stats["rows"]) == expected
    assert {r["key"] for r in stats["rows"]} <= {"gw-a", "gw-b"}
    assert 1 <= attempts <= bound
