"""DKIM re-signing after the edit, verified with dkimpy against a test key (no network)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import dkim
import pytest

from gateway.config import ExplainSettings
from gateway.explain import ExplainError, annotate
from tests.dkim_keys import make_key
from tests.explain_checks import parse
from tests.explain_samples import make, recipient

NOW = datetime(2025, 1, 2, 3, 4, tzinfo=UTC)
SELECTOR, DOMAIN = "bgw2025", "example.onmicrosoft.com"


@pytest.fixture(scope="module")
def key_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    return make_key(tmp_path_factory.mktemp("dkim") / "private.pem")


def _dns(record: bytes):  # type: ignore[no-untyped-def]
    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        return record if name == f"{SELECTOR}._domainkey.{DOMAIN}.".encode() else None

    return lookup


def _settings(path: Path) -> ExplainSettings:
    return ExplainSettings(dkim_key_file=path, dkim_selector=SELECTOR, dkim_domain=DOMAIN)


@pytest.mark.parametrize("nl", [b"\r\n", b"\n"])
def test_resigned_output_verifies(key_pair: tuple[Path, bytes], nl: bytes) -> None:
    path, record = key_pair
    sample = make([recipient("x@example.jp", "mailbox")], nl=nl, cte="quoted-printable")
    out = annotate(sample.data, sample.report, incident_ids=["01K"], now=NOW, settings=_settings(path))
    assert out.startswith(b"DKIM-Signature: ")
    assert dkim.verify(out, dnsfunc=_dns(record))
    signature = parse(out)["DKIM-Signature"]
    assert "x-bouncegw-explained" in signature.replace(" ", "").replace("\t", "").lower()
    # Exactly one X-Bouncegw-Explained, right after the signature.
    assert out.count(b"X-Bouncegw-Explained:") == 1
    # Any later change to the block breaks the new signature: it covers the edited body.
    tampered = out.replace(b"Exchange admin center", b"Exchange admin centre", 1)
    assert tampered != out
    assert not dkim.verify(tampered, dnsfunc=_dns(record))


def test_unsigned_annotation_breaks_an_upstream_signature(key_pair: tuple[Path, bytes]) -> None:
    """Why re-signing exists: a signature made before bouncegw no longer verifies."""
    path, record = key_pair
    sample = make([recipient("x@example.jp", "mailbox")])
    signed = dkim.sign(sample.data, SELECTOR.encode(), DOMAIN.encode(), path.read_bytes())
    assert dkim.verify(signed + sample.data, dnsfunc=_dns(record))
    offset = len(signed)
    sample.report.human_parts = tuple(
        type(h)(
            h.content_type,
            h.charset,
            h.transfer_encoding,
            h.headers_start + offset,
            h.body_start + offset,
            h.body_end + offset,
        )
        for h in sample.report.human_parts
    )
    out = annotate(
        signed + sample.data, sample.report, incident_ids=None, now=NOW, settings=ExplainSettings()
    )
    assert not dkim.verify(out, dnsfunc=_dns(record))
    resigned = annotate(
        signed + sample.data, sample.report, incident_ids=None, now=NOW, settings=_settings(path)
    )
    assert dkim.verify(resigned, dnsfunc=_dns(record))


def test_missing_key_file_raises(tmp_path: Path) -> None:
    sample = make([recipient("x@example.jp", "mailbox")])
    with pytest.raises(ExplainError, match="cannot read DKIM key"):
        annotate(
            sample.data, sample.report, incident_ids=None, now=NOW, settings=_settings(tmp_path / "nope.pem")
        )
