"""Every label value of the closed sets exists as a series before its first event."""

from __future__ import annotations

import enum

import pytest
from prometheus_client import REGISTRY

from gateway import metrics  # noqa: F401  (creates the series at import)
from gateway.explain.arc import Outcome as ArcOutcome
from gateway.outcomes import (
    AnnotationOutcome,
    ByteDirection,
    LoopReason,
    MessageOutcome,
    ParseStage,
    RefusalReason,
)
from storage.recorder import StoragePath

SETS: list[tuple[str, str, type[enum.StrEnum]]] = [
    ("bouncegw_messages_total", "outcome", MessageOutcome),
    ("bouncegw_message_bytes_total", "direction", ByteDirection),
    ("bouncegw_connections_refused_total", "reason", RefusalReason),
    ("bouncegw_loops_refused_total", "reason", LoopReason),
    ("bouncegw_parse_failures_total", "stage", ParseStage),
    ("bouncegw_annotations_total", "outcome", AnnotationOutcome),
    ("bouncegw_arc_seals_total", "outcome", ArcOutcome),
    ("bouncegw_storage_incidents_total", "path", StoragePath),
]


@pytest.mark.parametrize(("name", "label", "values"), SETS, ids=[s[0] for s in SETS])
def test_series_exist_for_every_member(name: str, label: str, values: type[enum.StrEnum]) -> None:
    assert len(values) >= 2
    for value in values:
        assert REGISTRY.get_sample_value(name, {label: value.value}) is not None, (name, value)
    # and nothing outside the set was created up front
    assert REGISTRY.get_sample_value(name, {label: "no-such-value"}) is None
