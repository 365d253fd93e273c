# ruff: noqa: F811 - pytest fixtures are imported from registries.py and named as arguments
"""Push to and pull from a real registry (docker-registry on loopback), through kapald and its CLI."""

from __future__ import annotations

import json

from conftest import Daemon
from registries import Registry, busybox_image, certs_d, kapald, registry  # noqa: F401 - fixtures


def inspect(daemon: Daemon, name: str) -> dict:
    return json.loads(daemon.kapal("image", "inspect", name).stdout)[0]


def test_push_delete_pull_run(kapald: Daemon, busybox_image: str, registry: Registry) -> None:
    name = f"{registry.host}/test/busybox:v1"
    kapald.kapal("tag", "busybox:latest", name)
    pushed = kapald.kapal("push", name).stdout.decode()
    assert f"The push refers to repository [{registry.host}/test/busybox]" in pushed
    assert "Pushed" in pushed
    digest = pushed.split("digest: ", 1)[1].split()[0]
    assert inspect(kapald, name)["RepoDigests"] == [f"{registry.host}/test/busybox@{digest}"]

    # Pushing again sends nothing: every blob is already there.
    again = kapald.kapal("push", name).stdout.decode()
    assert "Layer already exists" in again and "Pushed" not in again
    assert f"digest: {digest}" in again

    kapald.kapal("rmi", name, "busybox:latest")
    assert kapald.kapal("image", "inspect", busybox_image, check=False).returncode != 0

    pulled = kapald.kapal("pull", name).stdout.decode()
    assert "Pull complete" in pulled
    assert f"Digest: {digest}" in pulled
    assert f"Status: Downloaded newer image for {name}" in pulled
    image = inspect(kapald, name)
    assert image["Id"] == busybox_image
    assert image["RepoDigests"] == [f"{registry.host}/test/busybox@{digest}"]

    assert "Image is up to date" in kapald.kapal("pull", name).stdout.decode()
    run = kapald.kapal("run", "--rm", name, "echo", "pulled and running")
    assert run.stdout.decode().strip() == "pulled and running"

    # By digest, and the digest survives save.
    kapald.kapal("rmi", name)
    by_digest = f"{registry.host}/test/busybox@{digest}"
    kapald.kapal("pull", by_digest)
    assert inspect(kapald, by_digest)["Id"] == busybox_image
    saved = kapald.kapal("save", by_digest).stdout
    assert len(saved) > 100_000


def test_pull_on_a_terminal_draws_progress_bars(
    kapald: Daemon, busybox_image: str, registry: Registry
) -> None:
    import shutil
    import subprocess

    from conftest import KAPAL

    script = shutil.which("script")
    if script is None:
        import pytest

        pytest.skip("script(1) is not installed")
    name = f"{registry.host}/test/tty:v1"
    kapald.kapal("tag", "busybox:latest", name)
    kapald.kapal("push", name)
    kapald.kapal("rmi", name, "busybox:latest")
    command = f"{KAPAL} -H {kapald.host} pull {name}"
    result = subprocess.run([script, "-qec", command, "/dev/null"], capture_output=True, timeout=120)
    import re

    out = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", result.stdout.decode(errors="replace"))
    assert result.returncode == 0, out
    assert "Pull complete" in out and f"Status: Downloaded newer image for {name}" in out
    assert inspect(kapald, name)["Id"] == busybox_image
