"""Every Prometheus metric bouncegw exports, defined in one place.

Conventions (https://prometheus.io/docs/practices/naming/): the ``bouncegw_``
prefix, base units (seconds, bytes), ``_total`` on counters, and labels drawn
from small fixed sets only - never an address, a domain or a host name, which
would make the number of series unbounded. Label values that are known in
advance are created at import time with a zero value, so ``rate()`` and alert
rules see a series before the first event happens.

The events are counted once, where they happen (handler, listener, next-hop client,
processing steps, and the recorder through :class:`RecorderMetrics`); label values
come from the enums in ``gateway.outcomes`` (and ``storage.recorder.StoragePath``,
``gateway.explain.arc.Outcome``). State that is simply read (journal backlog,
database availability, next-hop reachability) is copied into gauges by
``gateway.health.Readiness.refresh_gauges`` - at every scrape of ``/metrics``, and
periodically by each process (``gateway.app``).

Several worker processes (multiprocess mode)
--------------------------------------------
When ``PROMETHEUS_MULTIPROC_DIR`` names a directory *before* this module is
first imported, prometheus-client keeps every value in per-process mmap files
in that directory, and :func:`exposition` merges the files of all processes:
counters and histograms are summed (dead processes included, so totals never
go backwards), gauges follow their ``multiprocess_mode`` below. A supervisor
that runs N workers on one port must:

1. call :func:`prepare_multiprocess_dir` once before forking/spawning workers
   (it empties the directory: files left by an earlier run would be counted);
2. start every worker with the variable set (inherited environment);
3. call :func:`worker_exited` with the pid of each worker that ends, so that
   its "live" gauges (sessions, backlog) stop counting.

Whichever worker answers ``/metrics`` on the admin port then reports totals
across all workers.
"""

from __future__ import annotations

import os
import platform
import shutil
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from gateway.bounce import family
from gateway.bounce.report import FORMAT_RFC3464, FORMAT_RFC6533, FORMAT_TEXT
from gateway.explain import arc
from gateway.outcomes import (
    AnnotationOutcome,
    ByteDirection,
    LoopReason,
    MessageOutcome,
    MilterOutcome,
    ParseStage,
    RefusalReason,
)
from storage.recorder import StoragePath

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST

#: Relaying DATA to the next hop: milliseconds on a LAN, up to the data timeout on a slow hop.
RELAY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
#: The processing step: microseconds for ordinary mail (prefilter only), more for a parsed bounce.
PROCESSING_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)

# -- the fixed label value sets ------------------------------------------------------------
BOUNCE_FORMATS = (FORMAT_RFC3464, FORMAT_RFC6533, FORMAT_TEXT)
#: (category, variant) pairs come from the family table, so the set is closed.
FAMILY_KINDS = family.FAMILY.kinds

# -- the metrics -------------------------------------------------------------------------------
BUILD_INFO = Gauge(
    "bouncegw_build_info",
    "Always 1; the labels say which bouncegw and Python this process runs.",
    ["version", "python_version"],
    multiprocess_mode="max",
)
SESSIONS = Gauge(
    "bouncegw_sessions_active",
    "SMTP sessions currently open on the listener.",
    multiprocess_mode="livesum",
)
REFUSED = Counter(
    "bouncegw_connections_refused_total",
    "SMTP connections refused at admission, by reason (network: not in allowed_networks).",
    ["reason"],
)
MESSAGES = Counter(
    "bouncegw_messages_total",
    "Transactions that reached the end of DATA, by outcome "
    "(relayed, rejected: the next hop said 5xx, deferred: 4xx, failed: our processing failed).",
    ["outcome"],
)
LOOPS = Counter(
    "bouncegw_loops_refused_total",
    "Messages refused with 554 5.4.6 as a mail loop, by reason (hops: relay.max_hops Received: "
    "fields; passes: our own trace relay.max_passes times).",
    ["reason"],
)
BYTES = Counter(
    "bouncegw_message_bytes_total",
    "Message octets received from upstream and relayed to the next hop.",
    ["direction"],
)
TRANSACTION_DURATION = Histogram(
    "bouncegw_transaction_duration_seconds",
    "From the end of DATA to the reply sent upstream (processing + relay + recording).",
    buckets=RELAY_BUCKETS,
)
RELAY_DURATION = Histogram(
    "bouncegw_relay_duration_seconds",
    "Sending DATA to the next hop until its reply to the final dot.",
    buckets=RELAY_BUCKETS,
)
PROCESSING_DURATION = Histogram(
    "bouncegw_processing_duration_seconds",
    "The processing step before the relay (detect, explain).",
    buckets=PROCESSING_BUCKETS,
)
NEXT_HOP_ERRORS = Counter(
    "bouncegw_next_hop_connection_errors_total",
    "Failures to connect to, greet or keep talking to the next hop.",
)
NEXT_HOP_UP = Gauge(
    "bouncegw_next_hop_up",
    "0 while the latest attempt to reach the next hop failed (connect, greeting or command), else 1.",
    multiprocess_mode="livemin",
)
BOUNCES = Counter(
    "bouncegw_bounces_total",
    "Bounces (DSNs) seen among messages that passed the prefilter, by format.",
    ["format"],
)
FAMILY = Counter(
    "bouncegw_family_recipients_total",
    "Failed recipients in the 5.7.12 family (and its 5.7.124 sibling), by category and variant.",
    ["category", "variant"],
)
PARSE_FAILURES = Counter(
    "bouncegw_parse_failures_total",
    "Candidate bounces that could not be parsed, by stage (parse: malformed, internal: a bug).",
    ["stage"],
)
NESTING_CAPPED = Counter(
    "bouncegw_nesting_capped_total",
    "Candidate bounces nested deeper than the parser reads (MAX_DEPTH): parts below were not read.",
)
ANNOTATIONS = Counter(
    "bouncegw_annotations_total",
    "Family bounces by what the explain step did with them.",
    ["outcome"],
)
ARC_SEALS = Counter(
    "bouncegw_arc_seals_total",
    "Explained bounces by what ARC sealing did (only when [explain] arc_* is configured).",
    ["outcome"],
)
INCIDENTS = Counter(
    "bouncegw_incidents_recorded_total",
    "Incidents made durable (database or journal) after the relay.",
)
RECORD_FAILURES = Counter(
    "bouncegw_record_failures_total",
    "Batches of incidents that could be neither stored nor journalled (the upstream got 4xx).",
)
STORAGE = Counter(
    "bouncegw_storage_incidents_total",
    "Incidents by where the recorder put them (database, journal, replayed from the journal, rejected).",
    ["path"],
)
DB_ERRORS = Counter(
    "bouncegw_database_errors_total",
    "Failed or timed-out database calls (writes, probes, replays, purges).",
)
DB_AVAILABLE = Gauge(
    "bouncegw_database_available",
    "1 while incidents go straight to the database, 0 while they go to the journal.",
    multiprocess_mode="livemin",
)
DB_ATTEMPTS = Counter(
    "bouncegw_database_recovery_attempts_total",
    "Attempts to reach the database and replay the journal (bounded by the backoff during an outage).",
)
JOURNAL_LEFT_AT_STOP = Gauge(
    "bouncegw_journal_left_at_stop_incidents",
    "Incidents still in the journal when the process stopped (0 after a clean drain); kept for "
    "stopped workers.",
    multiprocess_mode="sum",
)
JOURNAL_BACKLOG = Gauge(
    "bouncegw_journal_backlog_incidents",
    "Incidents waiting in the outage journal for the database.",
    multiprocess_mode="livesum",
)
JOURNAL_BYTES = Gauge(
    "bouncegw_journal_size_bytes",
    "Size of the outage journal.",
    multiprocess_mode="livesum",
)
JOURNAL_CAPACITY = Gauge(
    "bouncegw_journal_capacity_bytes",
    "storage.journal_max_bytes: when the journal reaches it with the database down, bounces get 4xx.",
    multiprocess_mode="livesum",
)
MILTER_SESSIONS = Gauge(
    "bouncegw_milter_sessions_active",
    "Milter connections from the MTA currently open (bouncegw milter).",
    multiprocess_mode="livesum",
)
MILTER_MESSAGES = Counter(
    "bouncegw_milter_messages_total",
    "Messages the milter answered, by outcome (see MilterOutcome in gateway/outcomes.py).",
    ["outcome"],
)
MILTER_PROTOCOL_ERRORS = Counter(
    "bouncegw_milter_protocol_errors_total",
    "Milter connections closed because the MTA's packets could not be read (the MTA then applies "
    "its milter_default_action).",
)
MILTER_DURATION = Histogram(
    "bouncegw_milter_end_of_message_seconds",
    "From the end of the message to the milter's final answer (processing + recording).",
    buckets=PROCESSING_BUCKETS,
)


def _initialise() -> None:
    """Create every known label combination at zero (series exist before the first event)."""
    labels: Iterable[str]
    for labels, metric in (
        (MessageOutcome, MESSAGES),
        (ByteDirection, BYTES),
        (RefusalReason, REFUSED),
        (LoopReason, LOOPS),
        (BOUNCE_FORMATS, BOUNCES),
        (ParseStage, PARSE_FAILURES),
        (AnnotationOutcome, ANNOTATIONS),
        (arc.Outcome, ARC_SEALS),
        (StoragePath, STORAGE),
        (MilterOutcome, MILTER_MESSAGES),
    ):
        for value in labels:
            metric.labels(value)
    for category, variant in FAMILY_KINDS:
        FAMILY.labels(category, variant)
    process_started()


def process_started() -> None:
    """Set ``bouncegw_build_info`` to 1 for this process.

    At import, and again in each forked worker: in multiprocess mode a value lives in a file
    per process, and a forked child starts from an empty file of its own (the supervisor's file,
    written before the directory was emptied, is gone), so without this every worker's build
    info, and their merged maximum, would read 0.
    """
    try:
        version = metadata.version("bouncegw")
    except metadata.PackageNotFoundError:  # running from a source tree that is not installed
        version = "unknown"
    BUILD_INFO.labels(version, platform.python_version()).set(1)


_initialise()


# -- recording helpers (label values outside the fixed sets are folded, never invented) ---------
def _bounded(value: str | None, allowed: Iterable[str]) -> str:
    return value if value is not None and value in allowed else "other"


def count_family(category: str | None, variant: str | None, count: int = 1) -> None:
    kind = (category or "", variant or "")
    # The table in force (an extended one too): its kinds are the label values.
    FAMILY.labels(*(kind if kind in family.FAMILY.kinds else ("other", "other"))).inc(count)


def count_bounce(fmt: str) -> None:
    BOUNCES.labels(_bounded(fmt, BOUNCE_FORMATS)).inc()


class RecorderMetrics:
    """The recorder's events (``storage.recorder.RecorderEvents``) as Prometheus metrics."""

    def incidents(self, path: StoragePath, count: int) -> None:
        STORAGE.labels(path).inc(count)

    def database_error(self) -> None:
        DB_ERRORS.inc()

    def recovery_attempt(self) -> None:
        DB_ATTEMPTS.inc()

    def stopped(self, left_in_journal: int) -> None:
        JOURNAL_BACKLOG.set(left_in_journal)
        JOURNAL_LEFT_AT_STOP.set(left_in_journal)


# -- exposition ----------------------------------------------------------------------------------
def multiprocess_dir() -> Path | None:
    value = os.environ.get(MULTIPROC_ENV)
    return Path(value) if value else None


def exposition(path: Path | None = None) -> bytes:
    """The text exposition: this process's registry, or the merge of every process's files."""
    directory = path or multiprocess_dir()
    if directory is None:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
    return generate_latest(registry)


def prepare_multiprocess_dir(path: Path) -> None:
    """Empty (or create) the directory before any worker starts: stale files would be summed in."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)


def worker_exited(pid: int, path: Path | None = None) -> None:
    """Forget a dead worker's live gauges; its counters stay in the totals."""
    directory = path or multiprocess_dir()
    if directory is not None:
        multiprocess.mark_process_dead(pid, str(directory))  # type: ignore[no-untyped-call]
