"""What the build tests share: contexts on disk, builds through the CLI, looking inside images."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

from conftest import Daemon


def write_context(directory: Path, files: dict[str, str | bytes]) -> Path:
    """Files (``name: content``) under *directory*; a Dockerfile's text is dedented."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            if name.endswith("Dockerfile"):
                content = textwrap.dedent(content).lstrip()
            content = content.encode()
        path.write_bytes(content)
    return directory


def build(daemon: Daemon, context: Path, *args: str, check: bool = True) -> tuple[str, str]:
    """``kapal build --progress plain``; returns (image ID, the build's log)."""
    iidfile = context.parent / f"{context.name}.iid"
    iidfile.unlink(missing_ok=True)
    result = daemon.kapal(
        "build", "--progress", "plain", "--iidfile", str(iidfile), *args, str(context), check=check
    )
    log = result.stdout.decode() + result.stderr.decode()
    if not check and result.returncode != 0:
        return "", log
    return iidfile.read_text().strip(), log


def inspect(daemon: Daemon, ref: str) -> dict:
    return json.loads(daemon.kapal("image", "inspect", ref).stdout)[0]


def sh(daemon: Daemon, image: str, script: str) -> str:
    """The output of ``sh -c script`` in a container of *image*."""
    result = daemon.kapal("run", "--rm", "--entrypoint", "/bin/sh", image, "-c", script)
    return result.stdout.decode()


def steps_cached(log: str) -> tuple[int, int]:
    """(steps after FROM, of which from the cache) in a build log."""
    lines = log.splitlines()
    steps = [i for i, line in enumerate(lines) if line.startswith("Step ")]
    cached = 0
    for position, index in enumerate(steps):
        end = steps[position + 1] if position + 1 < len(steps) else len(lines)
        if any(line == " ---> Using cache" for line in lines[index:end]):
            cached += 1
    return len(steps) - 1, cached


def docker_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    env["DOCKER_BUILDKIT"] = "0"
    return env
