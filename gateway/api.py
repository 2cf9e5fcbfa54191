"""The incidents HTTP API (``/api/v1``) served on the admin port.

- ``GET /api/v1/incidents``: filters ``since``/``until`` (a duration such as ``24h`` or an ISO
  date/date-time), ``recipient``, ``domain``, ``sender``, ``code``, ``variant``, ``instance``;
  newest first;
  ``limit`` (1-1000) and ``cursor`` (the previous page's ``next_cursor``).
- ``GET /api/v1/incidents/{id}``
- ``GET /api/v1/stats?by=day|recipient|domain|variant|sender-domain|instance`` (same filters).

Auth: with ``admin.api_token`` set, every request needs ``Authorization: Bearer <token>`` (401
otherwise). Without a token the API answers loopback clients only (403 for anyone else).
Errors are JSON ``{"detail": "<message>"}``: 400 for a bad filter or cursor (request validation
errors included, see :func:`install_error_handlers`), 401, 403, 404, and 503 (with a
``Retry-After``) while the database is down or answers with an error: the gateway keeps relaying
and journaling meanwhile, only the reading API waits for the database.

The endpoints are plain ``def`` functions: FastAPI runs them in its thread pool, so the blocking
repository calls never run on the event loop the SMTP listener shares.
"""

from __future__ import annotations

import ipaddress
import secrets
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError

from storage.db import describe_error
from storage.incidents import Source
from storage.repository import IncidentFilter, InvalidCursor, Repository
from storage.timespec import parse_time_bound

StatKey = Literal["day", "recipient", "domain", "variant", "sender-domain", "instance"]
#: Seconds a client is asked to wait after a 503 (the database is down).
RETRY_AFTER = 30


class ErrorBody(BaseModel):
    detail: str


class IncidentOut(BaseModel):
    id: str
    recorded_at: datetime
    transaction_id: str | None
    bounce_message_id: str | None
    envelope_sender: str
    envelope_recipient: str | None
    sender: str | None
    sender_domain: str | None
    failed_recipient: str | None
    recipient_domain: str | None
    original_recipient: str | None
    status: str | None
    reported_status: str | None
    diagnostic: str | None
    category: str | None
    variant: str | None
    reporting_mta: str | None
    remote_mta: str | None
    original_message_id: str | None
    original_from: str | None
    original_subject: str | None
    original_date: str | None
    client_address: str | None
    helo: str | None
    annotated: bool
    relay_outcome: str | None
    instance: str | None
    #: "relay" (found in the mail flow) or "scan" (read from a mailbox by ``bouncegw scan``).
    source: Source


class IncidentPage(BaseModel):
    items: list[IncidentOut]
    #: Pass as ``cursor`` to get the next (older) page; null on the last page.
    next_cursor: str | None


class StatRowOut(BaseModel):
    key: str | None
    count: int
    first_seen: datetime
    last_seen: datetime


class StatsOut(BaseModel):
    by: StatKey
    rows: list[StatRowOut]


_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "Bad filter, cursor or parameter"},
    401: {"model": ErrorBody, "description": "Missing or wrong bearer token"},
    403: {"model": ErrorBody, "description": "No token configured and the client is not on loopback"},
    503: {"model": ErrorBody, "description": "The database is unavailable or failed; retry later"},
}

_bearer = HTTPBearer(auto_error=False, description="admin.api_token from the configuration")


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return bool(address.is_loopback or (mapped is not None and mapped.is_loopback))


def _text(name: str, value: str | None) -> str | None:
    if value is None:
        return None
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise HTTPException(400, f"{name}: control characters are not allowed")
    return value or None


def _bound(name: str, value: str | None) -> datetime | None:
    value = _text(name, value)
    if value is None:
        return None
    try:
        return parse_time_bound(value)
    except (ValueError, OverflowError) as exc:
        raise HTTPException(400, f"{name}: {exc}") from None


def _filters(
    since: Annotated[
        str | None, Query(description="Duration back from now (24h, 7d) or ISO date/date-time")
    ] = None,
    until: Annotated[str | None, Query(description="Same forms as since; exclusive")] = None,
    recipient: Annotated[str | None, Query(description="Failed recipient address")] = None,
    domain: Annotated[str | None, Query(description="Failed recipient's domain")] = None,
    sender: Annotated[
        str | None, Query(description="Sender address, or a domain for all its senders")
    ] = None,
    code: Annotated[str | None, Query(description="Enhanced status code, e.g. 5.7.133")] = None,
    variant: Annotated[str | None, Query(description="Classifier variant")] = None,
    instance: Annotated[str | None, Query(description="Gateway instance that recorded it")] = None,
    source: Annotated[Source | None, Query(description="Found by the relay or by bouncegw scan")] = None,
) -> IncidentFilter:
    return IncidentFilter(
        since=_bound("since", since),
        until=_bound("until", until),
        recipient=_text("recipient", recipient),
        domain=_text("domain", domain),
        sender=_text("sender", sender),
        code=_text("code", code),
        variant=_text("variant", variant),
        instance=_text("instance", instance),
        source=source,
    )


Filters = Annotated[IncidentFilter, Depends(_filters)]


def incidents_router(repository: Repository, *, api_token: str | None) -> APIRouter:
    """The ``/api/v1`` routes reading ``repository``, guarded by ``api_token`` (or loopback)."""

    def authorise(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> None:
        if api_token:
            given = credentials.credentials if credentials is not None else ""
            if not secrets.compare_digest(given.encode(), api_token.encode()):
                raise HTTPException(
                    401,
                    "missing or wrong bearer token (Authorization: Bearer <admin.api_token>)",
                    headers={"WWW-Authenticate": "Bearer"},
                )
            return
        if not is_loopback(request.client.host if request.client else None):
            raise HTTPException(
                403, "no admin.api_token is configured, so the API answers loopback clients only"
            )

    router = APIRouter(prefix="/api/v1", dependencies=[Depends(authorise)], responses=_ERRORS)

    @router.get("/incidents", response_model=IncidentPage, summary="List incidents, newest first")
    def list_incidents(
        filters: Filters,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    ) -> IncidentPage:
        try:
            page = repository.query(filters, limit=limit, cursor=_text("cursor", cursor))
        except InvalidCursor as exc:
            raise HTTPException(400, str(exc)) from None
        return IncidentPage(
            items=[IncidentOut.model_validate(r.to_dict()) for r in page.items], next_cursor=page.next_cursor
        )

    @router.get(
        "/incidents/{incident_id}",
        response_model=IncidentOut,
        summary="One incident",
        responses={404: {"model": ErrorBody, "description": "No such incident"}},
    )
    def get_incident(incident_id: Annotated[str, Path(max_length=64)]) -> IncidentOut:
        record = repository.get(incident_id) if _text("incident_id", incident_id) else None
        if record is None:
            raise HTTPException(404, f"no incident with id {incident_id!r}")
        return IncidentOut.model_validate(record.to_dict())

    @router.get("/stats", response_model=StatsOut, summary="Counts, first and last seen per key")
    def stats(filters: Filters, by: StatKey = "day") -> StatsOut:
        rows = repository.stats(by, filters)
        return StatsOut(
            by=by,
            rows=[
                StatRowOut(key=r.key, count=r.count, first_seen=r.first_seen, last_seen=r.last_seen)
                for r in rows
            ],
        )

    return router


def install_error_handlers(app: FastAPI, *, database_url: str = "") -> None:
    """Request validation errors become 400 with a readable message (FastAPI's default is 422);
    database errors a JSON 503 naming the database (password masked) and the driver's reason."""

    async def bad_request(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        parts = []
        for error in exc.errors():
            where = ".".join(str(p) for p in error.get("loc", ())[1:]) or "request"
            parts.append(f"{where}: {error.get('msg', 'invalid')}")
        return JSONResponse({"detail": "; ".join(parts) or "invalid request"}, status_code=400)

    async def database_error(_request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(
            {"detail": describe_error(database_url, exc)},
            status_code=503,
            headers={"Retry-After": str(RETRY_AFTER)},
        )

    app.add_exception_handler(RequestValidationError, bad_request)
    # DBAPIError: every error the driver raised (connection refused, timeout, missing table...).
    app.add_exception_handler(DBAPIError, database_error)
