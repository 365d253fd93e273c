"""Health checks: the daemon runs a container's HEALTHCHECK as an exec on a timer, as dockerd does.

(Podman needs systemd timers for this; kapald has a thread per checked container.)
"""

from __future__ import annotations

import logging
import os
import select
import signal
import threading
import time
from typing import Any

from kapal.container.exec import ExecService
from kapal.container.model import RUNNING, Container, now_rfc3339
from kapal.container.service import ContainerService
from kapal.errors import KapalError

log = logging.getLogger("kapald")

DEFAULT_INTERVAL = 30.0
DEFAULT_TIMEOUT = 30.0
DEFAULT_RETRIES = 3
LOG_ENTRIES = 5
OUTPUT_LIMIT = 4096


def check_command(healthcheck: dict[str, Any] | None) -> list[str] | None:
    """The command to run, or None when the container has no (or a disabled) health check."""
    test = (healthcheck or {}).get("Test") or []
    if not test or test[0] == "NONE":
        return None
    if test[0] == "CMD-SHELL":
        return ["/bin/sh", "-c", " ".join(test[1:])]
    if test[0] == "CMD":
        return list(test[1:]) or None
    return None


def _seconds(nanoseconds: Any, default: float) -> float:
    value = int(nanoseconds or 0)
    return value / 1e9 if value > 0 else default


class HealthMonitor:
    def __init__(self, containers: ContainerService, execs: ExecService) -> None:
        self.containers = containers
        self.execs = execs
        self._stops: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def started(self, container: Container) -> None:
        command = check_command(container.config.get("Healthcheck"))
        if command is None:
            container.state.health = None
            return
        container.state.health = {"Status": "starting", "FailingStreak": 0, "Log": []}
        stop = threading.Event()
        with self._lock:
            old = self._stops.pop(container.id, None)
            if old is not None:
                old.set()
            self._stops[container.id] = stop
        threading.Thread(
            target=self._loop,
            args=(container, command, stop),
            name=f"health-{container.short_id}",
            daemon=True,
        ).start()

    def stopped(self, container: Container) -> None:
        with self._lock:
            stop = self._stops.pop(container.id, None)
        if stop is not None:
            stop.set()

    def _loop(self, container: Container, command: list[str], stop: threading.Event) -> None:
        check = container.config.get("Healthcheck") or {}
        interval = _seconds(check.get("Interval"), DEFAULT_INTERVAL)
        timeout = _seconds(check.get("Timeout"), DEFAULT_TIMEOUT)
        retries = int(check.get("Retries") or 0) or DEFAULT_RETRIES
        start_period = _seconds(check.get("StartPeriod"), 0.0)
        start_interval = _seconds(check.get("StartInterval"), interval)
        began = time.monotonic()
        while True:
            in_start_period = time.monotonic() - began < start_period
            if stop.wait(start_interval if in_start_period else interval):
                return
            if container.state.status != RUNNING:
                continue
            code, output, started_at = self._probe(container, command, timeout)
            self._record(container, code, output, started_at, retries, in_start_period)

    def _probe(self, container: Container, command: list[str], timeout: float) -> tuple[int, str, str]:
        started_at = now_rfc3339()
        try:
            session = self.execs.create(
                container.id, {"Cmd": command, "AttachStdout": True, "AttachStderr": True}
            )
            sock = self.execs.start(session.id, False, True)
        except KapalError as error:
            return -1, str(error), started_at
        output = b""
        deadline = time.monotonic() + timeout
        assert sock is not None
        with sock:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    if session.pid:
                        try:
                            os.kill(session.pid, signal.SIGKILL)
                        except ProcessLookupError:
                            pass
                    return -1, f"Health check exceeded timeout ({timeout:g}s)", started_at
                ready, _, _ = select.select([sock], [], [], remaining)
                if not ready:
                    continue
                packet = sock.recv(65537)
                if not packet:
                    break
                if len(output) < OUTPUT_LIMIT:
                    output += packet[1:]
        try:
            code = session.done.result(timeout=max(deadline - time.monotonic(), 1))
        except Exception:
            code = -1
        return int(code), output[:OUTPUT_LIMIT].decode(errors="replace"), started_at

    def _record(
        self,
        container: Container,
        code: int,
        output: str,
        started_at: str,
        retries: int,
        in_start_period: bool,
    ) -> None:
        health = container.state.health
        if health is None:
            return
        health.setdefault("Log", []).append(
            {"Start": started_at, "End": now_rfc3339(), "ExitCode": code, "Output": output}
        )
        health["Log"] = health["Log"][-LOG_ENTRIES:]
        before = health.get("Status")
        if code == 0:
            health["Status"] = "healthy"
            health["FailingStreak"] = 0
        elif not in_start_period:
            health["FailingStreak"] = int(health.get("FailingStreak", 0)) + 1
            if health["FailingStreak"] >= retries:
                health["Status"] = "unhealthy"
        self.containers.save_state(container)
        if health["Status"] != before:
            self.containers.events.publish(
                "container",
                f"health_status: {health['Status']}",
                container.id,
                image=container.image,
                name=container.name,
            )
