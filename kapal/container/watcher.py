"""Notices when a container's conmon exits, without polling and without being its parent.

conmon detaches from kapald, so kapald cannot wait(2) for it; a pidfd becomes
readable when the process ends, whoever its parent is. One thread polls all of
them; a pipe wakes it when the set changes.
"""

from __future__ import annotations

import logging
import os
import select
import threading
from collections.abc import Callable

log = logging.getLogger("kapald")


class ExitWatcher:
    def __init__(self, on_exit: Callable[[str], None]) -> None:
        self._on_exit = on_exit
        self._lock = threading.Lock()
        self._fds: dict[int, str] = {}  # pidfd -> key
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._poll = select.poll()
        self._poll.register(self._wake_r, select.POLLIN)
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="exit-watcher", daemon=True)
        self._thread.start()

    def watch(self, pid: int, key: str) -> bool:
        """Call ``on_exit(key)`` once *pid* has exited; False (and no call) if it is gone already."""
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            return False
        with self._lock:
            self._fds[fd] = key
            self._poll.register(fd, select.POLLIN)
        os.write(self._wake_w, b"x")
        return True

    def _run(self) -> None:
        while not self._stopped:
            for fd, _ in self._poll.poll():
                if fd == self._wake_r:
                    try:
                        os.read(self._wake_r, 4096)
                    except BlockingIOError:
                        pass
                    continue
                with self._lock:
                    key = self._fds.pop(fd, None)
                    self._poll.unregister(fd)
                os.close(fd)
                if key is not None:
                    try:
                        self._on_exit(key)
                    except Exception:
                        log.exception("handling the exit of %s failed", key)

    def stop(self) -> None:
        self._stopped = True
        os.write(self._wake_w, b"x")
        self._thread.join(timeout=5)
        with self._lock:
            for fd in self._fds:
                os.close(fd)
            self._fds.clear()
