"""``bouncegw scan`` against Sisimai on the same mbox: messages per second, and what each found.

The archive is every corpus sample the tests use, the suite's family bounces and ordinary mail,
repeated until it holds about :data:`TARGET_MESSAGES` messages. Both tools run as whole processes
(start-up included, as an admin would run them), best of :data:`REPS` runs, interleaved so that
background load hits both. Sisimai is Debian's ``libsisimai-perl`` (installed here when missing).

Agreement: for each family recipient bouncegw reports, what Sisimai says of the same recipient
(its delivery status and reason): Sisimai knows no "sender not authenticated", so the point is
what it calls these ("rejected", "securityerror", "onhold"...), and whether both saw the recipient.

``python -m tests.benchmarks.scan`` runs it alone; ``make bench`` runs it after the relay figures.
"""

from __future__ import annotations

import json
import mailbox
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from tests.benchmarks import messages

REPS = int(os.environ.get("BENCH_REPS", "2")) + 1
TARGET_MESSAGES = int(os.environ.get("BENCH_SCAN_MESSAGES", "5000"))

SISIMAI = r"""
use Sisimai;
my $found = Sisimai->make($ARGV[0], 'delivered' => 1) || [];
for my $e (@$found) {
    print join("\t", lc($e->recipient->address), $e->deliverystatus // '', $e->reason // ''), "\n";
}
"""


def sisimai_available() -> bool:
    probe = ["perl", "-MSisimai", "-e", "1"]
    if subprocess.run(probe, capture_output=True).returncode == 0:
        return True
    if shutil.which("apt-get") and os.geteuid() == 0:
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "libsisimai-perl"],
            capture_output=True,
            env=os.environ | {"DEBIAN_FRONTEND": "noninteractive"},
        )
    return subprocess.run(probe, capture_output=True).returncode == 0


def corpus_messages() -> list[bytes]:
    from tests.corpus_table import samples
    from tests.positives import NEGATIVES, POSITIVES

    corpus = [s.path.read_bytes() for s in samples() if s.path.is_file()]
    return corpus + [p.data for p in POSITIVES] + [n.data for n in NEGATIVES] + [messages.ordinary(5 * 1024)]


def build_mbox(path: Path) -> int:
    base = corpus_messages()
    box = mailbox.mbox(path)
    count = 0
    while count < TARGET_MESSAGES:
        for data in base:
            box.add(data)
            count += 1
    box.close()
    return count


def timed(argv: list[str]) -> tuple[float, str]:
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
    elapsed = time.monotonic() - started
    if done.returncode not in (0, 1):
        raise RuntimeError(f"{argv[0]} failed ({done.returncode}): {done.stderr.strip()[-300:]}")
    return elapsed, done.stdout


def run(tmp: Path) -> dict[str, Any]:
    archive = tmp / "archive.mbox"
    count = build_mbox(archive)
    bouncegw = [sys.executable, "-m", "gateway", "scan", "--format", "jsonl", str(archive)]
    sisimai = ["perl", "-e", SISIMAI, str(archive)] if sisimai_available() else None
    best: dict[str, float] = {}
    outputs: dict[str, str] = {}
    for _ in range(REPS):
        for name, argv in (("bouncegw", bouncegw), ("sisimai", sisimai)):
            if argv is None:
                continue
            elapsed, out = timed(argv)
            best[name] = min(best.get(name, elapsed), elapsed)
            outputs[name] = out
    ours = [json.loads(line) for line in outputs["bouncegw"].splitlines()]
    result: dict[str, Any] = {
        "messages": count,
        "archive_bytes": archive.stat().st_size,
        "cores": os.cpu_count(),
        "bouncegw": {"seconds": best["bouncegw"], "rate": count / best["bouncegw"], "family": len(ours)},
    }
    if sisimai is None:
        result["sisimai"] = "unavailable (Debian package libsisimai-perl)"
        return result
    theirs: dict[str, list[tuple[str, str]]] = {}
    for line in outputs["sisimai"].splitlines():
        address, status, reason = [*line.split("\t"), "", ""][:3]
        theirs.setdefault(address, []).append((status, reason))
    said: Counter[str] = Counter()
    for row in ours:
        seen = theirs.get(row["recipient"] or "")
        said[f"{seen[0][1] or '?'}" if seen else "not found"] += 1
    result["sisimai"] = {
        "seconds": best["sisimai"],
        "rate": count / best["sisimai"],
        "bounced_recipients": sum(len(v) for v in theirs.values()),
        "says_of_the_family": dict(said.most_common()),
    }
    result["ratio"] = result["bouncegw"]["rate"] / result["sisimai"]["rate"]
    return result


def report(result: dict[str, Any]) -> None:
    print(f"scan: {result['messages']} messages ({result['archive_bytes'] / 1e6:.1f} MB mbox)")
    ours = result["bouncegw"]
    family = f"{ours['family']} family recipients"
    print(f"  bouncegw scan  {ours['rate']:8.0f} msg/s  ({ours['seconds']:.1f} s, {family})")
    theirs = result["sisimai"]
    if isinstance(theirs, str):
        print(f"  sisimai        {theirs}")
        return
    print(f"  sisimai        {theirs['rate']:8.0f} msg/s  ({theirs['seconds']:.1f} s)")
    print(f"  ratio          {result['ratio']:.2f}x")
    print(
        "  what Sisimai calls the family recipients: "
        + ", ".join(f"{k} {v}" for k, v in theirs["says_of_the_family"].items())
    )


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bouncegw-scan-bench-"))
    try:
        result = run(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report(result)


if __name__ == "__main__":
    main()
