"""Container logs: conmon's ``k8s-file`` log, read back the way ``docker logs`` shows it.

Each line conmon writes is ``<RFC 3339 time> <stdout|stderr> <F|P> <text>``:
``F`` ends a line, ``P`` is a piece of a longer (or unterminated) one.

With ``--log-opt max-file=N`` the log rotates as Docker's json-file does: ``ctr.log`` is renamed
``ctr.log.1`` (the older ones shift up, the oldest goes) and conmon reopens a fresh ``ctr.log``
(see ``log_rotation``). Readers take the files oldest first.
"""

from __future__ import annotations

import datetime
import itertools
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class LogEntry:
    time_nano: int
    stream: str  # "stdout" or "stderr"
    data: bytes  # with its newline when the line was complete


def parse_time(text: bytes) -> int:
    """Nanoseconds since the epoch from conmon's ``2006-01-02T15:04:05.999999999+00:00``."""
    raw = text.decode()
    head, _, rest = raw.partition(".")
    digits = ""
    zone = ""
    for index, ch in enumerate(rest):
        if not ch.isdigit():
            zone = rest[index:]
            break
        digits += ch
    if not rest:
        head, zone = raw[:19], raw[19:]
    moment = datetime.datetime.fromisoformat(head + (zone.replace("Z", "+00:00") or "+00:00"))
    return int(moment.timestamp()) * 1_000_000_000 + int((digits + "000000000")[:9])


def format_time(time_nano: int) -> str:
    """Docker's RFC3339Nano in UTC, as ``--timestamps`` prints it (trailing zeros trimmed)."""
    seconds, nanos = divmod(time_nano, 1_000_000_000)
    moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    fraction = f"{nanos:09d}".rstrip("0")
    return f"{moment}{'.' + fraction if fraction else ''}Z"


def _parse_line(line: bytes) -> LogEntry | None:
    parts = line.split(b" ", 3)
    if len(parts) < 3:
        return None
    try:
        stamp = parse_time(parts[0])
    except ValueError:
        return None
    stream = parts[1].decode(errors="replace")
    tag = parts[2]
    text = parts[3] if len(parts) > 3 else b""
    return LogEntry(stamp, stream, text + (b"\n" if tag.startswith(b"F") else b""))


def rotated_paths(path: Path) -> list[Path]:
    """``ctr.log.N`` … ``ctr.log.1``: the rotated files that exist, oldest first."""
    found = []
    number = 1
    while (older := path.with_name(f"{path.name}.{number}")).exists():
        found.append(older)
        number += 1
    return found[::-1]


def read_entries(path: Path) -> Iterator[LogEntry]:
    """The entries of the log at *path*, and of its rotated files before them."""
    for source in [*rotated_paths(path), path]:
        yield from _read_file(source)


def _read_file(path: Path) -> Iterator[LogEntry]:
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed in finally
    except FileNotFoundError:
        return
    try:
        for line in handle:
            if line.endswith(b"\n"):
                entry = _parse_line(line[:-1])
                if entry is not None:
                    yield entry
    finally:
        handle.close()


def select_entries(
    entries: Iterator[LogEntry],
    streams: set[str],
    since_nano: int = 0,
    until_nano: int = 0,
    tail: int | None = None,
) -> Iterator[LogEntry]:
    chosen = (
        entry
        for entry in entries
        if entry.stream in streams
        and entry.time_nano >= since_nano
        and (not until_nano or entry.time_nano <= until_nano)
    )
    if tail is None or tail < 0:
        yield from chosen
        return
    if tail == 0:
        return
    # Tail counts lines: a run of partial entries belongs to the line that ends it.
    lines: deque[list[LogEntry]] = deque(maxlen=tail)
    current: list[LogEntry] = []
    for entry in chosen:
        current.append(entry)
        if entry.data.endswith(b"\n"):
            lines.append(current)
            current = []
    if current:
        lines.append(current)
    for line in lines:
        yield from line


def follow(
    path: Path,
    streams: set[str],
    since_nano: int,
    until_nano: int,
    tail: int | None,
    done: Callable[[], bool],
) -> Iterator[LogEntry | None]:
    """Entries as they are written, until *done()* and the file is read to its end.

    The open file is followed, not its name: when the log rotates (or conmon cuts it at
    max-size) the old file is read to its end before the new ``ctr.log``, so nothing written
    between two looks is lost. conmon closes the old file before the new one takes the name.
    Yields None when idle so the caller can notice a client that went away.
    """
    handle = _open_or_none(path)
    data = handle.read() if handle is not None else b""
    lines = data.split(b"\n")
    partial = lines.pop()
    current = (entry for line in lines if (entry := _parse_line(line)) is not None)
    history = itertools.chain(_rotated_entries(path), current)
    yield from select_entries(history, streams, since_nano, until_nano, tail)
    while True:
        finished = done()
        if handle is None:
            handle = _open_or_none(path)
        data = handle.read() if handle is not None else b""
        if not data and handle is not None and _replaced(handle, path):
            handle.close()
            handle = _open_or_none(path)
            partial = b""
            continue
        if data:
            lines = (partial + data).split(b"\n")
            partial = lines.pop()
            parsed = (entry for line in lines if (entry := _parse_line(line)) is not None)
            yield from select_entries(parsed, streams, since_nano, until_nano, None)
            continue
        if finished:
            if handle is not None:
                handle.close()
            return
        yield None
        time.sleep(0.05)


def _rotated_entries(path: Path) -> Iterator[LogEntry]:
    for source in rotated_paths(path):
        yield from _read_file(source)


def _open_or_none(path: Path) -> Any:
    try:
        return open(path, "rb")  # noqa: SIM115 - the follower closes it
    except FileNotFoundError:
        return None


def _replaced(handle: Any, path: Path) -> bool:
    """Whether *path* now names another file than the one *handle* reads (a new ``ctr.log``)."""
    try:
        return os.stat(path).st_ino != os.fstat(handle.fileno()).st_ino
    except FileNotFoundError:
        return False
