"""Two OS processes writing to one database at once (scale-out), on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from storage.repository import IncidentFilter, Repository

pytest_plugins = ["tests.storage_fixtures"]

ROOT = Path(__file__).resolve().parents[2]


def test_two_processes_write_concurrently(repo: Repository, migrated_url: str, tmp_path: Path) -> None:
    n = 200
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.storage_writer",
                migrated_url,
                str(tmp_path / f"j{tag}.jsonl"),
                tag,
                str(n),
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for tag in ("a", "b")
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
        assert "journaled=0 errors=0" in out, out  # every write reached the database directly
    # n shared bounces stored once, plus n of each writer's own.
    assert repo.count(IncidentFilter()) == 3 * n
    stored = [int(out.split()[0].split("=")[1]) for out, _ in outputs]
    assert sum(stored) == 3 * n
