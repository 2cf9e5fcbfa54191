"""ARC sealing of explained bounces (RFC 8617), through the running gateway and a loopback DNS server.

The NDR is DKIM-signed by a test "tenant" key, as Exchange Online signs the NDRs it mails; the
explanation block breaks that signature, and the ARC set bouncegw adds must carry the pre-edit
result and verify with dkimpy's ``arc_verify``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiosmtplib
import dkim
import pytest
from prometheus_client import REGISTRY
from pydantic import ValidationError

from gateway.config import ExplainSettings
from gateway.explain import arc
from tests.conftest import GatewayFactory
from tests.dkim_keys import make_key
from tests.dns_stub import DnsStub
from tests.positives import POSITIVES
from tests.recording_server import RecordingServer

AUTHSERV_ID = "mx.bouncegw.test"
TENANT = ("selector1", "contoso.example")  # the NDR's signer (Exchange Online in the field)
SEALER = ("arc2026", "bouncegw.test")  # bouncegw's ARC key
RELAY = ("relay1", "relay.example")  # an intermediary that sealed before us


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], tuple[Path, bytes]]:
    directory = tmp_path_factory.mktemp("arc-keys")
    return {pair: make_key(directory / f"{pair[0]}.pem") for pair in (TENANT, SEALER, RELAY)}


@pytest.fixture
def dns_server(keys: dict[tuple[str, str], tuple[Path, bytes]]) -> Iterator[DnsStub]:
    records = {f"{s}._domainkey.{d}": record for (s, d), (_, record) in keys.items()}
    with DnsStub(records) as stub:
        yield stub


def _overrides(keys: dict[tuple[str, str], tuple[Path, bytes]], **extra: Any) -> dict[str, Any]:
    return {
        "explain.arc_key_file": str(keys[SEALER][0]),
        "explain.arc_selector": SEALER[0],
        "explain.arc_domain": SEALER[1],
        "explain.arc_authserv_id": AUTHSERV_ID,
    } | {f"explain.{k}": v for k, v in extra.items()}


def _signed_ndr(keys: dict[tuple[str, str], tuple[Path, bytes]]) -> bytes:
    data = POSITIVES[0].data
    signature = dkim.sign(data, TENANT[0].encode(), TENANT[1].encode(), keys[TENANT][0].read_bytes())
    return signature + data


def _sealed_by_relay(message: bytes, keys: dict[tuple[str, str], tuple[Path, bytes]]) -> bytes:
    """The NDR as an intermediary (instance 1) sealed it after its own DKIM check."""
    results = f"Authentication-Results: {RELAY[1]}; dkim=pass header.d={TENANT[1]}\r\n".encode()
    fields = dkim.arc_sign(
        results + message,
        RELAY[0].encode(),
        RELAY[1].encode(),
        keys[RELAY][0].read_bytes(),
        RELAY[1].encode(),
    )
    return b"".join(fields) + results + message


def _seals(outcome: str) -> float:
    return REGISTRY.get_sample_value("bouncegw_arc_seals_total", {"outcome": outcome}) or 0.0


async def _relay(gateway_port: int, message: bytes, sender: str = "") -> None:
    """One SMTP transaction (the null sender by default, as a bounce arrives)."""
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=gateway_port) as client:
        await client.sendmail(sender, ["sender@example.org"], message)


def _aar(out: bytes) -> str:
    head = out.split(b"\r\n\r\n", 1)[0].decode()
    unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ")
    return next(line for line in unfolded.split("\r\n") if line.startswith("ARC-Authentication-Results:"))


async def test_upstream_results_are_sealed_and_verify(
    keys: Any, dns_server: DnsStub, hop: RecordingServer, make_gateway: GatewayFactory
) -> None:
    lookup = arc.resolver_for(dns_server.address)
    ndr = _signed_ndr(keys)
    upstream = f"Authentication-Results: {AUTHSERV_ID}; dkim=pass header.d={TENANT[1]}\r\n".encode()
    app = await make_gateway(hop.address, _overrides(keys))
    before = _seals("sealed")
    await _relay(app.listener.port, upstream + ndr)
    out = hop.messages[0].data
    assert hop.messages[0].message.startswith(b"ARC-Seal: i=1; ")
    assert b"X-Bouncegw-Explained:" in out
    assert not dkim.verify(out, dnsfunc=lookup)  # the edit broke the tenant's signature...
    cv, _, reason = dkim.arc_verify(out, dnsfunc=lookup)
    assert cv == b"pass", reason  # ...and the seal carries what it said before the edit
    assert f"i=1; {AUTHSERV_ID}; dkim=pass header.d={TENANT[1]}" in _aar(out)
    assert _seals("sealed") == before + 1


async def test_own_verification_records_the_pre_edit_signature(
    keys: Any, dns_server: DnsStub, hop: RecordingServer, make_gateway: GatewayFactory
) -> None:
    app = await make_gateway(
        hop.address, _overrides(keys, arc_results="verify", arc_dns_server=dns_server.address)
    )
    await _relay(app.listener.port, _signed_ndr(keys))
    out = hop.messages[0].data
    assert f"selector1._domainkey.{TENANT[1]}" in dns_server.queries  # the real resolver asked
    cv, _, reason = dkim.arc_verify(out, dnsfunc=arc.resolver_for(dns_server.address))
    assert cv == b"pass", reason
    aar = _aar(out)
    assert f"{AUTHSERV_ID}; dkim=pass header.d={TENANT[1]} header.s={TENANT[0]}" in aar
    # bouncegw's own Authentication-Results stays in the message, under the seal.
    assert f"Authentication-Results: {AUTHSERV_ID}; dkim=pass".encode() in out


async def test_own_verification_of_a_tampered_signature_says_fail(
    keys: Any, dns_server: DnsStub, hop: RecordingServer, make_gateway: GatewayFactory
) -> None:
    tampered = _signed_ndr(keys).replace(b"Undeliverable", b"Undelivered", 1)
    assert tampered != _signed_ndr(keys)
    app = await make_gateway(
        hop.address, _overrides(keys, arc_results="verify", arc_dns_server=dns_server.address)
    )
    await _relay(app.listener.port, tampered)
    out = hop.messages[0].data
    assert dkim.arc_verify(out, dnsfunc=arc.resolver_for(dns_server.address))[0] == b"pass"
    assert f"{AUTHSERV_ID}; dkim=fail header.d={TENANT[1]}" in _aar(out)


@pytest.mark.parametrize("mode", ["upstream", "verify"])
async def test_an_existing_chain_is_extended_to_instance_2(
    mode: str, keys: Any, dns_server: DnsStub, hop: RecordingServer, make_gateway: GatewayFactory
) -> None:
    lookup = arc.resolver_for(dns_server.address)
    message = _sealed_by_relay(_signed_ndr(keys), keys)
    assert dkim.arc_verify(message, dnsfunc=lookup)[0] == b"pass"
    if mode == "upstream":  # the MX's verifier checked the chain and the signature
        message = f"Authentication-Results: {AUTHSERV_ID}; dkim=pass; arc=pass\r\n".encode() + message
    app = await make_gateway(
        hop.address, _overrides(keys, arc_results=mode, arc_dns_server=dns_server.address)
    )
    await _relay(app.listener.port, message)
    out = hop.messages[0].data
    assert hop.messages[0].message.startswith(b"ARC-Seal: i=2; ")
    assert out.count(b"ARC-Seal:") == 2  # extended, not replaced
    cv, results, reason = dkim.arc_verify(out, dnsfunc=lookup)
    assert cv == b"pass", reason
    assert [r["instance"] for r in results] == [2, 1]
    assert "arc=pass" in _aar(out)


async def test_a_broken_key_relays_the_explained_bounce_unsealed(
    keys: Any, tmp_path: Path, hop: RecordingServer, make_gateway: GatewayFactory
) -> None:
    broken = tmp_path / "broken.pem"
    broken.write_text("-----BEGIN RSA PRIVATE KEY-----\nnot a key\n-----END RSA PRIVATE KEY-----\n")
    upstream = f"Authentication-Results: {AUTHSERV_ID}; dkim=pass\r\n".encode()
    overrides = _overrides(keys) | {"explain.arc_key_file": str(broken)}
    app = await make_gateway(hop.address, overrides)
    before = _seals("failed")
    await _relay(app.listener.port, upstream + _signed_ndr(keys))
    out = hop.messages[0].data
    assert hop.messages[0].message.startswith(b"X-Bouncegw-Explained:")  # explained, relayed, not sealed
    assert b"ARC-Seal:" not in out
    assert _seals("failed") == before + 1


async def test_nothing_to_record_is_not_sealed(
    keys: Any, hop: RecordingServer, make_gateway: GatewayFactory
) -> None:
    app = await make_gateway(hop.address, _overrides(keys))
    before = _seals("no_results")
    # An Authentication-Results of another ADMD is not ours to attest.
    foreign = b"Authentication-Results: mx.elsewhere.example; dkim=pass\r\n"
    await _relay(app.listener.port, foreign + _signed_ndr(keys))
    out = hop.messages[0].data
    assert hop.messages[0].message.startswith(b"X-Bouncegw-Explained:") and b"ARC-Seal:" not in out
    assert _seals("no_results") == before + 1


async def test_results_claiming_our_id_from_outside_are_not_attested(
    keys: Any, dns_server: DnsStub, hop: RecordingServer, make_gateway: GatewayFactory
) -> None:
    app = await make_gateway(
        hop.address, _overrides(keys, arc_results="verify", arc_dns_server=dns_server.address)
    )
    before = _seals("foreign_results")
    forged = f"Authentication-Results: {AUTHSERV_ID}; dkim=pass header.d=bank.example\r\n".encode()
    await _relay(app.listener.port, forged + _signed_ndr(keys))
    out = hop.messages[0].data
    assert b"ARC-Seal:" not in out and hop.messages[0].message.startswith(b"X-Bouncegw-Explained:")
    assert _seals("foreign_results") == before + 1


async def test_ordinary_mail_is_never_sealed(
    keys: Any, hop: RecordingServer, make_gateway: GatewayFactory
) -> None:
    message = (
        f"Authentication-Results: {AUTHSERV_ID}; dkim=pass\r\n"
        "From: a@example.org\r\nTo: b@example.org\r\nSubject: hello\r\n\r\nplain mail\r\n"
    ).encode()
    app = await make_gateway(hop.address, _overrides(keys))
    await _relay(app.listener.port, message, sender="a@example.org")
    assert hop.messages[0].data.endswith(message)
    assert b"ARC-" not in hop.messages[0].data


def test_tag_values_from_the_message_are_not_copied_unless_well_formed(
    keys: Any, dns_server: DnsStub
) -> None:
    data = _signed_ndr(keys).replace(b"d=contoso.example;", b'd=contoso.example"; x=;', 1)
    header = arc.verify(data, AUTHSERV_ID, arc.resolver_for(dns_server.address))
    assert header.startswith(f"Authentication-Results: {AUTHSERV_ID}; dkim=")
    assert 'contoso.example"' not in header and "header.d=" not in header


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"arc_selector": "s"}, "must be given together"),
        (
            {"arc_key_file": "k.pem", "arc_selector": "s", "arc_domain": "a b", "arc_authserv_id": "mx"},
            "arc_domain = 'a b' is not a domain name",
        ),
        ({"arc_dns_server": "resolver.example"}, "arc_dns_server = 'resolver.example' is not an IP address"),
        ({"arc_dns_server": "127.0.0.1:0"}, "the port must be 1-65535"),
    ],
)
def test_settings_are_checked(values: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ExplainSettings.model_validate(values)


def test_dns_server_forms() -> None:
    from gateway.config import parse_dns_server

    assert parse_dns_server("192.0.2.53") == ("192.0.2.53", 53)
    assert parse_dns_server("192.0.2.53:5353") == ("192.0.2.53", 5353)
    assert parse_dns_server("::1") == ("::1", 53)
    assert parse_dns_server("[::1]:5353") == ("::1", 5353)


def _settings(keys: Any, **extra: str) -> ExplainSettings:
    return ExplainSettings.model_validate(
        {k.removeprefix("explain."): v for k, v in _overrides(keys, **extra).items()}
    )


@pytest.mark.parametrize("chain", [False, True])
def test_dns_work_per_message_is_bounded_by_the_budget(
    chain: bool, keys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Five DKIM signatures (and a chain of two ARC sets: four more lookups) against a server
    # that takes 1.5 s per answer would hold the thread 7.5 s (13.5 s); the budget stops them.
    monkeypatch.setattr(arc, "DNS_BUDGET", 2.0)  # the real 10 s would make a slow test
    message = _signed_ndr(keys)
    for _ in range(arc.MAX_SIGNATURES - 1):
        signer = keys[TENANT][0].read_bytes()
        message = dkim.sign(message, TENANT[0].encode(), TENANT[1].encode(), signer) + message
    if chain:
        message = _sealed_by_relay(_sealed_by_relay(message, keys), keys)
    records = {f"{s}._domainkey.{d}": record for (s, d), (_, record) in keys.items()}
    with DnsStub(records, delay=1.5) as slow:
        settings = _settings(keys, arc_results="verify", arc_dns_server=slow.address)
        started = time.monotonic()
        sealed = arc.seal(message, message, settings)
        elapsed = time.monotonic() - started
    assert elapsed < arc.DNS_BUDGET + 2.5, elapsed  # generous: unbounded it takes 7.5 s or more
    if chain:
        # No verdict on the chain within the budget: it is not extended, the bounce goes unsealed.
        assert sealed.outcome is arc.Outcome.CHAIN_ENDED and sealed.data == message
        return
    assert sealed.outcome is arc.Outcome.SEALED
    head = sealed.data.split(b"\r\n\r\n", 1)[0].decode().replace("\r\n ", " ").replace("\r\n\t", " ")
    prefix = f"Authentication-Results: {AUTHSERV_ID};"
    ours = next(line for line in head.split("\r\n") if line.startswith(prefix))
    assert ours.count("dkim=temperror") >= 3, ours  # lookups past the budget: temperror


async def test_a_chain_longer_than_the_cap_is_not_verified_or_sealed(
    keys: Any, dns_server: DnsStub, hop: RecordingServer, make_gateway: GatewayFactory
) -> None:
    app = await make_gateway(
        hop.address, _overrides(keys, arc_results="verify", arc_dns_server=dns_server.address)
    )
    before = _seals("chain_ended")
    seals = b"".join(
        f"ARC-Seal: i={i}; a=rsa-sha256; cv=pass; d=relay{i}.example; s=s; b=AAAA\r\n".encode()
        for i in range(arc.MAX_ARC_INSTANCES + 1, 0, -1)
    )
    await _relay(app.listener.port, seals + _signed_ndr(keys))
    out = hop.messages[0].data
    assert b"X-Bouncegw-Explained:" in out  # explained and relayed...
    assert out.count(b"ARC-Seal:") == arc.MAX_ARC_INSTANCES + 1  # ...with no seal of ours
    assert dns_server.queries == []  # nothing was looked up for it
    assert _seals("chain_ended") == before + 1


async def test_sealing_runs_on_its_own_threads(
    keys: Any, hop: RecordingServer, make_gateway: GatewayFactory
) -> None:
    # While a bounce waits on slow DNS, the thread doing it is one of sealing's own, not one of
    # the default executor's that parsing, annotation and large relays share.
    records = {f"{s}._domainkey.{d}": record for (s, d), (_, record) in keys.items()}
    with DnsStub(records, delay=1.0) as slow:
        app = await make_gateway(
            hop.address, _overrides(keys, arc_results="verify", arc_dns_server=slow.address)
        )
        relay = asyncio.create_task(_relay(app.listener.port, _signed_ndr(keys)))
        while not slow.queries and not relay.done():
            await asyncio.sleep(0.05)
        names = [t.name for t in threading.enumerate()]
        await relay
    assert any(name.startswith("bouncegw-arc") for name in names), names
    assert hop.messages[0].message.startswith(b"ARC-Seal: i=1; ")
