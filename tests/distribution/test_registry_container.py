# ruff: noqa: F811 - pytest fixtures are imported from registries.py and named as arguments
"""kapal-registry as a kapal container (contrib/registry/Dockerfile), pushed to and pulled from."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import requests
from conftest import REPO, Daemon
from registries import busybox_image, certs_d, free_port, kapald  # noqa: F401 - fixtures


def registry_container_mounts() -> list[str]:
    """The ``-v`` flags docs/registry.md gives: the host's Python, the venv and the source, read-only."""
    mounts = {
        sys.base_prefix: sys.base_prefix,  # the interpreter the venv's python3 links to
        sys.prefix: "/opt/kapal/venv",
        str(REPO): "/opt/kapal/src",
        "/usr": "/usr",
        "/lib": "/lib",  # merged /usr: /lib and /lib64 are links into it, and ld.so is named through them
        "/lib64": "/lib64",
    }
    flags = []
    for source, target in mounts.items():
        flags += ["-v", f"{source}:{target}:ro"]
    return flags


def wait_healthy(url: str, daemon: Daemon, container: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state = daemon.kapal("inspect", "-f", "{{.State.Status}}", container).stdout.decode().strip()
        if state != "running":
            break
        try:
            if requests.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    logs = daemon.kapal("logs", container, check=False)
    raise AssertionError(f"the registry container did not answer: {logs.stdout!r} {logs.stderr!r}")


def run_registry(daemon: Daemon, port: int, root: Path, *options: str) -> str:
    """``kapal run -d`` the registry image on 127.0.0.1:*port* with its data in *root*; its ID."""
    run = daemon.kapal(
        "run",
        "-d",
        *options,
        "-p",
        f"127.0.0.1:{port}:5000",
        "-v",
        f"{root}:/var/lib/registry",
        *registry_container_mounts(),
        "kapal-registry:test",
        "--workers",
        "1",
    )
    return run.stdout.decode().strip()


def test_registry_runs_as_a_kapal_container(kapald: Daemon, busybox_image: str, scratch: Path) -> None:
    kapald.kapal("build", "-t", "kapal-registry:test", str(REPO / "contrib" / "registry"))
    root = scratch / "registry-root"
    root.mkdir()
    port = free_port()
    container = run_registry(kapald, port, root, "--name", "registry")
    try:
        wait_healthy(f"http://127.0.0.1:{port}", kapald, container)
        name = f"127.0.0.1:{port}/boxed/busybox:v1"
        kapald.kapal("tag", "busybox:latest", name)
        pushed = kapald.kapal("push", name).stdout.decode()
        digest = pushed.split("digest: ", 1)[1].split()[0]
        # The container wrote to the host's directory, content-addressed.
        manifest = (root / "blobs" / "sha256" / digest.partition(":")[2]).read_bytes()
        layers = [layer["digest"] for layer in json.loads(manifest)["layers"]]
        assert all((root / "blobs" / "sha256" / layer.partition(":")[2]).is_file() for layer in layers)

        kapald.kapal("rmi", name, "busybox:latest")
        pulled = kapald.kapal("pull", name).stdout.decode()
        assert f"Digest: {digest}" in pulled
        image = json.loads(kapald.kapal("image", "inspect", name).stdout)[0]
        assert image["Id"] == busybox_image
        assert kapald.kapal("run", "--rm", name, "echo", "boxed").stdout.decode().strip() == "boxed"

        # Its data outlives the container: a new one on the same directory serves the same image.
        kapald.kapal("rm", "-f", container)
        container = run_registry(kapald, port, root)
        wait_healthy(f"http://127.0.0.1:{port}", kapald, container)
        head = requests.head(
            f"http://127.0.0.1:{port}/v2/boxed/busybox/manifests/v1",
            headers={"Accept": json.loads(manifest)["mediaType"]},
        )
        assert head.headers["Docker-Content-Digest"] == digest
    finally:
        kapald.kapal("rm", "-f", container, check=False)
