"""The benchmark run: setups x message mixes, latency, memory, idle sessions, storage; table + JSON.

All setups are started at once (idle ones cost nothing) and measured interleaved, repetition by
repetition, so that background load on a shared machine hits the baseline and bouncegw alike:
the figures that matter are ratios measured in the same run, not absolute rates.

Load generators: Postfix's ``smtp-source`` for ordinary mail (it sends a prepared file with
``-F``, same bytes every time); for the mixes that contain family DSNs, the Python client in
:mod:`tests.benchmarks.loadgen`, because every DSN must be distinct (bouncegw deduplicates
incidents by the bounce's bytes, so resending one file would skip the database work).

Environment knobs (for quick trial runs): ``BENCH_SECONDS`` (per measurement, default 3),
``BENCH_REPS`` (default 2; the best repetition counts), ``BENCH_LATENCY_REPS`` (default 3; the
median p99 counts), ``BENCH_SESSIONS`` (default 20), ``BENCH_IDLE`` (idle sessions, default 1000).

A quick run of some mixes only (``python -m tests.benchmarks --mixes family-100,family-exo
--one-process``, or ``BENCH_MIXES`` / ``BENCH_ONE_PROCESS=1``) measures their throughput and
skips latency, idle sessions, large bounces, storage and the scan comparison; ``make bench``
runs everything.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import resource
import shutil
import smtplib
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.benchmarks import console as console_bench
from tests.benchmarks import databases, messages
from tests.benchmarks import milter as milter_bench
from tests.benchmarks import scan as scan_bench
from tests.benchmarks.procs import (
    Procs,
    cpu_seconds,
    reset_peak_rss,
    status_kib,
    tree,
    wait_for_port,
)
from tests.processes import free_port

ROOT = Path(__file__).resolve().parents[2]
SECONDS = float(os.environ.get("BENCH_SECONDS", "3"))
REPS = int(os.environ.get("BENCH_REPS", "2"))
SESSIONS = int(os.environ.get("BENCH_SESSIONS", "20"))
IDLE = int(os.environ.get("BENCH_IDLE", "1000"))
LATENCY_SECONDS = 4.0
LATENCY_REPS = int(os.environ.get("BENCH_LATENCY_REPS", "3"))
CALIBRATION_COUNT = 150
N = os.cpu_count() or 1

#: The issue's targets: (key, text).
TARGETS = {
    "ordinary_1w": "ordinary mail, 1 worker >= 90% of bare relay (1 process)",
    "family_1w": "100% family DSNs, 1 worker: minimal >= 50%, Exchange-sized >= 80% of bare relay (1 proc.)",
    "scaling": f"bouncegw {N}w/1w >= bare relay {N}p/1p (ordinary mail)",
    "latency": "added p99 latency <= 5 ms over bare relay (1 process) at half its capacity (ordinary 5 KB)",
}


class Tally:
    """Messages the clients had accepted in this run: the sink must have received as many."""

    sent = 0


TALLY = Tally()


@dataclass(frozen=True)
class Mix:
    key: str
    label: str
    client: str  # "smtp-source" or "python"
    family_every: int = 0  # python client: every K-th message is a family DSN
    size: int = 5 * messages.KIB
    family_file: str = "family"  # which family DSN the python client sends
    #: The family DSNs' recipient, varied per message: real bounces name many different recipients,
    #: and the explanation block is cached per kind and shape of recipient, not per address.
    vary_recipient: str = ""


#: Real Exchange Online NDRs are 10-46 KB (the public corpus' modern ones; median about 40 KB):
#: a long transport header block, Microsoft's styled HTML, the returned message. The 5 KB DSN is
#: the smallest well-formed one, where the fixed per-bounce work weighs most.
FAMILY_EXO_SIZE = 20 * messages.KIB


MIXES = [
    Mix("ordinary-5k", "ordinary 5 KB", "smtp-source"),
    Mix("ordinary-50k", "ordinary 50 KB", "smtp-source", size=50 * messages.KIB),
    Mix("family-100", "100% family DSNs (minimal, 5 KB)", "python", family_every=1),
    Mix(
        "family-exo", "100% family DSNs (Exchange, 20 KB)", "python", family_every=1, family_file="family-exo"
    ),
    Mix(
        "family-rcpt",
        "100% family DSNs (5 KB, new recipients)",
        "python",
        family_every=1,
        vary_recipient=messages.FAMILY_RECIPIENT,
    ),
    Mix("mix-95-5", "95% ordinary 5 KB / 5% family", "python", family_every=20),
]
ORDINARY = [m.key for m in MIXES if m.family_every == 0]


@dataclass(frozen=True)
class Selection:
    """What one run measures: all of it (``make bench``) or some mixes' throughput only."""

    mixes: tuple[Mix, ...]
    one_process: bool = False

    @property
    def full(self) -> bool:
        return len(self.mixes) == len(MIXES) and not self.one_process


def selection(argv: list[str] | None = None) -> Selection:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--mixes",
        default=os.environ.get("BENCH_MIXES", ""),
        help="comma-separated mix keys to measure, throughput only: " + ", ".join(m.key for m in MIXES),
    )
    parser.add_argument(
        "--one-process",
        action="store_true",
        default=os.environ.get("BENCH_ONE_PROCESS", "") not in ("", "0"),
        help="only the 1-process setups (no N-process bare relay or gateway)",
    )
    args = parser.parse_args(argv)
    by_key = {m.key: m for m in MIXES}
    wanted = [k.strip() for k in args.mixes.split(",") if k.strip()]
    unknown = [k for k in wanted if k not in by_key]
    if unknown:
        parser.error(f"unknown mix {', '.join(unknown)}; choose from {', '.join(by_key)}")
    mixes = tuple(by_key[k] for k in wanted) if wanted else tuple(MIXES)
    return Selection(mixes=mixes, one_process=args.one_process)


@dataclass
class Setup:
    key: str
    label: str
    procs: int
    baseline: str | None  # the bare relay with the same process count
    port: int = 0
    running: list[subprocess.Popen[bytes]] = field(default_factory=list)
    workdir: Path | None = None
    unavailable: str = ""
    family_sent: int = 0


@dataclass
class Files:
    source: dict[str, Path]  # mix size -> file for smtp-source -F
    crlf: dict[str, Path]  # "ordinary-5k" / "ordinary-50k" / "family" -> CRLF template


# ---------------------------------------------------------------------------------------------
# Starting the setups.


def gateway_argv() -> list[str]:
    exe = Path(sys.executable).with_name("bouncegw")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "gateway"]


def workers_supported() -> bool:
    out = subprocess.run(
        [*gateway_argv(), "serve", "--help"], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    return "--workers" in out.stdout


def start_sink(procs: Procs, setup: Setup) -> None:
    setup.port = free_port()
    # -c: counters in its log, to check that the relays really delivered; -u nobody: smtp-sink
    # refuses to run as root otherwise; backlog 1024 for the idle sessions.
    proc = procs.start("smtp-sink", ["smtp-sink", "-c", "-u", "nobody", f"127.0.0.1:{setup.port}", "1024"])
    setup.running.append(proc)
    wait_for_port(setup.port, proc)


def start_bare(procs: Procs, setup: Setup, sink_port: int) -> None:
    setup.port = free_port()
    argv = [sys.executable, "-m", "tests.benchmarks.bare_relay", "--listen", f"127.0.0.1:{setup.port}"]
    argv += ["--next-hop", f"127.0.0.1:{sink_port}"]
    for i in range(setup.procs):  # SO_REUSEPORT: the kernel spreads connections across them
        proc = procs.start(f"{setup.key}.{i}", argv, cwd=ROOT)
        setup.running.append(proc)
        wait_for_port(setup.port, proc)


def start_gateway(procs: Procs, setup: Setup, sink_port: int, tmp: Path, with_workers: bool) -> None:
    setup.port = free_port()
    setup.workdir = tmp / setup.key
    setup.workdir.mkdir()
    argv = [*gateway_argv(), "serve", "--listen", f"127.0.0.1:{setup.port}"]
    argv += [
        "--next-hop",
        f"127.0.0.1:{sink_port}",
        "--database",
        f"sqlite:///{setup.workdir / 'bench.sqlite3'}",
    ]
    argv += ["--http", f"127.0.0.1:{free_port()}", "--log-level", "WARNING"]
    if with_workers:
        argv += ["--workers", str(setup.procs)]  # explicit for 1 too: the default is every CPU
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "BOUNCEGW_NEXT_HOP__TLS": "none",
        "BOUNCEGW_STORAGE__JOURNAL_PATH": str(setup.workdir / "journal" / "incidents.jsonl"),
        "BOUNCEGW_LISTENER__MAX_SESSIONS": str(IDLE * 2),
        "BOUNCEGW_LISTENER__GRACE_PERIOD": "5",
    }
    proc = procs.start(setup.key, argv, env=env, cwd=setup.workdir)
    setup.running.append(proc)
    try:
        wait_for_port(setup.port, proc, timeout=60)
    except RuntimeError as exc:
        raise RuntimeError(f"{exc}\n{procs.log_tail(setup.key)}") from None


# ---------------------------------------------------------------------------------------------
# Measuring.


def run_smtp_source(port: int, file: Path, count: int) -> dict[str, Any]:
    argv = ["smtp-source", "-d", "-s", str(SESSIONS), "-m", str(count), "-M", "bench.example"]
    argv += ["-f", "sender@bench.example", "-t", "rcpt@bench.example", "-F", str(file), f"127.0.0.1:{port}"]
    start = time.perf_counter()
    out = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    elapsed = time.perf_counter() - start
    errors = 0 if out.returncode == 0 else 1
    return {
        "count": count,
        "elapsed": elapsed,
        "errors": errors,
        "family": 0,
        "first_error": [out.stderr.strip()[-200:]] if errors else [],
    }


def run_loadgen(args: list[str], timeout: float = 300) -> dict[str, Any]:
    argv = [sys.executable, "-m", "tests.benchmarks.loadgen", *args]
    out = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"loadgen {args[0]} failed: {out.stderr.strip()[-500:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def setup_pids(setup: Setup) -> list[int]:
    return [pid for proc in setup.running for pid in tree(proc.pid)]


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(setup: Setup, mix: Mix, files: Files, count: int, sink: Setup) -> dict[str, Any]:
    """One closed-loop run; also the CPU each party used per message (ms): the relay under test,
    the load generator (a child, counted once it is reaped) and smtp-sink."""
    relay_pids = setup_pids(setup)  # for the ceiling setup: smtp-sink itself
    sink_pids = setup_pids(sink) if setup is not sink else []
    before = (cpu_seconds(relay_pids), children_cpu(), cpu_seconds(sink_pids))
    if mix.client == "smtp-source":
        result = run_smtp_source(setup.port, files.source[mix.key], count)
    else:
        args = ["throughput", str(setup.port), "--sessions", str(SESSIONS), "--count", str(count)]
        args += ["--ordinary", str(files.crlf["ordinary-5k"]), "--family", str(files.crlf[mix.family_file])]
        args += ["--family-every", str(mix.family_every)]
        result = run_loadgen([*args, "--vary-recipient", mix.vary_recipient] if mix.vary_recipient else args)
    after = (cpu_seconds(relay_pids), children_cpu(), cpu_seconds(sink_pids))
    used = [b - a for a, b in zip(before, after, strict=True)]
    result["cpu_ms"] = {
        name: 1000 * seconds / max(1, result["count"])
        for name, seconds in zip(("relay", "client", "sink"), used, strict=True)
    }
    # How busy the whole machine was: 1.0 = every core all the time.
    result["machine_busy"] = sum(used) / (result["elapsed"] * N)
    setup.family_sent += int(result["family"])
    TALLY.sent += result["count"] - result["errors"]
    result["rate"] = result["count"] / result["elapsed"]
    return result


def throughput(
    setups: list[Setup], files: Files, mixes: tuple[Mix, ...]
) -> dict[str, dict[str, dict[str, Any]]]:
    """Best of REPS runs of about SECONDS each, per setup and mix, interleaved across setups."""
    results: dict[str, dict[str, dict[str, Any]]] = {s.key: {} for s in setups}
    live = [s for s in setups if not s.unavailable]
    sink = next(s for s in setups if s.key == "sink")
    for mix in mixes:
        counts = {}
        for setup in live:  # calibration doubles as warm-up
            cal = measure(setup, mix, files, CALIBRATION_COUNT, sink)
            counts[setup.key] = max(200, min(50_000, int(cal["rate"] * SECONDS)))
        for _ in range(REPS):
            for setup in live:
                run = measure(setup, mix, files, counts[setup.key], sink)
                cell = results[setup.key].setdefault(mix.key, {"runs": []})
                keep = ("count", "elapsed", "rate", "errors", "first_error", "cpu_ms", "machine_busy")
                cell["runs"].append({k: run[k] for k in keep})
        for setup in live:
            cell = results[setup.key][mix.key]
            best = max(cell["runs"], key=lambda r: float(r["rate"]))
            cell["rate"] = best["rate"]
            cell["cpu_ms"] = best["cpu_ms"]
            cell["machine_busy"] = best["machine_busy"]
            cell["errors"] = sum(r["errors"] for r in cell["runs"])
            print(f"  {mix.label:32} {setup.label:28} {cell['rate']:9,.0f} msg/s", flush=True)
    return results


def latency(setups: list[Setup], files: Files, rate: float) -> dict[str, dict[str, Any]]:
    """Open-loop latency at ``rate`` (ordinary 5 KB), LATENCY_REPS times interleaved.

    The run with the median p99 counts: the tail is what a busy shared machine disturbs most.
    """
    runs: dict[str, list[dict[str, Any]]] = {}
    live = [s for s in setups if not s.unavailable]
    for _ in range(LATENCY_REPS):
        for setup in live:
            args = ["latency", str(setup.port), "--sessions", "50", "--rate", f"{rate:.1f}"]
            res = run_loadgen(
                [*args, "--seconds", str(LATENCY_SECONDS), "--ordinary", str(files.crlf["ordinary-5k"])]
            )
            TALLY.sent += res["sent"]
            runs.setdefault(setup.key, []).append(res)
    out = {key: sorted(rs, key=lambda r: float(r["p99_ms"]))[len(rs) // 2] for key, rs in runs.items()}
    for setup in live:
        r = out[setup.key]
        print(
            f"  {setup.label:28} p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms  (n={r['n']})",
            flush=True,
        )
    return out


def peak_rss(setup: Setup) -> list[int]:
    """VmHWM (KiB) of every process of the setup: its leaders and their children (workers)."""
    return [status_kib(pid, "VmHWM") for proc in setup.running for pid in tree(proc.pid)]


def current_rss(setup: Setup) -> int:
    return sum(status_kib(pid, "VmRSS") for proc in setup.running for pid in tree(proc.pid))


def idle_sessions(procs: Procs, setup: Setup, files: Files, tmp: Path) -> dict[str, Any]:
    """Hold IDLE idle sessions, measure the RSS they cost, and push ordinary mail meanwhile."""
    before = current_rss(setup)
    holder = procs.start(
        f"idle-{setup.key}",
        [sys.executable, "-m", "tests.benchmarks.loadgen", "idle", str(setup.port), "--count", str(IDLE)],
        cwd=ROOT,
        stdin_pipe=True,
    )
    log = tmp / f"idle-{setup.key}.log"
    try:
        deadline = time.monotonic() + 120
        opened: dict[str, Any] | None = None
        while opened is None and time.monotonic() < deadline:
            lines = [ln for ln in log.read_text().splitlines() if ln.startswith("{")]
            opened = json.loads(lines[0]) if lines else None
            if holder.poll() is not None and opened is None:
                raise RuntimeError(f"idle holder exited: {procs.log_tail('idle-' + setup.key)}")
            time.sleep(0.1)
        if opened is None:
            raise RuntimeError("idle sessions were not opened in time")
        time.sleep(1.0)  # let the servers settle
        after = current_rss(setup)
        active = run_smtp_source(setup.port, files.source["ordinary-5k"], 2000)
        TALLY.sent += active["count"] - active["errors"]
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(60)
        lines = [ln for ln in log.read_text().splitlines() if ln.startswith("{")]
        alive = json.loads(lines[-1]).get("alive", 0) if len(lines) > 1 else 0
    finally:
        procs.forget(holder)
    n = int(opened["open"])
    return {
        "sessions": IDLE,
        "opened": n,
        "failed": opened["failed"],
        "still_open_after_load": alive,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "kib_per_session": (after - before) / n if n else float("nan"),
        "active_rate": active["count"] / active["elapsed"],
        "active_errors": active["errors"],
    }


#: Sizes (MiB) of the large family bounces whose memory cost is measured, one at a time.
LARGE_BOUNCES = (16, 32)


def large_bounce_memory(setup: Setup) -> dict[str, Any] | str:
    """Peak RSS growth of a one-process gateway while one large family bounce goes through it.

    The bounce is the benchmark's family DSN padded inside its returned message (the usual
    shape of a large bounce). The peak (VmHWM) is reset right before each message, so the
    growth is the message's alone; "kept" is what is still resident once it is gone.
    """
    pid = setup.running[0].pid
    results: dict[str, Any] = {}
    for mib in LARGE_BOUNCES:
        data = messages.family(mib * 1024 * messages.KIB).replace(messages.SEQ, b"large-%d" % mib)
        before = status_kib(pid, "VmRSS")
        if not reset_peak_rss(pid):
            return "not measured: /proc/PID/clear_refs refused"
        with smtplib.SMTP("127.0.0.1", setup.port, timeout=300) as client:
            client.sendmail("", ["sender@bench.example"], data)
        setup.family_sent += 1
        TALLY.sent += 1
        peak, after = status_kib(pid, "VmHWM"), status_kib(pid, "VmRSS")
        results[f"{mib}mib"] = {
            "size": len(data),
            "rss_before_kib": before,
            "peak_growth_kib": peak - before,
            "multiple": (peak - before) * 1024 / len(data),
            "kept_kib": after - before,
        }
    return results


def storage_bench(tmp: Path) -> dict[str, Any]:
    """``python -m storage.bench`` against scratch SQLite and PostgreSQL (a throwaway schema)."""

    def run(url: str) -> dict[str, float] | str:
        res = subprocess.run(
            [sys.executable, "-m", "storage.bench", url, "2000"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=300,
        )
        if res.returncode != 0:
            return "failed: " + res.stderr.strip()[-300:]
        rates = {}
        for line in res.stdout.splitlines():
            m = re.match(r"(batch=\d+|single rows): ([\d,]+) incidents/s", line)
            if m:
                rates[m.group(1).replace(" rows", "")] = float(m.group(2).replace(",", ""))
        return rates

    return databases.on_both(tmp, "storage-bench", run)


# ---------------------------------------------------------------------------------------------
# Reporting.


def rounded(value: Any) -> Any:
    """``value`` with every float rounded to 3 decimals (for printing and the JSON file)."""
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v) for v in value]
    return value


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def fmt(x: float | None, spec: str = ".2f") -> str:
    return "-" if x is None else format(x, spec)


def scaling_model(tp: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """What N processes could reach if the machine's cores are the limit, per ordinary mix.

    One process is limited by its own core: rate_1 = 1 / c1 (c = relay CPU per message). With N
    processes the load generator and the sink share the same N cores, so the ceiling is
    rate_N = N / (cN + client + sink), and the scaling ratio rate_N / rate_1 is at most
    N * c1 / (cN + client + sink): the cheaper a relay's messages, the lower that ceiling.
    """
    out: dict[str, dict[str, Any]] = {}
    for mix in ORDINARY:
        for relay, one, many in (("bare", "bare-1", "bare-N"), ("bouncegw", "gw-1", "gw-N")):
            c1, cn = tp.get(one, {}).get(mix), tp.get(many, {}).get(mix)
            if c1 is None or cn is None:
                continue
            per_msg = cn["cpu_ms"]["relay"] + cn["cpu_ms"]["client"] + cn["cpu_ms"]["sink"]
            out.setdefault(mix, {})[relay] = {
                "measured": cn["rate"] / c1["rate"],
                "ceiling": N * c1["cpu_ms"]["relay"] / per_msg if per_msg else None,
                "relay_cpu_ms_1": c1["cpu_ms"]["relay"],
                "relay_cpu_ms_N": cn["cpu_ms"]["relay"],
                "machine_busy_N": cn["machine_busy"],
            }
    return out


def evaluate(res: dict[str, Any], setups: dict[str, Setup]) -> dict[str, dict[str, Any]]:
    tp = res["throughput"]

    def rate(key: str, mix: str) -> float | None:
        cell = tp.get(key, {}).get(mix)
        return None if cell is None else float(cell["rate"])

    targets: dict[str, dict[str, Any]] = {}
    vals = {m: ratio(rate("gw-1", m), rate("bare-1", m)) for m in ORDINARY}
    targets["ordinary_1w"] = {"values": vals, "met": all(v is not None and v >= 0.90 for v in vals.values())}
    fam = {m: ratio(rate("gw-1", m), rate("bare-1", m)) for m in ("family-exo", "family-100")}
    goals = {"family-100": 0.50, "family-exo": 0.80}
    targets["family_1w"] = {
        "values": fam,
        "met": all(fam[m] is not None and fam[m] >= goal for m, goal in goals.items()),
    }
    if "gw-N" in setups and not setups["gw-N"].unavailable and "bare-N" in setups:
        sc = {
            m: {
                "bouncegw": ratio(rate("gw-N", m), rate("gw-1", m)),
                "bare": ratio(rate("bare-N", m), rate("bare-1", m)),
            }
            for m in ORDINARY
        }
        met = all(
            v["bouncegw"] is not None and v["bare"] is not None and v["bouncegw"] >= v["bare"]
            for v in sc.values()
        )
        targets["scaling"] = {"values": sc, "met": met, "machine_bound": scaling_model(tp)}
    else:
        targets["scaling"] = {"values": {}, "met": None, "note": "bouncegw --workers not available"}
    lat = res["latency"]["results"]
    if "gw-1" in lat and "bare-1" in lat:
        added = lat["gw-1"]["p99_ms"] - lat["bare-1"]["p99_ms"]
        targets["latency"] = {"values": {"added_p99_ms": added}, "met": added <= 5.0}
    else:
        targets["latency"] = {"values": {}, "met": None}
    return targets


def print_table(res: dict[str, Any], setups: list[Setup], mixes: tuple[Mix, ...]) -> None:
    """The throughput table: each mix's rate per setup, against its baseline and the ceiling."""
    tp = res["throughput"]
    print()
    print(f"bouncegw benchmark {res['date']}  cores={res['cores']}  sessions={SESSIONS}  N={N}")
    print(
        "load generators: smtp-source -d -F (ordinary mixes); Python client, distinct messages (family mixes)"
    )
    print()
    head = f"{'mix':36} {'setup':28} {'msg/s':>9} {'vs baseline':>11} {'vs ceiling':>10}"
    head += f" {'CPU ms/msg':>10} {'peak RSS/proc MiB':>18}"
    print(head)
    print("-" * len(head))
    for mix in mixes:
        for s in setups:
            rss = res.get("peak_rss_kib", {}).get(s.key)
            rss_text = "-" if not rss else "/".join(f"{k / 1024:.0f}" for k in rss)
            if s.unavailable:
                print(f"{mix.label:36} {s.label:28} {'not available':>9}")
                continue
            cell = tp[s.key][mix.key]
            base = tp[s.baseline][mix.key]["rate"] if s.baseline else None
            ceil = tp["sink"][mix.key]["rate"]
            err = f"  ({cell['errors']} errors)" if cell["errors"] else ""
            print(
                f"{mix.label:36} {s.label:28} {cell['rate']:9,.0f} {fmt(ratio(cell['rate'], base)):>11} "
                f"{fmt(ratio(cell['rate'], ceil)):>10} {cell['cpu_ms']['relay']:10.3f} {rss_text:>18}{err}"
            )
        print()


def print_report(res: dict[str, Any], setups: list[Setup]) -> None:
    tp, lat = res["throughput"], res["latency"]["results"]
    by_key = {s.key: s for s in setups}
    print_table(res, setups, tuple(MIXES))
    print(f"scaling ({N} processes / 1 process):")
    for m in MIXES:
        parts = []
        for a, b, name in (("bare-N", "bare-1", "bare relay"), ("gw-N", "gw-1", "bouncegw")):
            if a in tp and m.key in tp[a] and m.key in tp.get(b, {}):
                parts.append(f"{name} {tp[a][m.key]['rate'] / tp[b][m.key]['rate']:.2f}x")
            else:
                parts.append(f"{name} not available")
        print(f"  {m.label:36} " + ", ".join(parts))
    model = res["targets"].get("scaling", {}).get("machine_bound", {})
    if model:
        print("scaling against the machine's CPU (N cores shared by relay, load generator and sink):")
        for mix_key, relays in model.items():
            for name, v in relays.items():
                print(
                    f"  {mix_key:14} {name:9} measured {v['measured']:.2f}x,"
                    f" CPU ceiling {fmt(v['ceiling'])}x;"
                    f" relay CPU/msg {v['relay_cpu_ms_1']:.3f} ms at 1, {v['relay_cpu_ms_N']:.3f} ms at {N};"
                    f" machine {100 * v['machine_busy_N']:.0f}% busy at {N}"
                )
    print()
    rate = res["latency"]["rate"]
    print(
        f"latency, ordinary 5 KB, open loop at {rate:.0f} msg/s (half the 1-process bare relay's capacity):"
    )
    print(f"  {'setup':28} {'p50 ms':>8} {'p99 ms':>8} {'added p50':>10} {'added p99':>10}")
    for s in setups:
        if s.key not in lat:
            continue
        r = lat[s.key]
        base = lat.get(s.baseline or "", None)
        a50 = r["p50_ms"] - base["p50_ms"] if base else None
        a99 = r["p99_ms"] - base["p99_ms"] if base else None
        added = f"{fmt(a50, '+.2f'):>10} {fmt(a99, '+.2f'):>10}"
        print(f"  {s.label:28} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {added}")
    print()
    for key, idle in res["idle"].items():
        if isinstance(idle, str):
            print(f"idle sessions, {by_key[key].label}: {idle}")
            continue
        print(
            f"idle sessions, {by_key[key].label}: {idle['opened']}/{idle['sessions']} open "
            f"({idle['still_open_after_load']} still open after), RSS {idle['rss_before_kib'] / 1024:.1f} -> "
            f"{idle['rss_after_kib'] / 1024:.1f} MiB = {idle['kib_per_session']:.1f} KiB/session; "
            f"active ordinary 5 KB meanwhile {idle['active_rate']:,.0f} msg/s"
            f" ({idle['active_errors']} errors)"
        )
    large = res.get("large_bounce_memory")
    if isinstance(large, str):
        print(f"large family bounces, {by_key['gw-1'].label}: {large}")
    elif large:
        print(
            f"large family bounces, {by_key['gw-1'].label}: peak RSS growth "
            + "; ".join(
                f"{m['size'] / 1024 / 1024:.0f} MiB: +{m['peak_growth_kib'] / 1024:.0f} MiB = "
                f"{m['multiple']:.2f}x, {m['kept_kib'] / 1024:.1f} MiB kept after"
                for m in large.values()
            )
        )
    for key, check in res["incidents_check"].items():
        label = by_key[key].label
        print(
            f"incidents recorded by {label}: {check['rows']} rows for {check['family_sent']} family DSNs sent"
        )
    sink = res["sink_check"]
    print(f"smtp-sink received {sink['received']} messages; the clients had {sink['accepted']} accepted")
    print()
    print("storage insert throughput (python -m storage.bench URL 2000), incidents/s:")
    for db, rates in res["storage"].items():
        text = rates if isinstance(rates, str) else ", ".join(f"{k} {v:,.0f}" for k, v in rates.items())
        print(f"  {db:11} {text}")
    print()
    print("targets:")
    for key, text in TARGETS.items():
        t = res["targets"][key]
        verdict = "not available" if t["met"] is None else ("met" if t["met"] else "NOT met")
        print(f"  [{verdict:>13}] {text}: {json.dumps(rounded(t['values']))}")
        if t.get("note"):
            print(f"  {'':>15} {t['note']}")


def quick_report(res: dict[str, Any], setups: list[Setup], sel: Selection) -> None:
    """A run of some mixes: their table and each one's ratio (bouncegw 1 worker / bare relay 1
    process), written to ``bench-results/quick.json`` (``latest.json`` is the full run's)."""
    print_table(res, setups, sel.mixes)
    tp = res["throughput"]
    res["ratios_1"] = {
        m.key: ratio(tp["gw-1"][m.key]["rate"], tp["bare-1"][m.key]["rate"]) for m in sel.mixes
    }
    print("bouncegw 1 worker / bare relay 1 process: " + json.dumps(rounded(res["ratios_1"])))
    out = ROOT / "bench-results" / "quick.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(rounded(res), indent=2) + "\n")
    print(f"written {out.relative_to(ROOT)}")


# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    sel = selection(argv)
    for tool in ("smtp-source", "smtp-sink"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found: install Postfix (Debian package postfix)")
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="bouncegw-bench-"))
    files = Files(source={}, crlf={})
    for key, data in (
        ("ordinary-5k", messages.ordinary(5 * messages.KIB)),
        ("ordinary-50k", messages.ordinary(50 * messages.KIB)),
        ("family", messages.family()),
        ("family-exo", messages.exchange_online(FAMILY_EXO_SIZE)),
    ):
        (tmp / f"{key}.eml").write_bytes(data)
        files.crlf[key] = tmp / f"{key}.eml"
        files.source[key] = messages.write_for_smtp_source(tmp / f"{key}.lf", data)
    with_workers = workers_supported()
    setups = [
        Setup("sink", "smtp-sink (ceiling)", 1, None),
        Setup("bare-1", "bare relay, 1 process", 1, "bare-1"),
        Setup("gw-1", "bouncegw, 1 worker", 1, "bare-1"),
    ]
    if N > 1 and not sel.one_process:
        setups.insert(2, Setup("bare-N", f"bare relay, {N} processes", N, "bare-N"))
        gw_n = Setup("gw-N", f"bouncegw, {N} workers", N, "bare-N")
        if not with_workers:
            gw_n.unavailable = "bouncegw serve has no --workers option"
        setups.append(gw_n)
    by_key = {s.key: s for s in setups}
    procs = Procs(tmp)
    res: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "machine": platform.platform(),
        "python": platform.python_version(),
        "sessions": SESSIONS,
        "seconds_per_run": SECONDS,
        "repetitions": REPS,
        "clients": {m.key: m.client for m in sel.mixes},
        "setups": {
            s.key: {"label": s.label, "processes": s.procs, "unavailable": s.unavailable} for s in setups
        },
    }
    try:
        start_sink(procs, by_key["sink"])
        for s in setups:
            if s.key.startswith("bare"):
                start_bare(procs, s, by_key["sink"].port)
            elif s.key.startswith("gw") and not s.unavailable:
                start_gateway(procs, s, by_key["sink"].port, tmp, with_workers)
        print(f"throughput (best of {REPS} runs of ~{SECONDS:.0f} s each):", flush=True)
        res["throughput"] = throughput(setups, files, sel.mixes)
        if not sel.full:
            quick_report(res, setups, sel)
            return
        rate = res["throughput"]["bare-1"]["ordinary-5k"]["rate"] / 2
        print(f"latency at {rate:.0f} msg/s:", flush=True)
        res["latency"] = {"rate": rate, "results": latency(setups, files, rate)}
        res["peak_rss_kib"] = {s.key: peak_rss(s) for s in setups if not s.unavailable}
        print(f"idle sessions ({IDLE}):", flush=True)
        res["idle"] = {}
        for key in ("bare-1", "gw-1"):
            try:
                res["idle"][key] = idle_sessions(procs, by_key[key], files, tmp)
            except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                res["idle"][key] = f"failed: {exc}"
        print("large family bounces:", flush=True)
        try:
            res["large_bounce_memory"] = large_bounce_memory(by_key["gw-1"])
        except (OSError, smtplib.SMTPException) as exc:
            res["large_bounce_memory"] = f"failed: {exc}"
        # Stop the gateways (their recorders flush on SIGTERM), then count what they stored.
        res["incidents_check"] = {}
        for s in setups:
            if s.key.startswith("gw") and not s.unavailable and s.workdir is not None:
                for proc in s.running:
                    procs.forget(proc)
                with contextlib.closing(sqlite3.connect(s.workdir / "bench.sqlite3")) as db:
                    rows = db.execute("SELECT count(*) FROM incidents").fetchone()[0]
                res["incidents_check"][s.key] = {"rows": rows, "family_sent": s.family_sent}
        procs.close()
        received = re.findall(r"mesg=(\d+)", (tmp / "smtp-sink.log").read_text())
        res["sink_check"] = {"received": int(received[-1]) if received else 0, "accepted": TALLY.sent}
        print("storage:", flush=True)
        res["storage"] = storage_bench(tmp)
        print("scan against Sisimai:", flush=True)
        res["scan"] = scan_bench.run(tmp)
        print("incident console queries:", flush=True)
        res["console"] = console_bench.run(tmp)
        print("milter mode:", flush=True)
        res["milter"] = milter_bench.run(tmp)
    finally:
        procs.close()
        if not sel.full:
            shutil.rmtree(tmp, ignore_errors=True)
    res["targets"] = evaluate(res, by_key)
    res["elapsed_s"] = time.monotonic() - started
    print_report(res, setups)
    print()
    scan_bench.report(res["scan"])
    print()
    console_bench.report(res["console"])
    milter_bench.report(res["milter"])
    out = ROOT / "bench-results" / "latest.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(rounded(res), indent=2) + "\n")
    print(f"\nwritten {out.relative_to(ROOT)} in {res['elapsed_s']:.0f} s")
    shutil.rmtree(tmp, ignore_errors=True)
