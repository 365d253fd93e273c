"""The docker CLI through a real dockerd (Debian's docker.io, where installed) against kapal-registry."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import bcrypt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec

from tests.registry.conftest import REPO
from tests.registry.helpers import push_busybox

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

    source = push_busybox(f"{registry.host}/x/busybox:1", busybox_tag)
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


def test_docker_login_push_pull_with_token_auth(scratch, dockerd, busybox_tag):
    """docker login, then push and pull through the bearer-token flow (Docker Hub's)."""
    from tests.registry.conftest import RegistryProcess
    from tests.registry.helpers import write_pem_key

    htpasswd = scratch / "htpasswd"
    htpasswd.write_text(f"ci:{bcrypt.hashpw(b'ci-pw', bcrypt.gensalt(4)).decode()}\n")
    key = scratch / "token.pem"
    write_pem_key(ec.generate_private_key(ec.SECP256R1()), key)
    server = RegistryProcess(
        scratch / "auth-root", "--htpasswd", str(htpasswd), "--token-key", str(key)
    ).start()
    env = dict(os.environ, DOCKER_CONFIG=str(scratch / "docker-config"))

    def docker(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["docker", "-H", dockerd.host, *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )

    try:
        push_busybox(f"{server.host}/ci/busybox:1", busybox_tag, "--dest-creds", "ci:ci-pw")
        denied = docker("pull", f"{server.host}/ci/busybox:1")
        assert denied.returncode != 0
        bad = docker("login", server.host, "-u", "ci", "--password-stdin", stdin="wrong\n")
        assert bad.returncode != 0
        login = docker("login", server.host, "-u", "ci", "--password-stdin", stdin="ci-pw\n")
        assert login.returncode == 0, login.stderr
        assert docker("pull", f"{server.host}/ci/busybox:1").returncode == 0
        assert docker("tag", f"{server.host}/ci/busybox:1", f"{server.host}/ci/copy:2").returncode == 0
        push = docker("push", f"{server.host}/ci/copy:2")
        assert push.returncode == 0, push.stderr
        digest = next(word for word in push.stdout.split() if word.startswith("sha256:"))
        token = requests.get(
            f"{server.url}/auth/token",
            params={"service": "kapal-registry", "scope": "repository:ci/copy:pull"},
            auth=("ci", "ci-pw"),
        ).json()["token"]
        head = requests.head(
            f"{server.url}/v2/ci/copy/manifests/2",
            headers={
                "Authorization": f"Bearer {token}",
                "Accept": "application/vnd.docker.distribution.manifest.v2+json",
            },
        )
        assert head.headers["Docker-Content-Digest"] == digest
    finally:
        server.stop()


def test_containerd_ctr_pull_and_push(registry, dockerd, busybox_tag):
    """containerd (the one dockerd runs) pulls from and pushes to the registry with ctr."""
    address = Path(dockerd.base) / "exec" / "containerd" / "containerd.sock"
    for _ in range(200):  # dockerd starts its containerd in the background
        if address.exists():
            break
        time.sleep(0.05)
    if not address.exists() or not shutil.which("ctr"):
        pytest.skip("no containerd socket from dockerd, or no ctr")
    source = push_busybox(f"{registry.host}/ctr/busybox:1", busybox_tag)

    def ctr(*args: str) -> str:
        result = subprocess.run(
            ["ctr", "--address", str(address), "--namespace", "kapal-registry-test", *args],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, f"ctr {' '.join(args)}: {result.stderr}"
        return result.stdout

    ctr("image", "pull", "--plain-http", f"{registry.host}/ctr/busybox:1")
    assert source in ctr("image", "ls")
    ctr("image", "tag", f"{registry.host}/ctr/busybox:1", f"{registry.host}/ctr/pushed:2")
    ctr("image", "push", "--plain-http", f"{registry.host}/ctr/pushed:2")
    head = requests.head(
        f"{registry.url}/v2/ctr/pushed/manifests/2",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
    )
    assert head.headers["Docker-Content-Digest"] == source
