"""Recipient extraction compared with flufl.bounce over the same corpus (both figures printed).

Measure: on the samples whose expected failing addresses are known (flufl.bounce's own
upstream table, and Sisimai's recipient counts), how often each tool finds them.
"""

from __future__ import annotations

import email
import email.policy
import warnings

from flufl.bounce import all_failures

from gateway.bounce.parse import ParseError, parse
from tests.corpus_table import require_corpus, samples


def flufl_addresses(data: bytes) -> set[str]:
    msg = email.message_from_bytes(data, policy=email.policy.compat32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            permanent, temporary = all_failures(msg)
        except Exception:
            return set()
    return {
        (a.decode("utf-8", "replace") if isinstance(a, bytes) else str(a)).lower()
        for a in permanent | temporary
    }


def our_addresses(data: bytes) -> set[str]:
    try:
        report = parse(data)
    except ParseError:
        return set()
    return {r.recipient.lower() for r in report.recipients if r.recipient}


def test_recipient_extraction_vs_flufl_bounce() -> None:
    require_corpus()
    rows = [s for s in samples() if s.addresses]
    ours = sum(1 for s in rows if s.addresses <= our_addresses(s.path.read_bytes()))
    theirs = sum(1 for s in rows if s.addresses <= flufl_addresses(s.path.read_bytes()))
    counted = [s for s in samples() if s.kind == "bounce" and s.n_recipients]
    ours_n = sum(1 for s in counted if len(our_addresses(s.path.read_bytes())) == s.n_recipients)
    theirs_n = sum(1 for s in counted if len(flufl_addresses(s.path.read_bytes())) == s.n_recipients)
    print(
        f"\nflufl.bounce's own samples ({len(rows)} with expected addresses): "
        f"ours {ours}, flufl.bounce {theirs}"
        f"\nsisimai bounces ({len(counted)}) with the expected recipient count: "
        f"ours {ours_n}, flufl.bounce {theirs_n}"
    )
    assert rows and counted
    assert ours_n >= theirs_n
