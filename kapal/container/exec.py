"""``docker exec``: more processes in a running container, each under its own conmon.

Exec sessions are kept in memory, as dockerd keeps them: they describe
processes of running containers and mean nothing after a daemon restart.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import secrets
import shutil
import socket
import threading
from dataclasses import dataclass, field
from typing import Any

from kapal.container.model import PAUSED, RUNNING
from kapal.container.service import ContainerService
from kapal.errors import Conflict, KapalError, NotFound
from kapal.runtime import monitor
from kapal.runtime.spec import exec_process
from kapal.runtime.users import resolve_user


@dataclass
class ExecSession:
    id: str
    container_id: str
    config: dict[str, Any]
    running: bool = False
    started: bool = False
    exit_code: int | None = None
    pid: int = 0
    done: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)

    def to_json(self) -> dict[str, Any]:
        cmd = self.config.get("Cmd") or []
        return {
            "ID": self.id,
            "Running": self.running,
            "ExitCode": self.exit_code,
            "ProcessConfig": {
                "tty": bool(self.config.get("Tty")),
                "entrypoint": cmd[0] if cmd else "",
                "arguments": cmd[1:],
                "privileged": bool(self.config.get("Privileged")),
                "user": self.config.get("User") or "",
            },
            "OpenStdin": bool(self.config.get("AttachStdin")),
            "OpenStderr": bool(self.config.get("AttachStderr")),
            "OpenStdout": bool(self.config.get("AttachStdout")),
            "CanRemove": not self.running and self.started,
            "ContainerID": self.container_id,
            "DetachKeys": self.config.get("DetachKeys") or "",
            "Pid": self.pid,
        }


class ExecService:
    def __init__(self, containers: ContainerService) -> None:
        self.containers = containers
        self._lock = threading.Lock()
        self._sessions: dict[str, ExecSession] = {}

    def create(self, ref: str, body: dict[str, Any]) -> ExecSession:
        container = self.containers.get(ref)
        if container.state.status == PAUSED:
            raise Conflict(f"Container {container.id} is paused, unpause the container before exec")
        if container.state.status != RUNNING:
            raise Conflict(f"Container {container.id} is not running")
        if not body.get("Cmd"):
            from kapal.errors import InvalidArgument

            raise InvalidArgument("No exec command specified")
        session = ExecSession(secrets.token_hex(32), container.id, body)
        with self._lock:
            self._sessions[session.id] = session
        container.exec_ids.append(session.id)
        self.containers.events.publish(
            "container",
            f"exec_create: {' '.join(body['Cmd'])}",
            container.id,
            **_attributes(container, session),
        )
        return session

    def get(self, exec_id: str) -> ExecSession:
        with self._lock:
            session = self._sessions.get(exec_id)
        if session is None:
            raise NotFound(f"No such exec instance: {exec_id}")
        return session

    def start(self, exec_id: str, tty: bool | None = None, attach: bool = True) -> socket.socket | None:
        """Run the session's process; returns a socket to its stdio when *attach*."""
        session = self.get(exec_id)
        with self._lock:
            if session.started:
                raise Conflict(f"Error: Exec command {exec_id} has already run")
            session.started = True
        container = self.containers.get(session.container_id)
        if container.state.status != RUNNING:
            raise Conflict(f"Container {container.id} is not running")
        config = dict(session.config)
        if tty is not None:
            config["Tty"] = tty
        directory = self.containers.path(container)
        exec_dir = directory / "exec" / exec_id[:12]
        exec_dir.mkdir(parents=True, exist_ok=True)
        spec = json.loads((directory / "config.json").read_text())
        user = resolve_user(str(directory / "rootfs"), config["User"]) if config.get("User") else None
        process = exec_process(spec, config, user, self.containers.host)
        (exec_dir / "process.json").write_text(json.dumps(process))
        runtime = self.containers.runtime(container.runtime)
        launch = monitor.launch_exec(
            runtime,
            container.id,
            exec_dir,
            exec_dir / "process.json",
            bool(config.get("Tty")),
            bool(config.get("AttachStdin")),
        )
        sock = None
        try:
            if attach:
                sock = monitor.connect_attach(exec_dir)
            os.write(launch.start_fd, b"1")
        finally:
            os.close(launch.start_fd)
        sync = os.fdopen(launch.sync_fd, "rb")
        first = _read_message(sync)
        if first is None or int(first.get("data", -1)) < 0:
            sync.close()
            if sock is not None:
                sock.close()
            shutil.rmtree(exec_dir, ignore_errors=True)
            message = (first or {}).get("message") or "exec failed"
            session.exit_code = 126 if "permission denied" in message.lower() else 127
            session.done.set_result(session.exit_code)
            raise ExecError(f"OCI runtime exec failed: {monitor._runtime_message(message)}")
        session.pid = int(first["data"])
        session.running = True
        self.containers.events.publish(
            "container",
            f"exec_start: {' '.join(config['Cmd'])}",
            container.id,
            **_attributes(container, session),
        )

        def reap() -> None:
            message = _read_message(sync)
            sync.close()
            code = int(message.get("data", 0)) if message else 0
            session.exit_code = code if code >= 0 else 126
            session.running = False
            shutil.rmtree(exec_dir, ignore_errors=True)
            self.containers.events.publish(
                "container",
                "exec_die",
                container.id,
                **_attributes(container, session, exitCode=str(session.exit_code)),
            )
            session.done.set_result(session.exit_code)

        threading.Thread(target=reap, name=f"exec-{exec_id[:12]}", daemon=True).start()
        return sock

    def resize(self, exec_id: str, height: int, width: int) -> None:
        session = self.get(exec_id)
        container = self.containers.get(session.container_id)
        monitor.resize(self.containers.path(container) / "exec" / exec_id[:12], height, width)

    def forget_container(self, container_id: str) -> None:
        with self._lock:
            for exec_id in [i for i, s in self._sessions.items() if s.container_id == container_id]:
                del self._sessions[exec_id]


class ExecError(KapalError):
    """The runtime could not run the exec'd command (missing binary, permissions)."""

    http_status = 500


def _read_message(stream: Any) -> dict[str, Any] | None:
    line = stream.readline()
    if not line:
        return None
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        return None


def _attributes(container: Any, session: ExecSession, **extra: str) -> dict[str, str]:
    attributes = {"image": container.image, "name": container.name, "execID": session.id}
    attributes.update(extra)
    return attributes
