"""The journal's disk is full while the database is down.

Policy (README, "Incidents"): a family bounce that cannot be kept is answered ``451 4.3.0`` before
it is relayed, so the upstream keeps it and retries; ordinary mail keeps flowing. Two ways to fill
the journal: a 64 KiB tmpfs mounted on the journal directory (a real ENOSPC; needs root and
``mount``, skipped otherwise), and a tiny ``storage.journal_max_bytes`` (always runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chaos.conftest import Mix
from tests.chaos.harness import Outcome, Rules, check, incidents_by_tag, send_all
from tests.conftest import GatewayFactory, need
from tests.metric_samples import MetricDeltas
from tests.processes import wait_until
from tests.recording_server import RecordingServer


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[None]:
    path.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
            check=True,
            capture_output=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        need(False, f"cannot mount a tmpfs here ({exc}); the journal_max_bytes variant covers the policy")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True, timeout=30)


@pytest.mark.parametrize("how", ["tmpfs", "journal_max_bytes"])
async def test_journal_full_with_database_down(
    how: str, hop: RecordingServer, make_gateway: GatewayFactory, mix: Mix, tmp_path: Path
) -> None:
    journal_dir = tmp_path / "journal"
    overrides = {"storage.db_timeout": 0.5, "storage.retry_interval": 0.2}
    with contextlib.ExitStack() as stack:
        if how == "tmpfs":
            stack.enter_context(tmpfs(journal_dir, "64k"))
        else:
            overrides["storage.journal_max_bytes"] = 16 * 1024
        app = await make_gateway(hop.address, overrides)
        counted = MetricDeltas()
        locker = sqlite3.connect(tmp_path / "gw.sqlite3", isolation_level=None, check_same_thread=False)
        await asyncio.to_thread(locker.execute, "BEGIN EXCLUSIVE")  # the database is down from here on
        outcomes: list[Outcome] = []
        try:
            # One session, one message at a time: family bounce, ordinary mail, family bounce, ...
            for _ in range(10):  # bounded: 10 rounds of 16
                outcomes += await send_all(app.listener.port, mix.batch(16))
                if any(o.msg.family and o.code == 451 for o in outcomes[-16:]):
                    break
            full = list(outcomes)
            outcomes += await send_all(app.listener.port, mix.batch(16))  # still full: still refused
        finally:
            await asyncio.to_thread(locker.execute, "COMMIT")
            locker.close()
        recorder = app.recorder
        await wait_until(lambda: recorder.db_available and recorder.journal_backlog == 0, "the replay")
        after = await send_all(app.listener.port, mix.batch(16))  # database back: family accepted again
        outcomes += after
        rec = await asyncio.to_thread(incidents_by_tag, app.settings.database.url)
        refused = [o for o in outcomes if o.code == 451]
        figures = check(
            f"journal_full_{how}",
            outcomes,
            hop.messages,
            rec,
            # ENOSPC is learnt only by a write that fails: the bounce whose incidents hit it was
            # already relayed (a 4xx now would duplicate it), so it stays unrecorded, counted and
            # logged. The size limit is checked before relaying: nothing is lost there.
            Rules(allowed_unrecorded=1 if how == "tmpfs" else 0),
            journaled=counted("bouncegw_storage_incidents_total", path="journal"),
            refused_family=len(refused),
            record_failures=counted("bouncegw_record_failures_total"),
        )
        assert refused, "the journal must have filled up"
        assert all(o.msg.family and o.text.startswith("4.3.0") and o.stage == "END" for o in refused)
        assert all(o.accepted for o in outcomes if not o.msg.family), "ordinary mail keeps flowing"
        assert all(o.accepted for o in after)
        assert len(full) < len(outcomes)
        assert figures.replies_5xx == 0
        assert counted("bouncegw_record_failures_total") == figures.extra.get("accepted_unrecorded", 0)
