"""The console's routes under ``/console`` on the admin port (read-only, server-rendered).

- ``/console/problems``: refusing recipients grouped (``storage.problems``), filters ``since``,
  ``until``, ``domain``, ``variant``, ``sender``, ``state``, ``sort``/``order``, ``page`` and ``lang``,
  all in the URL; ``/console/problems.csv`` and ``.json`` export the same view (every page).
- ``/console/incidents.csv`` / ``.json``: the incidents behind a view (plus ``recipient``).
- ``/console/incidents/{id}``: one incident, its explanation block, the note for the recipient's
  admin; ``/console/incidents/{id}/note-{lang}.eml`` and ``.txt`` download the note.
- ``/console/trends``: incidents over time by variant, and the top refusing domains (inline SVG).

Access is the API's (``gateway.api``): with ``admin.api_token`` set, ``Authorization: Bearer
<token>`` or HTTP Basic with the token as the password (any user name: the browser asks for it,
no script needed); without a token, loopback clients only.

Every value shown comes from a bounce, so from whoever wrote it: templates autoescape (no
``|safe`` anywhere), exports go through :func:`gateway.textsafe.csv_cell` and
:func:`gateway.textsafe.json_text`, and every response carries a Content-Security-Policy that
allows no inline script or style.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import json
import secrets
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Annotated, Any, Final, cast
from urllib.parse import urlencode

import jinja2
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response, StreamingResponse
from sqlalchemy.exc import DBAPIError

from gateway.api import is_loopback
from gateway.config import ExplainSettings
from gateway.console import charts, i18n, note
from gateway.explain import locale
from gateway.textsafe import csv_cell, json_text
from storage.db import describe_error
from storage.incidents import IncidentRecord
from storage.problems import (
    SORT_KEYS,
    STATES,
    ProblemRow,
    SortKey,
    State,
    daily_counts,
    iter_problems,
    problems,
    top_domains,
    trend,
)
from storage.repository import IncidentFilter, Repository
from storage.timespec import parse_time_bound

PAGE_SIZE: Final = 50
#: Incidents listed on the detail page (the export has them all).
HISTORY: Final = 20
STATIC: Final = Path(__file__).with_name("static")

#: No inline script or style, nothing from elsewhere, no framing (CSP Level 3).
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

#: Sort keys whose natural first click is ascending (text); the others start with the largest.
_ASCENDING_FIRST: Final = frozenset({"recipient", "variant"})
#: The problems table's columns, in order (each one a sort key and a text of gateway.console.i18n).
_COLUMNS: Final[tuple[SortKey, ...]] = (
    "recipient",
    "variant",
    "first_seen",
    "last_seen",
    "bounces",
    "senders",
    "state",
)
_FILTER_KEYS: Final = ("since", "until", "domain", "variant", "sender", "state", "recipient")
_MAX_PARAM = 320

_environment = jinja2.Environment(
    loader=jinja2.PackageLoader("gateway.console", "templates"),
    autoescape=True,  # every template, whatever its extension (inline SVG included)
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


@dataclass(frozen=True, slots=True)
class View:
    """A request's filters, sort and page as read from its URL."""

    raw: dict[str, str]
    filters: IncidentFilter
    state: State | None
    sort: SortKey
    descending: bool
    page: int
    lang: str

    def query(self, **changes: str | int | None) -> str:
        """This view's query string with ``changes`` (None removes a key)."""
        params: dict[str, Any] = dict(self.raw)
        for key, value in changes.items():
            if value is None or value == "":
                params.pop(key, None)
            else:
                params[key] = value
        return urlencode(params)


def _read_view(params: Mapping[str, str], accept_language: str | None) -> tuple[View, list[str]]:
    """The view, and the problems with it (a bad value is dropped and named)."""
    errors: list[str] = []
    raw: dict[str, str] = {}
    for key in (*_FILTER_KEYS, "sort", "order", "page", "lang"):
        value = params.get(key, "").strip()
        if not value:
            continue
        if len(value) > _MAX_PARAM or any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
            errors.append(f"{key}: too long or control characters")
            continue
        raw[key] = value
    lang = i18n.negotiate(accept_language, raw.get("lang"))
    bounds: dict[str, datetime | None] = {}
    for key in ("since", "until"):
        try:
            bounds[key] = parse_time_bound(raw[key]) if key in raw else None
        except (ValueError, OverflowError) as exc:
            errors.append(f"{key}: {exc}")
            raw.pop(key)
            bounds[key] = None
    state = raw.get("state")
    if state is not None and state not in STATES:
        errors.append(f"state: {state!r} is not one of {', '.join(STATES)}")
        raw.pop("state")
        state = None
    sort = raw.get("sort", "last_seen")
    if sort not in SORT_KEYS:
        errors.append(f"sort: {sort!r} is not one of {', '.join(SORT_KEYS)}")
        raw.pop("sort")
        sort = "last_seen"
    order = raw.get("order")
    if order is not None and order not in ("asc", "desc"):
        errors.append(f"order: {order!r} is not asc or desc")
        raw.pop("order")
        order = None
    if raw.get("lang") not in (None, *i18n.LANGUAGES):
        raw.pop("lang")  # an unknown language falls back to Accept-Language, silently
    descending = order != "asc" if order else sort not in _ASCENDING_FIRST
    page = 1
    if "page" in raw:
        if raw["page"].isascii() and raw["page"].isdigit() and 1 <= int(raw["page"]) <= 1_000_000:
            page = int(raw["page"])
        else:
            errors.append("page: a page number is expected")
            raw.pop("page")
    filters = IncidentFilter(
        since=bounds["since"],
        until=bounds["until"],
        recipient=raw.get("recipient"),
        domain=raw.get("domain"),
        sender=raw.get("sender"),
        variant=raw.get("variant"),
    )
    # sort was checked against SORT_KEYS above.
    view = View(raw, filters, state, cast(SortKey, sort), descending, page, lang)
    return view, errors


def _view_of(request: Request) -> tuple[View, list[str]]:
    return _read_view(request.query_params, request.headers.get("accept-language"))


#: A route's view and the problems found reading it (module level: FastAPI resolves the
#: annotations of the routes, which are strings here, in this module's namespace).
ViewOf = Annotated[tuple[View, list[str]], Depends(_view_of)]


def _authoriser(api_token: str | None) -> Callable[[Request], None]:
    def authorise(request: Request) -> None:
        if api_token:
            scheme, _, value = request.headers.get("authorization", "").partition(" ")
            given = ""
            if scheme.lower() == "bearer":
                given = value.strip()
            elif scheme.lower() == "basic":
                try:
                    given = base64.b64decode(value.strip(), validate=True).decode().partition(":")[2]
                except (binascii.Error, UnicodeDecodeError):
                    given = ""
            if not secrets.compare_digest(given.encode(), api_token.encode()):
                raise HTTPException(
                    401,
                    "missing or wrong token: sign in with admin.api_token as the password",
                    headers={"WWW-Authenticate": 'Basic realm="bouncegw console", charset="UTF-8"'},
                )
            return
        if not is_loopback(request.client.host if request.client else None):
            raise HTTPException(
                403, "no admin.api_token is configured, so the console answers loopback clients only"
            )

    return authorise


def _when(value: datetime | None, lang: str) -> str:
    return locale.format_datetime(value, lang) if value is not None else "-"


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value is not None else None


def _render(template: str, view: View, status: int = 200, **context: Any) -> HTMLResponse:
    lang = view.lang

    def t(key: str, **values: object) -> str:
        text = i18n.text(key, lang)
        return text.format(**values) if values else text

    html = _environment.get_template(template).render(
        t=t,
        lang=lang,
        view=view,
        when=lambda value: _when(value, lang),
        variant_label=lambda value: i18n.variant_label(value, lang),
        field_label=lambda name: i18n.field_label(name, lang),
        **context,
    )
    return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)


def _problem_dict(row: ProblemRow) -> dict[str, Any]:
    return {
        "recipient": row.recipient,
        "domain": row.domain,
        "variant": row.variant,
        "state": row.state,
        "first_seen": _iso(row.first_seen),
        "last_seen": _iso(row.last_seen),
        "bounces": row.bounces,
        "senders": row.senders,
        "relayed_since_last_bounce": row.relayed_since,
        "last_relayed_at": _iso(row.last_relayed_at),
        "latest_incident": row.latest_id,
    }


def _csv(rows: Iterable[dict[str, Any]], columns: Iterable[str]) -> Iterator[str]:
    names = list(columns)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(names)
    for row in rows:
        writer.writerow([csv_cell(row[name]) for name in names])
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue()


def _json_array(rows: Iterable[dict[str, Any]]) -> Iterator[str]:
    yield "[\n"
    first = True
    for row in rows:
        yield ("" if first else ",\n") + json_text(json.dumps(row, ensure_ascii=False))
        first = False
    yield "\n]\n"


def _download(body: Iterator[str] | bytes | str, media_type: str, filename: str) -> Response:
    headers = dict(SECURITY_HEADERS, **{"Content-Disposition": f'attachment; filename="{filename}"'})
    if isinstance(body, bytes | str):
        return Response(body, media_type=media_type, headers=headers)
    return StreamingResponse(body, media_type=media_type, headers=headers)


_PROBLEM_COLUMNS: Final = (
    "recipient",
    "domain",
    "variant",
    "state",
    "first_seen",
    "last_seen",
    "bounces",
    "senders",
    "relayed_since_last_bounce",
    "last_relayed_at",
    "latest_incident",
)


def console_router(
    repository: Repository, *, api_token: str | None, explain: ExplainSettings | None = None
) -> APIRouter:
    """The ``/console`` pages reading ``repository``, guarded like the API."""
    settings = explain or ExplainSettings()
    router = APIRouter(
        prefix="/console", dependencies=[Depends(_authoriser(api_token))], include_in_schema=False
    )
    engine = repository.engine

    def failure(view: View, exc: DBAPIError) -> HTMLResponse:
        detail = describe_error(engine.url.render_as_string(hide_password=True), exc)
        return _render(
            "error.html.j2", view, 503, message=i18n.text("unavailable", view.lang).format(detail=detail)
        )

    @router.get("")
    @router.get("/")
    def home() -> RedirectResponse:
        return RedirectResponse("/console/problems", status_code=303)

    @router.get("/static/{name}")
    def static(name: str) -> FileResponse:
        if name not in {"console.css", "console.js"}:
            raise HTTPException(404, "no such file")
        media = "text/css" if name.endswith(".css") else "text/javascript"
        return FileResponse(STATIC / name, media_type=media, headers=SECURITY_HEADERS)

    @router.get("/problems", response_class=HTMLResponse)
    def problems_page(current: ViewOf) -> HTMLResponse:
        view, errors = current
        try:
            page = problems(
                engine,
                view.filters,
                sort=view.sort,
                descending=view.descending,
                state=view.state,
                limit=PAGE_SIZE,
                offset=(view.page - 1) * PAGE_SIZE,
            )
            today = datetime.now(UTC).date()
            since = (
                datetime.combine(today, time.min, UTC)
                - timedelta(weeks=charts.SPARK_WEEKS)
                + timedelta(days=1)
            )
            recent = daily_counts(
                engine, view.filters, [r.recipient for r in page.rows if r.recipient], since
            )
        except DBAPIError as exc:
            return failure(view, exc)
        sparks = {
            (r.recipient, r.variant): charts.sparkline(recent.get((r.recipient or "", r.variant), {}), today)
            for r in page.rows
        }
        return _render(
            "problems.html.j2",
            view,
            400 if errors else 200,
            errors=errors,
            page=page,
            columns=_COLUMNS,
            sparks=sparks,
            ascending_first=_ASCENDING_FIRST,
            variants=i18n.known_variants(),
            states=STATES,
            first=(view.page - 1) * PAGE_SIZE + 1,
            last=(view.page - 1) * PAGE_SIZE + len(page.rows),
            has_next=view.page * PAGE_SIZE < page.total,
        )

    @router.get("/problems.csv")
    def problems_csv(current: ViewOf) -> Response:
        view, errors = current
        if errors:
            raise HTTPException(400, "; ".join(errors))
        rows = (_problem_dict(r) for r in _all_problems(view))
        return _download(_csv(rows, _PROBLEM_COLUMNS), "text/csv; charset=utf-8", "bouncegw-problems.csv")

    @router.get("/problems.json")
    def problems_json(current: ViewOf) -> Response:
        view, errors = current
        if errors:
            raise HTTPException(400, "; ".join(errors))
        rows = (_problem_dict(r) for r in _all_problems(view))
        return _download(_json_array(rows), "application/json", "bouncegw-problems.json")

    def _all_problems(view: View) -> Iterator[ProblemRow]:
        return iter_problems(
            engine, view.filters, sort=view.sort, descending=view.descending, state=view.state
        )

    def _incident_rows(view: View) -> Iterator[dict[str, Any]]:
        for record in repository.iterate(view.filters):
            yield record.to_dict()

    @router.get("/incidents.csv")
    def incidents_csv(current: ViewOf) -> Response:
        view, errors = current
        if errors:
            raise HTTPException(400, "; ".join(errors))
        names = list(IncidentRecord.__dataclass_fields__)
        return _download(
            _csv(_incident_rows(view), names), "text/csv; charset=utf-8", "bouncegw-incidents.csv"
        )

    @router.get("/incidents.json")
    def incidents_json(current: ViewOf) -> Response:
        view, errors = current
        if errors:
            raise HTTPException(400, "; ".join(errors))
        return _download(_json_array(_incident_rows(view)), "application/json", "bouncegw-incidents.json")

    def _incident(incident_id: str) -> IncidentRecord | None:
        if len(incident_id) > 64 or not incident_id.isalnum():
            return None
        return repository.get(incident_id)

    def _group(record: IncidentRecord) -> ProblemRow | None:
        if record.failed_recipient is None:
            return None
        rows = problems(
            engine, IncidentFilter(recipient=record.failed_recipient, variant=record.variant), limit=1
        )
        return rows.rows[0] if rows.rows else None

    @router.get("/incidents/{incident_id}", response_class=HTMLResponse)
    def incident_page(incident_id: str, current: ViewOf) -> HTMLResponse:
        view, _ = current
        try:
            record = _incident(incident_id)
            if record is None:
                return _render("error.html.j2", view, 404, message=i18n.text("not_found", view.lang))
            group = _group(record)
            history = (
                repository.query(IncidentFilter(recipient=record.failed_recipient), limit=HISTORY).items
                if record.failed_recipient
                else [record]
            )
        except DBAPIError as exc:
            return failure(view, exc)
        values = record.to_dict()
        fields = [(name, values.get(name)) for name in i18n.field_names()]
        return _render(
            "incident.html.j2",
            view,
            record=record,
            group=group,
            fields=fields,
            block=note.explanation(record, settings),
            notes={lang: note.note_text(record, group, lang, settings) for lang in i18n.LANGUAGES},
            history=history,
            recipient_query=urlencode({"recipient": record.failed_recipient or ""}),
        )

    @router.get("/incidents/{incident_id}/note-{lang}.{ext}")
    def note_download(incident_id: str, lang: str, ext: str) -> Response:
        if lang not in i18n.LANGUAGES or ext not in {"eml", "txt"}:
            raise HTTPException(404, "no such note")
        record = _incident(incident_id)
        if record is None:
            raise HTTPException(404, f"no incident with id {incident_id!r}")
        text = note.note_text(record, _group(record), lang, settings)
        name = f"bouncegw-note-{record.id}-{lang}.{ext}"
        if ext == "txt":
            return _download(text, "text/plain; charset=utf-8", name)
        return _download(note.note_message(record, text, lang), "message/rfc822", name)

    @router.get("/trends", response_class=HTMLResponse)
    def trends_page(current: ViewOf) -> HTMLResponse:
        view, errors = current
        try:
            points = trend(engine, view.filters)
            domains = top_domains(engine, view.filters)
        except DBAPIError as exc:
            return failure(view, exc)
        return _render(
            "trends.html.j2",
            view,
            400 if errors else 200,
            errors=errors,
            over_time=charts.stacked_bars(
                points,
                i18n.known_variants(),
                view.filters.since.date() if view.filters.since else None,
                (view.filters.until or datetime.now(UTC)).date() if view.filters.since else None,
            ),
            by_domain=charts.domain_bars(domains),
            variants=i18n.known_variants(),
            states=STATES,
        )

    return router
