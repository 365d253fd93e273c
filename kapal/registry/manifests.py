"""What the registry needs to know about a manifest: its type and what it points at.

The registry stores manifests byte for byte (their digest is their name), so this only
parses them to refuse invalid ones, to find the blobs and child manifests that must
already be present, and to describe them in a referrers index.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from kapal.content import digest as digests
from kapal.registry.errors import RegistryError

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
IMAGE_TYPES = {OCI_MANIFEST, DOCKER_MANIFEST}
INDEX_TYPES = {OCI_INDEX, DOCKER_LIST}
MANIFEST_TYPES = IMAGE_TYPES | INDEX_TYPES
# Layers a registry never holds: their bytes live at the descriptor's "urls".
_FOREIGN_LAYERS = {
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
}
MAX_MANIFEST_SIZE = 4 << 20  # what distribution accepts


@dataclass
class ParsedManifest:
    media_type: str
    blobs: list[str] = field(default_factory=list)
    children: list[str] = field(default_factory=list)
    subject: str | None = None
    artifact_type: str | None = None
    annotations: dict | None = None


def _descriptor_digest(descriptor: object, where: str) -> str:
    if not isinstance(descriptor, dict) or not isinstance(descriptor.get("digest"), str):
        raise RegistryError("MANIFEST_INVALID", f"{where}: descriptor without a digest")
    if not digests.is_digest(descriptor["digest"]):
        raise RegistryError("MANIFEST_INVALID", f"{where}: invalid digest {descriptor['digest']!r}")
    if not isinstance(descriptor.get("size"), int) or descriptor["size"] < 0:
        raise RegistryError("MANIFEST_INVALID", f"{where}: descriptor without a valid size")
    return descriptor["digest"]


def parse(data: bytes, content_type: str | None) -> ParsedManifest:
    """Check *data* is a manifest of a type we serve and list what it refers to."""
    if len(data) > MAX_MANIFEST_SIZE:
        raise RegistryError("SIZE_INVALID", f"manifest larger than {MAX_MANIFEST_SIZE} bytes", status=413)
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError) as error:
        raise RegistryError("MANIFEST_INVALID", f"manifest is not JSON: {error}") from None
    if not isinstance(document, dict):
        raise RegistryError("MANIFEST_INVALID", "manifest is not a JSON object")
    if document.get("schemaVersion") != 2:
        raise RegistryError("MANIFEST_INVALID", "only schemaVersion 2 manifests are supported")
    declared = document.get("mediaType")
    content_type = (content_type or "").split(";")[0].strip() or None
    if content_type in (None, "application/json", "application/octet-stream"):
        content_type = None
    if declared is not None and content_type is not None and declared != content_type:
        raise RegistryError(
            "MANIFEST_INVALID", f"mediaType {declared} does not match Content-Type {content_type}"
        )
    media_type = declared or content_type
    if media_type is None:
        media_type = OCI_INDEX if "manifests" in document else OCI_MANIFEST
    if media_type not in MANIFEST_TYPES:
        raise RegistryError("MANIFEST_INVALID", f"unsupported manifest media type {media_type}")
    parsed = ParsedManifest(media_type=media_type)
    if media_type in IMAGE_TYPES:
        config = document.get("config")
        parsed.blobs.append(_descriptor_digest(config, "config"))
        layers = document.get("layers")
        if not isinstance(layers, list):
            raise RegistryError("MANIFEST_INVALID", "manifest without a layers list")
        for number, layer in enumerate(layers):
            digest = _descriptor_digest(layer, f"layer {number}")
            if not (layer.get("mediaType") in _FOREIGN_LAYERS and layer.get("urls")):
                parsed.blobs.append(digest)
        parsed.artifact_type = document.get("artifactType") or config.get("mediaType")
    else:
        children = document.get("manifests")
        if not isinstance(children, list):
            raise RegistryError("MANIFEST_INVALID", "index without a manifests list")
        for number, child in enumerate(children):
            parsed.children.append(_descriptor_digest(child, f"manifest {number}"))
        parsed.artifact_type = document.get("artifactType")
    subject = document.get("subject")
    if subject is not None:
        parsed.subject = _descriptor_digest(subject, "subject")
    annotations = document.get("annotations")
    if isinstance(annotations, dict):
        parsed.annotations = annotations
    return parsed
