"""Guard for ``pytest tests/storage``: storage's tests pass without ever importing ``gateway``.

Storage never imports the gateway (ARCHITECTURE.md). When a run collected storage's tests only,
the last one's teardown fails if anything (storage, a helper, a fixture) brought ``gateway`` in.
In a run of the whole suite other tests import it, so nothing is checked there; the import graph
itself is also checked by ``tests/test_import_graph.py``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="session", autouse=True)
def no_gateway_import(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    items = request.session.items
    alone = all(Path(item.path).resolve().is_relative_to(HERE) for item in items)
    if alone:
        loaded = sorted(name for name in sys.modules if name == "gateway" or name.startswith("gateway."))
        assert not loaded, f"storage's tests imported the gateway: {', '.join(loaded)}"
