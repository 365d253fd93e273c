"""Specs from build_spec run by the real OCI runtimes; every check is made from inside the container.

Each test extracts the offline busybox rootfs under /dev/shm, writes config.json
with build_spec, runs it with ``crun run`` / ``runc run`` under a private
``--root`` and reads what the container printed. crun refuses hosts whose
cgroups are hybrid with controllers enabled in the cgroup2 tree; it is skipped
there with that reason.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kapal.runtime import seccomp
from kapal.runtime.spec import CAPABILITIES, DEFAULT_CAPABILITIES, HostFacts, build_spec, exec_process
from kapal.runtime.users import resolve_user

HYBRID_CONTROLLERS = Path("/sys/fs/cgroup/unified/cgroup.controllers")

PROBES = r"""
echo "cmdline=$(tr '\0' ' ' < /proc/1/cmdline)"
echo "hostname=$(hostname)"
echo "kcore=$(cat /proc/kcore 2>/dev/null | wc -c)"
echo "keys=$(wc -c < /proc/keys)"
if echo 1 > /proc/sys/kernel/ns_last_pid 2>/dev/null; then echo procsys=rw; else echo procsys=ro; fi
echo "capbnd=$(grep CapBnd /proc/self/status | cut -f2)"
if unshare -m true 2>/dev/null; then echo unshare=ok; else echo unshare=denied; fi
mkdir -p /tmp/m
if mount -t tmpfs none /tmp/m 2>/dev/null; then echo mount=ok; else echo mount=denied; fi
echo "nofile=$(ulimit -n)"
echo "nofile_hard=$(ulimit -Hn)"
cgroup_file() {
    controller=$1; v1=$2; v2=$3
    own=$(grep -E "^[0-9]+:([^:]*,)?$controller(,[^:]*)?:" /proc/self/cgroup | cut -d: -f3)
    for f in "/sys/fs/cgroup/$controller$own/$v1" "/sys/fs/cgroup/$controller/$v1" "/sys/fs/cgroup/$v2"; do
        if [ -r "$f" ]; then cat "$f"; return; fi
    done
    echo missing
}
echo "memory=$(cgroup_file memory memory.limit_in_bytes memory.max)"
echo "pids=$(cgroup_file pids pids.max pids.max)"
echo "uid=$(id -u) gid=$(id -g) groups=$(id -G)"
echo "pwd=$(pwd)"
echo "foo=$FOO"
"""


def mask(caps: list[str] | set[str]) -> str:
    value = 0
    for cap in caps:
        value |= 1 << CAPABILITIES.index(cap)
    return f"{value:016x}"


def parse(output: str) -> dict[str, str]:
    values = {}
    for line in output.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key] = value
    return values


@pytest.fixture(params=["crun", "runc"])
def runtime(request: pytest.FixtureRequest) -> str:
    name = request.param
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed")
    if os.geteuid() != 0:
        pytest.skip("running containers needs root")
    if name == "crun" and HYBRID_CONTROLLERS.exists():
        controllers = HYBRID_CONTROLLERS.read_text().strip()
        if controllers:
            pytest.skip(
                "crun refuses hybrid cgroups with controllers in cgroup2 "
                f"({HYBRID_CONTROLLERS}: {controllers})"
            )
    return path


@pytest.fixture(scope="module")
def busybox_tar() -> bytes:
    from kapal.image.bases import write_busybox_rootfs

    out = io.BytesIO()
    try:
        write_busybox_rootfs(out)
    except SystemExit as missing:
        pytest.skip(str(missing))
    return out.getvalue()


@dataclass
class Bundle:
    """One container's directory: rootfs, config.json, etc files and the runtime's state root."""

    runtime: str
    base: Path
    container_id: str

    @property
    def rootfs(self) -> Path:
        return self.base / "bundle" / "rootfs"

    @property
    def state(self) -> Path:
        return self.base / "state"

    def etc_files(self) -> dict[str, str]:
        files = {}
        for name, text in (
            ("hostname", "ignored\n"),
            ("hosts", "127.0.0.1 localhost\n"),
            ("resolv.conf", ""),
        ):
            path = self.base / name
            path.write_text(text)
            files[f"/etc/{name}"] = str(path)
        return files

    def spec(self, create: dict, host: HostFacts | None = None) -> dict:
        return build_spec(
            {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["sh"]},
            create,
            str(self.rootfs),
            str(self.base),
            self.container_id,
            self.etc_files(),
            host or HostFacts.detect(),
            f"/{self.container_id}",
        )

    def write(self, spec: dict) -> None:
        (self.base / "bundle" / "config.json").write_text(json.dumps(spec))

    def cli(self, *args: str, **kwargs: object) -> subprocess.CompletedProcess:
        return subprocess.run(
            [self.runtime, "--root", str(self.state), *args],
            stdin=subprocess.DEVNULL,
            text=True,
            timeout=60,
            **kwargs,  # type: ignore[call-overload]
        )

    def run(self, spec: dict) -> dict[str, str]:
        """Run the container to completion; what it printed as key=value pairs (and the raw output)."""
        self.write(spec)
        result = self.cli(
            "run", "--bundle", str(self.base / "bundle"), self.container_id, capture_output=True
        )
        assert result.returncode == 0, f"{self.runtime} run failed: {result.stderr}\n{result.stdout}"
        values = parse(result.stdout)
        values["_stdout"], values["_stderr"] = result.stdout, result.stderr
        return values


@pytest.fixture
def bundle(runtime: str, busybox_tar: bytes) -> Iterator[Bundle]:
    base = Path(tempfile.mkdtemp(prefix="kapal-spec-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
    container = Bundle(runtime, base, f"kapal-test-{uuid.uuid4().hex[:16]}")
    try:
        container.rootfs.mkdir(parents=True)
        with tarfile.open(fileobj=io.BytesIO(busybox_tar)) as tar:
            tar.extractall(container.rootfs, filter="fully_trusted")
        yield container
    finally:
        container.cli("delete", "-f", container.container_id, capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def probe(bundle: Bundle, host_config: dict | None = None, **create: object) -> tuple[dict, dict[str, str]]:
    spec = bundle.spec({"Cmd": ["sh", "-c", PROBES], **create, "HostConfig": host_config or {}})
    return spec, bundle.run(spec)


def test_default_container_is_confined_as_dockers(bundle: Bundle) -> None:
    host = HostFacts.detect()
    spec, seen = probe(bundle, {"Memory": 64 * 1024 * 1024, "PidsLimit": 50})
    assert seen["cmdline"].startswith("sh -c "), seen["_stdout"]
    assert seen["hostname"] == bundle.container_id[:12]
    assert seen["kcore"] == "0" and seen["keys"] == "0"  # masked (or absent on this kernel)
    assert seen["procsys"] == "ro"
    expected_caps = set(DEFAULT_CAPABILITIES) & host.capabilities
    assert set(spec["process"]["capabilities"]["bounding"]) == expected_caps
    assert seen["capbnd"] == mask(expected_caps)
    assert seen["unshare"] == "denied" and seen["mount"] == "denied"
    assert int(seen["nofile"]) == int(seen["nofile_hard"]) == min(1048576, host.nofile_hard)
    assert seen["memory"] == str(64 * 1024 * 1024)
    assert seen["pids"] == "50"
    assert seen["uid"] == "0 gid=0 groups=0 10"  # busybox lists root in wheel


def test_privileged_container(bundle: Bundle) -> None:
    host = HostFacts.detect()
    _, seen = probe(bundle, {"Privileged": True})
    assert seen["capbnd"] == mask(host.capabilities)
    assert seen["unshare"] == "ok" and seen["mount"] == "ok"
    assert seen["procsys"] == "rw"
    assert seen["pids"] == "max" and seen["memory"] != "missing"


def test_seccomp_not_the_capability_blocks_unshare(bundle: Bundle) -> None:
    spec = bundle.spec({"Cmd": ["sh", "-c", PROBES], "HostConfig": {"CapAdd": ["SYS_ADMIN"]}})
    assert "CAP_SYS_ADMIN" in spec["process"]["capabilities"]["bounding"]
    opened = bundle.run(spec)
    assert opened["unshare"] == "ok" and opened["mount"] == "ok"  # the profile follows the capability
    bundle.cli("delete", "-f", bundle.container_id, capture_output=True)
    # The same capabilities under the filter a container without CAP_SYS_ADMIN gets:
    spec["linux"]["seccomp"] = seccomp.to_oci(seccomp.default_profile(), DEFAULT_CAPABILITIES)
    closed = bundle.run(spec)
    assert closed["unshare"] == "denied" and closed["mount"] == "denied"


def test_user_workdir_env_and_ulimits(bundle: Bundle) -> None:
    _, seen = probe(
        bundle,
        {"Ulimits": [{"Name": "nofile", "Soft": 1024, "Hard": 2048}], "GroupAdd": ["mail"]},
        User="daemon",
        WorkingDir="/work/here",
        Env=["FOO=bar"],
        Hostname="box",
    )
    assert seen["uid"] == "1 gid=1 groups=1 12"
    assert seen["pwd"] == "/work/here"
    assert seen["foo"] == "bar" and seen["hostname"] == "box"
    assert (seen["nofile"], seen["nofile_hard"]) == ("1024", "2048")


def test_exec_process_in_a_running_container(bundle: Bundle) -> None:
    host = HostFacts.detect()
    spec = bundle.spec({"Cmd": ["sleep", "60"], "Env": ["FOO=container"]})
    bundle.write(spec)
    # The container keeps the runtime's stdio: a pipe would never reach EOF while it runs.
    log = bundle.base / "run.log"
    with open(log, "w") as output:
        started = bundle.cli(
            "run", "--detach", "--bundle", str(bundle.base / "bundle"), bundle.container_id,
            stdout=output, stderr=output,
        )  # fmt: skip
    assert started.returncode == 0, log.read_text()
    script = 'echo "foo=$FOO bar=$BAR"; echo "uid=$(id -u)"; echo "pwd=$(pwd)"; grep CapBnd /proc/self/status'
    exec_config = {"Cmd": ["sh", "-c", script], "Env": ["BAR=exec"], "WorkingDir": "/tmp", "Privileged": True}
    process = exec_process(spec, exec_config, resolve_user(str(bundle.rootfs), "mail"), host)
    process_file = bundle.base / "process.json"
    process_file.write_text(json.dumps(process))
    ran = bundle.cli("exec", "--process", str(process_file), bundle.container_id, capture_output=True)
    assert ran.returncode == 0, ran.stderr
    lines = ran.stdout.splitlines()
    assert lines[0] == "foo=container bar=exec"
    assert lines[1] == "uid=8" and lines[2] == "pwd=/tmp"
    assert lines[3].split()[1] == mask(host.capabilities)  # all the daemon holds, not the container's 14
    bundle.cli("kill", bundle.container_id, "KILL", capture_output=True)
