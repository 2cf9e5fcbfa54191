"""``/healthz``, ``/readyz`` and ``/metrics`` on the admin HTTP port.

- ``/healthz``: the process is alive and its event loop answers. No I/O.
- ``/readyz``: the gateway should be sent mail: the SMTP listener is bound and
  serving, incidents can be made durable (database writable, or the outage
  journal has room), and the next hop answered recently. Answers from state
  already in memory; the only dependency it may touch, the next hop, is probed
  in the background and waited for at most :data:`PROBE_WAIT` seconds, so a
  slow or black-holed next hop never slows the endpoint down (load balancers
  and kubelets time out probes, and a slow readiness answer reads as "down").
- ``/metrics``: the Prometheus text exposition (``gateway.metrics``), with the
  state gauges refreshed first.

None of them needs the API token: probes and scrapers carry no credentials,
and nothing here reveals an address or a message.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from gateway import metrics
from gateway.relay import NextHop
from gateway.server import Listener
from storage.recorder import Recorder

#: The next hop counts as reachable this long after its last good reply (traffic or probe).
NEXT_HOP_WINDOW = 60.0
#: How long /readyz waits for a probe it started: a healthy hop answers NOOP well within it.
PROBE_WAIT = 0.25


@dataclass(frozen=True, slots=True)
class Check:
    ok: bool
    detail: str


def storage_check(recorder: Recorder) -> Check:
    """Incidents can be made durable: the database is writable, or the journal has room."""
    if recorder.db_available:
        return Check(True, "database writable")
    if recorder.can_accept():
        return Check(True, "database unavailable; journaling")
    return Check(False, "database unavailable and the journal is full")


def refresh_storage_gauges(recorder: Recorder) -> None:
    """Copy the recorder's state into the gauges that mirror it."""
    metrics.DB_AVAILABLE.set(1 if recorder.db_available else 0)
    metrics.JOURNAL_BACKLOG.set(recorder.journal_backlog)
    metrics.JOURNAL_BYTES.set(recorder.journal_bytes)
    metrics.JOURNAL_CAPACITY.set(recorder.journal_max_bytes)


class NextHopCheck:
    """ "Reachable recently": a good reply within the window, else a background NOOP probe."""

    def __init__(self, hop: NextHop, window: float = NEXT_HOP_WINDOW) -> None:
        self.hop = hop
        self.window = window
        self._probe: asyncio.Task[bool] | None = None

    def reachable(self) -> bool:
        return self.hop.reachable(self.window)

    def failing(self) -> bool:
        """The latest contact with the next hop failed (no contact yet: not failing)."""
        return self.hop.failing()

    def kick(self) -> asyncio.Task[bool] | None:
        """Start a probe unless one runs or none is needed; return the running probe."""
        if self.reachable():
            return None
        if self._probe is None or self._probe.done():
            self._probe = asyncio.get_running_loop().create_task(self.hop.probe())
        return self._probe

    async def check(self) -> Check:
        probe = self.kick()
        if probe is not None:
            # shield: the request may be cancelled, the probe goes on and its result is cached
            await asyncio.wait({asyncio.shield(probe)}, timeout=PROBE_WAIT)
        if self.reachable():
            return Check(True, f"answered within the last {self.window:.0f}s")
        return Check(False, f"no good reply from the next hop within {self.window:.0f}s")

    async def close(self) -> None:
        if self._probe is not None and not self._probe.done():
            self._probe.cancel()
            await asyncio.gather(self._probe, return_exceptions=True)


class Readiness:
    """The checks behind /readyz, over the parts of a running :class:`gateway.app.Gateway`."""

    def __init__(self, listener: Listener, recorder: Recorder, next_hop: NextHopCheck) -> None:
        self.smtp = listener
        self.recorder = recorder
        self.next_hop = next_hop

    def listener(self) -> Check:
        server = self.smtp.server
        if server is not None and server.is_serving():
            return Check(True, f"serving on port {self.smtp.port}")
        return Check(False, "SMTP listener not bound (starting or shutting down)")

    async def checks(self) -> dict[str, Check]:
        next_hop = await self.next_hop.check()
        return {"listener": self.listener(), "storage": storage_check(self.recorder), "next_hop": next_hop}

    def refresh_gauges(self) -> None:
        """Copy state into the gauges that mirror it (called at scrape time and periodically)."""
        refresh_storage_gauges(self.recorder)
        metrics.NEXT_HOP_UP.set(0 if self.next_hop.failing() else 1)


def health_router(
    checks: Callable[[], Awaitable[dict[str, Check]]],
    *,
    summary: str = "Readiness: listener bound, incidents storable, next hop reachable",
) -> APIRouter:
    """``/healthz`` and ``/readyz`` over a listener's readiness ``checks`` (relay or milter)."""
    router = APIRouter(tags=["health"])

    @router.get("/healthz", summary="Liveness: the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @router.get(
        "/readyz",
        summary=summary,
        responses={503: {"description": "At least one check failed; see `failed`"}},
    )
    async def readyz() -> JSONResponse:
        results = await checks()
        failed = [name for name, check in results.items() if not check.ok]
        body: dict[str, Any] = {
            "status": "not ready" if failed else "ready",
            "failed": failed,
            "checks": {name: {"ok": c.ok, "detail": c.detail} for name, c in results.items()},
        }
        return JSONResponse(body, status_code=503 if failed else 200)

    return router


def metrics_router(refresh: Callable[[], None]) -> APIRouter:
    router = APIRouter(tags=["metrics"])

    @router.get("/metrics", summary="Prometheus text exposition", response_class=Response)
    async def scrape() -> Response:
        refresh()
        # In multiprocess mode this reads every worker's files: off the event loop
        # (ARCHITECTURE.md, invariant 4).
        body = await asyncio.to_thread(metrics.exposition)
        return Response(body, media_type=metrics.CONTENT_TYPE)

    return router
