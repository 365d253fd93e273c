"""Manifests, indexes and configs in both formats kapal meets: Docker schema2 and OCI.

The two formats are the same shape with different media type strings, so kapal
reads both into plain dicts and only names the differences here.
"""

from __future__ import annotations

import json
import os
import platform as _platform
from dataclasses import dataclass
from typing import Any

from kapal.content import digest as digests
from kapal.errors import InvalidArgument

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = OCI_LAYER + "+gzip"
OCI_LAYER_ZSTD = OCI_LAYER + "+zstd"
OCI_LAYER_NONDIST_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"

MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
LAYER_TYPES = frozenset(
    {
        OCI_LAYER,
        OCI_LAYER_GZIP,
        OCI_LAYER_ZSTD,
        OCI_LAYER_NONDIST_GZIP,
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
        DOCKER_LAYER,
        DOCKER_LAYER_GZIP,
        DOCKER_LAYER_FOREIGN,
    }
)

# Annotations docker save / containerd / skopeo put on index entries.
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
ANNOTATION_IMAGE_NAME = "io.containerd.image.name"


def canonical_json(value: Any) -> bytes:
    """The bytes kapal writes for JSON it creates: stable, so digests are reproducible."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def parse_json(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidArgument(f"invalid {what}: {error}") from None
    if not isinstance(value, dict):
        raise InvalidArgument(f"invalid {what}: not a JSON object")
    return value


def media_type_of(document: dict[str, Any]) -> str:
    """The media type of a manifest or index, also when the document omits it (OCI allows that)."""
    media_type = document.get("mediaType")
    if media_type:
        return str(media_type)
    if document.get("schemaVersion") == 1:
        return DOCKER_SCHEMA1
    if "manifests" in document:
        return OCI_INDEX
    if "layers" in document and "config" in document:
        return OCI_MANIFEST
    raise InvalidArgument("invalid manifest: unknown media type")


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: dict[str, Any] | None = None
    annotations: dict[str, str] | None = None

    @classmethod
    def from_json(cls, value: Any, what: str = "descriptor") -> Descriptor:
        if not isinstance(value, dict):
            raise InvalidArgument(f"invalid {what}: not an object")
        try:
            digest = digests.validate(str(value["digest"]))
            size = int(value["size"])
        except (KeyError, TypeError, ValueError) as error:
            raise InvalidArgument(f"invalid {what}: {error}") from None
        if size < 0:
            raise InvalidArgument(f"invalid {what}: negative size")
        return cls(
            media_type=str(value.get("mediaType", "")),
            digest=digest,
            size=size,
            platform=value.get("platform"),
            annotations=value.get("annotations"),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.annotations:
            out["annotations"] = self.annotations
        if self.platform:
            out["platform"] = self.platform
        return out


@dataclass(frozen=True)
class Manifest:
    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]

    @classmethod
    def parse(cls, data: bytes) -> Manifest:
        document = parse_json(data, "manifest")
        media_type = media_type_of(document)
        if media_type in (DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED):
            raise InvalidArgument(
                "Docker Image Format v1 and Docker Image manifest version 2, schema 1 are not supported"
            )
        if media_type not in MANIFEST_TYPES:
            raise InvalidArgument(f"invalid manifest: unsupported media type {media_type}")
        layers = document.get("layers")
        if not isinstance(layers, list):
            raise InvalidArgument("invalid manifest: layers must be a list")
        parsed = tuple(Descriptor.from_json(layer, "layer descriptor") for layer in layers)
        for layer in parsed:
            if layer.media_type not in LAYER_TYPES:
                raise InvalidArgument(f"invalid manifest: unsupported layer media type {layer.media_type}")
        return cls(media_type, Descriptor.from_json(document.get("config"), "config descriptor"), parsed)


def build_manifest(config_digest: str, config_size: int, layers: list[Descriptor]) -> bytes:
    """An OCI manifest for an image that arrived without one (a legacy archive, an import)."""
    return canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config_size},
            "layers": [layer.to_json() for layer in layers],
        }
    )


def parse_index(data: bytes) -> list[Descriptor]:
    document = parse_json(data, "image index")
    manifests = document.get("manifests")
    if not isinstance(manifests, list):
        raise InvalidArgument("invalid image index: manifests must be a list")
    return [Descriptor.from_json(entry, "index entry") for entry in manifests]


_ARCH_ALIASES = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "armv6l": "arm", "i686": "386"}


def host_platform() -> dict[str, str]:
    machine = _platform.machine()
    arch = _ARCH_ALIASES.get(machine, machine)
    result = {"os": "linux", "architecture": arch}
    if machine == "armv7l":
        result["variant"] = "v7"
    elif machine == "armv6l":
        result["variant"] = "v6"
    elif arch == "arm64":
        result["variant"] = "v8"
    return result


def parse_platform(text: str) -> dict[str, str]:
    """``linux/amd64``, ``linux/arm64/v8``, ``amd64`` → an OCI platform dict."""
    parts = [part.strip().lower() for part in text.split("/")]
    if not parts or not all(parts) or len(parts) > 3:
        raise InvalidArgument(f"invalid platform {text!r}: want os[/arch[/variant]]")
    if len(parts) == 1:
        if parts[0] in ("linux", "windows", "darwin"):
            return {"os": parts[0], "architecture": host_platform()["architecture"]}
        return {"os": "linux", "architecture": _ARCH_ALIASES.get(parts[0], parts[0])}
    result = {"os": parts[0], "architecture": _ARCH_ALIASES.get(parts[1], parts[1])}
    if len(parts) == 3:
        result["variant"] = parts[2]
    return result


def platform_matches(candidate: dict[str, Any] | None, wanted: dict[str, str]) -> bool:
    if not candidate:
        return False
    if candidate.get("os") != wanted["os"] or candidate.get("architecture") != wanted["architecture"]:
        return False
    # A missing variant matches any: arm64 images usually omit "v8".
    want_variant = wanted.get("variant")
    have_variant = candidate.get("variant")
    return not (want_variant and have_variant and want_variant != have_variant)


def select_platform(entries: list[Descriptor], wanted: dict[str, str] | None = None) -> Descriptor:
    """Pick the manifest for *wanted* (default: this host) from an index, as Docker does."""
    wanted = wanted or host_platform()
    manifests = [entry for entry in entries if entry.media_type not in INDEX_TYPES]
    for entry in manifests:
        if platform_matches(entry.platform, wanted):
            return entry
    unlabeled = [entry for entry in manifests if not entry.platform]
    if len(unlabeled) == 1 and len(manifests) == 1:
        return unlabeled[0]
    label = "/".join(wanted[key] for key in ("os", "architecture", "variant") if key in wanted)
    raise InvalidArgument(f"no matching manifest for {label} in the manifest list entries")


def config_platform_matches(config: dict[str, Any], wanted: dict[str, str] | None = None) -> bool:
    wanted = wanted or host_platform()
    return platform_matches(
        {
            "os": config.get("os"),
            "architecture": config.get("architecture"),
            "variant": config.get("variant"),
        },
        wanted,
    )


def os_arch() -> str:
    return f"{os.uname().sysname.lower()}/{host_platform()['architecture']}"
