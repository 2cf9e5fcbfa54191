"""Wiring: settings in, a running gateway out.

``run(settings)`` is what ``bouncegw serve`` calls; tests use :class:`Gateway`
directly to start a gateway on ephemeral ports inside their own event loop.
Everything runs on one event loop: the SMTP listener, the admin HTTP server
(uvicorn), the incident recorder's batching, the next-hop pool pruning.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Sequence
from typing import Any

from gateway import metrics
from gateway.admin import AdminServer, create_admin_app
from gateway.config import Settings
from gateway.console import TrafficWatch, console_router
from gateway.handler import RelayHandler
from gateway.health import NextHopCheck, Readiness, health_router, metrics_router
from gateway.loops import LoopGuard
from gateway.maildir import MaildirNextHop
from gateway.pipeline import Pipeline, Step
from gateway.relay import NextHop, SmtpNextHop
from gateway.server import Listener
from gateway.startup import FatalError, describe
from gateway.steps import processing_steps
from storage.db import check_schema_unless_down
from storage.recorder import Recorder
from storage.repository import Repository

log = logging.getLogger(__name__)

#: How often idle next-hop connections are checked against their idle limit.
PRUNE_INTERVAL = 5.0
#: How often this process copies its state into the mirroring gauges. In multiprocess mode the
#: worker that answers a scrape cannot refresh the others: this bounds how stale theirs can be.
METRICS_REFRESH_INTERVAL = 5.0
#: At stop, the journal gets what is left of listener.grace_period to reach the database, but at
#: least this long (transactions in flight may have used up the grace period).
JOURNAL_DRAIN_MIN = 5.0


def build_next_hop(settings: Settings) -> NextHop:
    maildir = settings.next_hop.maildir
    if maildir is not None:
        return MaildirNextHop(maildir)
    return SmtpNextHop(settings.next_hop, helo_name=settings.listener.hostname)


def build_recorder(settings: Settings) -> Recorder:
    """The incident recorder, its events counted in Prometheus (``gateway.metrics``)."""
    s = settings.storage
    return Recorder(
        settings.database.url,
        s.journal_path,
        journal_max_bytes=s.journal_max_bytes,
        batch_size=s.batch_size,
        batch_interval=s.batch_interval,
        db_timeout=s.db_timeout,
        retry_interval=s.retry_interval,
        retry_max_interval=s.retry_max_interval,
        retention_days=s.retention_days,
        workers=settings.listener.workers,
        events=metrics.RecorderMetrics(),
    )


class Gateway:
    """A gateway and what it owns: SMTP listener, next hop, pipeline, recorder, admin HTTP, jobs."""

    def __init__(self, settings: Settings, *, extra_steps: Sequence[Step] = ()) -> None:
        self.settings = settings
        self.next_hop = build_next_hop(settings)
        self.recorder = build_recorder(settings)
        # Mail relayed to refusing recipients, for the console (counted on the recorder's thread).
        self.traffic = TrafficWatch(
            settings.database.url, self.recorder.call, lambda: self.recorder.db_available
        )
        self.pipeline = Pipeline(
            [
                *processing_steps(settings, self.recorder),
                self.traffic,
                *extra_steps,
            ]
        )
        self.handler = RelayHandler(
            self.next_hop,
            self.pipeline,
            offer_auth=bool(settings.listener.auth_users),
            loops=LoopGuard(settings.listener.hostname, settings.relay.max_hops, settings.relay.max_passes),
        )
        self.listener = Listener(settings.listener, self.handler)
        self.next_hop_check = NextHopCheck(self.next_hop)
        self.readiness = Readiness(self.listener, self.recorder, self.next_hop_check)
        self.repository: Repository | None = None
        self.http: AdminServer | None = None
        self._jobs: list[asyncio.Task[Any]] = []

    async def start(self, sock: socket.socket | None = None, http_sock: socket.socket | None = None) -> None:
        # An out-of-date schema stops the start here, with the message saying what to run
        # (the embedded SQLite default creates and upgrades itself). A database server that does
        # not answer does not: mail is relayed and incidents journaled until it does.
        unavailable = await asyncio.to_thread(check_schema_unless_down, self.settings.database.url)
        if unavailable:
            log.warning("starting without the database: %s", unavailable)
        await self.recorder.start(unavailable=unavailable)
        await self.traffic.start()
        await self.listener.start(sock)
        loop = asyncio.get_running_loop()
        self._jobs.append(loop.create_task(self._prune(self.next_hop)))
        self._jobs.append(loop.create_task(self._refresh_metrics()))
        await self._start_http(http_sock)
        log.info(
            "listening",
            extra={
                "listen": self.settings.listener.listen,
                "port": self.listener.port,
                "http_port": self.http_port,
                "next_hop": self.settings.next_hop.address,
            },
        )

    async def _start_http(self, sock: socket.socket | None) -> None:
        self.repository = await asyncio.to_thread(Repository.from_url, self.settings.database.url)
        token = self.settings.admin.api_token
        app = create_admin_app(
            self.repository,
            api_token=token.get_secret_value() if token else None,
            routers=[
                health_router(self.readiness.checks),
                metrics_router(self.readiness.refresh_gauges),
                console_router(
                    self.repository,
                    api_token=token.get_secret_value() if token else None,
                    explain=self.settings.explain,
                ),
            ],
        )
        self.http = AdminServer(app, self.settings.admin.http)
        await self.http.start(sock)

    @property
    def http_port(self) -> int | None:
        return self.http.port if self.http is not None else None

    async def _prune(self, hop: NextHop) -> None:
        while True:
            await asyncio.sleep(PRUNE_INTERVAL)
            hop.prune()

    async def _refresh_metrics(self) -> None:
        while True:
            # After a failure an idle gateway probes its next hop, so that bouncegw_next_hop_up
            # returns to 1 when the hop is back even without traffic. A healthy hop is never
            # probed from here (only by /readyz when the last good reply is older than its window).
            if self.next_hop_check.failing():
                self.next_hop_check.kick()
            self.readiness.refresh_gauges()
            await asyncio.sleep(METRICS_REFRESH_INTERVAL)

    async def stop(self) -> None:
        grace = self.settings.listener.grace_period
        deadline = asyncio.get_running_loop().time() + grace
        await self.listener.stop(grace)
        for job in self._jobs:
            job.cancel()
        await asyncio.gather(*self._jobs, return_exceptions=True)
        await self.next_hop_check.close()
        # The journal tries to reach the database in the rest of the grace period; the admin port
        # stays up meanwhile, so a last scrape sees what is left (journal_left_at_stop).
        drain = max(deadline - asyncio.get_running_loop().time(), min(grace, JOURNAL_DRAIN_MIN))
        await self.traffic.stop()
        await self.recorder.stop(drain)
        if self.http is not None:
            await self.http.stop()
        await self.next_hop.close()
        if self.repository is not None:
            await asyncio.to_thread(self.repository.close)


async def run(
    settings: Settings, *, smtp_socket: socket.socket | None = None, http_socket: socket.socket | None = None
) -> None:
    """Serve until SIGTERM or SIGINT, then stop gracefully (sockets: from gateway.startup.bind).

    A failure to start raises :class:`~gateway.startup.FatalError` with one line for the operator.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Before anything listens: a SIGTERM during start-up still means a graceful stop.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # A worker process starts with these blocked (gateway.workers): deliver any pending one now.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
    app: Gateway | None = None
    try:
        app = Gateway(settings)
        await app.start(smtp_socket, http_socket)
    except Exception as exc:
        # A start that fails now fails again on a retry: one line for the operator (the cause
        # stays attached for debug logging), after releasing what was already started.
        if app is not None:
            with contextlib.suppress(Exception):
                await app.stop()
        raise FatalError(describe(exc)) from exc
    await stop.wait()
    log.info("stopping: waiting up to %.0fs for transactions in flight", settings.listener.grace_period)
    await app.stop()
    log.info("stopped")
