"""json-file's ``max-file``: rotate a container's log as Docker does (``ctr.log.1``, ``.2``, …).

conmon (2.1.x) can only cut its log at ``--log-size-max``, losing what was in it. So for
``max-file`` > 1 kapald rotates: when ``ctr.log`` has passed ``max-size`` it shifts the rotated
files up (dropping the oldest), renames ``ctr.log`` to ``ctr.log.1`` and asks conmon, through
its control fifo, to reopen its log; conmon writes to the renamed file until it reopens, so no
line is lost. One thread looks at the sizes a few times a second. While kapald is down
conmon's own cut (at a few times ``max-size × max-file``) still bounds the disk a container can take.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from kapal.runtime import monitor

log = logging.getLogger("kapald")

INTERVAL = 0.1
# conmon's own cut, a multiple of what Docker keeps: far enough that kapald rotates first.
CONMON_CAP_FACTOR = 4


@dataclass(frozen=True)
class RotatedLog:
    path: Path  # ctr.log
    bundle: Path  # where conmon's control fifo is
    max_size: int
    max_file: int


def rotate(entry: RotatedLog) -> None:
    """Shift ``ctr.log`` → ``ctr.log.1`` → … → ``ctr.log.<max_file - 1>`` and have conmon reopen."""
    name = entry.path.name
    (entry.path.with_name(f"{name}.{entry.max_file - 1}")).unlink(missing_ok=True)
    for number in range(entry.max_file - 2, 0, -1):
        older = entry.path.with_name(f"{name}.{number}")
        if older.exists():
            os.replace(older, entry.path.with_name(f"{name}.{number + 1}"))
    os.replace(entry.path, entry.path.with_name(f"{name}.1"))
    monitor.reopen_log(entry.bundle)


class LogRotator:
    """Watches the logs of running containers that have ``max-file`` > 1."""

    def __init__(self) -> None:
        self._logs: dict[str, RotatedLog] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = False
        self._thread: threading.Thread | None = None

    def watch(self, key: str, entry: RotatedLog) -> None:
        with self._lock:
            self._logs[key] = entry
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="log-rotator", daemon=True)
                self._thread.start()

    def forget(self, key: str) -> None:
        with self._lock:
            self._logs.pop(key, None)

    def check(self) -> None:
        with self._lock:
            entries = list(self._logs.values())
        for entry in entries:
            try:
                if entry.path.stat().st_size >= entry.max_size:
                    rotate(entry)
            except FileNotFoundError:
                continue  # not reopened yet, or the container is going away
            except OSError as error:
                log.warning("rotating %s: %s", entry.path, error)

    def _run(self) -> None:
        while not self._stopped:
            self.check()
            self._wake.wait(INTERVAL)

    def stop(self) -> None:
        self._stopped = True
        self._wake.set()
