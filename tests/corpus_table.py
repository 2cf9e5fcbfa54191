"""The public bounce corpus (``tests/corpus/``, see its README.txt) as a table of (file, expected)."""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

#: Shipped with the tests: a missing corpus is a broken checkout, never a reason to skip.
CORPUS = Path(__file__).resolve().parent / "corpus"
#: Sisimai's inferred codes (X.0.9NN) are not in the messages: ignored.
INFERRED = re.compile(r"^\d\.0\.9\d\d$")


@dataclass(frozen=True)
class Sample:
    path: Path
    kind: str | None  # sisimai "kind" column (bounce, feedback-report, auto-reply, success-dsn)
    statuses: frozenset[str]  # expected statuses, inferred codes removed
    n_recipients: int | None
    addresses: frozenset[str]  # flufl.bounce's expected addresses


def require_corpus() -> Path:
    if not (CORPUS / "sisimai" / "EXPECTED.tsv").is_file():
        pytest.fail(f"corpus missing at {CORPUS} (it ships with the repository: check out tests/corpus)")
    return CORPUS


def samples() -> list[Sample]:
    require_corpus()
    out: list[Sample] = []
    with (CORPUS / "sisimai" / "EXPECTED.tsv").open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            codes = frozenset(s for s in row["expected_status"].split(";") if s and not INFERRED.match(s))
            n = row["n_expected_recipients"]
            out.append(
                Sample(
                    CORPUS / "sisimai" / row["path"],
                    row["kind"],
                    codes,
                    int(n) if n.isdigit() else None,
                    frozenset(),
                )
            )
    for manifest in sorted(CORPUS.glob("*/MANIFEST.tsv")):
        with manifest.open(encoding="utf-8") as fh:
            for row in csv.DictReader(fh, delimiter="\t"):
                addrs: set[str] = set()
                if row.get("upstream_expected"):
                    for entry in json.loads(row["upstream_expected"]):
                        addrs.update(a.lower() for a in entry.get("addresses", []))
                out.append(Sample(manifest.parent / row["path"], None, frozenset(), None, frozenset(addrs)))
    return out
