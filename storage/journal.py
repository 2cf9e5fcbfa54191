"""The outage journal: a bounded, append-only, fsynced JSON-lines file of incidents.

While the database is down or slow, :class:`~storage.recorder.Recorder` appends each batch here
and only then tells the relay the incidents are safe. Replay renames the file to
``<path>.replaying`` (new appends start a fresh file), inserts its lines with the repository's
idempotent insert, and deletes it. A crash at any point leaves either file in place, and the next
replay inserts it again; the fingerprint unique key turns the repeat into a no-op, so each incident
is stored exactly once.

Limits: ``max_bytes`` counts both files; an append that would pass it raises :class:`JournalFull`,
as does a failed write (ENOSPC, EIO: the partial line is cut off again). One process owns a journal
(an exclusive ``flock`` on ``<path>.lock``); gateways on one host need distinct paths.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from storage.incidents import IncidentRecord

log = logging.getLogger(__name__)


class JournalFull(Exception):
    """The journal cannot take these incidents (size limit reached or the disk refused the write)."""


class JournalLocked(Exception):
    """Another process owns this journal."""


def _fsync_dir(path: Path) -> None:
    # A new or renamed file only survives a crash once its directory entry is on disk.
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


#: The least room :meth:`Journal.room_per_incident` assumes one more incident needs. Incident
#: lines are usually well under this; until the journal has seen a longer one (appended, or in a
#: file left by an earlier run), the "full" pre-check must not assume an incident costs nothing.
LINE_FLOOR = 4096


def _scan_lines(path: Path) -> tuple[int, int]:
    """How many record lines ``path`` holds and the longest one's length in bytes (0, 0 if absent)."""
    count = longest = 0
    try:
        with path.open("rb") as fh:
            for line in fh:
                if line.strip():
                    count += 1
                    longest = max(longest, len(line))
    except FileNotFoundError:
        pass
    return count, longest


def _count_lines(path: Path) -> int:
    return _scan_lines(path)[0]


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


class Journal:
    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = Path(path)
        self.replay_path = self.path.with_name(self.path.name + ".replaying")
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(lock_path(self.path), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise JournalLocked(f"journal {self.path} is in use by another process") from None
        self._repair_tail(self.path)
        self._repair_tail(self.replay_path)
        (lines, longest), (replay_lines, replay_longest) = map(_scan_lines, (self.path, self.replay_path))
        self._records = lines + replay_lines
        self._bytes = _size(self.path) + _size(self.replay_path)
        #: The longest record line in the journal's files or appended since it was opened.
        self.largest_line = max(longest, replay_longest)

    @property
    def room_per_incident(self) -> int:
        """Bytes one more incident is assumed to need: the longest line seen, at least LINE_FLOOR.

        Measured from the files left by an earlier run too (read once, when the journal is
        opened), so the estimate holds after a restart with the database down; the floor covers
        the first incident of an outage, before any line was written.
        """
        return max(self.largest_line, LINE_FLOOR)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._lock_fd)

    @staticmethod
    def _repair_tail(path: Path) -> None:
        """Cut a line torn by a crash mid-append (its submit never returned, so nothing is lost)."""
        try:
            with path.open("rb+") as fh:
                data = fh.read()
                if data and not data.endswith(b"\n"):
                    fh.truncate(data.rfind(b"\n") + 1)
                    fh.flush()
                    os.fsync(fh.fileno())
        except FileNotFoundError:
            pass

    @property
    def backlog(self) -> int:
        """Incidents waiting in the journal for the database."""
        return self._records

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def append(self, records: Sequence[IncidentRecord]) -> None:
        """Append and fsync; return only when the lines are on disk, else raise :class:`JournalFull`."""
        lines = [
            json.dumps(r.to_dict(), ensure_ascii=False, separators=(",", ":")).encode(
                "utf-8", "surrogateescape"
            )
            + b"\n"
            for r in records
        ]
        data = b"".join(lines)
        with self._lock:
            if self._bytes + len(data) > self.max_bytes:
                raise JournalFull(
                    f"journal {self.path} is full ({self._bytes} of {self.max_bytes} bytes used)"
                )
            created = not self.path.exists()
            try:
                # Unbuffered: a buffered file would flush what ENOSPC left over once more on
                # close(), after the truncate below, and raise a plain OSError from there.
                fh = self.path.open("ab", buffering=0)
            except OSError as exc:
                raise JournalFull(f"cannot open journal {self.path}: {exc.strerror}") from exc
            with fh:
                start = fh.tell()
                try:
                    view = memoryview(data)
                    while view:  # a raw write may be partial (the disk filled up mid-way)
                        view = view[fh.write(view) or 0 :]
                    os.fsync(fh.fileno())
                except OSError as exc:
                    # Remove the partial write so the file still ends on a line boundary.
                    with contextlib.suppress(OSError):
                        fh.truncate(start)
                    raise JournalFull(f"cannot write journal {self.path}: {exc.strerror}") from exc
            if created:
                _fsync_dir(self.path.parent)
            self._bytes += len(data)
            self._records += len(records)
            self.largest_line = max(self.largest_line, *(len(line) for line in lines))

    def take(self) -> Path | None:
        """The file to replay next (a leftover ``.replaying`` first), or None when empty."""
        with self._lock:
            if self.replay_path.exists():
                return self.replay_path
            if _size(self.path) == 0:
                return None
            os.replace(self.path, self.replay_path)
            _fsync_dir(self.path.parent)
            return self.replay_path

    @staticmethod
    def read(path: Path) -> list[IncidentRecord]:
        records = []
        with path.open("rb") as fh:
            for number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    records.append(
                        IncidentRecord.from_dict(json.loads(line.decode("utf-8", "surrogateescape")))
                    )
                except (ValueError, KeyError, TypeError) as exc:
                    log.error("journal %s line %d is unreadable and skipped: %s", path, number, exc)
        return records

    def done(self, path: Path) -> None:
        """The file's incidents are in the database: delete it."""
        with self._lock:
            lines, size = _count_lines(path), _size(path)
            path.unlink(missing_ok=True)
            _fsync_dir(path.parent)
            self._records = max(0, self._records - lines)
            self._bytes = max(0, self._bytes - size)


def replay_into(journal: Journal, record: Callable[[list[IncidentRecord]], int], batch_size: int) -> int:
    """Write every journalled incident with ``record`` (an idempotent insert) and empty the
    journal; return how many were new. What ``bouncegw db replay-journal`` runs."""
    new = 0
    while (path := journal.take()) is not None:
        records = Journal.read(path)
        for start in range(0, len(records), batch_size):
            new += record(records[start : start + batch_size])
        journal.done(path)
    return new


def journals_in(directory: Path) -> list[Path]:
    """The journals (``*.jsonl``, also one left only as ``*.jsonl.replaying``) in ``directory``."""
    found = set()
    for entry in directory.iterdir():
        name = entry.name.removesuffix(".replaying")
        if name.endswith(".jsonl") and entry.is_file():
            found.add(directory / name)
    return sorted(found)


_WORKER_SUFFIX = re.compile(r"\.w(\d+)$")


def worker_index(path: Path) -> int | None:
    """``i`` for a worker's journal ``<stem>.w<i><suffix>``, None for any other journal."""
    match = _WORKER_SUFFIX.search(path.stem)
    return int(match.group(1)) if match else None


def sibling_journals(path: Path) -> list[Path]:
    """Other journals of the same gateway on this host: ``<stem>[.w<N>]<suffix>`` beside ``path``.

    Worker ``i`` of a gateway run with ``--workers N`` journals to ``<stem>.w<i><suffix>``. When a
    gateway restarts with fewer workers (or as one process), journals of the workers that are gone
    would never be replayed; a recorder adopts every sibling no live process holds the lock of.
    A journal left only as ``<name>.replaying`` (its process died mid-replay) counts, named
    without that suffix, as :func:`journals_in` does.
    """
    base = _WORKER_SUFFIX.sub("", path.stem)
    pattern = re.compile(re.escape(base) + r"(?:\.w\d+)?" + re.escape(path.suffix) + r"(?:\.replaying)?")
    if not path.parent.is_dir():
        return []
    found = {
        path.parent / p.name.removesuffix(".replaying")
        for p in path.parent.iterdir()
        if pattern.fullmatch(p.name) and p.is_file()
    }
    found.discard(path)
    return sorted(found)


def lock_path(path: Path) -> Path:
    """The file whose ``flock`` says which process owns the journal at ``path``."""
    return path.with_name(path.name + ".lock")


def in_use(path: Path) -> bool:
    """Whether a live process owns the journal at ``path`` (checked by taking its lock and letting go)."""
    try:
        fd = os.open(lock_path(path), os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing the descriptor also releases a lock taken here
    return False
