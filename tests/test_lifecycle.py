"""Starting and failing like a service: one instance per address, one-line fatal errors, exit status.

Everything here runs the real ``bouncegw`` command as a process and reads what an operator reads:
its exit status and its stderr.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import smtplib
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from storage.db import upgrade
from storage.repository import Repository
from tests.conftest import need
from tests.processes import free_port, run_bouncegw, start_serve
from tests.recording_server import RecordingServer
from tests.smtp_client import MESSAGE
from tests.storage_builders import records_for

pytest_plugins = ["tests.storage_fixtures"]


def one_line(err: str) -> str:
    """The operator's view of a failed start: exactly one line, no traceback."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def send(port: int, count: int) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        for _ in range(count):
            smtp.sendmail("a@example.org", ["b@example.com"], MESSAGE)


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 60)


def serve_args(port: int, http: int, *extra: str) -> list[str]:
    return ["serve", "--listen", f"127.0.0.1:{port}", "--http", f"127.0.0.1:{http}", *extra]


@pytest.mark.parametrize("workers", [1, 2])
async def test_a_second_gateway_on_a_served_address_fails_at_once(
    hop: RecordingServer, tmp_path: Path, workers: int
) -> None:
    port, http = free_port(), free_port()
    first = await start_serve(
        tmp_path, "maildir:outbox", port=port, http=f"127.0.0.1:{http}", workers=workers
    )
    try:
        # The same command again, in the same directory (a second `make run`): the SMTP address.
        code, _, err = await run_bouncegw(
            *serve_args(port, free_port(), "--workers", str(workers), "--next-hop", hop.address),
            cwd=tmp_path,
        )
        line = one_line(err)
        assert code == 1
        assert f"127.0.0.1:{port}" in line and "listener.listen" in line and "already in use" in line
        # Another SMTP port, the same admin port.
        code, _, err = await run_bouncegw(
            *serve_args(free_port(), http, "--workers", str(workers), "--next-hop", hop.address),
            cwd=tmp_path,
        )
        line = one_line(err)
        assert code == 1 and f"127.0.0.1:{http}" in line and "admin.http" in line
        # Every message still goes to the first gateway (no SO_REUSEPORT sharing).
        await asyncio.to_thread(send, port, 10)
        assert len(list((tmp_path / "outbox" / "new").iterdir())) == 10
        assert hop.messages == []
    finally:
        await stop(first)
    assert first.returncode == 0


async def test_a_second_gateway_leaves_the_first_ones_metrics_alone(tmp_path: Path) -> None:
    metrics_dir = tmp_path / "metrics"
    env = {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    port, http = free_port(), free_port()
    first = await start_serve(
        tmp_path, "maildir:outbox", port=port, http=f"127.0.0.1:{http}", workers=2, env=env
    )
    try:
        await asyncio.to_thread(send, port, 3)
        files = sorted(p.name for p in metrics_dir.iterdir())
        assert files  # the workers' counters live here
        code, _, err = await run_bouncegw(
            *serve_args(port, free_port(), "--workers", "2", "--next-hop", "maildir:outbox"),
            cwd=tmp_path,
            env=env,
        )
        assert code == 1 and "already in use" in one_line(err)
        # The mistaken second start did not empty the running gateway's metrics directory.
        assert set(files) <= {p.name for p in metrics_dir.iterdir()}
    finally:
        await stop(first)


async def test_a_second_gateway_on_the_same_journals_fails_before_its_workers(tmp_path: Path) -> None:
    first = await start_serve(tmp_path, "maildir:outbox", port=free_port(), workers=2)
    try:
        code, _, err = await run_bouncegw(
            *serve_args(free_port(), free_port(), "--workers", "2", "--next-hop", "maildir:outbox"),
            cwd=tmp_path,
        )
        line = one_line(err)  # one line: no worker started
        assert code == 1
        assert "storage.journal_path" in line and "incidents.w0.jsonl" in line and "in use" in line
    finally:
        await stop(first)


def _sqlite_dir_as_file(tmp_path: Path) -> str:
    (tmp_path / "afile").write_text("")
    return f"sqlite:///{tmp_path / 'afile' / 'gw.sqlite3'}"


def _missing_tls_files(tmp_path: Path) -> str:
    config = tmp_path / "bouncegw.toml"
    config.write_text('[listener]\ntls_cert = "missing.pem"\ntls_key = "missing.key"\n')
    return str(config)


#: (flags, words the one line must hold), each run with 1 and with 2 workers.
FATAL_STARTS: dict[str, tuple[Callable[[Path], list[str]], tuple[str, ...]]] = {
    "read-only maildir": (
        lambda _: ["--next-hop", "maildir:/proc/outbox"],
        ("next_hop.address", "/proc/outbox"),
    ),
    "next hop given as a URL": (
        lambda _: ["--next-hop", "smtp://127.0.0.1:25"],
        ("next_hop.address", "smtp://127.0.0.1:25", "127.0.0.1:25", "--next-hop"),
    ),
    "unsupported dialect": (
        lambda _: ["--database", "mysql://bouncegw@127.0.0.1/bouncegw"],
        ("database.url", "unsupported database dialect", "'mysql'"),
    ),
    "sqlite path under a file": (
        lambda tmp: ["--database", _sqlite_dir_as_file(tmp)],
        ("database.url", "afile"),
    ),
    "TLS files that do not load": (
        lambda tmp: ["--config", _missing_tls_files(tmp)],
        ("listener.tls_cert", "missing.pem", "no such file"),
    ),
    "listener address that is not one": (
        lambda _: ["--listen", "mail.example:25:25"],
        ("listener.listen", "mail.example:25:25"),
    ),
}


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("case", sorted(FATAL_STARTS))
async def test_fatal_start_up_errors_are_one_line(tmp_path: Path, case: str, workers: int) -> None:
    flags, words = FATAL_STARTS[case]
    args = ["serve", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--next-hop", "maildir:out"]
    code, _, err = await run_bouncegw(*args, "--workers", str(workers), *flags(tmp_path), cwd=tmp_path)
    line = one_line(err)
    assert code == 1
    for word in words:
        assert word in line, line


#: <linux/capability.h>: the capabilities that let root write a file its mode forbids.
CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 1, 2
PR_CAPBSET_DROP = 24  # <linux/prctl.h>


def _without_root_override() -> None:
    """In the child before exec: root then obeys file modes like any user (its bounding set loses them)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


@pytest.fixture
def unwritable_sqlite(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """A read-only SQLite file, and how to start a gateway that must respect that (root too)."""
    database = tmp_path / "gw.sqlite3"
    upgrade(f"sqlite:///{database}")
    database.chmod(0o444)
    kwargs: dict[str, Any] = {"cwd": tmp_path}
    if os.geteuid() == 0:
        kwargs["preexec_fn"] = _without_root_override
    return database, kwargs


@pytest.mark.parametrize("workers", [1, 2])
async def test_an_unwritable_sqlite_file_is_one_line(
    unwritable_sqlite: tuple[Path, dict[str, Any]], workers: int
) -> None:
    database, how = unwritable_sqlite
    code, _, err = await run_bouncegw(
        "serve", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--next-hop", "maildir:out",
        "--workers", str(workers), "--database", f"sqlite:///{database}",
        **how,
    )  # fmt: skip
    line = one_line(err)
    assert code == 1
    assert "database.url" in line and str(database) in line and "permission denied" in line


async def test_postgres_urls_are_an_alias_of_postgresql(
    hop: RecordingServer, pg_schema_url: str, tmp_path: Path
) -> None:
    upgrade(pg_schema_url)
    repo = Repository.from_url(pg_schema_url)
    try:
        repo.record(records_for(3))
    finally:
        repo.close()
    scheme, rest = pg_schema_url.split("://", 1)
    assert scheme == "postgresql+psycopg"
    for alias in ("postgres", "postgresql"):
        code, out, err = await run_bouncegw(
            "incidents", "list", "--format", "tsv", "--database", f"{alias}://{rest}", cwd=tmp_path
        )
        assert code == 0, err
        assert len(out.splitlines()) == 1 + 3
    port = free_port()
    proc = await start_serve(tmp_path, hop.address, port=port, database=f"postgres://{rest}")
    try:
        await asyncio.to_thread(send, port, 1)
        assert len(hop.messages) == 1
    finally:
        await stop(proc)
    assert proc.returncode == 0


def test_make_run_installs_runtime_dependencies_and_starts_one_worker() -> None:
    need(shutil.which("make") is not None, "make is not installed")
    root = Path(__file__).resolve().parent.parent
    # -n: print the commands without running them; -B: as on a fresh checkout.
    commands = subprocess.run(
        ["make", "-n", "-B", "run"], cwd=root, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    installs = [c for c in commands if "pip install" in c]
    assert len(installs) == 1 and installs[0].endswith(" -e .")  # no [dev] tools
    assert "--quiet" not in installs[0]  # pip's progress shows
    assert any(c.startswith("echo") and "Installing" in c for c in commands)
    serve = [c for c in commands if " serve " in c]
    assert len(serve) == 1 and "--workers 1 " in serve[0]
