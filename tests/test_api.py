"""The incidents HTTP API: auth, filters, cursor pagination, errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from gateway.admin import create_admin_app
from storage.incidents import IncidentRecord
from storage.repository import Repository
from tests.storage_builders import records_for

pytest_plugins = ["tests.storage_fixtures"]

LOOPBACK = ("127.0.0.1", 50000)
REMOTE = ("203.0.113.7", 50000)
START = datetime(2025, 5, 1, tzinfo=UTC)


@pytest.fixture
def stored(repo: Repository) -> list[IncidentRecord]:
    records = records_for(25, start=START, step=timedelta(hours=1))
    repo.record(records)
    return records


def client(
    repo: Repository, *, token: str | None = None, peer: tuple[str, int] = LOOPBACK
) -> httpx.AsyncClient:
    app = create_admin_app(repo, api_token=token)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=peer), base_url="http://admin")


@pytest.fixture
async def api(repo: Repository, stored: list[IncidentRecord]) -> AsyncIterator[httpx.AsyncClient]:
    async with client(repo) as c:
        yield c


@pytest.mark.parametrize(
    ("token", "peer", "header", "status"),
    [
        (None, LOOPBACK, None, 200),
        (None, ("::1", 1), None, 200),
        (None, REMOTE, None, 403),
        ("s3cret", REMOTE, None, 401),
        ("s3cret", REMOTE, "Bearer wrong", 401),
        ("s3cret", LOOPBACK, None, 401),  # with a token, loopback needs it too
        ("s3cret", REMOTE, "Bearer s3cret", 200),
    ],
)
async def test_auth(
    repo: Repository, token: str | None, peer: tuple[str, int], header: str | None, status: int
) -> None:
    headers = {"Authorization": header} if header else {}
    async with client(repo, token=token, peer=peer) as c:
        response = await c.get("/api/v1/incidents", headers=headers)
    assert response.status_code == status
    if status != 200:
        assert "token" in response.json()["detail"] or "loopback" in response.json()["detail"]


async def test_filters_and_pagination(api: httpx.AsyncClient, stored: list[IncidentRecord]) -> None:
    seen: list[str] = []
    params: dict[str, str | int] = {"limit": 10, "variant": "group"}
    while True:
        body = (await api.get("/api/v1/incidents", params=params)).json()
        seen += [item["id"] for item in body["items"]]
        if body["next_cursor"] is None:
            break
        params["cursor"] = body["next_cursor"]
    assert seen == sorted((r.id for r in stored if r.variant == "group"), reverse=True)
    window = await api.get(
        "/api/v1/incidents", params={"since": "2025-05-01T05:00:00Z", "until": "2025-05-01T08:00:00Z"}
    )
    assert {i["id"] for i in window.json()["items"]} == {r.id for r in stored[5:8]}
    by_domain = await api.get("/api/v1/incidents", params={"domain": "contoso2.example", "code": "5.7.133"})
    assert {i["id"] for i in by_domain.json()["items"]} == {
        r.id for r in stored if r.recipient_domain == "contoso2.example"
    }
    recent = await api.get("/api/v1/incidents", params={"since": "1h"})
    assert recent.json()["items"] == []


async def test_get_one_and_404(api: httpx.AsyncClient, stored: list[IncidentRecord]) -> None:
    response = await api.get(f"/api/v1/incidents/{stored[3].id}")
    assert response.status_code == 200
    assert response.json()["failed_recipient"] == stored[3].failed_recipient
    missing = await api.get("/api/v1/incidents/01HZZZZZZZZZZZZZZZZZZZZZZZ")
    assert missing.status_code == 404 and "no incident" in missing.json()["detail"]


async def test_stats(api: httpx.AsyncClient) -> None:
    body = (await api.get("/api/v1/stats", params={"by": "day"})).json()
    assert body == {
        "by": "day",
        "rows": [
            {
                "key": "2025-05-01",
                "count": 24,
                "first_seen": "2025-05-01T00:00:00Z",
                "last_seen": "2025-05-01T23:00:00Z",
            },
            {
                "key": "2025-05-02",
                "count": 1,
                "first_seen": "2025-05-02T00:00:00Z",
                "last_seen": "2025-05-02T00:00:00Z",
            },
        ],
    }
    variants = (await api.get("/api/v1/stats", params={"by": "variant"})).json()["rows"]
    assert {r["key"]: r["count"] for r in variants} == {"group": 13, "mailbox": 12}


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"since": "yesterday"}, "since: 'yesterday' is neither a duration"),
        ({"cursor": "abc"}, "invalid cursor"),
        ({"limit": "0"}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"recipient": "a\x00b"}, "control characters"),
    ],
)
async def test_bad_filters_are_400(api: httpx.AsyncClient, params: dict[str, str], message: str) -> None:
    response = await api.get("/api/v1/incidents", params=params)
    assert response.status_code == 400
    assert message in response.json()["detail"]


async def test_bad_stats_key_is_400(api: httpx.AsyncClient) -> None:
    response = await api.get("/api/v1/stats", params={"by": "colour"})
    assert response.status_code == 400 and "by" in response.json()["detail"]
