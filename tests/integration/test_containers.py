"""Containers for real: crun/runc under conmon, driven by the kapal CLI, the docker CLI and docker-py."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import KAPAL, Daemon


def out(result: subprocess.CompletedProcess) -> str:
    return result.stdout.decode()


def err(result: subprocess.CompletedProcess) -> str:
    return result.stderr.decode()


def inspect(daemon: Daemon, name: str, fmt: str) -> str:
    return out(daemon.kapal("inspect", "--format", fmt, name)).strip()


def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


@pytest.mark.parametrize("runtime", ["crun", "runc"])
def test_run_prints_and_exits_with_the_code(daemon: Daemon, busybox: str, runtime: str) -> None:
    assert out(daemon.kapal("run", "--rm", "--runtime", runtime, "busybox", "echo", "hi")) == "hi\n"
    result = daemon.kapal(
        "run",
        "--rm",
        "--runtime",
        runtime,
        "busybox",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
        check=False,
    )
    assert (result.returncode, out(result), err(result)) == (3, "out\n", "err\n")
    assert out(daemon.kapal("ps", "-aq")) == ""


def test_docker_cli_runs_containers(daemon: Daemon, busybox: str) -> None:
    assert out(daemon.docker("run", "--rm", "busybox", "echo", "hi")) == "hi\n"
    assert daemon.docker("run", "--rm", "busybox", "sh", "-c", "exit 7", check=False).returncode == 7
    missing = daemon.docker("run", "--rm", "busybox", "no-such-binary", check=False)
    assert missing.returncode == 127
    assert "no-such-binary" in err(missing)
    assert out(daemon.docker("ps", "-aq")) == ""
    assert daemon.kapal("run", "--rm", "busybox", "no-such-binary", check=False).returncode == 127
    piped = daemon.docker("run", "--rm", "-i", "busybox", "tr", "a-z", "A-Z", input=b"shout\n")
    assert out(piped) == "SHOUT\n"


def _run_in_pty(argv: list[str], keystrokes: list[bytes]) -> tuple[int, bytes]:
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child
        os.execv(argv[0], argv)
    output = b""

    def read_for(seconds: float) -> None:
        nonlocal output
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            ready, _, _ = select.select([fd], [], [], 0.05)
            if ready:
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    return
                if not data:
                    return
                output += data

    read_for(1.5)
    for keys in keystrokes:
        os.write(fd, keys)
        read_for(1.5)
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), output


def test_interactive_tty_shell(daemon: Daemon, busybox: str) -> None:
    code, output = _run_in_pty(
        [KAPAL, "-H", daemon.host, "run", "-it", "--rm", "busybox", "sh"],
        [b"echo tty is $(tty)\r", b"exit 9\r"],
    )
    assert code == 9
    assert b"tty is /dev/pts/0" in output
    docker = "/usr/local/bin/docker" if os.path.exists("/usr/local/bin/docker") else None
    if docker:
        code, output = _run_in_pty(
            [docker, "-H", daemon.host, "run", "-it", "--rm", "busybox", "sh"],
            [b"echo docker $((6*7))\r", b"exit 4\r"],
        )
        assert code == 4 and b"docker 42" in output


def test_detach_keys_leave_the_container_running(daemon: Daemon, busybox: str) -> None:
    code, output = _run_in_pty(
        [KAPAL, "-H", daemon.host, "run", "-it", "--name", "stays", "busybox", "sh"],
        [b"echo still $((2+3))\r", b"\x10\x11"],
    )
    assert code == 0 and b"still 5" in output
    assert out(daemon.kapal("inspect", "-f", "{{.State.Running}}", "stays")) == "true\n"
    code, output = _run_in_pty(  # attach again, detach with keys of one's own
        [KAPAL, "-H", daemon.host, "attach", "--detach-keys", "ctrl-a,x", "stays"],
        [b"echo back\r", b"\x01x"],
    )
    assert code == 0 and b"back" in output
    code, output = _run_in_pty(
        [KAPAL, "-H", daemon.host, "exec", "-it", "stays", "sh"], [b"echo in exec\r", b"\x10\x11"]
    )
    assert code == 0 and b"in exec" in output
    docker = "/usr/local/bin/docker" if os.path.exists("/usr/local/bin/docker") else None
    if docker:
        code, output = _run_in_pty(
            [docker, "-H", daemon.host, "run", "-it", "--name", "dstays", "busybox", "sh"],
            [b"echo docker $((6*7))\r", b"\x10\x11"],
        )
        assert code == 0 and b"docker 42" in output
        assert out(daemon.kapal("inspect", "-f", "{{.State.Running}}", "dstays")) == "true\n"
        daemon.kapal("rm", "-f", "dstays")
    assert out(daemon.kapal("inspect", "-f", "{{.State.Running}}", "stays")) == "true\n"
    bad = daemon.kapal("run", "-it", "--detach-keys", "ctrl-1", "busybox", "true", check=False)
    assert bad.returncode == 125 and "Invalid detach keys" in err(bad)
    daemon.kapal("rm", "-f", "stays")


def test_detached_logs_exec_stop_rm(daemon: Daemon, busybox: str) -> None:
    container_id = out(
        daemon.kapal(
            "run",
            "-d",
            "--name",
            "ticker",
            "busybox",
            "sh",
            "-c",
            "trap 'echo bye; exit 0' TERM; i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.1; done",
        )
    ).strip()
    assert len(container_id) == 64
    wait_for(lambda: "tick 3" in out(daemon.kapal("logs", "ticker")))
    ps = out(daemon.kapal("ps")).splitlines()
    assert ps[0].split()[:3] == ["CONTAINER", "ID", "IMAGE"]
    assert ps[1].startswith(container_id[:12]) and ps[1].endswith("ticker") and "Up " in ps[1]
    assert out(daemon.kapal("logs", "--tail", "1", "ticker")).count("\n") == 1
    assert out(daemon.docker("logs", "--tail", "2", "ticker")).count("tick") == 2
    stamped = out(daemon.kapal("logs", "-t", "--tail", "1", "ticker"))
    assert stamped[:4].isdigit() and "Z tick" in stamped
    executed = daemon.kapal(
        "exec", "ticker", "sh", "-c", "echo in-exec; cat /proc/1/cmdline; exit 5", check=False
    )
    assert executed.returncode == 5
    assert out(executed).startswith("in-exec\nsh\0-c")
    assert out(daemon.docker("exec", "-e", "X=from-exec", "ticker", "sh", "-c", "echo $X")) == "from-exec\n"
    follower = subprocess.Popen([KAPAL, "-H", daemon.host, "logs", "-f", "ticker"], stdout=subprocess.PIPE)
    daemon.kapal("stop", "ticker")
    followed, _ = follower.communicate(timeout=15)
    assert followed.decode().rstrip().endswith("bye")
    assert inspect(daemon, "ticker", "{{.State.Status}} {{.State.ExitCode}}") == "exited 0"
    assert out(daemon.kapal("ps", "-a", "--format", "{{.Names}} {{.Status}}")).startswith("ticker Exited (0)")
    daemon.kapal("start", "ticker")
    assert inspect(daemon, "ticker", "{{.State.Running}}") == "true"
    refused = daemon.kapal("rm", "ticker", check=False)
    assert refused.returncode == 1 and "container is running" in err(refused)
    assert out(daemon.kapal("rm", "-f", "ticker")) == "ticker\n"
    assert out(daemon.kapal("ps", "-aq")) == ""


def test_isolation_from_inside(daemon: Daemon, busybox: str) -> None:
    assert out(daemon.kapal("run", "--rm", "busybox", "cat", "/proc/1/cmdline")) == "cat\0/proc/1/cmdline\0"
    assert out(daemon.kapal("run", "--rm", "-h", "inside", "busybox", "hostname")) == "inside\n"
    mounts = out(daemon.kapal("run", "--rm", "busybox", "cat", "/proc/mounts"))
    assert mounts.startswith("overlay / overlay")
    assert "kapal-test" not in mounts.split("\n", 1)[1].split(" /etc")[0]  # host paths stay hidden
    first = out(
        daemon.kapal("run", "-d", "--name", "one", "busybox", "sh", "-c", "echo mine > /shared; sleep 60")
    ).strip()
    out(daemon.kapal("run", "-d", "--name", "two", "busybox", "sleep", "60"))
    wait_for(lambda: daemon.kapal("exec", "one", "cat", "/shared", check=False).returncode == 0)
    assert daemon.kapal("exec", "two", "cat", "/shared", check=False).returncode == 1
    layers = json.loads(out(daemon.kapal("image", "inspect", "busybox")))[0]["GraphDriver"]["Data"][
        "UpperDir"
    ]
    assert not (Path(layers) / "shared").exists()
    assert (daemon.data_root / "containers" / first / "upper" / "shared").read_text() == "mine\n"
    daemon.kapal("rm", "-f", "one", "two")


def test_limits_and_seccomp(daemon: Daemon, busybox: str) -> None:
    oom = daemon.kapal(
        "run",
        "--name",
        "hog",
        "-m",
        "64m",
        "busybox",
        "sh",
        "-c",
        "head -c 300m /dev/zero | tail",
        check=False,
    )
    assert oom.returncode == 137
    assert inspect(daemon, "hog", "{{.State.OOMKilled}}") == "true"
    bomb = daemon.kapal(
        "run",
        "--rm",
        "--pids-limit",
        "20",
        "busybox",
        "sh",
        "-c",
        "for i in $(seq 40); do sleep 5 & done; echo spawned",
        check=False,
    )
    assert "can't fork" in err(bomb)
    blocked = daemon.kapal("run", "--rm", "busybox", "unshare", "-n", "true", check=False)
    assert blocked.returncode != 0 and "Operation not permitted" in err(blocked)
    assert daemon.kapal("run", "--rm", "--privileged", "busybox", "unshare", "-n", "true").returncode == 0
    mount = "mkdir -p /m && mount -t tmpfs none /m && grep -c ' /m tmpfs' /proc/mounts"
    refused = daemon.kapal("run", "--rm", "busybox", "sh", "-c", mount, check=False)
    assert refused.returncode != 0 and "denied" in err(refused)
    assert out(daemon.kapal("run", "--rm", "--privileged", "busybox", "sh", "-c", mount)) == "1\n"
    assert (
        daemon.kapal(
            "run",
            "--rm",
            "--security-opt",
            "seccomp=unconfined",
            "--cap-add",
            "SYS_ADMIN",
            "busybox",
            "unshare",
            "-n",
            "true",
        ).returncode
        == 0
    )
    nofile = int(out(daemon.kapal("run", "--rm", "busybox", "sh", "-c", "ulimit -n")))
    assert 0 < nofile <= 20000 or nofile <= os.sysconf("SC_OPEN_MAX") * 1000


def test_restart_policy_on_failure(daemon: Daemon, busybox: str) -> None:
    daemon.kapal("run", "-d", "--name", "flaky", "--restart", "on-failure:3", "busybox", "sh", "-c", "exit 1")
    wait_for(
        lambda: inspect(daemon, "flaky", "{{.RestartCount}} {{.State.Status}}") == "3 exited", timeout=20
    )


def test_containers_outlive_a_killed_daemon(daemon: Daemon, busybox: str) -> None:
    daemon.kapal(
        "run",
        "-d",
        "--name",
        "counter",
        "busybox",
        "sh",
        "-c",
        "i=0; while [ $i -lt 40 ]; do echo line $i; i=$((i+1)); sleep 0.05; done; sleep 60",
    )
    daemon.kapal("run", "-d", "--name", "always", "--restart", "always", "busybox", "sleep", "60")
    pid = int(inspect(daemon, "counter", "{{.State.Pid}}"))
    assert daemon.process is not None
    daemon.process.send_signal(signal.SIGKILL)
    daemon.process.wait()
    daemon.process = None
    time.sleep(2.5)  # the container keeps logging while no daemon runs
    assert Path(f"/proc/{pid}").exists()
    daemon.start()
    assert inspect(daemon, "counter", "{{.State.Status}} {{.State.Pid}}") == f"running {pid}"
    logs = out(daemon.kapal("logs", "counter")).splitlines()
    assert logs == [f"line {i}" for i in range(40)]
    waiter = subprocess.Popen([KAPAL, "-H", daemon.host, "wait", "counter"], stdout=subprocess.PIPE)
    time.sleep(0.3)
    daemon.kapal("stop", "-t", "1", "counter")
    assert waiter.communicate(timeout=15)[0] == b"137\n"
    # A graceful daemon restart brings "always" containers back too.
    daemon.kapal("kill", "always")
    wait_for(lambda: inspect(daemon, "always", "{{.State.Running}}") == "true", timeout=10)
    daemon.kapal("rm", "-f", "counter", "always")


def test_container_errors_are_dockers(daemon: Daemon, busybox: str) -> None:
    missing = daemon.kapal("stop", "nothere", check=False)
    assert missing.returncode == 1 and "No such container: nothere" in err(missing)
    daemon.kapal("create", "--name", "dup", "busybox")
    taken = daemon.kapal("create", "--name", "dup", "busybox", check=False)
    assert taken.returncode == 125 and 'The container name "/dup" is already in use' in err(taken)
    not_running = daemon.kapal("kill", "dup", check=False)
    assert not_running.returncode == 1 and "is not running" in err(not_running)
    in_use = daemon.kapal("rmi", "busybox", check=False)
    assert in_use.returncode == 1 and "is using its referenced image" in err(in_use)
    daemon.kapal("rename", "dup", "renamed")
    assert out(daemon.kapal("ps", "-a", "--format", "{{.Names}}")) == "renamed\n"
    assert "Deleted Containers:" in out(daemon.kapal("container", "prune", "-f"))
    assert out(daemon.kapal("ps", "-aq")) == ""


def test_system_prune_as_docker(daemon: Daemon, busybox: str) -> None:
    """Stopped containers, unused networks, anonymous volumes, dangling images: docker's order and text."""
    stopped = out(daemon.kapal("run", "-d", "-v", "/data", "busybox", "true")).strip()
    daemon.kapal("wait", stopped)
    volume = json.loads(out(daemon.kapal("inspect", stopped)))[0]["Mounts"][0]["Name"]
    daemon.kapal("network", "create", "unused")
    dangling = out(daemon.kapal("commit", stopped)).strip()
    keeper = out(daemon.kapal("run", "-d", "busybox", "sleep", "60")).strip()
    declined = daemon.kapal("system", "prune", "--volumes", input=b"n\n")
    assert out(declined) == (
        "WARNING! This will remove:\n"
        "  - all stopped containers\n"
        "  - all networks not used by at least one container\n"
        "  - all anonymous volumes not used by at least one container\n"
        "  - all dangling images\n"
        "  - unused build cache\n\n"
        "Are you sure you want to continue? [y/N] "
    )
    assert stopped in out(daemon.kapal("ps", "-aq", "--no-trunc"))
    pruned = out(daemon.kapal("system", "prune", "-f", "--volumes"))
    sections = pruned.split("\n\n")
    assert sections[0] == f"Deleted Containers:\n{stopped}"
    assert sections[1] == "Deleted Networks:\nunused"
    assert sections[2] == f"Deleted Volumes:\n{volume}"
    assert sections[3].startswith(f"Deleted Images:\ndeleted: {dangling}\n")  # then its layer, as dockerd
    assert sections[4].startswith("Total reclaimed space: ")
    assert out(daemon.kapal("ps", "-aq", "--no-trunc")).split() == [keeper]
    assert "unused" not in out(daemon.kapal("network", "ls", "--format", "{{.Name}}")).split()
    assert out(daemon.kapal("volume", "ls", "-q")) == ""
    assert out(daemon.kapal("images", "-q", "--no-trunc")).split() == [busybox]
    # the docker CLI's system prune goes through the same endpoints
    again = out(daemon.kapal("create", "busybox")).strip()
    assert out(daemon.docker("system", "prune", "-f")).startswith(f"Deleted Containers:\n{again}\n\n")
    daemon.kapal("rm", "-f", keeper)


def test_docker_py_containers(daemon: Daemon, busybox: str) -> None:
    docker = pytest.importorskip("docker")
    client = docker.DockerClient(base_url=daemon.host, version="auto")
    assert client.containers.run("busybox", ["echo", "py"], remove=True) == b"py\n"
    container = client.containers.run(
        "busybox", ["sh", "-c", "echo started; sleep 30"], detach=True, name="py"
    )
    assert container.status in ("created", "running")
    stream = container.logs(stream=True)
    assert next(stream) == b"started\n"
    code, output = container.exec_run(["sh", "-c", "echo exec; exit 2"])
    assert (code, output) == (2, b"exec\n")
    container.reload()
    assert container.attrs["State"]["Running"] is True
    container.kill()
    assert container.wait(timeout=10)["StatusCode"] == 137
    container.remove()
    with pytest.raises(docker.errors.NotFound):
        client.containers.get("py")
    with pytest.raises(docker.errors.ContainerError):
        client.containers.run("busybox", ["sh", "-c", "exit 3"], remove=True)
    client.close()


def test_health_checks_init_and_ps_filters(daemon: Daemon, busybox: str) -> None:
    daemon.kapal(
        "run",
        "-d",
        "--name",
        "checked",
        "--health-cmd",
        "test -f /tmp/ready",
        "--health-interval",
        "100ms",
        "--health-retries",
        "1",
        "--label",
        "role=web",
        "busybox",
        "sh",
        "-c",
        "sleep 1; touch /tmp/ready; sleep 60",
    )
    wait_for(lambda: inspect(daemon, "checked", "{{.State.Health.Status}}") == "unhealthy", timeout=5)
    wait_for(lambda: inspect(daemon, "checked", "{{.State.Health.Status}}") == "healthy", timeout=10)
    assert out(daemon.kapal("ps", "--format", "{{.Status}}")).strip().endswith("(healthy)")
    daemon.kapal("run", "--name", "done", "busybox", "true")
    assert out(daemon.kapal("ps", "-a", "--filter", "status=exited", "--format", "{{.Names}}")) == "done\n"
    assert out(daemon.kapal("ps", "--filter", "label=role=web", "--format", "{{.Names}}")) == "checked\n"
    assert (
        out(daemon.kapal("ps", "-a", "--filter", "exited=0", "-q")).strip()
        == inspect(daemon, "done", "{{.Id}}")[:12]
    )
    assert out(daemon.kapal("ps", "-a", "--filter", "ancestor=busybox", "-q")).count("\n") == 2
    assert out(daemon.kapal("ps", "--filter", "health=healthy", "--format", "{{.Names}}")) == "checked\n"
    processes = out(daemon.kapal("run", "--rm", "--init", "busybox", "cat", "/proc/1/cmdline"))
    assert processes.startswith("/sbin/docker-init\0--\0cat")
    daemon.kapal("rm", "-f", "checked", "done")


def test_docker_py_attach_and_events(daemon: Daemon, busybox: str) -> None:
    docker = pytest.importorskip("docker")
    client = docker.DockerClient(base_url=daemon.host, version="auto")
    container = client.containers.create("busybox", ["sh", "-c", "sleep 0.5; echo one; echo two >&2"])
    stream = container.attach(stream=True, logs=True, stdout=True, stderr=True)
    container.start()
    assert b"".join(stream) == b"one\ntwo\n"
    assert container.wait(timeout=10)["StatusCode"] == 0
    since = int(time.time()) - 5
    container.remove()
    actions = [
        event["Action"]
        for event in client.events(
            since=since, until=int(time.time()) + 1, decode=True, filters={"type": "container"}
        )
    ]
    assert "destroy" in actions
    client.close()


def test_restart_policies_across_a_daemon_restart(daemon: Daemon, busybox: str) -> None:
    daemon.kapal("run", "-d", "--name", "always-stopped", "--restart", "always", "busybox", "sleep", "60")
    daemon.kapal("run", "-d", "--name", "always-died", "--restart", "always", "busybox", "sleep", "60")
    daemon.kapal("run", "-d", "--name", "unless", "--restart", "unless-stopped", "busybox", "sleep", "60")
    daemon.kapal("run", "-d", "--name", "never", "busybox", "sleep", "60")
    daemon.kapal("stop", "-t", "0", "always-stopped", "unless", "never")
    died = int(inspect(daemon, "always-died", "{{.State.Pid}}"))
    daemon.stop(signal.SIGKILL)
    os.kill(died, signal.SIGKILL)  # its process ends while no daemon runs
    wait_for(lambda: not Path(f"/proc/{died}").exists())
    daemon.start()
    # As dockerd: `always` comes back even after a manual stop, `unless-stopped` stays stopped.
    for name in ("always-stopped", "always-died"):
        wait_for(lambda name=name: inspect(daemon, name, "{{.State.Status}}") == "running")
    assert inspect(daemon, "always-died", "{{.State.Pid}}") != str(died)
    assert inspect(daemon, "unless", "{{.State.Status}}") == "exited"
    assert inspect(daemon, "never", "{{.State.Status}}") == "exited"
    daemon.kapal("rm", "-f", "always-stopped", "always-died", "unless", "never")


def test_reused_seccomp_filter_still_filters(daemon: Daemon, busybox: str) -> None:
    blocked = "grep Seccomp: /proc/self/status; unshare -n true"
    first = daemon.kapal("run", "--name", "first", "busybox", "sh", "-c", blocked, check=False)
    second = daemon.kapal(
        "run", "-d", "--name", "second", "busybox", "sh", "-c", blocked + "; sleep 30", check=False
    )
    assert first.returncode != 0 and "Seccomp:\t2" in out(first)
    config = json.loads((daemon.data_root / "containers" / out(second).strip() / "config.json").read_text())
    # The second create took the filter crun compiled for the first, and it still blocks unshare.
    assert config["annotations"]["run.oci.seccomp_bpf_data"] and config["linux"]["seccomp"]
    wait_for(lambda: "Operation not permitted" in err(daemon.kapal("logs", "second")))
    assert "Seccomp:\t2" in out(daemon.kapal("logs", "second"))
    daemon.kapal("rm", "-f", "first", "second")
