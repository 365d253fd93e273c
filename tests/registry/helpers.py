"""Small clients of the distribution API the registry tests share."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from urllib.parse import urljoin

import requests
from certificates import CertificateAuthority
from cryptography.hazmat.primitives import serialization

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def error_codes(response: requests.Response) -> list[str]:
    return [error["code"] for error in response.json()["errors"]]


def push_blob(session: requests.Session, base: str, name: str, data: bytes) -> str:
    digest = sha256(data)
    response = session.post(f"{base}/v2/{name}/blobs/uploads/", params={"digest": digest}, data=data)
    assert response.status_code == 201, response.text
    return digest


def image_manifest(
    config: bytes,
    layers: list[bytes],
    media_type: str = OCI_MANIFEST,
    subject: dict | None = None,
    artifact_type: str | None = None,
    annotations: dict | None = None,
) -> bytes:
    config_type = (
        "application/vnd.docker.container.image.v1+json"
        if media_type == DOCKER_MANIFEST
        else "application/vnd.oci.image.config.v1+json"
    )
    layer_type = (
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
        if media_type == DOCKER_MANIFEST
        else "application/vnd.oci.image.layer.v1.tar+gzip"
    )
    document: dict = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": {"mediaType": config_type, "digest": sha256(config), "size": len(config)},
        "layers": [
            {"mediaType": layer_type, "digest": sha256(layer), "size": len(layer)} for layer in layers
        ],
    }
    if artifact_type:
        document["artifactType"] = artifact_type
    if subject:
        document["subject"] = subject
    if annotations:
        document["annotations"] = annotations
    return json.dumps(document).encode()


def push_image(
    session: requests.Session, base: str, name: str, tag: str, layers: list[bytes], **options: object
) -> tuple[str, bytes]:
    """Push blobs and the manifest; return the manifest's digest and bytes."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "layers": len(layers)}).encode()
    push_blob(session, base, name, config)
    for layer in layers:
        push_blob(session, base, name, layer)
    manifest = image_manifest(config, layers, **options)  # type: ignore[arg-type]
    media_type = json.loads(manifest)["mediaType"]
    response = session.put(
        f"{base}/v2/{name}/manifests/{tag}", data=manifest, headers={"Content-Type": media_type}
    )
    assert response.status_code == 201, response.text
    assert response.headers["Docker-Content-Digest"] == sha256(manifest)
    return sha256(manifest), manifest


def push_index(
    session: requests.Session, base: str, name: str, tag: str, children: list[tuple[str, bytes]]
) -> str:
    """Push an OCI index of the (digest, manifest bytes) *children*; return its digest."""
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {"mediaType": OCI_MANIFEST, "digest": digest, "size": len(data)} for digest, data in children
            ],
        }
    ).encode()
    response = session.put(
        f"{base}/v2/{name}/manifests/{tag}", data=index, headers={"Content-Type": OCI_INDEX}
    )
    assert response.status_code == 201, response.text
    return sha256(index)


def push_busybox(target: str, tag: str, *options: str) -> str:
    """skopeo-copy the shared busybox OCI layout to ``docker://<target>``; return its manifest digest."""
    from tests.registry.conftest import SHARED_BUSYBOX

    result = subprocess.run(
        [
            "skopeo",
            "copy",
            "--dest-tls-verify=false",
            *options,
            f"oci:{SHARED_BUSYBOX}:{tag}",
            f"docker://{target}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads((SHARED_BUSYBOX / "index.json").read_text())["manifests"][0]["digest"]


def absolute(base: str, location: str) -> str:
    return urljoin(base + "/", location)


def write_pem_key(key, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )


def make_tls(directory: Path) -> tuple[Path, Path, Path]:
    """A test CA and a server certificate for 127.0.0.1 it signed: (ca, cert, key); the CA also
    alone in ``directory/certs`` (a cert dir for skopeo)."""
    authority = CertificateAuthority(directory)
    certs = directory / "certs"
    certs.mkdir()
    (certs / "ca.crt").write_bytes(authority.ca_path.read_bytes())
    return certs / "ca.crt", authority.cert_path, authority.key_path
