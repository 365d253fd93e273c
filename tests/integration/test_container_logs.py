"""json-file's ``--log-opt max-size/max-file``: the log rotates as Docker's does, and ``logs``
(plain, ``--tail``, ``-f``) reads across the rotated files in order."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from conftest import KAPAL, Daemon

# 400 lines of ~30 bytes at 5 ms apart: ~12 kB through a 2 kB log, so several rotations.
WRITER = "i=0; while [ $i -lt 400 ]; do echo line-$i-xxxxxxxxxxxxxxxxxxxx; i=$((i+1)); sleep 0.005; done"


def _numbers(text: str) -> list[int]:
    return [int(line.split("-")[1]) for line in text.splitlines() if line.startswith("line-")]


def test_max_file_rotates_and_logs_read_across_files(daemon: Daemon, busybox: str) -> None:
    container_id = (
        daemon.kapal(
            "run",
            "-d",
            "--name",
            "rotating",
            "--log-opt",
            "max-size=2k",
            "--log-opt",
            "max-file=3",
            "busybox",
            "sh",
            "-c",
            "sleep 0.5; " + WRITER,
        )
        .stdout.decode()
        .strip()
    )
    follower = subprocess.Popen([KAPAL, "-H", daemon.host, "logs", "-f", "rotating"], stdout=subprocess.PIPE)
    assert daemon.kapal("wait", "rotating").stdout.decode().strip() == "0"
    followed, _ = follower.communicate(timeout=30)
    # -f followed the open file through every rotation: not a line lost, none twice.
    assert _numbers(followed.decode()) == list(range(400))

    directory = Path(daemon.data_root) / "containers" / container_id
    logs = sorted(path.name for path in directory.glob("ctr.log*"))
    assert logs == ["ctr.log", "ctr.log.1", "ctr.log.2"]  # max-file=3: the oldest went
    assert all(path.stat().st_size < 4096 for path in directory.glob("ctr.log*"))

    for client in (daemon.kapal, daemon.docker):
        kept = _numbers(client("logs", "rotating").stdout.decode())
        # What is kept is the newest lines, in order, without gaps across the files.
        assert kept == list(range(kept[0], 400)) and 0 < kept[0] < 400 - 30
        assert _numbers(client("logs", "--tail", "5", "rotating").stdout.decode()) == list(range(395, 400))
    rotated_only = int((directory / "ctr.log").read_bytes().count(b"\n"))
    tail = _numbers(daemon.kapal("logs", "--tail", str(rotated_only + 3), "rotating").stdout.decode())
    assert tail == list(range(400 - rotated_only - 3, 400))  # a tail reaching into ctr.log.1


def test_log_options_are_checked_at_create(daemon: Daemon, busybox: str) -> None:
    bad = daemon.kapal("create", "--log-opt", "max-file=2", "busybox", check=False)
    assert bad.returncode == 125 and "max-file can only be used with max-size" in bad.stderr.decode()
    bad = daemon.kapal(
        "create", "--log-opt", "max-size=1k", "--log-opt", "max-file=x", "busybox", check=False
    )
    assert bad.returncode == 125 and "max-file" in bad.stderr.decode()
    assert daemon.kapal("ps", "-aq").stdout.decode() == ""


def test_rotation_goes_on_after_a_daemon_restart(daemon: Daemon, busybox: str) -> None:
    daemon.kapal(
        "run",
        "-d",
        "--name",
        "survivor",
        "--log-opt",
        "max-size=1k",
        "--log-opt",
        "max-file=2",
        "busybox",
        "sh",
        "-c",
        "while [ ! -e /go ]; do sleep 0.05; done; " + WRITER,
    )
    daemon.stop(signal.SIGKILL)
    time.sleep(1)
    daemon.start()
    daemon.kapal("exec", "survivor", "touch", "/go")  # write once kapald watches again
    assert daemon.kapal("wait", "survivor").stdout.decode().strip() == "0"
    time.sleep(0.3)
    kept = _numbers(daemon.kapal("logs", "survivor").stdout.decode())
    assert kept[-1] == 399 and kept == list(range(kept[0], 400)) and kept[0] > 300
