"""Deep MIME nesting: bounded, iterative, linear; what sits above the depth cap is still read.

The recursive parsers (flanker, the standard library) hit Python's recursion limit a few hundred
levels down; ``gateway.bounce.mime`` never hands them such a message and walks the boundaries itself.
"""

from __future__ import annotations

import inspect
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from gateway import header_block
from gateway.bounce import mime
from gateway.bounce.parse import parse
from tests.corpus_table import require_corpus, samples
from tests.mime_trees import flat
from tests.nesting import DEEP_RECIPIENT, buried_bounce, deep_bounce, nested
from tests.positives import NEGATIVES, POSITIVES


@contextmanager
def recursion_headroom(frames: int) -> Iterator[None]:
    """Allow only ``frames`` more Python frames than the caller already uses."""
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(len(inspect.stack()) + frames)
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


def test_depth_cap_is_a_documented_constant() -> None:
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert f"{mime.MAX_DEPTH} levels" in readme


@pytest.mark.parametrize("plain", [True, False], ids=["declared-path", "walk-past-a-defect"])
def test_bounce_nested_3000_deep_is_read_above_the_cap(plain: bool) -> None:
    data = deep_bounce(3000)
    if not plain:  # an 8-bit header: the declared path declines, the walk must still answer
        data = b"X-Note: caf\xc3\xa9\r\n" + data
    assert 200_000 < len(data) < 300_000
    with recursion_headroom(120):
        report = parse(data)
    assert report.is_bounce and report.nesting_capped
    assert [(r.recipient, r.status, r.variant) for r in report.family] == [
        (DEEP_RECIPIENT, "5.7.133", "group")
    ]
    assert report.human_parts and report.original is not None


def test_bounce_buried_below_the_cap_is_no_family_bounce() -> None:
    report = parse(buried_bounce(3000))
    assert report.nesting_capped
    assert report.family == []


def test_shallow_messages_are_not_capped() -> None:
    for positive in POSITIVES:
        assert not parse(positive.data).nesting_capped, positive.name


def test_nesting_cost_is_linear() -> None:
    def cost(levels: int) -> float:
        data = deep_bounce(levels)
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            parse(data)
            best = min(best, time.perf_counter() - start)
        return best

    small, large = cost(3000), cost(12000)
    # 4x the size; a walk that rescans every level would cost about 16x.
    assert large / small < 8, (small, large)


def both(data: bytes) -> tuple[mime.Node | None, mime.Node]:
    src = mime.Source(data)
    header_end, _ = header_block.split(data)
    root = header_block.parse(data[:header_end])
    return mime.declared_tree(src, root, mime.MAX_DEPTH), mime.walked_tree(src, root, mime.MAX_DEPTH)


@pytest.mark.parametrize("sample", POSITIVES + NEGATIVES, ids=lambda p: p.name)
def test_walk_matches_the_declared_tree_on_built_samples(sample: object) -> None:
    declared, walked = both(sample.data)  # type: ignore[attr-defined]
    if declared is not None:
        assert flat(walked) == flat(declared)


def test_walk_matches_the_declared_tree_on_the_corpus() -> None:
    require_corpus()
    compared = 0
    for sample in samples():
        data = sample.path.read_bytes()
        if mime.cr_only(data):
            continue
        declared, walked = both(data)
        if declared is not None:
            assert flat(walked) == flat(declared), sample.path
            compared += 1
    assert compared > 500


@pytest.mark.parametrize("levels", [10, 49, 50, 51, 80])
def test_walk_matches_flanker_and_the_stdlib_where_they_can_recurse(levels: int) -> None:
    data = deep_bounce(levels)
    src = mime.Source(data)
    header_end, _ = header_block.split(data)
    walked = mime.walked_tree(src, header_block.parse(data[:header_end]), mime.MAX_DEPTH)
    assert src.capped == (levels >= mime.MAX_DEPTH)  # the deepest multipart sits at depth ``levels``
    assert flat(walked) == flat(mime.flanker_tree(mime.Source(data), mime.MAX_DEPTH))
    stdlib = mime.stdlib_tree(mime.Source(data), mime.MAX_DEPTH)
    assert [(d, t) for d, t, *_ in flat(walked)] == [(d, t) for d, t, *_ in flat(stdlib)]


def test_nested_helper_nests() -> None:
    assert nested(3).count(b"multipart/mixed") == 3
