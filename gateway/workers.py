"""Several worker processes serving one SMTP port (and one admin port).

One Python process saturates one core, so ``--workers N`` forks N workers,
each with its own event loop and its own listening sockets bound to the same
addresses with ``SO_REUSEPORT``: the kernel spreads new connections over them
by a hash of the connection's addresses. The supervisor (the parent) only
reserves the ports, starts the workers, restarts one that dies, and on
SIGTERM/SIGINT passes SIGTERM on and waits for every worker's graceful stop.

What is per worker and what is shared:
- SMTP sessions, the next-hop pool and the recorder's batching are per worker;
- the incident journal is per worker (a journal is owned by one process):
  worker ``i`` uses ``<journal stem>.w<i><suffix>``;
- Prometheus metrics are written to a shared multiprocess directory and the
  admin port's ``/metrics`` (answered by any worker) shows their sum;
- the database is shared (idempotent inserts keep it exactly-once).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import tempfile
import time
from pathlib import Path
from types import FrameType

from gateway.config import Settings, parse_host_port

log = logging.getLogger(__name__)

#: A worker that dies sooner than this after its start is restarted only after a pause,
#: so a configuration that cannot work does not turn into a fork loop.
RESTART_BACKOFF = 2.0


def reuseport_socket(address: str, *, listen: bool) -> socket.socket:
    """A TCP socket bound to ``address`` with SO_REUSEPORT (and listening if asked)."""
    host, port = parse_host_port(address)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on sockets whose proto says TCP,
    # and without it every reply waits for Nagle and delayed ACKs (~40 ms a message).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    if listen:
        sock.listen(1024)
        sock.setblocking(False)
    return sock


def _bound(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def worker_settings(settings: Settings, index: int, listen: str, http: str) -> Settings:
    """The settings of worker ``index``: fixed ports, its own journal."""
    journal = settings.storage.journal_path
    return settings.model_copy(
        update={
            "listener": settings.listener.model_copy(update={"listen": listen}),
            "admin": settings.admin.model_copy(update={"http": http}),
            "storage": settings.storage.model_copy(
                update={"journal_path": journal.with_name(f"{journal.stem}.w{index}{journal.suffix}")}
            ),
        }
    )


STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def _worker_main(settings: Settings) -> None:
    # The worker starts with SIGTERM/SIGINT blocked (see ``start`` below) and the supervisor's
    # handlers; run() installs the graceful ones and only then unblocks, so a SIGTERM that
    # arrives during start-up is a graceful stop, not a kill.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    from gateway.app import run

    # Bound, not listening: asyncio and uvicorn listen once the worker is ready to serve. A
    # listening socket queues connections at once, and a worker that then failed to start
    # would reset them all when it exits; until then the kernel sends them to the others.
    smtp = reuseport_socket(settings.listener.listen, listen=False)
    http = reuseport_socket(settings.admin.http, listen=False)
    asyncio.run(run(settings, smtp_socket=smtp, http_socket=http))


def supervise(settings: Settings, workers: int) -> int:
    """Run ``workers`` processes until SIGTERM/SIGINT; return the exit status."""
    from gateway import metrics
    from storage.db import check_schema_unless_down

    # Once, before any worker: two workers creating or upgrading an embedded SQLite schema at
    # the same moment would race (each worker's own check then finds it up to date). A database
    # server that is down is not fatal: the workers start and journal (each says so itself).
    check_schema_unless_down(settings.database.url)
    # Port 0 becomes a real port here, once, so every worker binds the same one. The
    # reserving sockets stay bound (not listening: the kernel routes nothing to them).
    smtp_reserved = reuseport_socket(settings.listener.listen, listen=False)
    http_reserved = reuseport_socket(settings.admin.http, listen=False)
    listen, http = _bound(smtp_reserved), _bound(http_reserved)
    context = multiprocessing.get_context("fork")
    procs: dict[int, multiprocessing.process.BaseProcess] = {}
    started: dict[int, float] = {}
    stopping = False

    def start(index: int) -> None:
        proc = context.Process(
            target=_worker_main,
            args=(worker_settings(settings, index, listen, http),),
            name=f"bouncegw-worker-{index}",
            daemon=False,
        )
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            proc.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        procs[index] = proc
        started[index] = time.monotonic()
        log.info("worker %d started", index, extra={"pid": proc.pid, "listen": listen, "http": http})

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for proc in procs.values():
            if proc.pid is not None and proc.is_alive():
                os.kill(proc.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    for index in range(workers):
        start(index)
    status = 0
    while procs:
        sentinels = {proc.sentinel: index for index, proc in procs.items()}
        ready = multiprocessing.connection.wait(list(sentinels), timeout=1.0)
        for sentinel in ready:
            index = sentinels[sentinel]  # type: ignore[index]
            proc = procs.pop(index)
            proc.join()
            if proc.pid is not None:
                metrics.worker_exited(proc.pid)
            if stopping:
                log.info("worker %d stopped", index, extra={"exit_code": proc.exitcode})
                if proc.exitcode != 0:
                    status = 1
                continue
            log.error(
                "worker %d exited unexpectedly; restarting it", index, extra={"exit_code": proc.exitcode}
            )
            if time.monotonic() - started[index] < RESTART_BACKOFF:
                time.sleep(RESTART_BACKOFF)
            if not stopping:
                start(index)
    smtp_reserved.close()
    http_reserved.close()
    return status


def use_multiprocess_metrics() -> None:
    """Point prometheus-client at a fresh shared directory; must run before gateway.metrics is imported."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    directory = Path(path) if path else Path(tempfile.mkdtemp(prefix="bouncegw-metrics-"))
    directory.mkdir(parents=True, exist_ok=True)  # prometheus-client needs it at import
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    from gateway import metrics

    metrics.prepare_multiprocess_dir(directory)
