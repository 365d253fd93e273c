"""Container logs: conmon's ``k8s-file`` log, read back the way ``docker logs`` shows it.

Each line conmon writes is ``<RFC 3339 time> <stdout|stderr> <F|P> <text>``:
``F`` ends a line, ``P`` is a piece of a longer (or unterminated) one.
"""

from __future__ import annotations

import datetime
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path


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


def read_entries(path: Path) -> Iterator[LogEntry]:
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

    Yields None when idle so the caller can notice a client that went away.
    """
    offset = 0
    first = True
    partial = b""
    while True:
        finished = done()
        try:
            size = os.path.getsize(path)
        except OSError:
            size = 0
        if size < offset:  # the log was cut (max size): start over
            offset = 0
        if size > offset or first:
            data = partial
            if size:
                with open(path, "rb") as handle:
                    handle.seek(offset)
                    data += handle.read()
                    offset = handle.tell()
            lines = data.split(b"\n")
            partial = lines.pop()
            parsed = (entry for line in lines if (entry := _parse_line(line)) is not None)
            yield from select_entries(parsed, streams, since_nano, until_nano, tail if first else None)
            first = False
            continue
        if finished:
            return
        yield None
        time.sleep(0.05)
