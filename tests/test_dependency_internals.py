"""Guard: the private members of aiosmtpd, asyncio and flanker that bouncegw relies on.

``gateway/server.py`` (the listener) subclasses aiosmtpd's ``SMTP`` and uses its private
members; ``gateway/bounce/mime.py`` reads flanker's part offsets. pyproject.toml therefore caps
aiosmtpd below 1.5 and pins flanker. Before raising either bound, run this module on the new
release (and on every new Python: ``StreamReader._buffer`` is CPython's): each test names the
member whose shape or behaviour changed, instead of the listener misbehaving at run time.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from gateway import replies
from gateway.bounce.mime import flanker_mime as mime  # imported there with its import-time warnings hidden
from gateway.server import RelayEnvelope, RelaySession, RelaySMTP
from tests.conftest import GatewayFactory
from tests.recording_server import RecordingServer

P = inspect.Parameter
#: aiosmtpd SMTP members the listener overrides or calls: name -> (coroutine?, parameters after self).
SMTP_METHODS: dict[str, tuple[bool, list[tuple[str, Any, Any]]]] = {
    # called from connection_made for each session / after each transaction: RelaySMTP overrides
    "_create_session": (False, []),
    "_create_envelope": (False, []),
    # RelaySMTP overrides (ends a relay transaction) and calls super()
    "_set_rset_state": (False, []),
    # smtp_DATA calls it after the handler answered
    "_set_post_data_state": (False, []),
    # the idle timer's callback: RelaySMTP overrides it to say 421 first
    "_timeout_cb": (False, []),
    # re-armed with a duration after DATA and when refusing commands during shutdown
    "_reset_timeout": (False, [("duration", P.POSITIONAL_OR_KEYWORD, None)]),
    # smtp_MAIL/RCPT/DATA call the handler's hooks through it
    "_call_handler_hook": (
        True,
        [("command", P.POSITIONAL_OR_KEYWORD, P.empty), ("args", P.VAR_POSITIONAL, P.empty)],
    ),
    # the per-connection task; RelaySMTP wraps it for admission
    "_handle_client": (True, []),
}


@pytest.mark.parametrize("name", sorted(SMTP_METHODS))
def test_aiosmtpd_private_method_shapes(name: str) -> None:
    coroutine, params = SMTP_METHODS[name]
    member = inspect.getattr_static(SMTP, name, None)
    assert inspect.isfunction(member), f"aiosmtpd SMTP.{name} is no longer a plain method: {member!r}"
    assert inspect.iscoroutinefunction(member) == coroutine, f"aiosmtpd SMTP.{name}: sync/async changed"
    got = [(p.name, p.kind, p.default) for p in inspect.signature(member).parameters.values()]
    assert got == [("self", P.POSITIONAL_OR_KEYWORD, P.empty), *params], f"aiosmtpd SMTP.{name}{got}"


def test_aiosmtpd_line_length_limit_sizes_the_reader() -> None:
    # RelaySMTP.line_length_limit (READ_LIMIT) must become the StreamReader's limit, or DATA
    # arrives 1001 octets at a time.
    assert isinstance(inspect.getattr_static(SMTP, "line_length_limit"), int)
    source = inspect.getsource(SMTP.__init__)
    assert "limit=self.line_length_limit" in source


async def test_aiosmtpd_call_handler_hook_passes_through() -> None:
    seen: list[tuple[Any, ...]] = []

    class Handler:
        async def handle_MAIL(self, *args: Any) -> str:
            seen.append(args)
            return "250 hook said so"

    loop = asyncio.get_running_loop()
    server = SMTP(Handler(), hostname="guard.test", loop=loop)
    server.session, server.envelope = Session(loop), Envelope()
    status = await server._call_handler_hook("MAIL", "a@example.org", ["RET=HDRS"])
    assert status == "250 hook said so"
    assert seen == [(server, server.session, server.envelope, "a@example.org", ["RET=HDRS"])]


async def _line(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.readline(), 30)


async def test_aiosmtpd_session_state_and_dispatch(
    hop: RecordingServer, make_gateway: GatewayFactory
) -> None:
    """A live RelaySMTP session: the private state it touches, and dispatch through _smtp_methods."""
    app = await make_gateway(hop.address)
    reader, writer = await asyncio.open_connection("127.0.0.1", app.listener.port)
    try:
        assert (await _line(reader)).startswith(b"220 ")
        writer.write(b"HELO guard.test\r\n")
        assert (await _line(reader)).startswith(b"250 ")
        (session,) = app.listener.sessions
        assert isinstance(session, RelaySMTP)
        # _create_session / _create_envelope overrides are what aiosmtpd used
        assert isinstance(session.session, RelaySession)
        assert isinstance(session.envelope, RelayEnvelope)
        assert isinstance(session._reader, asyncio.StreamReader)
        assert isinstance(session._writer, asyncio.StreamWriter)
        assert isinstance(session._timeout_handle, asyncio.TimerHandle)
        # the command table: verb -> bound method, our overrides included
        methods = session._smtp_methods
        assert isinstance(methods, dict)
        assert {"HELO", "EHLO", "MAIL", "RCPT", "DATA", "RSET", "NOOP", "QUIT"} <= set(methods)
        assert all(getattr(m, "__self__", None) is session for m in methods.values())
        assert methods["MAIL"].__func__ is RelaySMTP.smtp_MAIL
        assert methods["DATA"].__func__ is RelaySMTP.smtp_DATA

        # _reset_timeout(duration) replaces the timer with one that far ahead
        old = session._timeout_handle
        session._reset_timeout(1000)
        assert old.cancelled()
        assert session._timeout_handle is not old
        assert session._timeout_handle.when() - asyncio.get_running_loop().time() > 900

        # replacing the table changes what the next command runs (shutdown relies on it)
        async def marked(arg: str | None) -> None:
            await session.push("250 2.0.0 guard")

        session._smtp_methods = {**methods, "NOOP": marked}
        writer.write(b"NOOP\r\n")
        assert await _line(reader) == b"250 2.0.0 guard\r\n"
    finally:
        writer.close()


async def test_aiosmtpd_idle_timeout_runs_our_callback(
    hop: RecordingServer, make_gateway: GatewayFactory
) -> None:
    app = await make_gateway(hop.address, {"listener.command_timeout": 0.3})
    reader, writer = await asyncio.open_connection("127.0.0.1", app.listener.port)
    try:
        assert (await _line(reader)).startswith(b"220 ")
        # RelaySMTP._timeout_cb says 421 before aiosmtpd's closes the connection
        assert (await _line(reader)).decode() == replies.COMMAND_TIMEOUT + "\r\n"
        assert await _line(reader) == b""
    finally:
        writer.close()


@pytest.mark.parametrize("data", [b"line\r\n.\r\n", b".\r\n"], ids=["message", "empty"])
async def test_stream_reader_buffer_accepts_a_prefix(data: bytes) -> None:
    """server.py puts a CRLF back in front of StreamReader._buffer before reading DATA."""
    reader = asyncio.StreamReader(limit=1024)
    reader.feed_data(data)
    buffer = reader._buffer  # type: ignore[attr-defined]
    assert isinstance(buffer, bytearray)
    buffer[0:0] = b"\r\n"
    assert await reader.readuntil(b"\r\n.\r\n") == b"\r\n" + data


def test_flanker_part_offsets() -> None:
    """gateway/bounce/mime.py reads each part's _container: _load_headers(), start, _body_start, end."""
    text = (
        "Content-Type: multipart/report; report-type=delivery-status; boundary=b1\r\n"
        "\r\n"
        "--b1\r\n"
        "Content-Type: text/plain\r\n"
        "\r\n"
        "human text\r\n"
        "--b1\r\n"
        "Content-Type: message/delivery-status\r\n"
        "\r\n"
        "Reporting-MTA: dns; mx.example.org\r\n"
        "--b1--\r\n"
    )
    root = mime.from_string(text)
    human, status = root.parts
    for part, header, body in [
        (human, "Content-Type: text/plain", "human text"),
        (status, "Content-Type: message/delivery-status", "Reporting-MTA:"),
    ]:
        container = part._container
        assert callable(container._load_headers)
        container._load_headers()
        start, body_start, end = container.start, container._body_start, container.end
        assert all(isinstance(v, int) for v in (start, body_start, end))
        assert text.startswith(header, start)
        assert text.startswith(body, body_start)
        # end is the offset of the part's last character: the delimiter follows within a CRLF
        assert text[end + 1 :].lstrip("\r\n").startswith("--b1")
