"""The built wheel, installed into a fresh virtual environment away from the source tree, works.

What an operator gets from ``pip install``: the wheel is built from a copy of the source, installed
(not editable, pinned with constraints.txt) into a new venv in a temporary directory, and run from
there: ``bouncegw serve`` relays and explains a family bounce to a recording next hop and records
the incident (templates, migrations and alembic.ini all come from the wheel), and ``bouncegw
explain --json`` reads a sample. Slow (about a minute: it installs every runtime dependency);
deselect with ``-m 'not wheel'``.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import smtplib
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.explain_checks import human_texts
from tests.positives import POSITIVES, Positive
from tests.processes import free_port, start_serve, wait_until
from tests.recording_server import RecordingServer

pytestmark = pytest.mark.wheel

ROOT = Path(__file__).resolve().parents[1]
#: Never part of the build input: local environments, caches, build output, the test suite.
_NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv*", "var", "build", "dist", "tests", "bench-results", "*.egg-info", "__pycache__", ".*cache"
)
#: A family bounce with one expected recipient.
SAMPLE: Positive = next(p for p in POSITIVES if len(p.expected) == 1)


@dataclass(frozen=True)
class Installed:
    root: Path  # the temporary directory everything runs in
    bin: Path  # the fresh venv's bin directory

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bin / "bouncegw"), *args],
            cwd=self.root,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def clean_env() -> dict[str, str]:
    """This process's environment without what points back at the checkout or its venv."""
    drop = {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "PYTHONSTARTUP"}
    return {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("BOUNCEGW_")}


def _run(cmd: list[str], cwd: Path) -> None:
    proc = subprocess.run(
        cmd, cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=900, check=False
    )
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    shutil.copytree(ROOT, source, ignore=_NOT_SOURCE)
    dist = root / "dist"
    # pip builds in an isolated environment with pyproject.toml's build requirements.
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(dist), str(source)], root)
    (wheel,) = dist.glob("bouncegw-*.whl")
    shutil.rmtree(source)  # nothing below may find the sources
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], root)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", "--quiet"]
    _run([*pip, "--constraint", str(ROOT / "constraints.txt"), str(wheel)], root)
    return Installed(root=root, bin=venv / "bin")


def test_the_package_comes_from_the_venv(installed: Installed) -> None:
    code = "import gateway, storage; print(gateway.__file__); print(storage.__file__)"
    proc = subprocess.run(
        [str(installed.bin / "python"), "-c", code],
        cwd=installed.root,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    site = (installed.bin.parent / "lib").resolve()
    for line in proc.stdout.splitlines():
        assert Path(line).resolve().is_relative_to(site), line


async def test_installed_serve_relays_explains_and_records(
    installed: Installed, hop: RecordingServer
) -> None:
    port = free_port()
    # start_serve starts from this environment: an empty PYTHONPATH adds nothing to sys.path.
    proc = await start_serve(
        installed.root,
        hop.address,
        port=port,
        program=[str(installed.bin / "bouncegw")],
        env={"PYTHONPATH": ""},
    )
    try:

        def send() -> dict[str, tuple[int, bytes]]:
            with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
                return client.sendmail("", ["sender@example.org"], SAMPLE.data)

        assert await asyncio.to_thread(send) == {}
        await wait_until(lambda: len(hop.messages) == 1, "the relayed bounce")
    finally:
        proc.terminate()
        _, err = await proc.communicate()
    assert proc.returncode == 0, err.decode(errors="replace")
    out = hop.messages[0].message
    assert out.startswith(b"X-Bouncegw-Explained: ")
    # the explanation block comes from the wheel's templates (en and ja)
    plain = " ".join(" ".join(human_texts(out)["text/plain"]).split())
    assert "メッセージは配信されませんでした" in plain
    assert SAMPLE.expected[0][0] in plain

    listed = installed.run(
        "incidents", "list", "--database", f"sqlite:///{installed.root / 'gw.sqlite3'}", "--format", "json"
    )
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [(r["failed_recipient"], r["status"]) for r in rows] == [
        (rcpt, status) for rcpt, status, _, _ in SAMPLE.expected
    ]


def test_installed_explain_json(installed: Installed) -> None:
    sample = installed.root / "sample.eml"
    sample.write_bytes(SAMPLE.data)
    proc = installed.run("explain", "--json", str(sample))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["is_bounce"] is True
    assert [
        (r["recipient"], r["status"], r["category"], r["variant"])
        for r in report["recipients"]
        if r["category"]
    ] == [tuple(e) for e in SAMPLE.expected]
