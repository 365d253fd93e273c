"""The docker CLI through a real dockerd (Debian's docker.io, where installed) against kapal-registry."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.registry.conftest import REPO, SHARED_BUSYBOX

sys.path.insert(0, str(REPO / "bench"))
from peers import Dockerd  # noqa: E402

pytestmark = pytest.mark.skipif(
    not (Dockerd.available() and shutil.which("docker") and shutil.which("skopeo")),
    reason="needs dockerd, docker and skopeo",
)


@pytest.fixture
def dockerd(scratch: Path):
    daemon = Dockerd(scratch / "dockerd").start()
    try:
        yield daemon
    finally:
        daemon.stop()


def test_docker_pull_push_pull_by_digest(registry, dockerd, busybox_tag):
    def docker(*args: str) -> str:
        result = subprocess.run(
            ["docker", "-H", dockerd.host, *args], capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, f"docker {' '.join(args)}: {result.stderr}"
        return result.stdout

    source = json.loads((SHARED_BUSYBOX / "index.json").read_text())["manifests"][0]["digest"]
    pushed = subprocess.run(
        [
            "skopeo",
            "copy",
            "--dest-tls-verify=false",
            f"oci:{SHARED_BUSYBOX}:{busybox_tag}",
            f"docker://{registry.host}/x/busybox:1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert pushed.returncode == 0, pushed.stderr
    docker("pull", f"{registry.host}/x/busybox:1")
    repo_digests = json.loads(docker("image", "inspect", f"{registry.host}/x/busybox:1"))[0]["RepoDigests"]
    assert f"{registry.host}/x/busybox@{source}" in repo_digests

    docker("tag", f"{registry.host}/x/busybox:1", f"{registry.host}/y/pushed:2")
    output = docker("push", f"{registry.host}/y/pushed:2")
    digest = next(word for word in output.split() if word.startswith("sha256:"))
    head = requests.head(
        f"{registry.url}/v2/y/pushed/manifests/2",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
    )
    assert head.headers["Docker-Content-Digest"] == digest
    docker("rmi", f"{registry.host}/x/busybox:1", f"{registry.host}/y/pushed:2")
    docker("pull", f"{registry.host}/y/pushed@{digest}")
    out = docker("run", "--rm", "--network", "none", f"{registry.host}/y/pushed@{digest}", "echo", "pulled")
    assert out.strip() == "pulled"
