"""The admin HTTP application (``--http``): the incidents API now; metrics and health checks are
added by including more routers.

``create_admin_app(repository, api_token=..., routers=...)`` returns a FastAPI app serving
``/api/v1/...`` and ``/openapi.json``. The caller runs it with uvicorn on the gateway's own event
loop (``uvicorn.Server(uvicorn.Config(app, ...)).serve()`` as a task); other parts extend it with
``routers=[...]`` or ``app.include_router(...)`` afterwards.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import APIRouter, FastAPI

from gateway.api import incidents_router, install_error_handlers
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
