"""Cross-references in the code resolve: cited invariants exist in ARCHITECTURE.md, cited files exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted(p for d in ("gateway", "storage") for p in (ROOT / d).rglob("*.py"))

#: "invariant 4", "invariants 1 and 2", "invariants 1, 2 and 5"
CITED = re.compile(r"invariants? (\d+(?:(?:, | and )\d+)*)", re.IGNORECASE)
DEFINED = re.compile(r"^(\d+)\. \*\*", re.MULTILINE)
FILE = re.compile(r"\b(?:gateway|storage|tests|deploy)/[\w./-]+\.(?:py|md|toml|ya?ml|json)\b")


def defined_invariants() -> set[int]:
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    section = text.split("## Invariants", 1)[1].split("\n## ", 1)[0]
    return {int(n) for n in DEFINED.findall(section)}


def cited_invariants(text: str) -> set[int]:
    return {int(n) for m in CITED.finditer(text) for n in re.findall(r"\d+", m.group(1))}


def test_the_patterns_read_what_they_should() -> None:
    assert cited_invariants("(ARCHITECTURE.md, invariants 1 and 2); invariant 4; invariants 3, 5 and 6") == {
        1,
        2,
        3,
        4,
        5,
        6,
    }
    assert cited_invariants("no invariants here") == set()
    assert FILE.findall("see gateway/relay.py and deploy/kubernetes/statefulset.yaml.") == [
        "gateway/relay.py",
        "deploy/kubernetes/statefulset.yaml",
    ]


def test_every_cited_invariant_is_defined() -> None:
    defined = defined_invariants()
    assert defined == set(range(1, len(defined) + 1)) and len(defined) >= 6
    cited = {path.relative_to(ROOT).as_posix(): cited_invariants(path.read_text()) for path in SOURCES}
    assert any(cited.values())
    assert {name: sorted(n - defined) for name, n in cited.items() if n - defined} == {}


def test_every_cited_file_exists() -> None:
    files = [*SOURCES, *sorted((ROOT / "tests").rglob("*.py")), ROOT / "ARCHITECTURE.md"]
    missing = {
        f"{path.relative_to(ROOT)}: {ref}"
        for path in files
        for ref in FILE.findall(path.read_text(encoding="utf-8"))
        if not (ROOT / ref).exists()
    }
    assert missing == set()
