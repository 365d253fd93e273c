"""conmon, the per-container monitor (the one Podman uses).

conmon runs ``<runtime> create``, holds the container's stdio, writes its log
(CRI ``k8s-file`` format), serves an attach socket and writes the exit code to
a file when the container ends. It detaches from kapald, so containers, their
logs and their exit codes outlive a daemon restart.

The protocol, from conmon's source: the pipe named by ``_OCI_SYNCPIPE`` gets
``{"data": <pid>}`` once the container is created (``-1`` and a ``message``
on failure) and, for exec, ``{"data": <exit code>}`` at the end; with
``--exec-attach`` conmon writes to ``_OCI_ATTACHPIPE`` when its attach socket
listens and waits for a byte on ``_OCI_STARTPIPE`` before running the process.
The attach socket is SOCK_SEQPACKET: each packet from conmon is one byte of
pipe number (2 stdout, 3 stderr) and data; what we send goes to stdin, and
shutting down our write side closes the container's stdin. The ``ctl`` fifo
takes ``1 <height> <width>`` lines to resize the terminal.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from kapal.errors import KapalError, Unavailable
from kapal.runtime.oci import OCIRuntime

PIPE_STDOUT = 2
PIPE_STDERR = 3
WINDOW_RESIZE = 1
REOPEN_LOG = 2


class MonitorError(KapalError):
    """The runtime refused to create or exec the container; the message is the runtime's."""


@dataclass(frozen=True)
class Launched:
    conmon_pid: int
    pid: int  # the container's (or exec process's) first process


def conmon_path() -> str:
    path = shutil.which("conmon")
    if path is None and os.path.exists("/usr/libexec/podman/conmon"):
        path = "/usr/libexec/podman/conmon"
    if path is None:
        raise Unavailable("conmon not found; install it (apt-get install conmon)")
    return path


def _read_sync(fd: int) -> list[dict]:
    """Read JSON messages from the sync pipe until conmon closes it or sends one."""
    data = b""
    while True:
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
        if data.endswith(b"\n"):
            break
    messages = []
    for line in data.splitlines():
        try:
            messages.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return messages


def _sync_result(messages: list[dict], what: str) -> int:
    if not messages:
        raise MonitorError(f"{what}: conmon exited without reporting")
    value = int(messages[0].get("data", messages[0].get("pid", -1)))
    if value < 0:
        raise MonitorError(_runtime_message(messages[0].get("message") or f"{what} failed"))
    return value


def _runtime_message(text: str) -> str:
    """The useful part of a runtime's error (crun and runc prefix theirs with noise)."""
    text = text.strip()
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line:
            try:
                return str(json.loads(line).get("msg", line))
            except (json.JSONDecodeError, AttributeError):
                return line
    return text


def _common_args(runtime: OCIRuntime, container_id: str, bundle: Path) -> list[str]:
    return [
        conmon_path(),
        "--api-version",
        "1",
        "-c",
        container_id,
        "-r",
        runtime.path,
        "-b",
        str(bundle),
        "--runtime-arg",
        f"--root={runtime.root}",
        "--full-attach",
        "--socket-dir-path",
        str(bundle),
        "--log-level",
        "error",
    ]


def launch_container(
    runtime: OCIRuntime,
    container_id: str,
    bundle: Path,
    exit_dir: Path,
    log_path: Path | None,
    tty: bool,
    stdin: bool,
    stdin_once: bool = True,
    log_size_max: int | None = None,
) -> Launched:
    """Create the container under a new conmon; returns once it is created (not yet started)."""
    for stale in ("exit", "oom", "pidfile", "conmon.pid", "attach", "ctl", "winsz"):
        (bundle / stale).unlink(missing_ok=True)
    args = _common_args(runtime, container_id, bundle) + [
        "-u",
        container_id,
        "-n",
        container_id,
        "-p",
        str(bundle / "pidfile"),
        "-P",
        str(bundle / "conmon.pid"),
        "--exit-dir",
        str(exit_dir),
        "--persist-dir",
        str(bundle),
        "-l",
        f"k8s-file:{log_path}" if log_path else "none",
    ]
    if log_path and log_size_max:
        args += ["--log-size-max", str(log_size_max)]
    if tty:
        args.append("-t")
    if stdin:
        # docker's StdinOnce: stdin closes when the first attached client leaves, else it stays open.
        args += ["-i"] if stdin_once else ["-i", "--leave-stdin-open"]
    sync_r, sync_w = os.pipe()
    try:
        process = subprocess.Popen(
            args,
            env={**_clean_env(), "_OCI_SYNCPIPE": str(sync_w)},
            pass_fds=(sync_w,),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=bundle,
        )
        os.close(sync_w)
        sync_w = -1
        messages = _read_sync(sync_r)
        stderr = process.communicate()[1]
        if not messages and stderr:
            raise MonitorError(_runtime_message(stderr.decode(errors="replace")))
        pid = _sync_result(messages, "creating the container")
    finally:
        os.close(sync_r)
        if sync_w >= 0:
            os.close(sync_w)
    conmon_pid = int((bundle / "conmon.pid").read_text().strip())
    return Launched(conmon_pid, pid)


@dataclass
class ExecLaunch:
    conmon_pid: int
    sync_fd: int  # read the pid, then the exit code, from here
    start_fd: int  # write one byte here once attached
    attach_socket: Path


def launch_exec(
    runtime: OCIRuntime, container_id: str, exec_dir: Path, process_spec: Path, tty: bool, stdin: bool
) -> ExecLaunch:
    """Start conmon for an exec session; it waits on ``start_fd`` until we are attached."""
    args = _common_args(runtime, container_id, exec_dir) + [
        "-u",
        exec_dir.name,
        "-p",
        str(exec_dir / "pidfile"),
        "-P",
        str(exec_dir / "conmon.pid"),
        "--exec",
        "--exec-attach",
        "--exec-process-spec",
        str(process_spec),
        "--exit-dir",
        str(exec_dir),
        "-l",
        "none",
    ]
    if tty:
        args.append("-t")
    if stdin:
        args.append("-i")
    sync_r, sync_w = os.pipe()
    attach_r, attach_w = os.pipe()
    start_r, start_w = os.pipe()
    process = subprocess.Popen(
        args,
        env={
            **_clean_env(),
            "_OCI_SYNCPIPE": str(sync_w),
            "_OCI_ATTACHPIPE": str(attach_w),
            "_OCI_STARTPIPE": str(start_r),
        },
        pass_fds=(sync_w, attach_w, start_r),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=exec_dir,
    )
    for fd in (sync_w, attach_w, start_r):
        os.close(fd)
    # conmon's first process forks and exits; the one that stays writes conmon.pid. Its start pipe
    # read happens before that fork, so release it now: the exec itself waits for a second byte.
    os.write(start_w, b"0")
    process.wait()
    try:
        messages = _read_sync(attach_r)
    finally:
        os.close(attach_r)
    if messages and int(messages[0].get("data", 0)) < 0:
        os.close(sync_r)
        os.close(start_w)
        raise MonitorError(_runtime_message(messages[0].get("message") or "exec failed"))
    conmon_pid = int((exec_dir / "conmon.pid").read_text().strip())
    return ExecLaunch(conmon_pid, sync_r, start_w, exec_dir / "attach")


def _clean_env() -> dict[str, str]:
    keep = ("PATH", "LANG", "LC_ALL", "TZ")
    env = {key: os.environ[key] for key in keep if key in os.environ}
    env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    return env


def connect_attach(bundle: Path) -> socket.socket:
    """Connect to conmon's attach socket (through /proc/self/fd: the path may exceed sun_path)."""
    directory = os.open(bundle, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        sock.connect(f"/proc/self/fd/{directory}/attach")
    except OSError:
        sock.close()
        raise
    finally:
        os.close(directory)
    return sock


def resize(bundle: Path, height: int, width: int) -> None:
    """Resize the container's terminal through conmon's control fifo."""
    _control(bundle, f"{WINDOW_RESIZE} {height} {width}\n")


def reopen_log(bundle: Path) -> None:
    """Have conmon reopen its log file (a new ``ctr.log`` after the old one was renamed)."""
    _control(bundle, f"{REOPEN_LOG} 0 0\n")


def _control(bundle: Path, line: str) -> None:
    try:
        fd = os.open(bundle / "ctl", os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def read_exit(bundle: Path) -> int | None:
    try:
        return int((bundle / "exit").read_text().strip())
    except (OSError, ValueError):
        return None


def oom_killed(bundle: Path) -> bool:
    return (bundle / "oom").exists()
