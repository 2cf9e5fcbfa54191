"""The SMTP listener: an aiosmtpd ``SMTP`` subclass and the :class:`Listener` that runs it.

What the subclass changes in aiosmtpd 1.4.6, and why:
- MAIL and RCPT parse RFC 3461 parameters (RET, ENVID, NOTIFY, ORCPT) instead of
  refusing them, keep their values as written, and relay them (``gateway.envelope``).
- DATA is read in large chunks up to the ``CRLF.CRLF`` terminator (RFC 5321
  section 4.1.1.4) rather than line by line, with an idle timeout (reset by any
  received byte) and a deadline for the whole transfer; aiosmtpd's own timer
  covered neither and could cancel a relay mid-flight. Only ``CRLF.CRLF`` ends
  the data, so a bare ``LF.LF`` smuggling attempt stays inside one message.
- Line limits per RFC 5321 section 4.5.3.1: command lines 512 octets with CRLF,
  raised for MAIL and RCPT by what their parameters may add (a 500-character
  ORCPT fits); text lines 1000 octets with CRLF.
- Every 2xx/4xx/5xx reply carries an enhanced status code (RFC 2034 section 3)
  and is printable ASCII: client text quoted in a reply cannot carry control bytes.
- Admission: clients outside ``allowed_networks`` get 554 5.7.1 (RFC 5321
  section 3.1) and sessions beyond ``max_sessions`` get 421; only admitted
  sessions count, so a burst admits exactly ``max_sessions``.
- Graceful shutdown: idle sessions are told 421, sessions in a transaction
  finish it first.

The per-session logic lives in the handler, ``gateway.handler.RelayHandler``: it is the one
owner of the downstream (next-hop) transaction, which it opens at MAIL, mirrors, finishes or
aborts at DATA. The listener only tells it when the SMTP transaction ends some other way
(RSET, HELO/EHLO, STARTTLS, a refused DATA, a lost connection): :meth:`SessionHandler.transaction_ended`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ipaddress
import logging
import socket
import ssl
from typing import Any, Protocol

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from gateway import metrics, offload, replies
from gateway.config import ListenerSettings, parse_host_port
from gateway.envelope import COMMAND_LINE_LIMITS, COMMAND_LINE_MAX, EnvelopeError, parse_mail, parse_rcpt
from gateway.outcomes import RefusalReason
from gateway.relay import Transaction

log = logging.getLogger(__name__)

#: Reader buffer: large enough that DATA arrives in big chunks (aiosmtpd's
#: default equals the 1001-octet line limit and pauses the socket constantly).
#: Command lines are held to COMMAND_LINE_LIMITS (checked by aiosmtpd after reading).
READ_LIMIT = 256 * 1024
#: RFC 5321 section 4.5.3.1.6: a text line is at most 1000 octets with its CRLF.
MAX_LINE = 1000
TERMINATOR = b"\r\n.\r\n"
#: After its last transaction during shutdown, how long a session may wait to say QUIT.
SHUTDOWN_LINGER = 2.0
#: Connections the kernel queues before they are accepted (asyncio's default is 100).
LISTEN_BACKLOG = 1024

#: Commands a single session may repeat before it is cut off (floods, AUTH guessing).
COMMAND_LIMITS: dict[str, int] = {
    "AUTH": 5,
    "NOOP": 100,
    "VRFY": 10,
    "EXPN": 10,
    "HELP": 10,
    "*": 1_000_000,
}


class RelaySession(Session):
    #: The open downstream transaction; set and cleared by the handler only.
    transaction: Transaction | None = None


class RelayEnvelope(Envelope):
    def __init__(self) -> None:
        super().__init__()
        self.open = False  # MAIL accepted (mail_from may be "" for the null sender)


class SessionHandler(Protocol):
    """What the listener needs of its handler besides aiosmtpd's ``handle_*`` hooks."""

    def transaction_ended(self, server: RelaySMTP, session: RelaySession) -> None:
        """The SMTP transaction ended without DATA finishing it: let go of the downstream one."""
        ...


class DataTooLong(Exception):
    """Reading DATA failed on a limit: ``reply`` says which."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


class RelaySMTP(SMTP):
    line_length_limit = READ_LIMIT

    def __init__(self, handler: SessionHandler, *, listener: Listener, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.handler = handler
        self.listener = listener
        self._plain_replies = False
        self.closing = False
        self.busy = False  # inside a transaction (MAIL accepted .. DATA answered)
        # aiosmtpd keeps command_size_limits on the class (shared by every session) and adds
        # to it on each EHLO; each session gets its own table here. aiosmtpd compares the line
        # without its CRLF, hence the 2.
        self.command_size_limit = COMMAND_LINE_MAX - 2
        self._line_limits()
        #: When the last bytes arrived from the client (the DATA idle timeout counts from it).
        self.last_received = 0.0
        self._watchdog: asyncio.TimerHandle | None = None

    def _line_limits(self) -> None:
        self.command_size_limits = collections.defaultdict(
            lambda: COMMAND_LINE_MAX - 2, {cmd: limit - 2 for cmd, limit in COMMAND_LINE_LIMITS.items()}
        )

    def data_received(self, data: bytes) -> None:
        # One float per received chunk: the cheapest way to know that a client is not idle.
        self.last_received = self.loop.time()
        super().data_received(data)

    # aiosmtpd types these as Optional; inside a session they are always set. (Methods, not
    # properties: aiosmtpd's __init__ runs inspect.getmembers(), which evaluates properties.)
    def relay_session(self) -> RelaySession:
        assert isinstance(self.session, RelaySession)
        return self.session

    def relay_envelope(self) -> RelayEnvelope:
        assert isinstance(self.envelope, RelayEnvelope)
        return self.envelope

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _create_session(self) -> RelaySession:
        return RelaySession(self.loop)

    def _create_envelope(self) -> RelayEnvelope:
        return RelayEnvelope()

    # -- connection lifecycle -----------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Also called again after STARTTLS (RFC 3207): count the session once.
        if self not in self.listener.sessions:
            metrics.SESSIONS.inc()
        self.listener.sessions.add(self)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self in self.listener.sessions:
            metrics.SESSIONS.dec()
        self.listener.session_closed(self)
        self._end_transaction()
        super().connection_lost(error)

    def _set_rset_state(self) -> None:
        # HELO, EHLO, RSET and STARTTLS all end a transaction (RFC 5321 section 4.1.1.5).
        self._end_transaction()
        super()._set_rset_state()  # type: ignore[no-untyped-call]

    def _end_transaction(self) -> None:
        self.busy = False
        session = self.session
        if isinstance(session, RelaySession):
            self.handler.transaction_ended(self, session)

    async def _handle_client(self) -> None:
        refusal = self.listener.admit(self)
        if refusal is not None:
            await self.push(refusal)
            self.close()
            return
        await super()._handle_client()

    async def push(self, status: str | bytes) -> None:
        # The greeting (220), the EHLO/HELO replies and AUTH challenges (bytes, 334)
        # carry no enhanced code.
        if isinstance(status, str):
            enhanced = not self._plain_replies and not status.startswith("220 ")
            status = replies.final_reply(status, enhanced=enhanced)
        await super().push(status)  # type: ignore[type-var]

    def shutdown(self) -> None:
        """Graceful stop: idle sessions get 421 now, busy ones after their transaction."""
        self.closing = True
        if not self.busy and self.transport is not None:
            self._writer.write(replies.SHUTTING_DOWN.encode() + b"\r\n")
            self.close()

    async def _after_transaction(self) -> None:
        self.busy = False
        if self.closing and self.transport is not None:
            self._refuse_further_commands()

    def _timeout_cb(self) -> None:
        # aiosmtpd just drops an idle client; RFC 5321 section 4.5.3.2 lets a server close
        # after a timeout, and a 421 first tells the client it may retry (README: "421 4.4.2").
        if self.transport is not None and not self.transport.is_closing():
            reply = replies.SHUTTING_DOWN if self.closing else replies.COMMAND_TIMEOUT
            self._writer.write(reply.encode() + b"\r\n")
        super()._timeout_cb()  # type: ignore[no-untyped-call]

    def _refuse_further_commands(self) -> None:
        """Shutting down after a transaction: QUIT gets 221, any other command 421.

        Replying 421 unprompted right after the DATA reply would be read as the
        answer to the client's next command; waiting for that command keeps the
        dialogue in step (RFC 5321 section 3.8). A client that says nothing is
        disconnected after a short wait.
        """

        async def refuse(arg: str | None) -> None:
            await self.push(replies.SHUTTING_DOWN)
            self.close()

        self._smtp_methods = {
            name: (m if name == "QUIT" else refuse) for name, m in self._smtp_methods.items()
        }
        self._reset_timeout(SHUTDOWN_LINGER)

    # -- EHLO / HELO: no enhanced codes in these replies (RFC 2034 section 3) ----------
    async def smtp_EHLO(self, hostname: str) -> None:
        self._plain_replies = True
        try:
            await super().smtp_EHLO(hostname)
        finally:
            self._plain_replies = False
            self._line_limits()  # undo aiosmtpd's additions (ours already count every parameter)

    async def smtp_HELO(self, hostname: str) -> None:
        self._plain_replies = True
        try:
            await super().smtp_HELO(hostname)
        finally:
            self._plain_replies = False

    # -- MAIL / RCPT ----------------------------------------------------------------------
    async def smtp_MAIL(self, arg: str | None) -> None:
        if await self.check_helo_needed() or await self.check_auth_needed("MAIL"):
            return
        envelope = self.relay_envelope()
        if envelope.open:
            await self.push(replies.NESTED_MAIL)
            return
        try:
            path = parse_mail(arg)
        except EnvelopeError as exc:
            await self.push(exc.reply)
            return
        size = path.parameters.get("SIZE")
        if size is not None and self.data_size_limit and int(size) > self.data_size_limit:
            await self.push(replies.MESSAGE_TOO_BIG)
            return
        status = await self._call_handler_hook("MAIL", path.address, path.relayed, path.utf8)
        if status.startswith("250"):
            envelope.open = True
            envelope.mail_from = path.address
            envelope.mail_options.extend(path.relayed)
            envelope.smtp_utf8 = path.utf8
            self.busy = True
        await self.push(status)

    async def smtp_RCPT(self, arg: str | None) -> None:
        if await self.check_helo_needed() or await self.check_auth_needed("RCPT"):
            return
        envelope = self.relay_envelope()
        if not envelope.open:
            await self.push(replies.NEED_MAIL)
            return
        try:
            path = parse_rcpt(arg, utf8=bool(envelope.smtp_utf8))
        except EnvelopeError as exc:
            await self.push(exc.reply)
            return
        if len(envelope.rcpt_tos) >= self.listener.settings.max_recipients:
            await self.push(replies.TOO_MANY_RECIPIENTS)
            return
        status = await self._call_handler_hook("RCPT", path.address, path.relayed)
        if status.startswith("25"):
            envelope.rcpt_tos.append(path.address)
            envelope.rcpt_options.extend(path.relayed)
        await self.push(status)

    # -- DATA -------------------------------------------------------------------------------
    async def smtp_DATA(self, arg: str | None) -> None:
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        envelope = self.relay_envelope()
        if not envelope.open:
            await self.push(replies.NEED_MAIL)
            return
        if not envelope.rcpt_tos:
            await self.push(replies.NEED_RCPT)
            return
        if arg:
            await self.push(replies.DATA_SYNTAX)
            return
        # aiosmtpd's timer counts from the last command and would cut a slow but
        # live upload, or the relay below; DATA keeps its own clocks instead.
        if self._timeout_handle is not None:
            self._timeout_handle.cancel()
        await self.push(replies.START_DATA)
        try:
            content = await self._read_data()
        except DataTooLong as exc:
            self._reset_timeout()
            await self.push(exc.reply)
            self._end_transaction()
            self._set_post_data_state()  # type: ignore[no-untyped-call]
            await self._after_transaction()
            return
        except TimeoutError:
            log.info("%r DATA timed out", self.relay_session().peer)
            await self.push(replies.COMMAND_TIMEOUT)
            self.close()
            return
        envelope.content = envelope.original_content = content
        status = await self._call_handler_hook("DATA")  # finishes (or aborts) the downstream one
        self._reset_timeout()
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        await self.push(status)
        await self._after_transaction()

    def _watch_idle(self, scope: asyncio.Timeout, idle: float) -> None:
        """End the DATA read through ``scope`` once nothing has arrived for ``idle`` seconds."""
        now = self.loop.time()
        due = self.last_received + idle
        if now >= due:
            scope.reschedule(now)
        else:
            self._watchdog = self.loop.call_at(due, self._watch_idle, scope, idle)

    async def _read_data(self) -> bytes:
        """Read up to CRLF.CRLF; return the un-dot-stuffed content (RFC 5321 section 4.5.2)."""
        settings = self.listener.settings
        limit = self.data_size_limit or 0
        deadline = self.loop.time() + settings.data_timeout
        # The terminator's first CRLF may be the one that ended the DATA command (an
        # empty message is just "."). Putting that CRLF back in front of the stream
        # lets one readuntil() find every terminator. aiosmtpd itself edits this
        # buffer on STARTTLS; it is a bytearray in every CPython since 3.4.
        self._reader._buffer[0:0] = b"\r\n"  # type: ignore[attr-defined]
        chunks: list[bytes] = []
        size = 0
        too_big = False
        # Idle means no byte received for data_idle_timeout: a watchdog compares the time of
        # the last received chunk (data_received) instead of restarting a timer per chunk, so a
        # steady slow upload is never cut while it makes progress; data_timeout bounds the whole.
        idle = settings.data_idle_timeout
        self.last_received = self.loop.time()
        async with asyncio.timeout_at(deadline) as scope:
            self._watch_idle(scope, idle)
            try:
                while True:
                    try:
                        chunk = await self._reader.readuntil(TERMINATOR)
                        done = True
                    except asyncio.LimitOverrunError as exc:
                        # No terminator in the buffer yet: take what is safely before any
                        # partial terminator (readuntil leaves its last 4 bytes) and go on.
                        chunk = await self._reader.read(exc.consumed)
                        done = False
                    except asyncio.IncompleteReadError as exc:
                        raise ConnectionResetError("connection closed during DATA") from exc
                    size += len(chunk)
                    if limit and size > limit + len(TERMINATOR) + 2:
                        too_big = True
                        chunks.clear()  # keep draining, keep nothing: memory stays bounded
                    elif not too_big:
                        chunks.append(chunk)
                    if done:
                        break
            finally:
                if self._watchdog is not None:
                    self._watchdog.cancel()
        if too_big:
            raise DataTooLong(replies.MESSAGE_TOO_BIG)
        # The chunks go as they are: _finish_data joins them and empties the list, so no name in
        # this frame holds a full copy (a LimitOverrunError caught above leaves a reference cycle
        # through its traceback that keeps this frame, and its locals, until the cyclic GC runs).
        return await offload.by_size(size, _finish_data, chunks)


def _has_long_line(data: bytes) -> bool:
    """Any line longer than MAX_LINE octets, CRLF included (RFC 5321 section 4.5.3.1.6).

    ``data`` is still dot-stuffed: a line that starts with the transparency dot (RFC 5321
    section 4.5.2) may be one octet longer, since that dot is not part of the text.
    """
    if len(data) <= MAX_LINE:
        return False
    start = 0
    find = data.find
    while True:
        end = find(b"\n", start)
        if end < 0:
            return len(data) - start > MAX_LINE
        length = end + 1 - start
        if length > MAX_LINE and (length > MAX_LINE + 1 or data[start] != 0x2E):  # 0x2E: "."
            return True
        start = end + 1


def _finish_data(chunks: list[bytes]) -> bytes:
    """Join "CRLF + message + CRLF.CRLF", check line lengths, undo dot-stuffing (RFC 5321 4.5.2).

    At most two full copies exist at any time: the chunks are dropped once joined.
    """
    stuffed = b"".join(chunks)
    chunks.clear()
    # The terminator's "." line is short: checking it too changes nothing.
    if _has_long_line(stuffed):
        raise DataTooLong(replies.LINE_TOO_LONG)
    if b"\r\n.." in stuffed:
        stuffed = stuffed.replace(b"\r\n..", b"\r\n.")
    return stuffed[2:-3]


class _Authenticator:
    """Inbound AUTH PLAIN/LOGIN against ``listener.auth_users`` (constant-time compare)."""

    def __init__(self, users: dict[str, str]) -> None:
        self.users = users

    def __call__(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        import hmac

        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        user = auth_data.login.decode("utf-8", "replace")
        expected = self.users.get(user)
        supplied = auth_data.password.decode("utf-8", "replace")
        ok = expected is not None and hmac.compare_digest(expected.encode(), supplied.encode())
        if not ok:
            log.warning("%r AUTH failed for %r", session.peer, user[:64])
        return AuthResult(success=ok, handled=False, auth_data=user if ok else None)


def inbound_tls_context(settings: ListenerSettings) -> ssl.SSLContext | None:
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.tls_cert, settings.tls_key)
    return context


class Listener:
    """The SMTP listener: owns the listening socket, the live sessions and the background tasks."""

    def __init__(self, settings: ListenerSettings, handler: SessionHandler) -> None:
        self.settings = settings
        self.handler = handler
        self.sessions: set[RelaySMTP] = set()  # every open connection
        self.admitted: set[RelaySMTP] = set()  # the connections that were greeted (<= max_sessions)
        self.networks = [ipaddress.ip_network(n, strict=False) for n in settings.allowed_networks]
        self.tls_context = inbound_tls_context(settings)
        users = {name: secret.get_secret_value() for name, secret in settings.auth_users.items()}
        self.authenticator = _Authenticator(users) if users else None
        self.server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._changed = asyncio.Event()  # a session or background task ended

    # -- admission ---------------------------------------------------------------------
    def admit(self, session: RelaySMTP) -> str | None:
        """None when ``session`` is admitted (greet it), or the reply that refuses it.

        Only admitted sessions count against ``max_sessions``: connections that are open but
        not yet through here (a burst arrives faster than the loop greets) or already refused
        must not, or a burst just over the limit would refuse everyone. Check and insert run
        without an await between them, so the count is exact on one event loop.
        """
        peer: Any = session.relay_session().peer
        host = peer[0] if isinstance(peer, tuple) else None
        try:
            address = ipaddress.ip_address(host.split("%")[0]) if host else None
        except ValueError:
            address = None
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        if address is None or not any(address in net for net in self.networks):
            metrics.REFUSED.labels(RefusalReason.NETWORK).inc()
            log.warning("refused connection from %s: not in allowed_networks", host)
            return replies.CLIENT_NOT_ALLOWED
        if len(self.admitted) >= self.settings.max_sessions:
            metrics.REFUSED.labels(RefusalReason.MAX_SESSIONS).inc()
            log.warning("refused connection from %s: %d sessions active", host, len(self.admitted))
            return replies.TOO_MANY_SESSIONS
        self.admitted.add(session)
        return None

    def _protocol(self) -> RelaySMTP:
        return RelaySMTP(
            self.handler,
            listener=self,
            hostname=self.settings.hostname,
            ident="bouncegw ESMTP",
            data_size_limit=self.settings.max_message_size,
            enable_SMTPUTF8=True,
            tls_context=self.tls_context,
            require_starttls=self.settings.require_tls,
            timeout=self.settings.command_timeout,
            auth_required=self.settings.require_auth,
            auth_require_tls=True,
            authenticator=self.authenticator,
            command_call_limit=COMMAND_LIMITS,
            loop=asyncio.get_running_loop(),
        )

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self, sock: socket.socket | None = None) -> None:
        loop = asyncio.get_running_loop()
        if sock is not None:  # bound and listening already (gateway.startup.bind)
            self.server = await loop.create_server(self._protocol, sock=sock, backlog=LISTEN_BACKLOG)
        else:
            host, port = parse_host_port(self.settings.listen)
            self.server = await loop.create_server(
                self._protocol, host=host, port=port, reuse_address=True, backlog=LISTEN_BACKLOG
            )

    @property
    def port(self) -> int:
        assert self.server is not None
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        """Run a background coroutine that must not be garbage-collected or lost at shutdown."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def session_closed(self, session: RelaySMTP) -> None:
        self.sessions.discard(session)
        self.admitted.discard(session)
        self._changed.set()

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        self._changed.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed", exc_info=task.exception())

    async def stop(self, grace_period: float) -> None:
        """Stop accepting, let transactions in flight finish, then close what is left."""
        if self.server is not None:
            self.server.close()
        for session in list(self.sessions):
            session.shutdown()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_period
        while (self.sessions or self._tasks) and loop.time() < deadline:
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), deadline - loop.time())
        for session in list(self.sessions):
            if session.transport is not None:
                log.warning("%r still busy after the grace period; closing", session.relay_session().peer)
                session.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.server is not None:
            await self.server.wait_closed()
