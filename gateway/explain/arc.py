"""Optional ARC sealing after the edit (RFC 8617).

Most family NDRs are mailed in by the recipient's Exchange Online, DKIM-signed
for the tenant's domain. Adding the block changes the body, so that signature
fails at the next hop, and DMARC with it. Re-signing with our own domain
(:mod:`.dkim`) does not align with the NDR's From domain. ARC is the standard
answer for an intermediary that modifies mail: it records what authentication
said *before* the edit (``ARC-Authentication-Results``), signs the edited
message (``ARC-Message-Signature``) and seals the chain (``ARC-Seal``); a next
hop that trusts the sealer (Exchange Online's "trusted ARC sealers", Gmail,
Rspamd) may then honour the pre-edit results.

Where the pre-edit results come from (``[explain] arc_results``):

``upstream``
    ``Authentication-Results`` fields carrying our ``arc_authserv_id``, added by
    a verifier inside our own administrative domain before bouncegw (OpenDKIM /
    OpenARC / Rspamd on the MX). RFC 8601 section 5 makes that verifier remove
    such fields arriving from outside; bouncegw trusts what it finds.
``verify``
    bouncegw verifies the original's DKIM signatures and any ARC chain itself
    (DNS through ``arc_dns_server`` or the system resolver) and prepends its own
    ``Authentication-Results``. A message that already claims our authserv-id
    is then not sealed: the claim came from outside and must not be attested.

Sealing never costs the message: any failure (unreadable key, a chain dkimpy
declines to extend, no results to record) leaves the explained bounce unsealed
and the caller counts the outcome (``bouncegw_arc_seals_total``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import authres
import dkim as dkimpy
import dns.exception
import dns.resolver

from gateway.config import HOST_NAME_RE, SELECTOR_RE, ExplainSettings, parse_dns_server
from gateway.explain.headers import root_headers
from gateway.explain.splice import line_ending
from gateway.header_block import FIELD_NAME_BYTES

#: One header field of the root header block: its name and its unfolded value.
_FIELD = re.compile(b"^(" + FIELD_NAME_BYTES + rb")[ \t]*:(.*(?:\r?\n[ \t].*)*)", re.MULTILINE)

#: DKIM-Signature fields verified per message (a bounce is attacker input: bound the DNS work).
MAX_SIGNATURES = 5

#: Seconds one key lookup may take (dkimpy's own default).
LOOKUP_TIMEOUT = 5.0

#: Seconds of DNS per message, all lookups together. The domains are chosen by the sender of
#: the bounce: without a total, one message could hold a worker for MAX_SIGNATURES plus two
#: lookups per ARC instance, 5 s each. Past it every lookup fails at once (temperror).
DNS_BUDGET = 10.0

#: ARC sets accepted on an incoming message. RFC 8617 section 4.2.1 allows 50, but real chains
#: are a few hops long; each instance costs two key lookups to verify, so a longer chain is
#: neither verified nor extended (Outcome.CHAIN_ENDED), and the bounce goes out unsealed.
MAX_ARC_INSTANCES = 10

#: dkimpy's lookup callable: (name, timeout) -> the TXT record's bytes (b"" when there is none).
DnsFunc = Callable[..., bytes]


class Outcome(StrEnum):
    """What sealing did with one explained bounce (the metric's label values)."""

    SEALED = "sealed"
    #: No Authentication-Results with our authserv-id to record (upstream mode).
    NO_RESULTS = "no_results"
    #: The message arrived with results claiming our authserv-id (verify mode): not attested.
    FOREIGN_RESULTS = "foreign_results"
    #: An existing chain without an ``arc=`` verdict, or longer than MAX_ARC_INSTANCES.
    CHAIN_ENDED = "chain_ended"
    #: The key could not be read or dkimpy refused to sign.
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Sealed:
    data: bytes
    outcome: Outcome
    detail: str = ""


def enabled(settings: ExplainSettings) -> bool:
    return settings.arc_key_file is not None


def seal(original: bytes, edited: bytes, settings: ExplainSettings, dnsfunc: DnsFunc | None = None) -> Sealed:
    """Return ``edited`` with a new ARC set prepended, or unchanged with the reason it is not.

    ``original`` is the message as received: in ``verify`` mode its signatures are checked
    (they cover the pre-edit body). Blocking (DNS, RSA): call it off the event loop.
    """
    assert settings.arc_key_file and settings.arc_selector and settings.arc_domain
    assert settings.arc_authserv_id
    srv_id = settings.arc_authserv_id
    linesep = line_ending(edited)
    message = edited
    instances = sum(1 for name, _ in _fields(original) if name.lower() == b"arc-seal")
    if instances > MAX_ARC_INSTANCES:
        return Sealed(
            edited, Outcome.CHAIN_ENDED, f"{instances} ARC sets, more than the {MAX_ARC_INSTANCES} we verify"
        )
    if settings.arc_results == "verify":
        if _claims(original, srv_id):
            return Sealed(edited, Outcome.FOREIGN_RESULTS, f"the message already claims {srv_id}")
        lookup = dnsfunc or resolver_for(settings.arc_dns_server, DNS_BUDGET)
        results = verify(original, srv_id, lookup)
        message = results.encode("ascii") + linesep + edited
    elif not _claims(edited, srv_id):
        return Sealed(edited, Outcome.NO_RESULTS, f"no Authentication-Results from {srv_id}")
    try:
        key = settings.arc_key_file.read_bytes()
    except OSError as exc:
        return Sealed(
            edited, Outcome.FAILED, f"cannot read arc_key_file {settings.arc_key_file}: {exc.strerror}"
        )
    try:
        fields = dkimpy.arc_sign(
            message,
            settings.arc_selector.encode("ascii"),
            settings.arc_domain.encode("ascii"),
            key,
            srv_id.encode("ascii"),
            linesep=linesep,
        )
    except (dkimpy.DKIMException, ValueError) as exc:
        return Sealed(edited, Outcome.FAILED, f"ARC signing failed: {exc}")
    if not fields:
        return Sealed(edited, Outcome.CHAIN_ENDED, "the existing chain carries no arc= verdict")
    return Sealed(b"".join(fields) + message, Outcome.SEALED)


def verify(original: bytes, srv_id: str, dnsfunc: DnsFunc) -> str:
    """bouncegw's own ``Authentication-Results`` for the pre-edit message (RFC 8601)."""
    results: list[authres.BaseAuthenticationResult] = []
    signatures = [v for n, v in _fields(original) if n.lower() == b"dkim-signature"][:MAX_SIGNATURES]
    for index in range(len(signatures)):
        checker = dkimpy.DKIM(original, minkey=1024, timeout=int(LOOKUP_TIMEOUT))
        try:
            verdict = "pass" if checker.verify(idx=index, dnsfunc=dnsfunc) else "fail"
        except dkimpy.KeyFormatError:
            verdict = "permerror"
        except (dkimpy.DKIMException, dns.exception.DNSException):
            verdict = "temperror"
        tags = _tags(signatures[index])
        results.append(
            authres.DKIMAuthenticationResult(
                result=verdict,
                header_d=_safe(tags.get("d"), HOST_NAME_RE),
                header_s=_safe(tags.get("s"), SELECTOR_RE),
            )
        )
    if not results:
        results.append(authres.DKIMAuthenticationResult(result="none"))
    if any(n.lower() == b"arc-seal" for n, _ in _fields(original)):
        try:
            chain, _, _ = dkimpy.arc_verify(original, dnsfunc=dnsfunc)
        except dns.exception.DNSException:
            # No verdict (RFC 8617 section 2.2 has no temperror for arc=): with none recorded
            # the chain is not extended (Outcome.CHAIN_ENDED) rather than sealed as failed.
            pass
        else:
            results.append(authres.AuthenticationResult(method="arc", result=chain.decode("ascii")))
    return str(authres.AuthenticationResultsHeader(authserv_id=srv_id, results=results))


def resolver_for(server: str | None, budget: float = DNS_BUDGET) -> DnsFunc:
    """A TXT lookup through ``host[:port]``, or through the system's resolver when ``server`` is None.

    Build one per message: all its lookups share ``budget`` seconds from the first lookup on.
    """
    resolver = dns.resolver.Resolver(configure=server is None)
    if server is not None:
        host, port = parse_dns_server(server)
        resolver.nameservers = [host]
        resolver.port = port

    deadline: float | None = None

    def lookup(name: bytes, timeout: float = LOOKUP_TIMEOUT) -> bytes:
        nonlocal deadline
        now = time.monotonic()
        if deadline is None:
            deadline = now + budget
        remaining = deadline - now
        if remaining <= 0:
            # A DNS error, not dkimpy's DnsTimeoutError: dkimpy's DKIM check would turn that into
            # "fail"; verify() reports a DNS error as temperror (RFC 8601 section 2.7.1).
            raise dns.exception.Timeout(timeout=budget)  # type: ignore[no-untyped-call]  # dnspython is untyped here
        try:
            answer = resolver.resolve(name.decode("ascii"), "TXT", lifetime=min(timeout, remaining))
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return b""
        return b"".join(b"".join(rr.strings) for rr in answer)

    return lookup


def _fields(data: bytes) -> list[tuple[bytes, bytes]]:
    return [(m.group(1), m.group(2)) for m in _FIELD.finditer(root_headers(data))]


def _claims(data: bytes, srv_id: str) -> bool:
    """Does the root header block hold an Authentication-Results for ``srv_id``?"""
    for name, value in _fields(data):
        if name.lower() != b"authentication-results":
            continue
        served = value.decode("ascii", "replace").strip().split(";", 1)[0].split()
        if served and served[0].lower() == srv_id.lower():
            return True
    return False


def _tags(value: bytes) -> dict[str, str]:
    tags: dict[str, str] = {}
    for item in re.sub(rb"\s+", b"", value).split(b";"):
        name, sep, tag = item.partition(b"=")
        if sep:
            tags.setdefault(name.decode("ascii", "replace"), tag.decode("ascii", "replace"))
    return tags


def _safe(value: str | None, pattern: re.Pattern[str]) -> str | None:
    """A tag copied into our header only when it has its grammar's shape (it is attacker text)."""
    return value if value is not None and pattern.fullmatch(value) else None
