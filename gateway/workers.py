"""Several worker processes serving one SMTP port (and one admin port).

One Python process saturates one core, so ``--workers N`` forks N workers, each with its own
event loop. The supervisor (the parent) binds the SMTP and admin addresses once
(:func:`gateway.startup.bind`), then forks: every worker accepts connections from the same
inherited listening sockets, as pre-fork servers do, and an idle worker takes the next one. No
``SO_REUSEPORT``: a second gateway on an address already served fails at once instead of
sharing the port unnoticed.

The supervisor restarts a worker that crashes, after a pause that doubles with each crash in a
row (:data:`RESTART_BACKOFF` up to :data:`RESTART_BACKOFF_MAX`); after :data:`MAX_CRASHES`
crashes in a row, each within :data:`STABLE_AFTER` seconds of the worker's start, it stops every
worker and exits non-zero, so that systemd or Kubernetes see the failure. A worker that cannot
start at all (it exits with :data:`~gateway.startup.EX_STARTUP` after sending its one-line reason
over a pipe) on its first start is not restarted: the supervisor stops and reports that line. A
*restarted* worker that cannot start counts as a crash (the backoff and the limit above apply): the
configuration was good at its first start, so the cause is likely passing (a journal still locked
by the crashed process's last child, a database restarting). On SIGTERM/SIGINT it
passes SIGTERM on and waits for every worker's graceful stop. Workers get SIGTERM when the
supervisor dies, even by SIGKILL (:func:`gateway.startup.die_with_parent`), so no orphan keeps
the port.

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
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType

from gateway.config import Settings
from gateway.startup import EX_STARTUP, FatalError, Sockets, describe, die_with_parent, worker_journal

log = logging.getLogger(__name__)

#: Pause before restarting a worker after its first crash; it doubles with each crash in a row.
RESTART_BACKOFF = 0.5
RESTART_BACKOFF_MAX = 10.0
#: A worker that ran this long before it crashed had been working: its crash count starts again.
STABLE_AFTER = 30.0
#: Crashes in a row (each sooner than STABLE_AFTER after the worker's start) that the supervisor
#: restarts; one more and it gives up. With the backoff above that is about 15 s of trying.
MAX_CRASHES = 5

STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def worker_settings(settings: Settings, index: int, listen: str, http: str) -> Settings:
    """The settings of worker ``index``: the bound addresses, its own journal."""
    journal = settings.storage.journal_path
    return settings.model_copy(
        update={
            "listener": settings.listener.model_copy(update={"listen": listen}),
            "admin": settings.admin.model_copy(update={"http": http}),
            "storage": settings.storage.model_copy(update={"journal_path": worker_journal(journal, index)}),
        }
    )


def _exit_reason(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


def _worker_main(settings: Settings, sockets: Sockets, report: Connection, parent: int) -> None:
    # The worker starts with SIGTERM/SIGINT blocked (see Supervisor.start) and the supervisor's
    # handlers; run() installs the graceful ones and only then unblocks, so a SIGTERM that
    # arrives during start-up is a graceful stop, not a kill.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    die_with_parent(parent)
    from gateway import metrics
    from gateway.app import run

    metrics.process_started()
    debug = log.isEnabledFor(logging.DEBUG)
    try:
        asyncio.run(run(settings, smtp_socket=sockets.smtp, http_socket=sockets.http))
    except FatalError as exc:
        if debug:
            log.debug("start-up failed", exc_info=exc.__cause__ or exc)
        report.send(str(exc))
        sys.exit(EX_STARTUP)
    except Exception as exc:
        # One line; the traceback only with --log-level debug.
        log.error("worker crashed: %s", describe(exc), exc_info=exc if debug else None)
        sys.exit(1)


class Supervisor:
    """Starts, restarts and stops the workers (see the module docstring)."""

    def __init__(self, settings: Settings, workers: int, sockets: Sockets) -> None:
        self.settings = settings
        self.workers = workers
        self.sockets = sockets
        self.context = multiprocessing.get_context("fork")
        self.procs: dict[int, BaseProcess] = {}
        self.reports: dict[int, Connection] = {}
        self.started: dict[int, float] = {}
        self.crashes: dict[int, int] = dict.fromkeys(range(workers), 0)
        self.restart_at: dict[int, float] = {}
        #: Indexes whose current process is a restart (not the worker's first start).
        self.restarted: set[int] = set()
        self.stopping = False
        self.failure: str | None = None
        self.status = 0

    def start(self, index: int) -> None:
        reader, writer = self.context.Pipe(duplex=False)
        proc = self.context.Process(
            target=_worker_main,
            args=(
                worker_settings(self.settings, index, self.sockets.listen, self.sockets.admin),
                self.sockets,
                writer,
                os.getpid(),
            ),
            name=f"bouncegw-worker-{index}",
            daemon=False,
        )
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            proc.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        writer.close()  # the worker has its copy; EOF on the reader once it is gone
        self.procs[index] = proc
        self.reports[index] = reader
        self.started[index] = time.monotonic()
        log.info(
            "worker %d started",
            index,
            extra={"pid": proc.pid, "listen": self.sockets.listen, "http": self.sockets.admin},
        )

    def stop(self) -> None:
        self.stopping = True
        self.restart_at.clear()
        for proc in self.procs.values():
            if proc.pid is not None and proc.is_alive():
                os.kill(proc.pid, signal.SIGTERM)

    def fail(self, message: str) -> None:
        if self.failure is None:
            self.failure = message
        self.stop()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stop()

    def _reap(self, index: int) -> None:
        from gateway import metrics

        proc = self.procs.pop(index)
        proc.join()
        if proc.pid is not None:
            metrics.worker_exited(proc.pid)
        reader = self.reports.pop(index)
        reason: str | None = None
        try:
            if reader.poll():
                reason = str(reader.recv())
        except (EOFError, OSError):
            pass
        finally:
            reader.close()
        if self.stopping:
            log.info("worker %d stopped", index, extra={"exit_code": proc.exitcode})
            if proc.exitcode != 0:
                self.status = 1
            return
        if proc.exitcode == EX_STARTUP:
            if index not in self.restarted:
                # First start: the configuration or the environment is wrong; retrying won't help.
                self.fail(reason or f"worker {index} could not start (see the log above)")
                return
            # It started once with the same settings: treat a failed restart as a crash.
            log.error("worker %d could not restart: %s", index, reason or "see the log above")
        now = time.monotonic()
        lived = now - self.started[index]
        self.crashes[index] = 1 if lived >= STABLE_AFTER else self.crashes[index] + 1
        crashes = self.crashes[index]
        if crashes > MAX_CRASHES:
            self.fail(
                f"worker {index} crashed {crashes} times in a row, each within {STABLE_AFTER:.0f}s of "
                f"its start (last: {_exit_reason(proc.exitcode)}); giving up - the log above says why"
            )
            return
        delay = min(RESTART_BACKOFF * 2 ** (crashes - 1), RESTART_BACKOFF_MAX)
        log.error(
            "worker %d exited unexpectedly (%s); restarting it in %.1fs",
            index,
            _exit_reason(proc.exitcode),
            delay,
            extra={"exit_code": proc.exitcode, "crashes_in_a_row": crashes},
        )
        self.restart_at[index] = now + delay

    def run(self) -> int:
        """Run the workers until SIGTERM/SIGINT; the exit status, or :class:`FatalError` on failure."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        for index in range(self.workers):
            self.start(index)
        while self.procs or self.restart_at:
            now = time.monotonic()
            timeout = min([1.0, *(at - now for at in self.restart_at.values())])
            sentinels = {proc.sentinel: index for index, proc in self.procs.items()}
            if sentinels:
                ready = multiprocessing.connection.wait(list(sentinels), timeout=max(0.0, timeout))
            else:
                time.sleep(max(0.0, timeout))
                ready = []
            for sentinel in ready:
                self._reap(sentinels[sentinel])  # type: ignore[index]
            now = time.monotonic()
            for index, at in list(self.restart_at.items()):
                if at <= now and not self.stopping:
                    del self.restart_at[index]
                    self.restarted.add(index)
                    self.start(index)
        if self.failure is not None:
            raise FatalError(self.failure)
        return self.status


def supervise(settings: Settings, workers: int, sockets: Sockets) -> int:
    """Run ``workers`` processes on the bound ``sockets`` until SIGTERM/SIGINT; the exit status."""
    from storage.db import check_schema_unless_down

    # Once, before any worker: two workers creating or upgrading an embedded SQLite schema at
    # the same moment would race (each worker's own check then finds it up to date). A database
    # server that is down is not fatal: the workers start and journal (each says so itself).
    check_schema_unless_down(settings.database.url)
    return Supervisor(settings, workers, sockets).run()


def use_multiprocess_metrics() -> None:
    """Point prometheus-client at a shared directory; must run before gateway.metrics is imported.

    The directory is only emptied by :func:`empty_multiprocess_metrics`, once this gateway holds
    its addresses: a second gateway started by mistake must not wipe the running one's metrics
    before it finds its address taken.
    """
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    directory = Path(path) if path else Path(tempfile.mkdtemp(prefix="bouncegw-metrics-"))
    directory.mkdir(parents=True, exist_ok=True)  # prometheus-client needs it at import
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)


def empty_multiprocess_metrics() -> None:
    """Empty the shared directory before any worker starts (files of an earlier run would be summed)."""
    from gateway import metrics

    directory = metrics.multiprocess_dir()
    if directory is not None:
        metrics.prepare_multiprocess_dir(directory)
