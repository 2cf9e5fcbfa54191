"""Read mailbox archives and find the family: the batch side of bouncegw (``bouncegw scan``).

Before an admin puts a hop in the mail path they want to know how big the problem is, and the
bounces are already sitting in mailboxes. This module reads them with the standard library's
:mod:`mailbox` (mbox, Maildir, MH) or as ``.eml`` files, and runs each message through the same
steps the relay does: the cheap prefilter, then parse + classify for the candidates only.

The work is split so that it uses every core and stays bounded in memory: the main process reads
messages one at a time and runs the prefilter (microseconds for ordinary mail); candidates go in
batches to a pool of processes that parse and classify them; at most ``2 x jobs`` batches are in
flight. Results come back in reading order, so the output is the same whatever ``jobs`` is.

Incidents from a scan get the relay's fingerprint (:mod:`gateway.identity`), so scanning twice,
or scanning the mailbox copy of a bounce the relay saw, finds the row that already exists.
A copy the relay explained carries ``X-Bouncegw-Explained`` with its incident ids: it is counted
as recorded by the relay and not recorded again.

Nothing in one input stops the scan: an unreadable file or folder and a message that does not
parse are counted with their location and the scan goes on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import mailbox
import multiprocessing
import os
import signal
import sys
import tempfile
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import BinaryIO

from gateway import header_block
from gateway.bounce import prefilter
from gateway.bounce.parse import parse
from gateway.identity import as_on_the_wire, bounce_digest
from gateway.incidents import build_incidents, stable_ids
from gateway.transaction import MessageContext
from storage.incidents import SOURCE_SCAN, IncidentRecord

#: Candidates handed to a pool process at once: large enough to amortise the hop, small enough
#: that a few batches in flight stay a few megabytes for ordinary bounce sizes.
BATCH = 32

#: Candidates parsed in this process before a pool is worth starting (a spawned process imports
#: the parser first: about a second).
INLINE_CANDIDATES = 64

#: The root fields a delivering MTA adds that name the bounce's envelope (RFC 5321 section 4.4;
#: Postfix's Delivered-To and X-Original-To).
_ENVELOPE_FIELDS = ("return-path", "delivered-to", "x-original-to")


@dataclasses.dataclass(frozen=True, slots=True)
class Message:
    """One message read from an input: where it was, and its bytes as stored."""

    location: str
    data: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class Problem:
    """An input or a message that could not be read or parsed."""

    location: str
    reason: str
    #: True when a whole input (file, folder) could not be opened: the operator named it wrongly.
    fatal: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class Examined:
    """What the parser made of one candidate (picklable: it crosses the process pool)."""

    location: str
    is_bounce: bool
    #: Incidents for the family recipients, in report order (empty when there are none).
    records: tuple[IncidentRecord, ...] = ()
    #: The copy carries X-Bouncegw-Explained: the relay recorded these already.
    explained_by_relay: bool = False
    problem: str | None = None
    #: The bounce's own Date field (None when it has none that parses).
    date: datetime | None = None


@dataclasses.dataclass
class Summary:
    """Counts for the closing summary; the rows themselves are streamed as they come."""

    messages: int = 0
    candidates: int = 0
    bounces: int = 0
    family_bounces: int = 0
    recipients: int = 0
    explained_by_relay: int = 0
    recorded: int = 0
    already_recorded: int = 0
    by_variant: Counter[str] = dataclasses.field(default_factory=Counter)
    by_domain: Counter[str] = dataclasses.field(default_factory=Counter)
    first: datetime | None = None
    last: datetime | None = None
    problems: list[Problem] = dataclasses.field(default_factory=list)
    interrupted: bool = False

    def add(self, record: IncidentRecord, date: datetime | None) -> None:
        self.recipients += 1
        self.by_variant[record.variant or "?"] += 1
        self.by_domain[record.recipient_domain or "?"] += 1
        if date is not None:
            self.first = date if self.first is None else min(self.first, date)
            self.last = date if self.last is None else max(self.last, date)


# -- reading the inputs -----------------------------------------------------------------------------


def read(
    paths: Iterable[str], *, recursive: bool, stdin: BinaryIO | None = None
) -> Iterator[Message | Problem]:
    """Every message in ``paths`` ("-" is standard input: one message, or an mbox)."""
    for name in paths:
        if name == "-":
            yield from _read_stdin(stdin if stdin is not None else sys.stdin.buffer)
            continue
        path = Path(name)
        try:
            if path.is_dir():
                yield from _read_folder(path, recursive=recursive, top=True)
            elif path.exists():
                yield from _read_file(path)
            else:
                yield Problem(name, "no such file or folder", fatal=True)
        except OSError as exc:
            yield Problem(name, exc.strerror or type(exc).__name__, fatal=True)


def _read_stdin(stream: BinaryIO) -> Iterator[Message | Problem]:
    data = stream.read()
    if not data.startswith(b"From "):
        yield Message("<stdin>", data)
        return
    # The mailbox module reads mbox from a file: spool standard input to a private one.
    with tempfile.NamedTemporaryFile(prefix="bouncegw-scan-", suffix=".mbox") as spool:
        spool.write(data)
        spool.flush()
        del data
        yield from _read_mailbox(mailbox.mbox(spool.name, create=False), "<stdin>")


def _read_file(path: Path) -> Iterator[Message | Problem]:
    with path.open("rb") as fh:
        head = fh.read(5)
    if head == b"From ":  # the mbox "From_" line (RFC 4155)
        yield from _read_mailbox(mailbox.mbox(path, create=False), str(path))
    else:
        yield Message(str(path), path.read_bytes())


def _read_folder(path: Path, *, recursive: bool, top: bool) -> Iterator[Message | Problem]:
    if (path / "cur").is_dir() and (path / "new").is_dir():
        yield from _read_mailbox(mailbox.Maildir(path, factory=None, create=False), str(path))
        return
    if (path / ".mh_sequences").exists():
        yield from _read_mailbox(mailbox.MH(path, factory=None, create=False), str(path))
        return
    try:
        entries = sorted(path.iterdir())
    except OSError as exc:
        yield Problem(str(path), exc.strerror or type(exc).__name__, fatal=top)
        return
    for entry in entries:
        try:
            if entry.is_dir():
                if recursive:
                    yield from _read_folder(entry, recursive=True, top=False)
            elif entry.suffix.lower() == ".eml" or _is_mbox(entry):
                yield from _read_file(entry)
        except OSError as exc:
            yield Problem(str(entry), exc.strerror or type(exc).__name__)


def _is_mbox(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(5) == b"From "


def _read_mailbox(box: mailbox.Mailbox[mailbox.Message], where: str) -> Iterator[Message | Problem]:
    try:
        keys = list(box.iterkeys())
    except OSError as exc:
        yield Problem(where, exc.strerror or type(exc).__name__, fatal=True)
        return
    for key in keys:
        location = f"{where}#{key}"
        try:
            yield Message(location, box.get_bytes(key))
        except (OSError, KeyError, mailbox.Error) as exc:
            yield Problem(location, str(exc) or type(exc).__name__)
    box.close()


# -- examining one message --------------------------------------------------------------------------


def examine(message: Message, *, instance: str, store_subjects: bool) -> Examined:
    """Parse and classify one candidate; the incidents it would make (never raises)."""
    wire = as_on_the_wire(message.data)
    try:
        report = parse(wire)
    except Exception as exc:  # a message that does not parse is counted, never the end of a scan
        return Examined(message.location, False, problem=f"not parseable: {type(exc).__name__}")
    if not report.family:
        return Examined(message.location, report.is_bounce)
    try:
        ctx, date = _context(wire, message.location)
        digest = bounce_digest(wire, report.root_identity)
        records = build_incidents(
            report,
            ctx,
            # The ids the relay gives the same bounce: a mailbox copy names the same incident.
            ids=stable_ids(report, digest),
            annotated=report.already_explained,
            relay_outcome="delivered",
            instance=instance,
            store_subjects=store_subjects,
            bounce_digest=digest,
            source=SOURCE_SCAN,
        )
    except Exception as exc:  # whatever one message holds, the scan goes on (and says where)
        return Examined(message.location, True, problem=f"cannot record: {type(exc).__name__}")
    return Examined(
        message.location, True, tuple(records), explained_by_relay=report.already_explained, date=date
    )


def _context(wire: bytes, location: str) -> tuple[MessageContext, datetime | None]:
    """The envelope as the mailbox copy still shows it (trace fields), and the bounce's Date.

    An incident is dated by the bounce's Date, or by the time of the scan when it has none.
    """
    end = header_block.empty_line(wire)
    fields = header_block.parse(wire[: end[0]] if end else wire)
    return_path = (fields.get("return-path") or "").strip().strip("<>").strip()
    rcpts = tuple(
        v.strip().strip("<>")
        for name in _ENVELOPE_FIELDS[1:]
        for v in (fields.get_all(name) or [])
        if v.strip()
    )
    date = _date(fields.get("date"))
    ctx = MessageContext(
        transaction_id=f"scan:{location[-59:]}",  # the column holds 64
        mail_from=return_path,
        rcpt_tos=rcpts[:1],
        client_address=None,
        helo=None,
        received_at=date or datetime.now(UTC),
        size=len(wire),
    )
    return ctx, date


def _date(value: str | None) -> datetime | None:
    """When the bounce was written (its Date field, RFC 5322 section 3.3), in UTC."""
    if not value:
        return None
    try:
        when = parsedate_to_datetime(value)
        # "31 Dec 9999 23:59:59 -0100" parses, then overflows in UTC.
        return (when if when.tzinfo else when.replace(tzinfo=UTC)).astimezone(UTC)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _examine_batch(batch: list[Message], instance: str, store_subjects: bool) -> list[Examined]:
    return [examine(m, instance=instance, store_subjects=store_subjects) for m in batch]


def _ignore_sigint() -> None:
    # Ctrl-C goes to the whole process group: the main process decides how to stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


# -- the scan ---------------------------------------------------------------------------------------


def scan(
    items: Iterable[Message | Problem],
    *,
    jobs: int,
    instance: str,
    store_subjects: bool,
    on_message: Callable[[], None] = lambda: None,
) -> Iterator[Problem | Examined]:
    """Examine every candidate in ``items``; yield problems and results in reading order.

    Every message read calls ``on_message``; ordinary mail (the prefilter says no) yields nothing.
    The first :data:`INLINE_CANDIDATES` candidates are parsed here: a small archive is done before
    a pool could start. Past them, ``jobs`` > 1 parses in that many processes (spawned: forking a
    process that may hold threads is unsafe).
    """
    pending: deque[Future[list[Examined]]] = deque()
    batch: list[Message] = []
    candidates = 0
    with contextlib.ExitStack() as stack:
        pool: ProcessPoolExecutor | None = None
        try:
            for item in items:
                if isinstance(item, Problem):
                    yield item
                    continue
                on_message()
                if not prefilter.might_be_family_bounce(item.data):
                    continue
                candidates += 1
                if jobs <= 1 or candidates <= INLINE_CANDIDATES:
                    yield examine(item, instance=instance, store_subjects=store_subjects)
                    continue
                if pool is None:
                    context = multiprocessing.get_context("spawn")
                    pool = stack.enter_context(
                        ProcessPoolExecutor(jobs, mp_context=context, initializer=_ignore_sigint)
                    )
                batch.append(item)
                if len(batch) >= BATCH:
                    pending.append(pool.submit(_examine_batch, batch, instance, store_subjects))
                    batch = []
                    while len(pending) >= 2 * jobs:
                        yield from pending.popleft().result()
            if batch and pool is not None:
                pending.append(pool.submit(_examine_batch, batch, instance, store_subjects))
            while pending:
                yield from pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def default_jobs() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
