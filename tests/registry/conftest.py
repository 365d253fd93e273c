"""A kapal-registry process per test, on a free loopback port, its root on tmpfs."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
SHARED_BUSYBOX = REPO.parent / "shared" / "images" / "busybox"
if not SHARED_BUSYBOX.exists():
    SHARED_BUSYBOX = Path("/work/shared/images/busybox")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class RegistryProcess:
    """``python -m kapal.registry.main serve`` run from this worktree."""

    def __init__(self, root: Path, *extra: str, port: int | None = None, scheme: str = "http") -> None:
        self.root = root
        self.extra = list(extra)
        self.port = port or free_port()
        self.scheme = scheme
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.host = f"127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self.log = root.parent / f"{root.name}-{self.port}.log"

    def start(self, verify: object = False) -> RegistryProcess:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        command = [sys.executable, "-m", "kapal.registry.main", "serve"]
        command += ["--listen", self.host, "--root", str(self.root)]
        if "--workers" not in self.extra:
            # One process, so /metrics and the access log see every request of the test.
            command += ["--workers", "1"]
        command += self.extra
        self.process = subprocess.Popen(
            command,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(self.log, "ab"),  # noqa: SIM115
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"kapal-registry exited {self.process.returncode}:\n{self.log.read_text()}"
                )
            try:
                if requests.get(f"{self.url}/health", timeout=2, verify=verify).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"kapal-registry did not start:\n{self.log.read_text()}")

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        code = self.process.returncode
        self.process = None
        return code

    def logs(self) -> list[dict]:
        lines = []
        for line in self.log.read_text().splitlines():
            try:
                lines.append(json.loads(line))
            except ValueError:
                continue
        return lines


@pytest.fixture
def registry(scratch: Path) -> Iterator[RegistryProcess]:
    server = RegistryProcess(scratch / "root").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def busybox_tag() -> str:
    if not (SHARED_BUSYBOX / "index.json").exists():
        pytest.skip("no shared busybox OCI layout")
    index = json.loads((SHARED_BUSYBOX / "index.json").read_text())
    return index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"]
