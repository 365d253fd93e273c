"""Daemons to benchmark side by side: a kapald, and a real dockerd where Debian's docker.io is installed.

Both put their data on the same filesystem (a directory under /var/tmp by
default, ``--root`` to change) so file-creation costs are the same for both.
Every daemon started here is stopped, and its directories removed, on exit.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VENV_BIN = Path(sys.executable).parent
KAPAL = str(VENV_BIN / "kapal")
KAPALD = str(VENV_BIN / "kapald")
# As installed: Python loads kapal from cached bytecode, not by compiling every module on each run.
CHILD_ENV = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}


def wait_for_socket(path: Path, process: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited with {process.returncode}")
        try:
            with socket.socket(socket.AF_UNIX) as probe:
                probe.connect(str(path))
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{process.args[0]} did not open {path}")


class Peer:
    name = "peer"

    def __init__(self, base: Path) -> None:
        self.base = base
        self.base.mkdir(parents=True, exist_ok=True)
        self.socket = base / "engine.sock"
        self.host = f"unix://{self.socket}"
        self.process: subprocess.Popen | None = None

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.base, ignore_errors=True)

    # The per-container monitors that detach from the daemon (so are not in its process tree).
    monitor_names: tuple[str, ...] = ()

    def rss_kib(self) -> int:
        """Resident memory of the daemon and its child processes (dockerd's containerd)."""
        assert self.process is not None
        return _tree_rss(self.process.pid)

    def monitors(self) -> list[int]:
        """PIDs of this daemon's per-container monitors: kapald's conmons, dockerd's shims."""
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                comm = Path(f"/proc/{entry}/comm").read_text().strip()
                if not comm.startswith(self.monitor_names):
                    continue
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if str(self.base).encode() in cmdline:  # this daemon's, not another one's
                found.append(int(entry))
        return found

    def monitors_rss_kib(self) -> tuple[int, int]:
        """How many monitors there are and their resident memory (not their containers')."""
        pids = self.monitors()
        return len(pids), sum(_process_rss(pid) for pid in pids)


class Kapald(Peer):
    name = "kapald"
    monitor_names = ("conmon",)

    def start(self) -> Kapald:
        log = open(self.base / "kapald.log", "ab")  # noqa: SIM115 - lives as long as the daemon
        self.process = subprocess.Popen(
            [
                KAPALD,
                "-H",
                self.host,
                "--data-root",
                str(self.base / "data"),
                "--exec-root",
                str(self.base / "exec"),
                "--config-file",
                str(self.base / "daemon.json"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=CHILD_ENV,
        )
        wait_for_socket(self.socket, self.process)
        return self


class Dockerd(Peer):
    """dockerd with no bridge and no iptables by default: the host's network is left alone.

    ``network=True`` gives it its default bridge (on ``bip``, clear of Docker's usual 172.17/16)
    and its userland proxy for published ports, still without touching iptables: a dockerd
    with iptables sets the host's FORWARD policy to DROP and leaves it so after it stops.
    """

    name = "dockerd"
    monitor_names = ("containerd-shim",)  # comm is cut at 15 characters

    def __init__(self, base: Path, network: bool = False, bip: str = "172.31.254.1/24") -> None:
        super().__init__(base)
        self.network = network
        self.bip = bip
        self._had_docker0 = Path("/sys/class/net/docker0").exists()

    @staticmethod
    def available() -> bool:
        return shutil.which("dockerd") is not None

    def stop(self) -> None:
        super().stop()
        if self.network and not self._had_docker0:
            subprocess.run(["ip", "link", "del", "docker0"], capture_output=True)

    def start(self) -> Dockerd:
        log = open(self.base / "dockerd.log", "ab")  # noqa: SIM115 - lives as long as the daemon
        self.process = subprocess.Popen(
            [
                "dockerd",
                "-H",
                self.host,
                "--data-root",
                str(self.base / "data"),
                "--exec-root",
                str(self.base / "exec"),
                "--pidfile",
                str(self.base / "dockerd.pid"),
                *(["--bip", self.bip] if self.network else ["--bridge=none"]),
                "--iptables=false",
                "--ip6tables=false",
                "--config-file",
                str(self.base / "daemon.json"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        (self.base / "daemon.json").write_text("{}")
        wait_for_socket(self.socket, self.process)
        return self


def _process_rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _tree_rss(pid: int) -> int:
    total = 0
    children = [pid]
    while children:
        current = children.pop()
        try:
            with open(f"/proc/{current}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            with open(f"/proc/{current}/task/{current}/children") as kids:
                children += [int(child) for child in kids.read().split()]
        except OSError:
            continue
    return total


def bench_root(default: str = "/var/tmp") -> Path:
    return Path(tempfile.mkdtemp(prefix="kapal-bench-", dir=os.environ.get("KAPAL_BENCH_ROOT", default)))


def timed(command: list[str], runs: int, stdin: bytes | None = None) -> float:
    """Median wall time of *command* over *runs* runs, in seconds (after one warm-up run)."""
    subprocess.run(command, input=stdin, check=True, capture_output=True, env=CHILD_ENV)
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, input=stdin, check=True, capture_output=True, env=CHILD_ENV)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def docker_cli() -> str | None:
    for candidate in ("/usr/local/bin/docker", shutil.which("docker")):
        if candidate and os.path.exists(candidate):
            return candidate
    return None
