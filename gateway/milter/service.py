"""``bouncegw milter``: the milter listener, its processing steps, recorder and admin HTTP.

One event loop runs it all, as for the relay (``gateway.app``): the milter connections, the
incident recorder's batching and the admin HTTP server with ``/healthz``, ``/readyz`` and
``/metrics``. The steps are the relay's own (``gateway.steps``: Detect, Explain, Record);
there is no next hop: the MTA keeps the message and delivers it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import socket
from dataclasses import dataclass
from pathlib import Path

from gateway.admin import AdminServer, create_admin_app
from gateway.app import JOURNAL_DRAIN_MIN, build_recorder
from gateway.config import Settings, parse_host_port
from gateway.health import Check, health_router, metrics_router, refresh_storage_gauges, storage_check
from gateway.milter.session import Session
from gateway.pipeline import Pipeline
from gateway.startup import FatalError, describe
from gateway.steps import processing_steps
from storage.db import check_schema_unless_down
from storage.recorder import Recorder
from storage.repository import Repository

log = logging.getLogger(__name__)

DEFAULT_LISTEN = "inet:127.0.0.1:10030"


@dataclass(frozen=True, slots=True)
class Address:
    """A milter socket as Postfix's ``smtpd_milters`` writes it: ``inet:HOST:PORT`` or ``unix:PATH``."""

    kind: str  # "inet" | "unix"
    host: str = ""
    port: int = 0
    path: str = ""

    @classmethod
    def parse(cls, value: str) -> Address:
        kind, sep, rest = value.partition(":")
        if sep and kind in ("unix", "local") and rest.startswith("/"):
            return cls("unix", path=rest)
        if sep and kind == "inet":
            host, port = parse_host_port(rest)
            return cls("inet", host=host, port=port)
        raise ValueError(f"expected inet:HOST:PORT or unix:/PATH, got {value!r} (e.g. {DEFAULT_LISTEN})")

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.path}"
        return f"inet:[{self.host}]:{self.port}" if ":" in self.host else f"inet:{self.host}:{self.port}"


def build_pipeline(settings: Settings, recorder: Recorder) -> Pipeline:
    """The relay's processing steps (gateway.steps.processing_steps), in the relay's order."""
    return Pipeline(processing_steps(settings, recorder))


def _remove_stale_socket(path: Path) -> None:
    """Remove a socket file left by a previous run; one that still answers is in use."""
    if not path.is_socket():
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()  # nobody listens: left behind
            return
    raise OSError(errno.EADDRINUSE, "address already in use")


class MilterService:
    """The milter listener and what it owns; tests start it on ephemeral ports in their loop."""

    def __init__(self, settings: Settings, address: Address) -> None:
        self.settings = settings
        self.address = address
        self.recorder = build_recorder(settings)
        self.pipeline = build_pipeline(settings, self.recorder)
        self.server: asyncio.Server | None = None
        self.repository: Repository | None = None
        self.http: AdminServer | None = None
        self._sessions: dict[asyncio.Task[None], Session] = {}

    @property
    def port(self) -> int | None:
        if self.server is None or self.address.kind != "inet" or not self.server.sockets:
            return None
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    @property
    def http_port(self) -> int | None:
        return self.http.port if self.http is not None else None

    async def start(self) -> None:
        unavailable = await asyncio.to_thread(check_schema_unless_down, self.settings.database.url)
        if unavailable:
            log.warning("starting without the database: %s", unavailable)
        await self.recorder.start(unavailable=unavailable)
        self.server = await self._listen()
        await self._start_http()
        log.info("milter listening", extra={"listen": str(self.address), "http_port": self.http_port})

    async def _listen(self) -> asyncio.Server:
        if self.address.kind == "unix":
            path = Path(self.address.path)
            _remove_stale_socket(path)
            server = await asyncio.start_unix_server(self._connection, path=str(path))
            # The MTA's milter client runs as another user (Postfix: the "postfix" user).
            path.chmod(0o666)  # noqa: ASYNC240  (one system call, at start-up)
            return server
        return await asyncio.start_server(
            self._connection, self.address.host, self.address.port, reuse_address=True
        )

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # One small packet per answer: without TCP_NODELAY each waits for delayed ACKs.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        task = asyncio.current_task()
        assert task is not None
        limit = self.settings.listener.max_message_size
        session = Session(reader, writer, self.pipeline, max_message_size=limit)
        self._sessions[task] = session
        try:
            await session.run()
        finally:
            del self._sessions[task]

    async def _start_http(self) -> None:
        self.repository = await asyncio.to_thread(Repository.from_url, self.settings.database.url)
        token = self.settings.admin.api_token
        app = create_admin_app(
            self.repository,
            api_token=token.get_secret_value() if token else None,
            routers=[
                health_router(self.checks, summary="Readiness: milter listener bound, incidents storable"),
                metrics_router(lambda: refresh_storage_gauges(self.recorder)),
            ],
        )
        self.http = AdminServer(app, self.settings.admin.http)
        await self.http.start()

    async def checks(self) -> dict[str, Check]:
        """/readyz: the milter socket serves, and incidents can be made durable."""
        serving = self.server is not None and self.server.is_serving()
        listener = Check(serving, f"serving on {self.address}" if serving else "milter listener not bound")
        return {"listener": listener, "storage": storage_check(self.recorder)}

    async def stop(self) -> None:
        grace = self.settings.listener.grace_period
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        if self.server is not None:
            self.server.close()
            # Messages in flight get the grace period to be answered; the MTA applies its
            # milter_default_action to whatever is cut off.
            # Connections not working on an end of message are closed at once (the MTA applies
            # milter_default_action to a message it was still sending); those that are get the
            # grace period to answer, then are closed too.
            for session in list(self._sessions.values()):
                if not session.busy:
                    session.writer.transport.abort()
            if self._sessions:
                await asyncio.wait(set(self._sessions), timeout=grace)
            for session in list(self._sessions.values()):
                session.writer.transport.abort()
            if self._sessions:
                await asyncio.wait(set(self._sessions), timeout=1.0)
            if self.address.kind == "unix":
                with contextlib.suppress(OSError):
                    os.unlink(self.address.path)
        # As the relay (gateway.app): the journal gets the rest of the grace period to reach the
        # database, at least JOURNAL_DRAIN_MIN.
        await self.recorder.stop(max(deadline - loop.time(), min(grace, JOURNAL_DRAIN_MIN)))
        if self.http is not None:
            await self.http.stop()
        if self.repository is not None:
            await asyncio.to_thread(self.repository.close)


async def run(settings: Settings, address: Address) -> None:
    """Serve until SIGTERM or SIGINT; a failure to start raises FatalError with one line."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    service: MilterService | None = None
    try:
        service = MilterService(settings, address)
        await service.start()
    except Exception as exc:
        if service is not None:
            with contextlib.suppress(Exception):
                await service.stop()
        if isinstance(exc, OSError) and service is not None and service.server is None:
            raise FatalError(
                f"cannot listen on {address} (option --listen): {exc.strerror or exc}; "
                "choose a free address of this host"
            ) from exc
        raise FatalError(describe(exc)) from exc
    await stop.wait()
    log.info("stopping: waiting up to %.0fs for messages in flight", settings.listener.grace_period)
    await service.stop()
    log.info("stopped")
