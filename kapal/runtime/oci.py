"""The OCI runtime (crun or runc) driven through its command line.

Both speak the same CLI (the OCI runtime command line interface), so one class
serves both; the runtime's state lives in its own ``--root`` under kapal's exec
root, so several kapalds never see each other's containers.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from kapal.errors import InvalidArgument, KapalError, NotFound, Unavailable

KNOWN_RUNTIMES = ("crun", "runc")


class RuntimeError_(KapalError):
    """The OCI runtime failed; its own message is kept."""


@dataclass(frozen=True)
class OCIRuntime:
    name: str
    path: str
    root: Path

    @classmethod
    def find(cls, name: str, exec_root: Path, configured: dict[str, dict] | None = None) -> OCIRuntime:
        configured = configured or {}
        if name in configured:
            path = configured[name].get("path") or name
        elif name in KNOWN_RUNTIMES:
            path = name
        else:
            raise InvalidArgument(f"unknown or invalid runtime name: {name}")
        resolved = shutil.which(path)
        if resolved is None:
            raise Unavailable(f"runtime {name}: {path} not found; install it (apt-get install {name})")
        return cls(name, resolved, exec_root / "runtime" / name)

    def _run(self, *args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [self.path, f"--root={self.root}", *args], capture_output=True, text=True, timeout=timeout
        )
        if check and result.returncode != 0:
            message = (result.stderr or result.stdout).strip().splitlines()
            raise RuntimeError_(f"{self.name} {args[0]}: {message[-1] if message else 'failed'}")
        return result

    def start(self, container_id: str) -> None:
        if not self._release_crun_init(container_id):
            self._run("start", container_id)

    def _release_crun_init(self, container_id: str) -> bool:
        """``crun start`` without spawning crun: what it does when there are no poststart hooks.

        A created crun container's first process waits for a byte on ``exec.fifo`` in its state
        directory; ``crun start`` opens it, unlinks it (the container now counts as running) and
        writes the byte. Done here it saves a process start. Anything unusual (runc, hooks, no
        fifo, no reader) is left to the runtime's own ``start``, which reports it properly.
        """
        if os.path.basename(self.path) != "crun":
            return False
        state = self.root / container_id
        try:
            with open(state / "config.json", "rb") as config:
                if b'"poststart"' in config.read():
                    return False
            fd = os.open(state / "exec.fifo", os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            os.unlink(state / "exec.fifo")
            os.write(fd, b"\0")
        except OSError:
            return False
        finally:
            os.close(fd)
        return True

    def kill(self, container_id: str, signal: int, all_processes: bool = False) -> None:
        args = ["kill"]
        if all_processes:
            args.append("--all")
        result = self._run(*args, container_id, str(signal), check=False)
        if result.returncode != 0:
            text = (result.stderr + result.stdout).lower()
            if "not running" in text or "does not exist" in text or "no such process" in text:
                return
            raise RuntimeError_(f"{self.name} kill: {(result.stderr or result.stdout).strip()}")

    def delete(self, container_id: str) -> None:
        result = self._run("delete", "--force", container_id, check=False)
        if result.returncode != 0 and "does not exist" not in (result.stderr + result.stdout):
            raise RuntimeError_(f"{self.name} delete: {(result.stderr or result.stdout).strip()}")

    def state(self, container_id: str) -> dict:
        result = self._run("state", container_id, check=False)
        if result.returncode != 0:
            raise NotFound(f"{self.name}: container {container_id} does not exist")
        return json.loads(result.stdout)

    def pause(self, container_id: str) -> None:
        self._run("pause", container_id)

    def resume(self, container_id: str) -> None:
        self._run("resume", container_id)

    def update(self, container_id: str, resources: dict) -> None:
        resources_file = self.root / f"{container_id}.resources.json"
        resources_file.parent.mkdir(parents=True, exist_ok=True)
        resources_file.write_text(json.dumps(resources))
        try:
            self._run("update", f"--resources={resources_file}", container_id)
        finally:
            resources_file.unlink(missing_ok=True)

    def processes(self, container_id: str) -> list[int]:
        result = self._run("ps", "--format", "json", container_id, check=False)
        if result.returncode != 0:
            return []
        return [int(pid) for pid in json.loads(result.stdout or "[]")]
