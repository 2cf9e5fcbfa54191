"""Fixtures shared by the relay tests: a recording next hop and a gateway on ephemeral ports.

``gateway`` is imported inside the fixtures, not here: this file is loaded for every test under
``tests/``, and ``tests/storage`` runs without the gateway (storage never imports it).
"""

from __future__ import annotations

import os
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.certs import PKI, make_pki
from tests.recording_server import RecordingServer

if TYPE_CHECKING:
    from gateway.app import Gateway
    from gateway.config import Settings
    from gateway.pipeline import Step

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def need(condition: bool, reason: str) -> None:
    """Skip a test whose external requirement is missing, but fail under CI (CI=true)."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"required under CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def auth_over_tls(pki: PKI) -> dict[str, Any]:
    """Gateway overrides: STARTTLS with the test certificate, inbound AUTH required."""
    return {
        "listener.tls_cert": str(pki.server_cert),
        "listener.tls_key": str(pki.server_key),
        "listener.auth_users": {"exchange": "s3cret"},
        "listener.require_auth": True,
    }


@pytest.fixture
def server_tls(pki: PKI) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    return context


@pytest.fixture
async def hop() -> AsyncIterator[RecordingServer]:
    server = RecordingServer()
    await server.start()
    yield server
    await server.stop()


GatewayFactory = Callable[..., Awaitable["Gateway"]]


@pytest.fixture
async def make_gateway(tmp_path: Path) -> AsyncIterator[GatewayFactory]:
    """Start gateways on 127.0.0.1:0; ``overrides`` are dotted keys, e.g. {"listener.max_recipients": 2}."""
    from gateway.app import Gateway

    apps: list[Gateway] = []

    async def factory(
        next_hop: str, overrides: dict[str, Any] | None = None, extra_steps: list[Step] | None = None
    ) -> Gateway:
        settings = gateway_settings(tmp_path, next_hop, overrides)
        app = Gateway(settings, extra_steps=extra_steps or [])
        await app.start()
        apps.append(app)
        return app

    yield factory
    for app in apps:
        await app.stop()


def gateway_settings(tmp_path: Path, next_hop: str, overrides: dict[str, Any] | None = None) -> Settings:
    from gateway.config import Settings

    data: dict[str, Any] = {
        "listener": {"listen": "127.0.0.1:0", "hostname": "gw.test", "grace_period": 5},
        "next_hop": {"address": next_hop, "tls": "none"},
        "database": {"url": f"sqlite:///{tmp_path / 'gw.sqlite3'}"},
        "storage": {"journal_path": str(tmp_path / "journal" / "incidents.jsonl")},
        "admin": {"http": "127.0.0.1:0"},
    }
    for dotted, value in (overrides or {}).items():
        if "." not in dotted:  # a top-level setting, e.g. "instance"
            data[dotted] = value
            continue
        section, key = dotted.split(".", 1)
        data.setdefault(section, {})[key] = value
    return Settings.model_validate(data)
