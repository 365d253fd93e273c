"""Shared fixtures: scratch space on tmpfs, real kapald processes, the offline busybox image.

Every daemon a test starts has its own socket and data root under a tmpfs
directory and is stopped (and its directory removed) when the test ends.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
KAPAL = str(BIN / "kapal")
KAPALD = str(BIN / "kapald")
SHARED_BUSYBOX = REPO.parent / "shared" / "images" / "busybox"


def scratch_base() -> str:
    """tmpfs when there is one: file creation on this host's ext4 costs 100x more."""
    return "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()


@pytest.fixture
def scratch() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="kapal-test-", dir=scratch_base()))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def failure(program: str, args: tuple[str, ...], result: subprocess.CompletedProcess) -> str:
    return (
        f"{program} {' '.join(args)} exited {result.returncode}:\n"
        f"{result.stdout.decode()}\n{result.stderr.decode()}"
    )


class Daemon:
    """A kapald process of a test, with helpers to drive it through real clients."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.socket = base / "kapal.sock"
        self.data_root = base / "data"
        self.exec_root = base / "exec"
        self.host = f"unix://{self.socket}"
        self.log = base / "kapald.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        config = self.base / "daemon.json"
        if not config.exists():
            # Its own bridge (and so its own nftables table) per daemon: test daemons run side by side.
            config.write_text(json.dumps({"bridge": "kt" + secrets.token_hex(4)}))
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [
                    KAPALD,
                    "-H",
                    self.host,
                    "--data-root",
                    str(self.data_root),
                    "--exec-root",
                    str(self.exec_root),
                    "--config-file",
                    str(self.base / "daemon.json"),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"kapald exited: {self.log.read_text()}")
            try:
                with socket.socket(socket.AF_UNIX) as probe:
                    probe.connect(str(self.socket))
                return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"kapald did not start: {self.log.read_text()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kapal(
        self, *args: str, input: bytes | None = None, check: bool = True
    ) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [KAPAL, "-H", self.host, *args], input=input, capture_output=True, timeout=120
        )
        if check and result.returncode != 0:
            raise AssertionError(failure("kapal", args, result))
        return result

    def docker(
        self, *args: str, input: bytes | None = None, check: bool = True
    ) -> subprocess.CompletedProcess:
        docker = shutil.which("docker")
        if docker is None:
            pytest.skip("the docker CLI is not installed")
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        env["DOCKER_CONFIG"] = str(self.base / "docker-config")
        result = subprocess.run(
            [docker, "-H", self.host, *args], input=input, capture_output=True, timeout=120, env=env
        )
        if check and result.returncode != 0:
            raise AssertionError(failure("docker", args, result))
        return result


def clean_up_after(base: Path) -> None:
    """Leave nothing behind a test: its containers' processes, their mounts, its runtime state.

    A passing test removes its containers itself; this catches what a failing one left.
    """
    marker = str(base).encode()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"conmon" in cmdline.split(b"\0", 1)[0] and marker in cmdline:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
    for runtime in ("crun", "runc"):
        root = base / "exec" / "runtime" / runtime
        if root.is_dir():
            for container in os.listdir(root):
                subprocess.run(
                    [runtime, f"--root={root}", "delete", "--force", container], capture_output=True
                )
    with open("/proc/self/mounts") as mounts:
        targets = [line.split()[1] for line in mounts if line.split()[1].startswith(str(base))]
    for target in sorted(targets, key=len, reverse=True):
        subprocess.run(["umount", "-l", target], capture_output=True)
    remove_networks(base)


def remove_networks(base: Path) -> None:
    """The bridges and the nftables table of the test's daemon, when a failing test left them."""
    import sqlite3

    try:
        bridge = json.loads((base / "daemon.json").read_text()).get("bridge")
    except (OSError, ValueError, AttributeError):
        return
    if not bridge:
        return  # never touch a default-named bridge: it may be a real daemon's
    names = [bridge]
    try:
        with sqlite3.connect(base / "data" / "kapal.db") as db:
            names += [row[0] for row in db.execute("SELECT bridge FROM networks WHERE bridge != ''")]
    except sqlite3.Error:
        pass
    subprocess.run(["nft", "delete", "table", "ip", f"kapal-{bridge}"], capture_output=True)
    for name in set(names):
        subprocess.run(["ip", "link", "del", name], capture_output=True)
    Path(f"/run/kapal-networks/{bridge}.lock").unlink(missing_ok=True)


@pytest.fixture
def daemon(scratch: Path) -> Iterator[Daemon]:
    instance = Daemon(scratch)
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()
        clean_up_after(scratch)


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The offline busybox root filesystem tarball, made once per test session."""
    from kapal.image.bases import write_busybox_rootfs

    path = tmp_path_factory.mktemp("rootfs") / "busybox.tar"
    with open(path, "wb") as out:
        write_busybox_rootfs(out)
    return path


@pytest.fixture
def busybox(daemon: Daemon, busybox_rootfs: Path) -> str:
    """busybox:latest imported into the test's daemon; returns its image ID."""
    return import_busybox(daemon, busybox_rootfs)


def import_busybox(daemon: Daemon, busybox_rootfs: Path) -> str:
    """Import the offline busybox rootfs as busybox:latest, as an image Docker would run."""
    result = daemon.kapal(
        "import",
        "--change",
        'CMD ["sh"]',
        "--change",
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        str(busybox_rootfs),
        "busybox:latest",
    )
    return result.stdout.decode().strip()


@pytest.fixture
def shared_busybox() -> Path:
    if not (SHARED_BUSYBOX / "index.json").exists():
        pytest.skip("../shared/images/busybox is not present")
    return SHARED_BUSYBOX


def tar_directory(directory: Path, out: Path) -> Path:
    """A tar of *directory*'s contents (as an OCI layout archive is made)."""
    import tarfile

    with tarfile.open(out, "w") as tar:
        for entry in sorted(directory.rglob("*")):
            tar.add(entry, arcname=str(entry.relative_to(directory)), recursive=False)
    return out
