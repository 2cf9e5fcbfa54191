"""The admin HTTP application (``--http``): the incidents API now; metrics and health checks are
added by including more routers.

``create_admin_app(repository, api_token=..., routers=...)`` returns a FastAPI app serving
``/api/v1/...`` and ``/openapi.json``; other parts extend it with ``routers=[...]``.
:class:`AdminServer` serves it with uvicorn on the caller's event loop (the relay's
``gateway.app.Gateway`` and the milter's ``gateway.milter.service.MilterService`` alike).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator, Sequence

import uvicorn
from fastapi import APIRouter, FastAPI

from gateway.api import incidents_router, install_error_handlers
from gateway.config import parse_host_port
from storage.repository import Repository


def create_admin_app(
    repository: Repository,
    *,
    api_token: str | None = None,
    routers: Sequence[APIRouter] = (),
    title: str = "bouncegw admin",
) -> FastAPI:
    """The admin app: incidents API (token or loopback-only) plus any extra ``routers``."""
    app = FastAPI(title=title, version="1", docs_url=None, redoc_url=None)
    install_error_handlers(app, database_url=repository.engine.url.render_as_string(hide_password=True))
    app.include_router(incidents_router(repository, api_token=api_token))
    for router in routers:
        app.include_router(router)
    return app


class _EmbeddedUvicorn(uvicorn.Server):
    """uvicorn on our loop: the process owns SIGTERM/SIGINT, not uvicorn."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class AdminServer:
    """The admin app served on ``address`` (``admin.http``) by uvicorn, as a task on this loop."""

    def __init__(self, app: FastAPI, address: str) -> None:
        self.address = address
        host, port = parse_host_port(address)
        config = uvicorn.Config(
            app, host=host, port=port, log_config=None, access_log=False, lifespan="off", server_header=False
        )
        self._server = _EmbeddedUvicorn(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self, sock: socket.socket | None = None) -> None:
        """Serve on ``sock`` (bound by the supervisor) or bind ``address``; return once listening."""
        task = self._task = asyncio.get_running_loop().create_task(
            self._server.serve(sockets=[sock] if sock else None)
        )
        while not self._server.started:
            if task.done():
                task.result()  # raises what made uvicorn give up (e.g. the port is taken)
                raise OSError(f"admin HTTP server did not start on {self.address}")
            await asyncio.sleep(0.01)

    @property
    def port(self) -> int | None:
        if not self._server.servers:
            return None
        port: int = self._server.servers[0].sockets[0].getsockname()[1]
        return port

    async def stop(self) -> None:
        if self._task is not None:
            self._server.should_exit = True
            await self._task
