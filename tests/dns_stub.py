"""A TXT-only DNS server on loopback UDP, for the DKIM and ARC keys of the tests (RFC 1035).

The gateway looks keys up through its real resolver code (dnspython) pointed at this server
with ``[explain] arc_dns_server``; nothing leaves the machine.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset


class DnsStub:
    """Answers TXT queries from ``records`` (name without the trailing dot -> record text).

    ``delay``: seconds to wait before each answer, one query at a time (a slow or hostile
    authoritative server).
    """

    def __init__(self, records: Mapping[str, bytes], delay: float = 0.0) -> None:
        self.records = {name.lower().rstrip("."): value for name, value in records.items()}
        self.delay = delay
        self.queries: list[str] = []
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="dns-stub", daemon=True)

    @property
    def address(self) -> str:
        host, port = self._sock.getsockname()
        return f"{host}:{port}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                wire, peer = self._sock.recvfrom(4096)
            except TimeoutError:
                continue
            query = dns.message.from_wire(wire)
            response = dns.message.make_response(query)
            question = query.question[0]
            name = question.name.to_text().lower().rstrip(".")
            self.queries.append(name)
            value = self.records.get(name)
            if value is None or question.rdtype != dns.rdatatype.TXT:
                response.set_rcode(dns.rcode.NXDOMAIN)
            else:
                # TXT character-strings are at most 255 octets (RFC 1035 section 3.3.14).
                chunks = " ".join(f'"{value[i : i + 255].decode()}"' for i in range(0, len(value), 255))
                response.answer.append(
                    dns.rrset.from_text(question.name, 60, dns.rdataclass.IN, dns.rdatatype.TXT, chunks)
                )
            if self.delay:
                time.sleep(self.delay)
            self._sock.sendto(response.to_wire(), peer)

    def __enter__(self) -> DnsStub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()


@contextmanager
def dns_stub(records: Mapping[str, bytes]) -> Iterator[DnsStub]:
    with DnsStub(records) as stub:
        yield stub
