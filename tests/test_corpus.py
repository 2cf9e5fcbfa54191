"""Corpus regression over every public sample (flufl.bounce-style table of file -> expected).

Figures are computed and printed (run with ``-s`` to see them):
no sample in the family except the real legacy AuthRequired one; per-recipient
status agreement with Sisimai's EXPECTED.tsv (inferred X.0.9NN codes ignored)
>= 95%; bounce / not-bounce agreement with its ``kind`` column >= 98%.

Last measured: status 530/547 = 96.89%; kind 827/833 = 99.28%; family members: only
lhost-exchange2007-04 (legacy); human-part offsets exact on 1058 samples; 0 parse errors.
"""

from __future__ import annotations

from functools import cache

from gateway.bounce.parse import ParseError, parse
from gateway.bounce.report import BounceReport
from tests.corpus_table import Sample, require_corpus, samples
from tests.human_parts import check_human_parts

#: The only real family member in the corpus (legacy on-premises Exchange).
LEGACY_AUTH_REQUIRED = {"sisimai/maildir/bsd/lhost-exchange2007-04.eml"}


@cache
def results() -> list[tuple[Sample, BounceReport | None]]:
    out: list[tuple[Sample, BounceReport | None]] = []
    for sample in samples():
        try:
            report: BounceReport | None = parse(sample.path.read_bytes())
        except ParseError:
            report = None
        out.append((sample, report))
    return out


def rel(sample: Sample) -> str:
    return sample.path.as_posix().split("/corpus/", 1)[1]


def test_corpus_is_complete() -> None:
    require_corpus()
    assert len(results()) >= 1100


def test_no_false_family_members() -> None:
    require_corpus()
    family = {
        rel(s): [(r.recipient, r.status, r.variant) for r in rep.family]
        for s, rep in results()
        if rep and rep.family
    }
    print(f"\nfamily members in corpus: {family}")
    assert set(family) <= LEGACY_AUTH_REQUIRED | {p.replace("/bsd/", "/dos/") for p in LEGACY_AUTH_REQUIRED}
    assert all(v == "legacy" for members in family.values() for _, _, v in members)
    assert set(family) >= LEGACY_AUTH_REQUIRED


def test_status_agreement_with_sisimai() -> None:
    require_corpus()
    rows = [(s, rep) for s, rep in results() if s.statuses]
    agree = [
        s
        for s, rep in rows
        if rep is not None and {r.status for r in rep.recipients if r.status} == s.statuses
    ]
    ratio = len(agree) / len(rows)
    print(f"\nstatus agreement with sisimai: {len(agree)}/{len(rows)} = {ratio:.2%}")
    assert ratio >= 0.95


def test_bounce_kind_agreement_with_sisimai() -> None:
    require_corpus()
    rows = [(s, rep) for s, rep in results() if s.kind]
    agree = [s for s, rep in rows if (rep is not None and rep.is_bounce) == (s.kind == "bounce")]
    ratio = len(agree) / len(rows)
    print(f"\nbounce/not-bounce agreement with sisimai kind: {len(agree)}/{len(rows)} = {ratio:.2%}")
    assert ratio >= 0.98


def test_human_part_offsets_on_corpus() -> None:
    require_corpus()
    checked = 0
    for sample, rep in results():
        if rep is None or not rep.human_parts:
            continue
        check_human_parts(sample.path.read_bytes(), rep, strict_charset=False)
        checked += 1
    print(f"\nhuman-part offsets checked on {checked} samples")
    assert checked > 500


def test_every_sample_parses() -> None:
    """Real bounces (raw 8-bit headers, broken boundaries) never make the parser give up."""
    require_corpus()
    failed = [rel(s) for s, rep in results() if rep is None]
    assert failed == []
