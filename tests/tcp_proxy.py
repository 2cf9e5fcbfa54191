"""A loopback TCP proxy a test can cut: the network between a gateway and its database.

``TcpProxy(host, port)`` listens on an ephemeral loopback port and forwards each connection to
``host:port``. ``cut()`` aborts every forwarded connection and from then on answers each new one
with a reset (it still accepts them, so ``refused`` counts how many connection attempts the
clients made during the outage); ``restore()`` forwards again. ``connections`` counts every
connection attempt since the start.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct

#: SO_LINGER with a zero timeout: close() sends RST, as a host that refuses or a cut path would.
_RESET = struct.pack("ii", 1, 0)


class TcpProxy:
    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.connections = 0
        self.refused = 0
        self.up = True
        self._server: asyncio.Server | None = None
        self._live: set[asyncio.StreamWriter] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    def cut(self) -> None:
        self.up = False
        for writer in list(self._live):
            _reset(writer)
        self._live.clear()

    def restore(self) -> None:
        self.up = True

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if not self.up:
            self.refused += 1
            _reset(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            _reset(writer)
            return
        self._live |= {writer, up_writer}
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            self._live -= {writer, up_writer}
            for w in (writer, up_writer):
                w.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(OSError):
        if writer.can_write_eof():
            writer.write_eof()


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
    writer.transport.abort()
