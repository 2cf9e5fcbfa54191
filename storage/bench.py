"""Insert throughput of the incident store: ``python -m storage.bench URL [COUNT]``.

Prints incidents per second for one row per transaction and for batched (group-committed)
transactions, through :class:`~storage.repository.Repository` with the production pragmas
(SQLite: WAL + synchronous=FULL). Run it against a scratch database: it adds rows.
"""

from __future__ import annotations

import sys
import time
import uuid
from datetime import UTC, datetime

from storage.db import upgrade
from storage.incidents import IncidentRecord, new_incident_id
from storage.repository import Repository


def _records(n: int) -> list[IncidentRecord]:
    now = datetime.now(UTC)
    return [
        IncidentRecord(
            id=new_incident_id(),
            fingerprint=uuid.uuid4().hex * 2,
            recorded_at=now,
            failed_recipient=f"group{i % 50}@contoso.example",
            recipient_domain="contoso.example",
            sender=f"user{i % 20}@fabrikam.example",
            sender_domain="fabrikam.example",
            status="5.7.133",
            diagnostic="550 5.7.133 RESOLVER.RST.SenderNotAuthenticatedForGroup",
            variant="group",
            instance="bench",
        )
        for i in range(n)
    ]


def main(url: str, count: int = 2000) -> None:
    upgrade(url)
    repo = Repository.from_url(url)
    try:
        singles = _records(count // 4)
        start = time.perf_counter()
        for record in singles:
            repo.record([record])
        single_rate = len(singles) / (time.perf_counter() - start)
        for batch in (50, 500):
            records = _records(count)
            start = time.perf_counter()
            for i in range(0, count, batch):
                repo.record(records[i : i + batch])
            print(f"batch={batch}: {count / (time.perf_counter() - start):,.0f} incidents/s")
        print(f"single rows: {single_rate:,.0f} incidents/s")
    finally:
        repo.close()


if __name__ == "__main__":
    main(sys.argv[1], *(int(a) for a in sys.argv[2:3]))
