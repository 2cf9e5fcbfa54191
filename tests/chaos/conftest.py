"""Chaos suite wiring: the ``chaos`` marker on every test here, the figures file, shared builders."""

from __future__ import annotations

import re
from collections.abc import Iterator
from itertools import count

import pytest

from tests.chaos.harness import FIGURES, Msg, tagged, write_results
from tests.positives import POSITIVES
from tests.smtp_client import MESSAGE


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/chaos/" in item.nodeid:
            item.add_marker(pytest.mark.chaos)


@pytest.fixture(scope="session", autouse=True)
def _chaos_figures() -> Iterator[None]:
    yield
    write_results()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not FIGURES:
        return
    terminalreporter.section("chaos figures (also in bench-results/chaos.json)")
    for name, figures in sorted(FIGURES.items()):
        terminalreporter.write_line(f"{name}: " + " ".join(f"{k}={v}" for k, v in figures.items()))


class Mix:
    """Tagged messages for one scenario: family bounces (every built variant in turn) and ordinary mail."""

    def __init__(self, scenario: str) -> None:
        self.scenario = scenario
        self._n = count()

    def family(self) -> Msg:
        n = next(self._n)
        positive = POSITIVES[n % len(POSITIVES)]
        tag = f"{self.scenario}-{n}"
        return Msg(tag, tagged(tag, positive.data, message_id=True), family=len(positive.expected))

    def ordinary(self) -> Msg:
        n = next(self._n)
        tag = f"{self.scenario}-{n}"
        return Msg(tag, tagged(tag, MESSAGE), sender="alice@example.org", rcpt="bob@example.com")

    def batch(self, size: int, family_every: int = 2) -> list[Msg]:
        return [self.family() if i % family_every == 0 else self.ordinary() for i in range(size)]


@pytest.fixture
def mix(request: pytest.FixtureRequest) -> Mix:
    return Mix(re.sub(r"[^A-Za-z0-9_.-]", "-", request.node.name.removeprefix("test_")).strip("-"))
