"""The server's durable state: one append-only file of framed records in its data folder.

A publish is answered only once its record is on disk (``fdatasync``), so a server killed with
SIGKILL, or a machine that loses power, loses no message a publisher was told was accepted.
Concurrent publishers share one ``fdatasync`` (group commit: whoever finds no sync running
starts one covering everything written so far; the others wait for it).

Delivery state (leases, delivery attempts, acks) is written to the file at once but not
synced: the kernel keeps it across a killed process, and a power loss can at worst forget an
ack or a lease, so a message is delivered again, which at-least-once delivery allows.

Each record is ``length (u32) | crc32 (u32) | type (u8) | payload``. Reading stops at the first
record that is cut short or fails its checksum (the tail of a write interrupted by a crash) and
the file is truncated there, so later appends never follow garbage. The file is rewritten
from the live state (``rewrite``) when it has grown well past it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
import threading
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

HEADER = struct.Struct("<IIB")
FILE_NAME = "journal"
LOCK_NAME = "lock"


class JournalError(RuntimeError):
    """The data folder cannot be used (locked by another server, unreadable, not writable)."""


def frame(kind: int, payload: bytes) -> bytes:
    return HEADER.pack(len(payload), zlib.crc32(payload, kind), kind) + payload


class Journal:
    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(data_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise JournalError(f"data dir {data_dir}: {exc.strerror}") from exc
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self._lock_fd)
            raise JournalError(f"data dir {data_dir} is in use by another Pub/Sub server") from exc
        self.path = data_dir / FILE_NAME
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        self._io = threading.Lock()
        self._cond = threading.Condition()
        self._syncing = False
        self.size = os.fstat(self._fd).st_size
        # Logical positions (bytes appended since start, across rewrites): what is written,
        # and what is known to be on disk.
        self._appended = 0
        self._synced = 0

    def replay(self) -> Iterator[tuple[int, bytes]]:
        """Yield every intact record in order; truncate a torn or corrupt tail."""
        with open(self.path, "rb") as f:
            data = f.read()
        pos, end = 0, len(data)
        while pos + HEADER.size <= end:
            length, crc, kind = HEADER.unpack_from(data, pos)
            start = pos + HEADER.size
            # kind 0 is never written: zeros are a hole a crash left where data never landed.
            if kind == 0 or start + length > end:
                break
            payload = data[start : start + length]
            if zlib.crc32(payload, kind) != crc:
                break
            yield kind, payload
            pos = start + length
        if pos < end:
            os.ftruncate(self._fd, pos)
            os.fsync(self._fd)
            self.size = pos

    def append(self, records: Iterable[bytes]) -> int:
        """Write framed records in one go; return the position to pass to ``sync``."""
        blob = b"".join(records)
        with self._io:
            before = self.size
            try:
                view = memoryview(blob)
                while view:
                    view = view[os.write(self._fd, view) :]
            except OSError:
                # Never leave half a record behind: later records would be unreadable.
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, before)
                raise
            self.size += len(blob)
            self._appended += len(blob)
            return self._appended

    def sync(self, position: int) -> None:
        """Return once everything appended up to ``position`` is on disk."""
        with self._cond:
            while self._synced < position:
                if self._syncing:
                    self._cond.wait()
                    continue
                self._syncing = True
                target, fd = self._appended, self._fd
                self._cond.release()
                try:
                    os.fdatasync(fd)
                finally:
                    self._cond.acquire()
                    self._syncing = False
                    self._cond.notify_all()
                self._synced = max(self._synced, target)

    def rewrite(self, records: Iterable[bytes]) -> None:
        """Replace the file with ``records`` (the live state), atomically and durably."""
        tmp = self.dir / (FILE_NAME + ".new")
        with self._cond:
            while self._syncing:
                self._cond.wait()
            with self._io:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                size = 0
                try:
                    for record in records:
                        view = memoryview(record)
                        while view:
                            view = view[os.write(fd, view) :]
                        size += len(record)
                    os.fdatasync(fd)
                finally:
                    os.close(fd)
                os.replace(tmp, self.path)
                dir_fd = os.open(self.dir, os.O_RDONLY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
                os.close(self._fd)
                self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND)
                self.size = size
                # Everything the old file held that is still live is in the new one, on disk.
                self._synced = self._appended

    def close(self) -> None:
        with self._cond:
            while self._syncing:
                self._cond.wait()
            with self._io, contextlib.suppress(OSError):
                os.fdatasync(self._fd)
            os.close(self._fd)
            os.close(self._lock_fd)
