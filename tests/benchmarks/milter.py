"""Milter mode's cost to Postfix: smtp-source -> Postfix -> smtp-sink, with and without bouncegw.

Two private Postfix instances run side by side from the same site settings; one also has the
lines of ``deploy/postfix/milter.main.cf`` as shipped (port substituted) and a ``bouncegw
milter`` behind them. Both relay everything to one ``smtp-sink``. The measurement is Postfix's
acceptance rate for ordinary mail (smtp-source's wall time for a fixed count; the milter sits
on that path, before the queue), the two instances measured in turn, repetition by repetition,
each after its queue has drained. The figure that matters is the ratio of the two, measured in
the same run (goal: >= 0.9): of the best runs, and the median of each repetition's pair. Beside
it, the CPU time per message of Postfix's processes (and bouncegw's) with and without the
milter, which other work on a shared machine does not move the way it moves rates.

``python -m tests.benchmarks.milter`` runs it alone (root needed: ``postfix -c DIR start``);
``make bench`` runs it after the relay benchmark. ``BENCH_MILTER_COUNT`` (messages per run,
default 2000) and ``BENCH_REPS`` tune it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from tests.benchmarks import messages
from tests.benchmarks.procs import Procs, cpu_seconds, tree, wait_for_port
from tests.postfix_lab import BASE_MASTER_CF, POSTFIX, POSTQUEUE, SHIPPED, stop_postfix
from tests.processes import free_port

ROOT = Path(__file__).resolve().parents[2]
COUNT = int(os.environ.get("BENCH_MILTER_COUNT", "2000"))
#: More repetitions than the relay benchmark: two Postfix instances and bouncegw share the
#: machine's cores with the load generator, and a busy machine moves single runs by +-30%.
REPS = int(os.environ.get("BENCH_MILTER_REPS", "5"))
SESSIONS = int(os.environ.get("BENCH_SESSIONS", "20"))
SIZE = 5 * messages.KIB


def _main_cf(directory: Path, sink_port: int) -> str:
    return textwrap.dedent(f"""\
        compatibility_level = 3.6
        queue_directory = {directory}/queue
        data_directory = {directory}/data
        maillog_file = {directory}/maillog
        maillog_file_prefixes = {directory}
        myhostname = mta.bench.example
        mydestination =
        local_recipient_maps =
        alias_maps =
        alias_database =
        inet_interfaces = loopback-only
        inet_protocols = ipv4
        mynetworks = 127.0.0.1/32
        smtpd_relay_restrictions = permit_mynetworks, reject
        disable_dns_lookups = yes
        relayhost = [127.0.0.1]:{sink_port}
        smtp_tls_security_level = none
        smtpd_tls_security_level = none
        # Measure the SMTP path, not Postfix's back-pressure on a busy queue.
        in_flow_delay = 0
        """)


class Instance:
    """A private Postfix listening on ``port``; with ``milter_port``, the shipped milter lines."""

    def __init__(self, name: str, sink_port: int, milter_port: int | None) -> None:
        self.name = name
        self.port = free_port()
        # Postfix's daemons run as "postfix": a directory of its own, not inside a private one.
        self.root = Path(tempfile.mkdtemp(prefix=f"bouncegw-bench-{name}-"))
        self.root.chmod(0o711)
        (self.root / "etc").mkdir()
        (self.root / "queue").mkdir()
        (self.root / "data").mkdir()
        shutil.chown(self.root / "data", "postfix")
        main_cf = _main_cf(self.root, sink_port)
        if milter_port is not None:
            main_cf += (SHIPPED / "milter.main.cf").read_text().replace("10030", str(milter_port))
        (self.root / "etc" / "main.cf").write_text(main_cf)
        master_cf = BASE_MASTER_CF.format(smtpd_listen=f"127.0.0.1:{self.port}")
        (self.root / "etc" / "master.cf").write_text(master_cf)

    def start(self) -> None:
        done = subprocess.run(
            [POSTFIX, "-c", str(self.root / "etc"), "start"], capture_output=True, text=True
        )
        if done.returncode != 0:
            raise RuntimeError(f"postfix {self.name} did not start: {done.stderr.strip()[-300:]}")

    def stop(self) -> None:
        stop_postfix(self.root / "etc")
        shutil.rmtree(self.root, ignore_errors=True)

    def cpu(self) -> float:
        """CPU seconds Postfix's processes have used so far: the live ones, and those that ended
        (the master has reaped them: its children's time, proc(5) cutime and cstime)."""
        master = int((self.root / "queue" / "pid" / "master.pid").read_text().split()[0])
        fields = Path(f"/proc/{master}/stat").read_text().rsplit(")", 1)[1].split()
        reaped = (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")
        return cpu_seconds(tree(master)) + reaped

    def drain(self, limit: float = 300.0) -> None:
        end = time.monotonic() + limit
        while time.monotonic() < end:
            out = subprocess.run(
                [POSTQUEUE, "-c", str(self.root / "etc"), "-j"], capture_output=True, text=True, check=True
            )
            if not out.stdout.strip():
                return
            time.sleep(0.2)
        raise RuntimeError(f"postfix {self.name}: the queue did not drain in {limit:.0f} s")


def wait_connectable(port: int, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    """Until ``port`` accepts connections (a milter sends no greeting to wait for)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


def smtp_source(port: int, file: Path, count: int) -> float:
    """Seconds for smtp-source to have ``count`` messages accepted by the server on ``port``."""
    argv = ["smtp-source", "-d", "-s", str(SESSIONS), "-m", str(count), "-M", "bench.example"]
    argv += ["-f", "sender@bench.example", "-t", "rcpt@bench.example", "-F", str(file), f"127.0.0.1:{port}"]
    start = time.perf_counter()
    out = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - start
    if out.returncode != 0:
        raise RuntimeError(f"smtp-source failed: {out.stderr.strip()[-300:]}")
    return elapsed


def milter_outcomes(admin_port: int) -> dict[str, float]:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=30) as response:
        text = response.read().decode()
    return {
        m.group(1): float(m.group(2))
        for m in re.finditer(r'^bouncegw_milter_messages_total\{outcome="(\w+)"\} (\S+)$', text, re.M)
    }


def run(tmp: Path) -> dict[str, Any]:
    """Both instances measured in turn; a result dict, or one with ``unavailable`` set."""
    if os.geteuid() != 0 or not Path(POSTFIX).exists() or shutil.which("smtp-source") is None:
        return {"unavailable": "needs root and Postfix (postfix, smtp-source, smtp-sink)"}
    procs = Procs(tmp)
    instances: list[Instance] = []
    try:
        sink_port = free_port()
        sink = procs.start(
            "milter-sink", ["smtp-sink", "-c", "-u", "nobody", f"127.0.0.1:{sink_port}", "1024"]
        )
        wait_for_port(sink_port, sink)
        milter_port, admin_port = free_port(), free_port()
        workdir = tmp / "milter"
        workdir.mkdir()
        bouncegw = [sys.executable, "-m", "gateway", "milter", "--listen", f"inet:127.0.0.1:{milter_port}"]
        bouncegw += [
            "--database",
            f"sqlite:///{workdir / 'bench.sqlite3'}",
            "--http",
            f"127.0.0.1:{admin_port}",
        ]
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "BOUNCEGW_STORAGE__JOURNAL_PATH": str(workdir / "journal" / "incidents.jsonl"),
        }
        milter = procs.start("bouncegw-milter", [*bouncegw, "--log-level", "WARNING"], cwd=workdir, env=env)
        wait_connectable(milter_port, milter)
        plain = Instance("plain", sink_port, None)
        filtered = Instance("milter", sink_port, milter_port)
        instances = [plain, filtered]
        for instance in instances:
            instance.start()
        for instance in instances:
            wait_for_port(instance.port, sink)
        source = messages.write_for_smtp_source(tmp / "milter-ordinary.lf", messages.ordinary(SIZE))
        runs: dict[str, list[float]] = {"plain": [], "milter": []}
        milter_cpu = 0.0
        postfix_cpu = {"plain": 0.0, "milter": 0.0}
        for repetition in range(REPS):
            # Alternate which instance goes first, so a drift in background load hits both.
            for instance in instances if repetition % 2 == 0 else instances[::-1]:
                cpu, own = cpu_seconds(tree(milter.pid)), instance.cpu()
                elapsed = smtp_source(instance.port, source, COUNT)
                instance.drain()  # the delivery to the sink is part of the cost
                postfix_cpu[instance.name] += instance.cpu() - own
                if instance is filtered:
                    milter_cpu += cpu_seconds(tree(milter.pid)) - cpu
                runs[instance.name].append(COUNT / elapsed)
        outcomes = milter_outcomes(admin_port)
    finally:
        for instance in instances:
            instance.stop()
        procs.close()
    rates = {name: max(values) for name, values in runs.items()}
    pairwise = sorted(m / p for p, m in zip(runs["plain"], runs["milter"], strict=True))
    return {
        "messages_per_run": COUNT,
        "size": SIZE,
        "sessions": SESSIONS,
        "repetitions": REPS,
        "postfix_rate": rates["plain"],
        "postfix_with_milter_rate": rates["milter"],
        "ratio": rates["milter"] / rates["plain"],
        # The same repetition's two runs, side by side: the median of their ratios.
        "ratio_median_pairwise": pairwise[len(pairwise) // 2],
        "runs": runs,
        "milter_outcomes": outcomes,
        # bouncegw's CPU time per message it answered (one process: it uses at most one core).
        "milter_cpu_ms_per_message": 1000 * milter_cpu / (COUNT * REPS),
        # CPU per message, which other work on the machine does not move as it moves rates:
        # Postfix alone, and Postfix plus bouncegw. On a machine whose cores the mail path
        # saturates, their ratio is the throughput ratio to expect.
        "postfix_cpu_ms_per_message": 1000 * postfix_cpu["plain"] / (COUNT * REPS),
        "postfix_with_milter_cpu_ms_per_message": (
            1000 * (postfix_cpu["milter"] + milter_cpu) / (COUNT * REPS)
        ),
        "cpu_ratio": postfix_cpu["plain"] / (postfix_cpu["milter"] + milter_cpu),
    }


def report(result: dict[str, Any]) -> None:
    print("milter mode (smtp-source -> Postfix -> smtp-sink, ordinary 5 KB):")
    if "unavailable" in result:
        print(f"  unavailable: {result['unavailable']}")
        return
    print(f"  Postfix              {result['postfix_rate']:8.0f} msg/s")
    print(f"  Postfix + bouncegw   {result['postfix_with_milter_rate']:8.0f} msg/s")
    verdict = "met" if result["ratio"] >= 0.9 else "NOT met"
    print(f"  ratio (best runs)    {result['ratio']:8.3f}   (goal >= 0.9: {verdict})")
    pairs = f"over {result['repetitions']} repetitions"
    print(f"  ratio (median pair)  {result['ratio_median_pairwise']:8.3f}   {pairs}")
    print(f"  bouncegw CPU         {result['milter_cpu_ms_per_message']:8.3f} ms per message")
    plain, both = result["postfix_cpu_ms_per_message"], result["postfix_with_milter_cpu_ms_per_message"]
    ratio = result["cpu_ratio"]
    print(f"  CPU per message      {plain:.3f} ms -> {both:.3f} ms with bouncegw (ratio {ratio:.3f})")
    seen = result["milter_outcomes"]
    print("  milter answers: " + ", ".join(f"{k} {v:.0f}" for k, v in seen.items() if v))


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bouncegw-milter-bench-"))
    try:
        result = run(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report(result)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
