"""A separate OS process that records incidents through a Recorder (the scale-out tests run two).

Usage: python -m tests.storage_writer URL JOURNAL TAG COUNT. Writes COUNT bounces shared by every
writer (same fingerprints) and COUNT of its own (tagged TAG), 10 per submit, 8 submits in flight.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from storage.recorder import Recorder, Tally
from tests.storage_builders import records_for


async def main(url: str, journal: str, tag: str, count: int) -> None:
    shared = records_for(count, tag="shared")
    own = records_for(count, tag=tag)
    records = [r for pair in zip(shared, own, strict=True) for r in pair]
    counts = Tally()
    rec = Recorder(url, Path(journal), db_timeout=60.0, events=counts)
    await rec.start()
    semaphore = asyncio.Semaphore(8)

    async def one(batch: list[object]) -> None:
        async with semaphore:
            await rec.submit(batch)  # type: ignore[arg-type]

    await asyncio.gather(*(one(records[i : i + 10]) for i in range(0, len(records), 10)))
    await rec.stop()
    print(f"stored={counts.stored} journaled={counts.journaled} errors={counts.db_errors}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
