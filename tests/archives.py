"""Builders for image archives in tests: layer tars and docker-save / OCI-layout archives."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Callable


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_tar(build: Callable[[tarfile.TarFile], None]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        build(tar)
    return out.getvalue()


def add_file(tar: tarfile.TarFile, name: str, data: bytes = b"", mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    tar.addfile(info, io.BytesIO(data))


def add_symlink(tar: tarfile.TarFile, name: str, target: str) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    tar.addfile(info)


def docker_archive(layers: list[bytes], tags: list[str], config_extra: dict | None = None) -> bytes:
    """A legacy ``docker save`` archive (``<id>/layer.tar`` + ``manifest.json``)."""
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "2024-01-01T00:00:00Z",
        "config": {"Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [sha256(layer) for layer in layers]},
        "history": [
            {"created": "2024-01-01T00:00:00Z", "created_by": f"layer {i}"} for i in range(len(layers))
        ],
    }
    config.update(config_extra or {})
    config_bytes = json.dumps(config).encode()
    config_name = sha256(config_bytes)[7:] + ".json"
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        paths = []
        for layer in layers:
            path = f"{sha256(layer)[7:]}/layer.tar"
            add_file(tar, path, layer)
            paths.append(path)
        add_file(tar, config_name, config_bytes)
        add_file(
            tar,
            "manifest.json",
            json.dumps([{"Config": config_name, "RepoTags": tags, "Layers": paths}]).encode(),
        )
    return out.getvalue()
