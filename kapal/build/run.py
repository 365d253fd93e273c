"""RUN: one command in a container on the step's root filesystem, its output streamed.

The container is what ``docker run`` would make (the same OCI spec builder,
the same runtime), but short-lived and unlisted: the runtime's ``run``
verb in the foreground with the output on a pipe, no monitor process, no
record in the database. A build step only needs the exit code, the output
and the upper dir it leaves behind.

As in dockerd's legacy builder, a RUN is on the engine's default bridge unless
the build says ``--network=none|host`` (or names another network): the network
namespace is made first, held by a thread of kapald, and given its endpoint through
the network service, so the runtime only joins it.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kapal.container.etc_files import write_etc_files
from kapal.container.model import Container, now_rfc3339
from kapal.errors import InvalidArgument, KapalError
from kapal.network import bridge as links
from kapal.runtime import cgroups
from kapal.runtime.oci import OCIRuntime
from kapal.runtime.spec import HostFacts, build_spec, container_sysctls

_CLONE_NEWNET = 0x40000000


class NamespaceThread:
    """A thread of kapald alone in a new network namespace, holding it while a RUN needs it.

    The network service plugs a namespace by a task's ID (``/proc/<id>/ns/net``), and a
    thread's ID is one: no process is started for it (``unshare`` with a shell to hold the
    namespace cost ~25 ms a step). Namespaces are per thread, so kapald's others stay put;
    the namespace goes when the thread ends and nothing else holds it.
    """

    def __init__(self) -> None:
        self.tid = 0
        self._ready = threading.Event()
        self._release = threading.Event()
        self._error: OSError | None = None
        self._thread = threading.Thread(target=self._hold, name="run-netns", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            raise InvalidArgument(f"making RUN's network namespace: {self._error.strerror or self._error}")

    def _hold(self) -> None:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(_CLONE_NEWNET) != 0:
            number = ctypes.get_errno()
            self._error = OSError(number, os.strerror(number))
            self._ready.set()
            return
        self.tid = threading.get_native_id()
        self._ready.set()
        self._release.wait()

    def close(self) -> None:
        self._release.set()
        self._thread.join()


@dataclass
class RunRequest:
    args: list[str]
    env: list[str]
    user: str = ""
    workdir: str = ""
    network: str = ""  # "" or default: the default bridge; none, host, or a network's name
    mounts: list[dict[str, Any]] = field(default_factory=list)  # OCI mounts


def network_mode(network: str | None) -> str:
    """The RUN's network mode: the default bridge unless the build names another, as dockerd's."""
    if network in (None, "", "default"):
        return "bridge"
    if network.startswith("container:"):
        raise InvalidArgument(f"network mode {network!r} is not supported for RUN")
    return network


@contextmanager
def run_network(networks: Any, container_id: str, mode: str, bundle: Path) -> Iterator[tuple[str, dict]]:
    """The RUN container's network: yields (the spec's NetworkMode, its /etc files).

    ``none`` and ``host`` need nothing; any other mode gets an endpoint from *networks*
    (kapal.network.service.NetworkService) in a namespace made here, released on the way out.
    """
    hostname = container_id[:12]
    if mode in ("none", "host") or networks is None:
        yield (
            mode if mode == "host" else "none",
            write_etc_files(bundle, hostname, "", mode == "host", [], [], [], []),
        )
        return
    container = Container(
        id=container_id,
        name=f"build-{hostname}",
        image="",
        image_id="",
        created=now_rfc3339(),
        config={"Hostname": hostname},
        host_config={"NetworkMode": mode},
        args=[],
        runtime="",
    )
    container.endpoints_config = networks.plan(container.host_config)  # an unknown network fails here
    holder = NamespaceThread()
    try:
        links.lo_up(holder.tid)
        try:
            addresses = networks.prepare(container)
            etc = write_etc_files(
                bundle,
                hostname,
                "",
                False,
                [],
                [],
                [],
                [],
                addresses=addresses,
                embedded_dns=networks.uses_embedded_dns(container),
            )
            networks.attach(container, holder.tid)
            yield f"container:/proc/{holder.tid}/ns/net", etc
        finally:
            networks.detach(container)
    finally:
        holder.close()


def run_container(
    runtime: OCIRuntime,
    host: HostFacts,
    cgroup_layout: Any,
    bundle: Path,
    rootfs: Path,
    request: RunRequest,
    output: Callable[[bytes], None],
    container_id: str | None = None,
    networks: Any = None,
    cancellation: Any = None,
) -> tuple[str, int]:
    """Run *request* on *rootfs*; returns (container ID, exit code).

    *cancellation* (kapal.build.builder.Cancellation) may kill the container while it runs.
    """
    container_id = container_id or secrets.token_hex(32)
    bundle.mkdir(parents=True, exist_ok=True)
    try:
        with run_network(networks, container_id, network_mode(request.network), bundle) as (mode, etc):
            create = {
                "Cmd": request.args,
                "Entrypoint": None,
                "Env": request.env,
                "User": request.user,
                "WorkingDir": request.workdir,
                "HostConfig": {"NetworkMode": mode},
            }
            spec = build_spec(
                {},
                create,
                str(rootfs),
                str(bundle),
                container_id,
                etc,
                host,
                cgroups.cgroups_path(container_id),
                mounts=request.mounts,
            )
            if mode.startswith("container:"):  # a namespace of its own, made beforehand
                spec["linux"].setdefault("sysctl", {}).update(container_sysctls({}, True))
            (bundle / "config.json").write_text(json.dumps(spec))
            return container_id, _run(runtime, bundle, container_id, output, cancellation)
    finally:
        cgroups.remove(container_id, cgroup_layout)
        shutil.rmtree(bundle, ignore_errors=True)


def _run(
    runtime: OCIRuntime, bundle: Path, container_id: str, output: Callable[[bytes], None], cancellation: Any
) -> int:
    process = subprocess.Popen(
        [runtime.path, f"--root={runtime.root}", "run", "--bundle", str(bundle), container_id],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=bundle,
    )

    def kill() -> None:
        try:
            runtime.kill(container_id, signal.SIGKILL)
        except KapalError:
            pass
        if not (runtime.root / container_id).exists():  # not created yet: stop the runtime instead
            process.kill()

    try:
        with cancellation.guard(kill) if cancellation is not None else _nothing():
            assert process.stdout is not None
            fd = process.stdout.fileno()
            while chunk := os.read(fd, 65536):
                output(chunk)
            return process.wait()
    except BaseException:
        process.kill()
        process.wait()
        raise
    finally:
        if process.stdout is not None:
            process.stdout.close()
        if (runtime.root / container_id).exists():
            subprocess.run(
                [runtime.path, f"--root={runtime.root}", "delete", "--force", container_id],
                capture_output=True,
            )


@contextmanager
def _nothing() -> Iterator[None]:
    yield
