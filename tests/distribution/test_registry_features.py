# ruff: noqa: F811 - pytest fixtures are imported from registries.py and named as arguments
"""The docker CLI through kapald, multi-platform indexes, mirrors, pull -a, shared downloads."""

from __future__ import annotations

import json
import secrets
import subprocess
from pathlib import Path

from conftest import KAPAL, Daemon, clean_up_after
from registries import (  # noqa: F401 - fixtures
    Registry,
    busybox_image,
    certs_d,
    get_manifest,
    kapald,
    put_blob,
    put_manifest,
    registry,
    rootfs_with_file,
)

from kapal.image.manifest import host_platform


def inspect(daemon: Daemon, name: str) -> dict:
    return json.loads(daemon.kapal("image", "inspect", name).stdout)[0]


def test_docker_cli_push_and_pull_through_kapald(
    kapald: Daemon, busybox_image: str, registry: Registry
) -> None:
    name = f"{registry.host}/cli/busybox:v1"
    kapald.docker("tag", "busybox:latest", name)
    pushed = kapald.docker("push", name).stdout.decode()
    assert "digest: sha256:" in pushed
    kapald.docker("rmi", name, "busybox:latest")
    pulled = kapald.docker("pull", name).stdout.decode()
    assert "Downloaded newer image" in pulled
    assert kapald.docker("image", "inspect", "-f", "{{.Id}}", name).stdout.decode().strip() == busybox_image
    out = kapald.docker("run", "--rm", name, "echo", "hello from the registry").stdout.decode()
    assert out.strip() == "hello from the registry"
    # `docker run` of an image that is not there pulls it first.
    kapald.docker("rmi", name)
    run = kapald.docker("run", "--rm", name, "true")
    assert "Pulling from" in run.stderr.decode()


def test_multi_platform_index_pulls_the_host_platform(
    kapald: Daemon, busybox_image: str, registry: Registry
) -> None:
    repository = "multi/busybox"
    kapald.kapal("tag", "busybox:latest", f"{registry.host}/{repository}:native")
    kapald.kapal("push", f"{registry.host}/{repository}:native")
    native_bytes = get_manifest(registry, repository, "native")
    native = json.loads(native_bytes)
    config = json.loads(kapald.kapal("image", "inspect", busybox_image).stdout)[0]
    other_arch = "arm64" if host_platform()["architecture"] != "arm64" else "amd64"
    # An image for the other architecture: same layers, a config that says so.
    from kapal.content.digest import of_bytes
    from kapal.image.manifest import canonical_json

    config_bytes = (kapald.data_root / "content/blobs/sha256" / busybox_image.partition(":")[2]).read_bytes()
    foreign = json.loads(config_bytes)
    foreign["architecture"] = other_arch
    foreign_bytes = canonical_json(foreign)
    foreign_digest = put_blob(registry, repository, foreign_bytes)
    assert foreign_digest == of_bytes(foreign_bytes)
    foreign_manifest = dict(
        native, config={**native["config"], "digest": foreign_digest, "size": len(foreign_bytes)}
    )
    foreign_manifest_bytes = canonical_json(foreign_manifest)
    media = native["mediaType"]
    foreign_manifest_digest = put_manifest(registry, repository, "foreign", foreign_manifest_bytes, media)
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": media,
                "digest": foreign_manifest_digest,
                "size": len(foreign_manifest_bytes),
                "platform": {"os": "linux", "architecture": other_arch},
            },
            {
                "mediaType": media,
                "digest": of_bytes(native_bytes),
                "size": len(native_bytes),
                "platform": {"os": "linux", "architecture": config["Architecture"]},
            },
        ],
    }
    index_bytes = canonical_json(index)
    index_digest = put_manifest(registry, repository, "multi", index_bytes, index["mediaType"])
    kapald.kapal("rmi", f"{registry.host}/{repository}:native", "busybox:latest")

    name = f"{registry.host}/{repository}:multi"
    out = kapald.kapal("pull", name).stdout.decode()
    assert f"Digest: {index_digest}" in out
    image = inspect(kapald, name)
    assert image["Id"] == busybox_image
    assert image["RepoDigests"] == [f"{registry.host}/{repository}@{index_digest}"]
    assert kapald.kapal("run", "--rm", name, "true").returncode == 0

    other = f"{registry.host}/{repository}:other"
    kapald.kapal("tag", name, other)
    kapald.kapal("rmi", name)
    kapald.kapal("pull", "--platform", f"linux/{other_arch}", name)
    assert inspect(kapald, name)["Architecture"] == other_arch
    assert inspect(kapald, name)["Id"] == foreign_digest

    wrong = kapald.kapal("pull", "--platform", "linux/s390x", name, check=False)
    assert wrong.returncode == 1 and "no matching manifest for linux/s390x" in wrong.stderr.decode()


def test_all_tags_and_mount_from_another_repository(
    kapald: Daemon, busybox_image: str, registry: Registry
) -> None:
    first = f"{registry.host}/team/one"
    kapald.kapal("tag", "busybox:latest", f"{first}:a")
    kapald.kapal("tag", "busybox:latest", f"{first}:b")
    out = kapald.kapal("push", "--all-tags", first).stdout.decode()
    assert "a: digest:" in out and "b: digest:" in out
    second = f"{registry.host}/team/two:v1"
    kapald.kapal("tag", "busybox:latest", second)
    mounted = kapald.kapal("push", second).stdout.decode()
    assert "Mounted from team/one" in mounted

    kapald.kapal("rmi", "-f", busybox_image)
    out = kapald.kapal("pull", "-a", first).stdout.decode()
    tags = sorted(inspect(kapald, busybox_image)["RepoTags"])
    assert tags == [f"{first}:a", f"{first}:b"], out


def test_concurrent_pulls_share_one_download(
    kapald: Daemon, busybox_rootfs: Path, registry: Registry, scratch: Path
) -> None:
    name = f"{registry.host}/test/shared:v1"
    rootfs = rootfs_with_file(busybox_rootfs, scratch / "shared.tar", "data.bin", 48 << 20)
    kapald.kapal("import", str(rootfs), name)
    kapald.kapal("push", name)
    kapald.kapal("rmi", name)
    layer = json.loads(get_manifest(registry, "test/shared", "v1"))["layers"][0]["digest"]
    log_before = registry.log.read_text().count(f"blobs/{layer}")
    pulls = [
        subprocess.Popen(
            [KAPAL, "-H", kapald.host, "pull", name], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(3)
    ]
    for pull in pulls:
        out, err = pull.communicate(timeout=120)
        assert pull.returncode == 0, err
    gets = [
        line
        for line in registry.log.read_text().splitlines()[-200:]
        if f"GET /v2/test/shared/blobs/{layer}" in line and 'HTTP/1.1" 200' in line
    ]
    assert registry.log.read_text().count(f"blobs/{layer}") > log_before
    assert len(gets) == 1, gets
    assert kapald.kapal("run", "--rm", name, "true").returncode == 0


def test_registry_mirror_serves_docker_hub_names(
    busybox_rootfs: Path, registry: Registry, scratch: Path
) -> None:
    mirrored = Daemon(scratch / "mirrored")
    mirrored.base.mkdir()
    bridge = "kt" + secrets.token_hex(4)
    (mirrored.base / "daemon.json").write_text(
        json.dumps({"bridge": bridge, "registry-mirrors": [f"http://{registry.host}"]})
    )
    mirrored.start()
    try:
        image_id = mirrored.kapal("import", str(busybox_rootfs), f"{registry.host}/library/busybox:mirrored")
        mirrored.kapal("push", f"{registry.host}/library/busybox:mirrored")
        mirrored.kapal("rmi", f"{registry.host}/library/busybox:mirrored")
        out = mirrored.kapal("pull", "busybox:mirrored").stdout.decode()
        assert "Status: Downloaded newer image for busybox:mirrored" in out
        assert inspect(mirrored, "busybox:mirrored")["Id"] == image_id.stdout.decode().strip()
    finally:
        mirrored.stop()
        clean_up_after(mirrored.base)
