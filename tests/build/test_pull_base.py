# ruff: noqa: F811 - pytest fixtures are imported from registries.py and named as arguments
"""FROM an image not present here: pulled from a registry (the CNCF registry on loopback), with
``--pull`` and with the credentials the client sends in ``X-Registry-Config``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from build_helpers import build, docker_env, sh, write_context
from conftest import Daemon

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "distribution"))
from registries import (  # noqa: E402, F401 - fixtures
    Registry,
    busybox_image,
    certs_d,
    htpasswd_file,
    kapald,
    registry,
)


def _image_id(daemon: Daemon, ref: str) -> str:
    return json.loads(daemon.kapal("image", "inspect", ref).stdout)[0]["Id"]


def test_a_missing_base_is_pulled_and_pull_refreshes_it(
    kapald: Daemon, busybox_image: str, registry: Registry, scratch: Path
) -> None:
    base = f"{registry.host}/base/busybox:1"
    kapald.kapal("tag", busybox_image, base)
    kapald.kapal("push", base)
    old_id = _image_id(kapald, base)
    kapald.kapal("rmi", base, busybox_image)
    assert kapald.kapal("image", "inspect", base, check=False).returncode != 0

    context = write_context(
        scratch / "ctx", {"Dockerfile": f"FROM {base}\nRUN cat /version 2>/dev/null || echo none\n"}
    )
    image, log = build(kapald, context)
    assert "1: Pulling from " in log
    assert f"Status: Downloaded newer image for {base}" in log
    assert _image_id(kapald, base) == old_id  # the base is kept, as dockerd keeps it
    assert sh(kapald, image, "echo ok") == "ok\n"

    # a newer base in the registry: used only with --pull
    newer = write_context(scratch / "newer", {"Dockerfile": f"FROM {base}\nRUN echo v2 > /version\n"})
    newer_id, _ = build(kapald, newer, "-t", base)
    kapald.kapal("push", base)
    kapald.kapal("tag", old_id, base)
    _, log = build(kapald, context, "--no-cache")
    assert "Pulling from" not in log and "\nnone\n" in log
    _, log = build(kapald, context, "--pull", "--no-cache")
    assert "1: Pulling from " in log and "\nv2\n" in log
    assert _image_id(kapald, base) == newer_id

    missing = write_context(scratch / "missing", {"Dockerfile": f"FROM {registry.host}/no/such:1\n"})
    _, log = build(kapald, missing, check=False)
    assert "manifest unknown" in log or "not found" in log, log


def test_docker_build_pulls_with_registry_config_credentials(
    kapald: Daemon, busybox_image: str, scratch: Path
) -> None:
    import shutil
    import subprocess

    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("the docker CLI is not installed")
    htpasswd = htpasswd_file(scratch / "htpasswd", "alice", "s3cret")
    secured = Registry(scratch / "secured", auth={"htpasswd": {"realm": "kapal-test", "path": str(htpasswd)}})
    secured.start()
    try:
        base = f"{secured.host}/private/busybox:1"
        kapald.kapal("login", "-u", "alice", "--password-stdin", secured.host, input=b"s3cret\n")
        kapald.kapal("tag", busybox_image, base)
        kapald.kapal("push", base)
        kapald.kapal("rmi", base, busybox_image)
        context = write_context(scratch / "ctx", {"Dockerfile": f"FROM {base}\nRUN echo built > /built\n"})

        def docker_build(config: Path) -> subprocess.CompletedProcess:
            return subprocess.run(
                [docker, "-H", kapald.host, "build", "-t", "from-private", str(context)],
                capture_output=True,
                timeout=120,
                env={**docker_env(), "DOCKER_CONFIG": str(config)},
            )

        anonymous = docker_build(scratch / "anonymous-config")
        assert anonymous.returncode != 0
        assert "no basic auth credentials" in anonymous.stderr.decode() or "unauthorized" in (
            anonymous.stderr.decode()
        ), anonymous.stderr.decode()

        docker_config = scratch / "docker-cli-config"
        subprocess.run(
            [docker, "-H", kapald.host, "login", "-u", "alice", "--password-stdin", secured.host],
            input=b"s3cret\n",
            capture_output=True,
            check=True,
            env={**docker_env(), "DOCKER_CONFIG": str(docker_config)},
        )
        result = docker_build(docker_config)
        assert result.returncode == 0, result.stderr.decode()
        assert "Successfully tagged from-private:latest" in result.stdout.decode()
        assert sh(kapald, "from-private", "cat /built") == "built\n"

        # kapal build sends its own logins the same way
        kapald.kapal("rmi", "from-private", base)
        image, log = build(kapald, context, "--no-cache")
        assert "1: Pulling from " in log
        assert sh(kapald, image, "cat /built") == "built\n"
    finally:
        secured.stop()
