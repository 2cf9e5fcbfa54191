"""Reading counts from the Prometheus registry, the one place events are counted.

``MetricDeltas()`` remembers every sample of the process's registry; ``deltas(name, **labels)``
is how far that sample moved since. Tests compare deltas, never absolute values: other tests in
the same process count into the same registry.
"""

from __future__ import annotations

from prometheus_client import REGISTRY


def sample(name: str, **labels: str) -> float:
    """The current value of one sample (0 when the series does not exist yet)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


class MetricDeltas:
    def __init__(self) -> None:
        self._before = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for metric in REGISTRY.collect()
            for s in metric.samples
        }

    def __call__(self, name: str, **labels: str) -> int:
        """How many events a counter (or a gauge of counts) gained since construction."""
        before = self._before.get((name, tuple(sorted(labels.items()))), 0.0)
        return round(sample(name, **labels) - before)
