"""A throwaway PostgreSQL cluster made with Debian's ``pg_createcluster`` and driven by ``pg_ctlcluster``.

This is the tool set production hosts use (the issue asks for ``pg_ctlcluster``). The cluster gets
a unique name and a free port, never starts at boot (``--start-conf manual``) and is dropped with
``pg_dropcluster`` afterwards; the machine's main cluster is never touched.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import uuid
from pathlib import Path

from tests.processes import free_port


def pg_ctlcluster_available() -> bool:
    return all(shutil.which(tool) for tool in ("pg_createcluster", "pg_ctlcluster", "pg_dropcluster"))


def _version() -> str:
    versions = sorted(
        (p.name for p in Path("/usr/lib/postgresql").glob("*") if (p / "bin" / "postgres").exists()),
        key=lambda v: int(v.split(".")[0]),
    )
    if not versions:
        raise RuntimeError("no PostgreSQL server binaries under /usr/lib/postgresql")
    return versions[-1]


class DebianCluster:
    def __init__(self) -> None:
        self.version = _version()
        self.name = "bgwchaos" + uuid.uuid4().hex[:8]
        self.port = free_port()
        self._run(
            "pg_createcluster",
            "--start-conf",
            "manual",
            "-p",
            str(self.port),
            "-o",
            "listen_addresses=localhost",  # loopback only (a dotted value is mis-quoted by pg_createcluster)
            "-o",
            "fsync=off",
            self.version,
            self.name,
            "--",
            "-A",
            "trust",
            "--no-sync",
        )

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    @staticmethod
    def _run(*argv: str) -> None:
        done = subprocess.run(list(argv), capture_output=True, timeout=120, check=False)
        if done.returncode != 0:
            raise subprocess.CalledProcessError(done.returncode, argv, done.stdout, done.stderr)

    def start(self) -> None:
        self._run("pg_ctlcluster", self.version, self.name, "start")

    def stop(self) -> None:
        # immediate: the server vanishes as in a crash (open connections are cut).
        self._run("pg_ctlcluster", "-m", "immediate", self.version, self.name, "stop")

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run("pg_dropcluster", "--stop", self.version, self.name)
