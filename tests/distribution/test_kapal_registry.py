# ruff: noqa: F811 - pytest fixtures are imported from registries.py and named as arguments
"""kapal's client (through kapald and its CLI, or the docker CLI) against kapal's own registry server.

Every registry here is a real ``kapal-registry serve`` process on loopback: plain HTTP, htpasswd
Basic auth over TLS with a test CA, its own bearer-token service, and a pull-through cache used as
kapald's ``registry-mirrors``.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from conftest import Daemon, clean_up_after
from cryptography.hazmat.primitives.asymmetric import ec
from registries import CertificateAuthority, busybox_image, certs_d, htpasswd_file, kapald  # noqa: F401

from kapal.content.digest import of_bytes
from kapal.image.manifest import canonical_json, host_platform
from tests.registry.conftest import RegistryProcess
from tests.registry.helpers import write_pem_key

ACCEPT = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)


@pytest.fixture
def kapal_registry(scratch: Path) -> Iterator[RegistryProcess]:
    server = RegistryProcess(scratch / "kapal-registry").start()
    try:
        yield server
    finally:
        server.stop()


def token_registry(scratch: Path, user: str, password: str) -> RegistryProcess:
    """kapal-registry with htpasswd users and its own token service (bearer tokens, ES256)."""
    key = scratch / "token.pem"
    write_pem_key(ec.generate_private_key(ec.SECP256R1()), key)
    htpasswd = htpasswd_file(scratch / "htpasswd", user, password)
    return RegistryProcess(scratch / "token", "--htpasswd", str(htpasswd), "--token-key", str(key)).start()


def inspect(daemon: Daemon, name: str) -> dict:
    return json.loads(daemon.kapal("image", "inspect", name).stdout)[0]


def pushed_digest(output: str) -> str:
    return output.split("digest: ", 1)[1].split()[0]


def registry_digest(server: RegistryProcess, repository: str, tag: str, **options: object) -> str:
    head = requests.head(
        f"{server.url}/v2/{repository}/manifests/{tag}", headers={"Accept": ACCEPT}, **options
    )
    assert head.status_code == 200, head.status_code
    return head.headers["Docker-Content-Digest"]


def round_trip(daemon: Daemon, image_id: str, name: str) -> str:
    """Push *name*, delete it locally, pull it back and run it; return the manifest digest."""
    repository = name.rsplit(":", 1)[0]
    digest = pushed_digest(daemon.kapal("push", name).stdout.decode())
    daemon.kapal("rmi", "-f", image_id)
    pulled = daemon.kapal("pull", name).stdout.decode()
    assert f"Digest: {digest}" in pulled, pulled
    image = inspect(daemon, name)
    assert image["Id"] == image_id
    assert image["RepoDigests"] == [f"{repository}@{digest}"]
    word = secrets.token_hex(4)
    assert daemon.kapal("run", "--rm", name, "echo", word).stdout.decode().strip() == word
    return digest


def test_plain_http_push_pull_run(
    kapald: Daemon, busybox_image: str, kapal_registry: RegistryProcess
) -> None:
    name = f"{kapal_registry.host}/plain/busybox:v1"
    kapald.kapal("tag", "busybox:latest", name)
    digest = round_trip(kapald, busybox_image, name)
    assert registry_digest(kapal_registry, "plain/busybox", "v1") == digest
    # Pushing again sends nothing, and a pull by digest finds the same image.
    assert "Layer already exists" in kapald.kapal("push", name).stdout.decode()
    kapald.kapal("rmi", name)
    kapald.kapal("pull", f"{kapal_registry.host}/plain/busybox@{digest}")
    assert inspect(kapald, f"{kapal_registry.host}/plain/busybox@{digest}")["Id"] == busybox_image


def test_tls_with_htpasswd_basic_auth(
    kapald: Daemon, busybox_image: str, scratch: Path, certs_d: Path
) -> None:
    ca = CertificateAuthority(scratch / "ca")
    htpasswd = htpasswd_file(scratch / "htpasswd", "alice", "s3cret")
    server = RegistryProcess(
        scratch / "secure",
        "--htpasswd",
        str(htpasswd),
        "--tls-cert",
        str(ca.cert_path),
        "--tls-key",
        str(ca.key_path),
        scheme="https",
    ).start(verify=str(ca.ca_path))
    try:
        ca.install(certs_d, server.host)
        name = f"{server.host}/private/busybox:v1"
        kapald.kapal("tag", "busybox:latest", name)
        refused = kapald.kapal("push", name, check=False)
        assert refused.returncode != 0 and "unauthorized" in refused.stderr.decode().lower()
        wrong = kapald.kapal(
            "login", "-u", "alice", "--password-stdin", server.host, input=b"x\n", check=False
        )
        assert wrong.returncode != 0
        kapald.kapal("login", "-u", "alice", "--password-stdin", server.host, input=b"s3cret\n")
        digest = round_trip(kapald, busybox_image, name)
        assert (
            registry_digest(server, "private/busybox", "v1", auth=("alice", "s3cret"), verify=str(ca.ca_path))
            == digest
        )
    finally:
        server.stop()


def test_bearer_tokens_from_the_registrys_own_token_service(
    kapald: Daemon, busybox_image: str, scratch: Path
) -> None:
    server = token_registry(scratch, "bob", "hunter2")
    try:
        name = f"{server.host}/team/busybox:v1"
        kapald.kapal("tag", "busybox:latest", name)
        refused = kapald.kapal("push", name, check=False)
        assert refused.returncode != 0 and "unauthorized" in refused.stderr.decode().lower()
        wrong = kapald.kapal("login", "-u", "bob", "--password-stdin", server.host, input=b"x\n", check=False)
        assert wrong.returncode != 0
        kapald.kapal("login", "-u", "bob", "--password-stdin", server.host, input=b"hunter2\n")
        digest = round_trip(kapald, busybox_image, name)
        token = requests.get(
            f"{server.url}/auth/token",
            params={"service": "kapal-registry", "scope": "repository:team/busybox:pull"},
            auth=("bob", "hunter2"),
        ).json()["token"]
        headers = {"Authorization": f"Bearer {token}", "Accept": ACCEPT}
        head = requests.head(f"{server.url}/v2/team/busybox/manifests/v1", headers=headers)
        assert head.headers["Docker-Content-Digest"] == digest
        # Logged out, the pull is refused.
        kapald.kapal("logout", server.host)
        kapald.kapal("rmi", name)
        assert kapald.kapal("pull", name, check=False).returncode != 0
    finally:
        server.stop()


def test_docker_cli_through_kapald(
    kapald: Daemon, busybox_image: str, kapal_registry: RegistryProcess
) -> None:
    name = f"{kapal_registry.host}/cli/busybox:v1"
    kapald.docker("tag", "busybox:latest", name)
    digest = pushed_digest(kapald.docker("push", name).stdout.decode())
    assert registry_digest(kapal_registry, "cli/busybox", "v1") == digest
    kapald.docker("rmi", name, "busybox:latest")
    assert "Downloaded newer image" in kapald.docker("pull", name).stdout.decode()
    assert kapald.docker("image", "inspect", "-f", "{{.Id}}", name).stdout.decode().strip() == busybox_image
    repo_digests = kapald.docker("image", "inspect", "-f", "{{json .RepoDigests}}", name).stdout
    assert json.loads(repo_digests) == [f"{kapal_registry.host}/cli/busybox@{digest}"]
    out = kapald.docker("run", "--rm", name, "echo", "from kapal-registry").stdout.decode()
    assert out.strip() == "from kapal-registry"


def test_registry_mirror_is_a_pull_through_cache(busybox_rootfs: Path, scratch: Path) -> None:
    """``kapal pull docker.io/library/x`` through kapald's mirror: a kapal-registry proxying another one."""
    upstream = RegistryProcess(scratch / "upstream").start()
    cache = RegistryProcess(scratch / "cache", "--proxy-remote", upstream.url).start()
    daemon = Daemon(scratch / "mirrored")
    daemon.base.mkdir()
    (daemon.base / "daemon.json").write_text(
        json.dumps({"bridge": "kt" + secrets.token_hex(4), "registry-mirrors": [cache.url]})
    )
    daemon.start()
    try:
        source = f"{upstream.host}/library/x:v1"
        image_id = daemon.kapal("import", "--change", 'CMD ["sh"]', str(busybox_rootfs), source).stdout
        image_id = image_id.decode().strip()
        digest = pushed_digest(daemon.kapal("push", source).stdout.decode())
        daemon.kapal("rmi", source)

        out = daemon.kapal("pull", "docker.io/library/x:v1").stdout.decode()
        assert f"Digest: {digest}" in out, out
        image = inspect(daemon, "x:v1")
        assert image["Id"] == image_id
        assert image["RepoDigests"] == [f"x@{digest}"]
        # The mirror now holds the manifest and every blob: it serves them with upstream gone.
        manifest = requests.get(f"{cache.url}/v2/library/x/manifests/{digest}", headers={"Accept": ACCEPT})
        blobs = [layer["digest"] for layer in manifest.json()["layers"]] + [image_id]
        for blob in blobs:
            assert (cache.root / "blobs" / "sha256" / blob.partition(":")[2]).is_file(), blob
        upstream.stop()
        daemon.kapal("rmi", "x:v1")
        daemon.kapal("pull", "x:v1")
        assert inspect(daemon, "x:v1")["Id"] == image_id
        assert daemon.kapal("run", "--rm", "x:v1", "echo", "mirrored").stdout.decode().strip() == "mirrored"
    finally:
        daemon.stop()
        clean_up_after(daemon.base)
        cache.stop()
        upstream.stop()


def test_multi_platform_index_pulls_the_host_platform(
    kapald: Daemon, busybox_image: str, kapal_registry: RegistryProcess
) -> None:
    """An OCI index pushed by hand into kapal-registry: the host's platform is pulled, not the first."""
    repository = "multi/busybox"
    native_name = f"{kapal_registry.host}/{repository}:native"
    kapald.kapal("tag", "busybox:latest", native_name)
    kapald.kapal("push", native_name)
    native_bytes = requests.get(
        f"{kapal_registry.url}/v2/{repository}/manifests/native", headers={"Accept": ACCEPT}
    ).content
    native = json.loads(native_bytes)
    arch = host_platform()["architecture"]
    other_arch = "arm64" if arch != "arm64" else "amd64"
    config_bytes = requests.get(f"{kapal_registry.url}/v2/{repository}/blobs/{busybox_image}").content
    foreign = json.loads(config_bytes)
    foreign["architecture"] = other_arch
    foreign_bytes = canonical_json(foreign)
    session = requests.Session()
    foreign_digest = of_bytes(foreign_bytes)
    posted = session.post(
        f"{kapal_registry.url}/v2/{repository}/blobs/uploads/",
        params={"digest": foreign_digest},
        data=foreign_bytes,
    )
    assert posted.status_code == 201, posted.text
    foreign_manifest = canonical_json(
        dict(native, config={**native["config"], "digest": foreign_digest, "size": len(foreign_bytes)})
    )
    media = native["mediaType"]
    put = session.put(
        f"{kapal_registry.url}/v2/{repository}/manifests/foreign",
        data=foreign_manifest,
        headers={"Content-Type": media},
    )
    assert put.status_code == 201, put.text
    index = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {
                    "mediaType": media,
                    "digest": of_bytes(foreign_manifest),
                    "size": len(foreign_manifest),
                    "platform": {"os": "linux", "architecture": other_arch},
                },
                {
                    "mediaType": media,
                    "digest": of_bytes(native_bytes),
                    "size": len(native_bytes),
                    "platform": {"os": "linux", "architecture": arch},
                },
            ],
        }
    )
    put = session.put(
        f"{kapal_registry.url}/v2/{repository}/manifests/multi",
        data=index,
        headers={"Content-Type": "application/vnd.oci.image.index.v1+json"},
    )
    assert put.status_code == 201, put.text
    kapald.kapal("rmi", native_name, "busybox:latest")

    name = f"{kapal_registry.host}/{repository}:multi"
    out = kapald.kapal("pull", name).stdout.decode()
    assert f"Digest: {of_bytes(index)}" in out, out
    image = inspect(kapald, name)
    assert image["Id"] == busybox_image and image["Architecture"] == arch
    assert image["RepoDigests"] == [f"{kapal_registry.host}/{repository}@{of_bytes(index)}"]
    assert kapald.kapal("run", "--rm", name, "echo", "native").stdout.decode().strip() == "native"
    kapald.kapal("rmi", name)
    kapald.kapal("pull", "--platform", f"linux/{other_arch}", name)
    assert inspect(kapald, name)["Id"] == foreign_digest


def test_all_tags_mounts_and_docker_login_with_tokens(
    kapald: Daemon, busybox_image: str, scratch: Path
) -> None:
    """push -a, a cross-repository mount and pull -a, then the docker CLI logging in to the token service."""
    server = token_registry(scratch, "ci", "ci-pw")
    try:
        # Each CLI keeps its own config.json here: both log in.
        kapald.docker("login", "-u", "ci", "--password-stdin", server.host, input=b"ci-pw\n")
        kapald.kapal("login", "-u", "ci", "--password-stdin", server.host, input=b"ci-pw\n")
        first = f"{server.host}/team/one"
        for tag in ("a", "b", "c"):
            kapald.kapal("tag", "busybox:latest", f"{first}:{tag}")
        out = kapald.kapal("push", "--all-tags", first).stdout.decode()
        assert all(f"{tag}: digest:" in out for tag in "abc"), out
        second = f"{server.host}/team/two:v1"
        kapald.docker("tag", "busybox:latest", second)
        assert "Mounted from team/one" in kapald.docker("push", second).stdout.decode()

        kapald.kapal("rmi", "-f", busybox_image)
        kapald.docker("pull", "-a", first)
        tags = sorted(inspect(kapald, busybox_image)["RepoTags"])
        assert tags == [f"{first}:{tag}" for tag in "abc"]
        kapald.docker("pull", second)
        assert kapald.docker("run", "--rm", second, "echo", "mounted").stdout.decode().strip() == "mounted"
    finally:
        server.stop()


def test_pull_resumes_after_the_registry_is_killed(
    kapald: Daemon, busybox_rootfs: Path, kapal_registry: RegistryProcess, scratch: Path
) -> None:
    """kill -9 of kapal-registry mid-pull; the retry asks for the rest with Range and completes."""
    import signal
    import subprocess
    import time

    from conftest import KAPAL
    from registries import rootfs_with_file

    name = f"{kapal_registry.host}/test/big:v1"
    rootfs = rootfs_with_file(busybox_rootfs, scratch / "big.tar", "big.bin", 96 << 20)
    image_id = kapald.kapal("import", str(rootfs), name).stdout.decode().strip()
    rootfs.unlink()
    kapald.kapal("push", name)
    kapald.kapal("rmi", name)
    ingest = kapald.data_root / "content" / "ingest"

    def partial_sizes() -> list[int]:
        return [p.stat().st_size for p in ingest.iterdir() if p.name.startswith("pull-")]

    pull = subprocess.Popen(
        [KAPAL, "-H", kapald.host, "pull", name], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(size > (4 << 20) for size in partial_sizes()):
        assert pull.poll() is None, pull.communicate()
        time.sleep(0.001)
    kapal_registry.stop(signal.SIGKILL)
    out, err = pull.communicate(timeout=120)
    assert pull.returncode == 1, out
    assert "\n" not in err.decode().strip()
    assert any(0 < size < (96 << 20) for size in partial_sizes())

    kapal_registry.start()
    resumed = kapald.kapal("pull", name).stdout.decode()
    assert "Resuming download" in resumed and "Pull complete" in resumed
    assert inspect(kapald, name)["Id"] == image_id
    assert partial_sizes() == []
    size = kapald.kapal("run", "--rm", name, "stat", "-c", "%s", "/big.bin").stdout.decode().strip()
    assert size == str(96 << 20)
