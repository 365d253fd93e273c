# ruff: noqa: F811 - pytest fixtures are imported from registries.py and named as arguments
"""Pulls that go wrong: a registry killed mid-download, a tampered blob, names that do not exist."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from conftest import KAPAL, Daemon
from registries import (  # noqa: F401 - fixtures
    Registry,
    busybox_image,
    certs_d,
    kapald,
    registry,
    rootfs_with_file,
)


def blobs(daemon: Daemon) -> set[str]:
    return {entry.name for entry in (daemon.data_root / "content/blobs/sha256").iterdir()}


def partials(daemon: Daemon) -> list[Path]:
    return [p for p in (daemon.data_root / "content/ingest").iterdir() if p.name.startswith("pull-")]


def layer_digests(registry: Registry, repository: str, tag: str) -> list[str]:
    from registries import get_manifest

    return [layer["digest"] for layer in json.loads(get_manifest(registry, repository, tag))["layers"]]


def test_killed_registry_then_retry_resumes(
    kapald: Daemon, busybox_rootfs: Path, registry: Registry, scratch: Path
) -> None:
    name = f"{registry.host}/test/big:v1"
    rootfs = rootfs_with_file(busybox_rootfs, scratch / "big.tar", "big.bin", 128 << 20)
    image_id = kapald.kapal("import", str(rootfs), name).stdout.decode().strip()
    rootfs.unlink()
    kapald.kapal("push", name)
    kapald.kapal("rmi", name)
    before = blobs(kapald)

    pull = subprocess.Popen(
        [KAPAL, "-H", kapald.host, "pull", name], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if any(p.stat().st_size > (4 << 20) for p in partials(kapald)):
            break
        assert pull.poll() is None, pull.communicate()
        time.sleep(0.001)
    registry.kill()
    out, err = pull.communicate(timeout=120)
    assert pull.returncode == 1, out
    message = err.decode().strip()
    assert "\n" not in message and "connection refused" in message, message
    # Nothing half-pulled is visible: no image, no new blob; what arrived waits in a partial file.
    assert kapald.kapal("image", "inspect", name, check=False).returncode == 1
    assert blobs(kapald) == before
    kept = partials(kapald)
    assert len(kept) == 1 and 0 < kept[0].stat().st_size < (130 << 20)

    registry.start()
    resumed = kapald.kapal("pull", name).stdout.decode()
    assert "Resuming download" in resumed
    assert "Pull complete" in resumed
    assert json.loads(kapald.kapal("image", "inspect", name).stdout)[0]["Id"] == image_id
    assert partials(kapald) == []
    size = kapald.kapal("run", "--rm", name, "stat", "-c", "%s", "/big.bin").stdout.decode().strip()
    assert size == str(128 << 20)


def test_tampered_blob_is_refused_and_nothing_is_stored(
    kapald: Daemon, busybox_image: str, registry: Registry
) -> None:
    name = f"{registry.host}/test/tampered:v1"
    kapald.kapal("tag", "busybox:latest", name)
    kapald.kapal("push", name)
    kapald.kapal("rmi", name, "busybox:latest")
    before = blobs(kapald)
    layers_before = set(os.listdir(kapald.data_root / "layers"))
    (layer,) = layer_digests(registry, "test/tampered", "v1")
    data = registry.blob_path(layer)
    content = bytearray(data.read_bytes())
    middle = len(content) // 2
    content[middle : middle + 16] = bytes(16)
    data.write_bytes(bytes(content))

    result = kapald.kapal("pull", name, check=False)
    assert result.returncode == 1
    message = result.stderr.decode().strip()
    assert "\n" not in message
    assert f"verification failed for digest {layer}" in message
    assert kapald.kapal("image", "inspect", name, check=False).returncode == 1
    assert blobs(kapald) == before
    assert layer.partition(":")[2] not in blobs(kapald)
    assert partials(kapald) == []
    assert set(os.listdir(kapald.data_root / "layers")) == layers_before
    assert kapald.kapal("images", "-q").stdout.strip() == b""


def test_missing_names_and_unreachable_registries_fail_in_one_line(
    kapald: Daemon, registry: Registry
) -> None:
    missing = kapald.kapal("pull", f"{registry.host}/nope/nothing:v1", check=False)
    assert missing.returncode == 1
    text = missing.stderr.decode().strip()
    assert "\n" not in text and "not found" in text and "nope/nothing" in text, text

    from registries import free_port

    closed = kapald.kapal("pull", f"127.0.0.1:{free_port()}/x/y:v1", check=False)
    assert closed.returncode == 1
    text = closed.stderr.decode().strip()
    assert "\n" not in text and "connect" in text.lower(), text

    not_local = kapald.kapal("push", f"{registry.host}/nope/nothing:v1", check=False)
    assert not_local.returncode == 1
    assert "An image does not exist locally with the tag" in not_local.stderr.decode()
