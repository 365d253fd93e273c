"""Pull-through cache: a kapal-registry mirroring another one on loopback."""

from __future__ import annotations

import json
import shutil
import subprocess

import bcrypt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec

from tests.registry.conftest import RegistryProcess
from tests.registry.helpers import OCI_MANIFEST, error_codes, make_tls, push_image, sha256, write_pem_key

SKOPEO = shutil.which("skopeo")


@pytest.fixture(params=["basic", "token"])
def upstream(request, scratch):
    """An upstream that wants credentials: Basic, or bearer tokens from its own token service."""
    htpasswd = scratch / "htpasswd"
    htpasswd.write_text(f"mirror:{bcrypt.hashpw(b'mirror-pw', bcrypt.gensalt(4)).decode()}\n")
    flags = ["--htpasswd", str(htpasswd)]
    if request.param == "token":
        key = scratch / "token.pem"
        write_pem_key(ec.generate_private_key(ec.SECP256R1()), key)
        flags += ["--token-key", str(key)]
        # This upstream also speaks TLS, with a certificate of a test CA the mirror is told to trust.
        ca, cert, tls_key = make_tls(scratch)
        flags += ["--tls-cert", str(cert), "--tls-key", str(tls_key)]
        server = RegistryProcess(scratch / "upstream", *flags, scheme="https").start(verify=str(ca))
        server.ca = ca
    else:
        server = RegistryProcess(scratch / "upstream", *flags).start()
        server.ca = None
    server.auth_kind = request.param
    yield server
    server.stop()


def mirror(scratch, upstream, name: str, ttl: str) -> RegistryProcess:
    trust = ["--proxy-ca", str(upstream.ca)] if upstream.ca else []
    return RegistryProcess(
        scratch / name,
        *trust,
        "--proxy-remote",
        upstream.url,
        "--proxy-username",
        "mirror",
        "--proxy-password",
        "mirror-pw",
        "--proxy-ttl",
        ttl,
    ).start()


def test_pull_through_cache(scratch, upstream):
    writer = requests.Session()
    writer.trust_env = False  # else REQUESTS_CA_BUNDLE overrides .verify
    writer.verify = str(upstream.ca) if upstream.ca else True
    if upstream.auth_kind == "basic":
        writer.auth = ("mirror", "mirror-pw")
    else:
        token = writer.get(
            f"{upstream.url}/auth/token",
            params={"service": "kapal-registry", "scope": "repository:library/app:pull,push"},
            auth=("mirror", "mirror-pw"),
        ).json()["token"]
        writer.headers["Authorization"] = f"Bearer {token}"
    first, first_bytes = push_image(writer, upstream.url, "library/app", "latest", [b"layer v1"])
    cached = mirror(scratch, upstream, "cache", "3600")
    fresh = mirror(scratch, upstream, "fresh", "0")
    try:
        session = requests.Session()
        for proxy in (cached, fresh):
            got = session.get(
                f"{proxy.url}/v2/library/app/manifests/latest", headers={"Accept": OCI_MANIFEST}
            )
            assert got.status_code == 200
            assert got.content == first_bytes
            assert got.headers["Docker-Content-Digest"] == first
            blob = session.get(f"{proxy.url}/v2/library/app/blobs/{sha256(b'layer v1')}")
            assert blob.status_code == 200 and blob.content == b"layer v1"
        assert (
            cached.root / "blobs" / "sha256" / sha256(b"layer v1").split(":")[1]
        ).read_bytes() == b"layer v1"
        missing = session.get(f"{cached.url}/v2/library/app/blobs/{sha256(b'nowhere')}")
        assert missing.status_code == 404 and error_codes(missing) == ["BLOB_UNKNOWN"]
        assert session.get(f"{cached.url}/v2/library/app/manifests/nope").status_code == 404
        # Pushing to a mirror is refused.
        refused = session.post(f"{cached.url}/v2/library/app/blobs/uploads/")
        assert refused.status_code == 405 and error_codes(refused) == ["UNSUPPORTED"]

        # Upstream moves the tag: the mirror with TTL 0 follows, the other serves its cached tag.
        second, _ = push_image(writer, upstream.url, "library/app", "latest", [b"layer v2"])
        assert (
            session.head(f"{fresh.url}/v2/library/app/manifests/latest").headers["Docker-Content-Digest"]
            == second
        )
        assert (
            session.head(f"{cached.url}/v2/library/app/manifests/latest").headers["Docker-Content-Digest"]
            == first
        )

        # With upstream gone, cached content is still served (a stale tag rather than an error).
        upstream.stop()
        for proxy, digest in ((cached, first), (fresh, second)):
            got = session.get(f"{proxy.url}/v2/library/app/manifests/latest")
            assert got.status_code == 200 and got.headers["Docker-Content-Digest"] == digest
        assert session.get(f"{cached.url}/v2/library/app/blobs/{sha256(b'layer v1')}").content == b"layer v1"
        down = session.get(f"{fresh.url}/v2/library/app/blobs/{sha256(b'layer v2')}")
        assert down.status_code == 503 and error_codes(down) == ["UNAVAILABLE"]
    finally:
        cached.stop()
        fresh.stop()


@pytest.mark.skipif(SKOPEO is None, reason="skopeo not installed")
def test_skopeo_through_mirror(scratch, upstream, busybox_tag):
    from tests.registry.conftest import SHARED_BUSYBOX

    source = json.loads((SHARED_BUSYBOX / "index.json").read_text())["manifests"][0]["digest"]
    run = lambda *args: subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=120)  # noqa: E731
    pushed = run(
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        "mirror:mirror-pw",
        f"oci:{SHARED_BUSYBOX}:{busybox_tag}",
        f"docker://{upstream.host}/library/busybox:latest",
    )
    assert pushed.returncode == 0, pushed.stderr
    proxy = mirror(scratch, upstream, "cache", "3600")
    try:
        out = scratch / "out"
        pulled = run(
            "copy", "--src-tls-verify=false", f"docker://{proxy.host}/library/busybox:latest", f"oci:{out}:1"
        )
        assert pulled.returncode == 0, pulled.stderr
        assert json.loads((out / "index.json").read_text())["manifests"][0]["digest"] == source
    finally:
        proxy.stop()
