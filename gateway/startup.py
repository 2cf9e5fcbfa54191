"""Start-up checks that ``bouncegw serve`` makes once, before any worker starts.

A gateway that cannot work should say so at once, in one line that names the setting, its value
and what to do, and exit non-zero: a supervisor (systemd's ``Restart=on-failure``, a Kubernetes
restart policy) then sees a failure instead of a process that restarts its workers forever.

:func:`bind` claims the SMTP and admin addresses. It binds them once, without ``SO_REUSEPORT``,
so a second gateway on an address already served fails here with ``EADDRINUSE``; the workers
inherit these listening sockets (as pre-fork servers do), so several workers still serve one port.
:func:`preflight` checks what the workers will need (the Maildir, the journal directory, the
database URL's dialect and driver, a SQLite file's permissions) without changing anything that
``serve`` itself would not create anyway.

Nothing here imports :mod:`gateway.metrics` (or a module that does): in multiprocess mode the
metrics directory must be chosen before that import.
"""

from __future__ import annotations

import errno
import os
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

from gateway.config import FLAG_KEYS, Settings, parse_host_port

#: Exit status of a worker that could not start (sysexits.h EX_CONFIG): the supervisor gives up
#: instead of restarting it, since the next attempt would fail the same way.
EX_STARTUP = 78
#: Connections the kernel queues before a worker accepts them (asyncio's default is 100).
LISTEN_BACKLOG = 1024


class FatalError(Exception):
    """The gateway cannot start or go on; the message is the one line the operator reads."""


def setting(key: str) -> str:
    """``section.key``, with the ``serve`` flag that also sets it: ``next_hop.address / --next-hop``."""
    for flag, (section, name) in FLAG_KEYS.items():
        if f"{section}.{name}" == key:
            return f"{key} / --{flag.replace('_', '-')}"
    return key


def _reason(exc: OSError) -> str:
    return (exc.strerror or str(exc)).lower()


@dataclass
class Sockets:
    """The listening SMTP and admin sockets, and the addresses they are bound to (port 0 resolved)."""

    smtp: socket.socket
    http: socket.socket
    listen: str
    admin: str

    def close(self) -> None:
        self.smtp.close()
        self.http.close()


def listening_socket(address: str, key: str) -> socket.socket:
    """A TCP socket bound to ``address`` and listening; :class:`FatalError` naming ``key`` if not."""
    host, port = parse_host_port(address)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on sockets whose proto says TCP,
    # and without it every reply waits for Nagle and delayed ACKs (~40 ms a message).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        # SO_REUSEADDR only lets a restart bind over connections in TIME_WAIT; on Linux it never
        # lets two sockets listen on one address. No SO_REUSEPORT: that would let a second
        # gateway share the port silently and take half of the connections.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise FatalError(
                f"cannot listen on {address} (setting {setting(key)}): the address is already in use, by "
                "another bouncegw or another program; stop it or choose another address"
            ) from None
        raise FatalError(
            f"cannot listen on {address} (setting {setting(key)}): {_reason(exc)}; "
            "choose an address of this host"
        ) from None
    return sock


def bound_address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def bind(settings: Settings) -> Sockets:
    """Claim the SMTP and admin addresses (see the module docstring)."""
    smtp = listening_socket(settings.listener.listen, "listener.listen")
    try:
        http = listening_socket(settings.admin.http, "admin.http")
    except FatalError:
        smtp.close()
        raise
    return Sockets(smtp, http, bound_address(smtp), bound_address(http))


def _writable_dir(path: Path, key: str, value: str, what: str) -> None:
    """Create ``path`` if needed and prove a file can be created in it (root included)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        # A real file, not os.access(): access() says yes to root on a read-only mount or /proc.
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise FatalError(
            f"{setting(key)} = {value!r}: cannot write {what} {path}: {_reason(exc)}; "
            "make it writable by the gateway's user or choose another path"
        ) from None


def check_maildir(settings: Settings) -> None:
    maildir = settings.next_hop.maildir
    if maildir is None:
        return
    for sub in ("tmp", "new", "cur"):
        _writable_dir(maildir / sub, "next_hop.address", settings.next_hop.address, "the Maildir folder")


def worker_journal(path: Path, index: int) -> Path:
    """The journal of worker ``index`` with ``--workers N``: ``<stem>.w<index><suffix>``."""
    return path.with_name(f"{path.stem}.w{index}{path.suffix}")


def check_journal(settings: Settings) -> None:
    """The journal directory is writable and no other gateway owns the journals this one will use."""
    from storage.journal import in_use

    path = settings.storage.journal_path
    _writable_dir(path.parent, "storage.journal_path", str(path), "the journal directory")
    workers = settings.listener.workers
    paths = [path] if workers == 1 else [worker_journal(path, i) for i in range(workers)]
    for journal in paths:
        if in_use(journal):
            raise FatalError(
                f"{setting('storage.journal_path')} = {str(path)!r}: the journal {journal} is in use by "
                "another bouncegw process; stop that one, or give each gateway its own storage.journal_path"
            )


def check_database(settings: Settings) -> None:
    """The driver is installed and an SQLite file is writable (reachability is not checked here)."""
    from sqlalchemy.engine import make_url

    url = make_url(settings.database.url)
    safe = url.render_as_string(hide_password=True)
    try:
        url.get_dialect().import_dbapi()
    except ImportError as exc:
        raise FatalError(
            f"{setting('database.url')} = {safe!r}: its driver is not installed ({exc.name}); "
            "use sqlite:///PATH or postgresql://USER@HOST/DATABASE"
        ) from None
    if url.get_backend_name() != "sqlite":
        return
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database)
    # SQLite writes the file and, next to it, its -wal and -shm files (WAL mode).
    _writable_dir(path.parent, "database.url", safe, "the directory of the SQLite database")
    if path.exists():
        try:
            with path.open("r+b"):
                pass
        except OSError as exc:
            raise FatalError(
                f"{setting('database.url')} = {safe!r}: cannot write the SQLite database {path}: "
                f"{_reason(exc)}; make it writable by the gateway's user or choose another path"
            ) from None


def check_tls(settings: Settings) -> None:
    """The STARTTLS certificate and key load (a missing or mismatched file fails every worker)."""
    import ssl

    cert, key = settings.listener.tls_cert, settings.listener.tls_key
    if cert is None or key is None:
        return
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        reason = _reason(exc) if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise FatalError(
            f"listener.tls_cert = {str(cert)!r}, listener.tls_key = {str(key)!r}: cannot load them: "
            f"{reason}; give a readable PEM certificate chain and its private key"
        ) from None


def preflight(settings: Settings) -> None:
    """Everything a worker needs that can be checked before it starts; :class:`FatalError` if not."""
    check_tls(settings)
    check_maildir(settings)
    check_journal(settings)
    check_database(settings)


def describe(exc: BaseException) -> str:
    """One line for an exception that stopped a start (the traceback is for debug logging only)."""
    from storage.db import SchemaOutOfDate
    from storage.journal import JournalLocked

    if isinstance(exc, FatalError | SchemaOutOfDate):
        return str(exc)
    if isinstance(exc, JournalLocked):
        return (
            f"{setting('storage.journal_path')}: {exc}; stop the other bouncegw, "
            "or give each gateway its own storage.journal_path"
        )
    if isinstance(exc, OSError):
        where = f" {exc.filename}:" if exc.filename else ""
        return f"cannot start:{where} {_reason(exc)}"
    # Driver messages run over several lines (SQLAlchemy adds a "Background on this error" one).
    first = next(iter(str(exc).strip().splitlines()), "")
    return f"cannot start: {type(exc).__name__}: {first}"


def die_with_parent(parent: int) -> None:
    """Make this (worker) process get SIGTERM when ``parent`` dies, even by SIGKILL.

    Linux: ``prctl(PR_SET_PDEATHSIG)``. Elsewhere, or if that fails, a thread watches
    ``os.getppid()``. Either way an orphaned worker stops gracefully and frees the port, so a
    restarted gateway never finds orphans answering on its address.
    """
    import ctypes
    import signal
    import sys
    import threading
    import time

    if sys.platform == "linux":
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            pr_set_pdeathsig = 1  # <linux/prctl.h>
            if libc.prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0) == 0:
                # The parent may have died between fork() and prctl(): then nobody sends it.
                if os.getppid() != parent:
                    os.kill(os.getpid(), signal.SIGTERM)
                return
        except (OSError, AttributeError):
            pass

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
