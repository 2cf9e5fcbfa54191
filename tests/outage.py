"""Helpers for database-outage tests: PostgreSQL behind a proxy the test cuts, the backoff's bound,
and the incident ids a relayed bounce names.
"""

from __future__ import annotations

import re

from sqlalchemy.engine import make_url

from storage.recorder import RETRY_JITTER
from tests.tcp_proxy import TcpProxy

_EXPLAINED = re.compile(rb"X-Bouncegw-Explained:[^\r\n]*(?:\r?\n[ \t][^\r\n]*)*", re.IGNORECASE)


async def postgres_proxy() -> TcpProxy:
    """A proxy in front of the test PostgreSQL server (``BOUNCEGW_TEST_PG_URL``)."""
    from tests.storage_fixtures import PG_URL

    target = make_url(PG_URL)
    return await TcpProxy(target.host or "127.0.0.1", target.port or 5432).start()


def through(proxy: TcpProxy, url: str) -> str:
    """``url`` reached through ``proxy`` (sslmode=disable: one TCP connection per attempt)."""
    u = make_url(url).set(host="127.0.0.1", port=proxy.port).update_query_dict({"sslmode": "disable"})
    return u.render_as_string(hide_password=False)


def most_attempts(seconds: float, first: float, cap: float) -> int:
    """The most recovery attempts the backoff allows in ``seconds`` (every wait at its shortest)."""
    attempts, elapsed, failures = 0, 0.0, 1
    while True:
        elapsed += min(max(cap, first), first * 2 ** (failures - 1)) * (1 - RETRY_JITTER)
        if elapsed > seconds:
            return attempts
        attempts += 1
        failures += 1


def explained_ids(data: bytes) -> list[str]:
    """The incident ids named by the X-Bouncegw-Explained header of a relayed bounce."""
    found = _EXPLAINED.search(data)
    if found is None:
        return []
    value = re.sub(rb"\s+", b"", found.group(0)).decode()
    return value.partition("incident=")[2].split(",") if "incident=" in value else []
