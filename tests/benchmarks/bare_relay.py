"""The baseline: a bare aiosmtpd relay with pooled aiosmtplib next-hop connections.

``python -m tests.benchmarks.bare_relay --listen HOST:PORT --next-hop HOST:PORT [--pool N]``

It does what any Python relay hop must do and nothing more: accept the transaction, relay the
bytes over a reused connection, answer with the next hop's outcome. Several processes may share
the port: the listener sets SO_REUSEPORT, so the kernel spreads connections across them.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any

import aiosmtplib
from aiosmtpd.smtp import SMTP, Envelope, Session


class Pool:
    """At most ``size`` connections to the next hop; idle ones are reused (one transaction each)."""

    def __init__(self, host: str, port: int, size: int) -> None:
        self.host, self.port = host, port
        self.idle: list[aiosmtplib.SMTP] = []
        self.slots = asyncio.Semaphore(size)

    async def send(self, sender: str, rcpts: list[str], data: bytes) -> None:
        async with self.slots:
            client = self.idle.pop() if self.idle else None
            if client is None or not client.is_connected:
                client = aiosmtplib.SMTP(hostname=self.host, port=self.port, start_tls=False)
                await client.connect()
            try:
                await client.sendmail(sender, rcpts, data)
            except Exception:
                client.close()
                raise
            self.idle.append(client)


class RelayHandler:
    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        # aiosmtpd keeps the null reverse-path as "<>"; aiosmtplib wants "" (RFC 5321 section 4.5.5).
        sender = "" if envelope.mail_from in ("<>", None) else envelope.mail_from
        try:
            await self.pool.send(sender, list(envelope.rcpt_tos), envelope.original_content or b"")
        except Exception:
            return "451 4.4.1 next hop failed"
        return "250 2.0.0 OK relayed"


async def serve(listen: str, next_hop: str, pool_size: int) -> None:
    host, _, port = listen.rpartition(":")
    hop_host, _, hop_port = next_hop.rpartition(":")
    handler = RelayHandler(Pool(hop_host, int(hop_port), pool_size))
    loop = asyncio.get_running_loop()

    def factory() -> Any:
        # hostname= avoids a blocking getfqdn() per connection; SMTPUTF8 as a relay must.
        return SMTP(handler, hostname="bare-relay", enable_SMTPUTF8=True, data_size_limit=35 * 2**20)

    server = await loop.create_server(factory, host, int(port), reuse_port=True, backlog=1024)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen", required=True)
    parser.add_argument("--next-hop", required=True)
    parser.add_argument("--pool", type=int, default=16)
    args = parser.parse_args()
    asyncio.run(serve(args.listen, args.next_hop, args.pool))


if __name__ == "__main__":
    main()
