"""RUN: one command in a container on the step's root filesystem, its output streamed.

The container is what ``docker run`` would make (the same OCI spec builder,
the same runtime), but short-lived and unlisted: the runtime's ``run``
verb in the foreground with the output on a pipe, no monitor process, no
record in the database. A build step only needs the exit code, the output
and the upper dir it leaves behind.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kapal.container.etc_files import write_etc_files
from kapal.errors import InvalidArgument
from kapal.runtime import cgroups
from kapal.runtime.oci import OCIRuntime
from kapal.runtime.spec import HostFacts, build_spec


@dataclass
class RunRequest:
    args: list[str]
    env: list[str]
    user: str = ""
    workdir: str = ""
    network: str = "none"  # none or host
    mounts: list[dict[str, Any]] = field(default_factory=list)  # OCI mounts


def _network_mode(network: str | None) -> str:
    """The RUN's network: ``host`` when asked for, otherwise a namespace of its own (no interfaces)."""
    if network in (None, "", "default", "none", "bridge"):
        return "none"
    if network == "host":
        return "host"
    raise InvalidArgument(f"network mode {network!r} is not supported for RUN (use default, none or host)")


def run_container(
    runtime: OCIRuntime,
    host: HostFacts,
    cgroup_layout: Any,
    bundle: Path,
    rootfs: Path,
    request: RunRequest,
    output: Callable[[bytes], None],
    container_id: str | None = None,
) -> tuple[str, int]:
    """Run *request* on *rootfs*; returns (container ID, exit code)."""
    container_id = container_id or secrets.token_hex(32)
    bundle.mkdir(parents=True, exist_ok=True)
    mode = _network_mode(request.network)
    etc = write_etc_files(bundle, container_id[:12], "", mode == "host", [], [], [], [])
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
    (bundle / "config.json").write_text(json.dumps(spec))
    process = subprocess.Popen(
        [runtime.path, f"--root={runtime.root}", "run", "--bundle", str(bundle), container_id],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=bundle,
    )
    try:
        assert process.stdout is not None
        fd = process.stdout.fileno()
        while chunk := os.read(fd, 65536):
            output(chunk)
        code = process.wait()
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
        cgroups.remove(container_id, cgroup_layout)
        shutil.rmtree(bundle, ignore_errors=True)
    return container_id, code
