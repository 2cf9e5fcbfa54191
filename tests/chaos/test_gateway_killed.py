"""``bouncegw serve`` killed with SIGKILL under load, then started again.

The database is locked during the load, so incidents sit in the fsynced journal when the process
dies. After the restart the journal is replayed: every message a client saw accepted arrived once,
and every accepted family bounce is recorded exactly once. Messages in flight at the kill got no
reply (the client retries them); one may already have reached the next hop (the duplicate a retry
makes) or the journal (its retry is deduplicated by the fingerprint).
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from pathlib import Path

from tests.chaos.conftest import Mix
from tests.chaos.harness import Rules, check, incidents_by_tag, send_all
from tests.processes import free_port, start_serve, wait_until
from tests.recording_server import RecordingServer

SESSIONS = 4


async def serve(tmp_path: Path, port: int, hop: RecordingServer, log: Path) -> asyncio.subprocess.Process:
    with log.open("ab") as err:
        return await start_serve(
            tmp_path,
            hop.address,
            port=port,
            env={
                "BOUNCEGW_STORAGE__JOURNAL_PATH": str(tmp_path / "journal" / "incidents.jsonl"),
                "BOUNCEGW_STORAGE__DB_TIMEOUT": "0.5",
                "BOUNCEGW_STORAGE__RETRY_INTERVAL": "0.2",
                "BOUNCEGW_LOG__LEVEL": "WARNING",
            },
            stdout=asyncio.subprocess.DEVNULL,
            stderr=err,
        )


def journal_empty(directory: Path) -> bool:
    return not any(
        p.stat().st_size for p in directory.glob("incidents.jsonl*") if not p.name.endswith(".lock")
    )


async def test_sigkill_under_load_then_restart(hop: RecordingServer, tmp_path: Path, mix: Mix) -> None:
    port = free_port()
    log = tmp_path / "gateway.log"
    proc = await serve(tmp_path, port, hop, log)
    restarted: asyncio.subprocess.Process | None = None
    locker = sqlite3.connect(tmp_path / "gw.sqlite3", isolation_level=None, check_same_thread=False)
    try:
        await asyncio.to_thread(locker.execute, "BEGIN EXCLUSIVE")  # incidents go to the journal
        load = [mix.batch(150, family_every=2) for _ in range(SESSIONS)]  # bounded: 600 at most
        senders = [asyncio.create_task(send_all(port, share, timeout=20)) for share in load]
        await wait_until(lambda: len(hop.messages) >= 120, "the load to get going")
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        results = await asyncio.gather(*senders)
        before = [o for r in results for o in r]
        journalled = sum(1 for _ in (tmp_path / "journal").glob("incidents.jsonl*"))
        await asyncio.to_thread(locker.execute, "COMMIT")
        restarted = await serve(tmp_path, port, hop, log)
        await wait_until(lambda: journal_empty(tmp_path / "journal"), "the journal to be replayed")
        after = await send_all(port, mix.batch(20))  # and it serves again
        restarted.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(restarted.wait(), 30) == 0
    finally:
        locker.close()
        for p in (proc, restarted):
            if p is not None and p.returncode is None:
                p.kill()
                await p.wait()
    rec = await asyncio.to_thread(incidents_by_tag, f"sqlite:///{tmp_path / 'gw.sqlite3'}")
    outcomes = before + after
    figures = check(
        "gateway_sigkill_restart",
        outcomes,
        hop.messages,
        rec,
        Rules(allow_dropped=True, allow_unacked_arrival=True),
        unsent_after_kill=sum(1 for o in before if not o.sent),
    )
    assert journalled > 0, "the kill must have left a journal behind"
    assert figures.accepted >= 120 and all(o.accepted for o in after)
    assert figures.extra.get("dropped", 0) <= SESSIONS  # at most one in flight per session
    assert figures.replies_5xx == 0
