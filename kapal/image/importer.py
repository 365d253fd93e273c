"""``docker import``: a root filesystem tarball becomes a one-layer image.

The tarball is read once: its bytes go to the content store (the layer blob,
kept as it came, compressed or not) and through the decompressor into the
layer store at the same time.
"""

from __future__ import annotations

import datetime
import time
from typing import Any, BinaryIO

from kapal import reference
from kapal.image import manifest as mf
from kapal.image.changes import apply_changes
from kapal.image.compression import Compression, detect, open_decompressed
from kapal.image.store import Image, ImageStore


class _TeeReader:
    """Passes reads through while writing every byte to a blob writer."""

    def __init__(self, raw: BinaryIO, sink: Any) -> None:
        self._raw = raw
        self._sink = sink
        self.head = b""

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        if data:
            if len(self.head) < 8:
                self.head += data[:8]
            self._sink.write(data)
        return data

    def drain(self) -> None:
        while self.read(1 << 20):
            pass


def rfc3339(timestamp: float) -> str:
    moment = datetime.datetime.fromtimestamp(timestamp, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond:06d}000Z"


def import_rootfs(
    stream: BinaryIO,
    images: ImageStore,
    tag: str | None = None,
    changes: list[str] | None = None,
    message: str = "",
    source: str = "-",
    platform: str | None = None,
) -> Image:
    target = str(reference.parse(tag)) if tag else None
    wanted = mf.parse_platform(platform) if platform else mf.host_platform()
    container_config = apply_changes({}, changes or [])
    with images.content.leases.lease() as lease, images.content.writer(lease=lease) as writer:
        tee = _TeeReader(stream, writer)
        layer = images.layers.unpack(tee, None, lease)
        tee.drain()
        blob_digest = writer.commit()
        compression = detect(tee.head)
        media_type = {
            Compression.GZIP: mf.OCI_LAYER_GZIP,
            Compression.ZSTD: mf.OCI_LAYER_ZSTD,
        }.get(compression, mf.OCI_LAYER)
        if compression not in (Compression.NONE, Compression.GZIP, Compression.ZSTD):
            # bzip2/xz are fine for import but are no layer media type: store the plain tar.
            with images.content.open(blob_digest) as blob:
                blob_digest = _store_uncompressed(images, blob, lease)
            media_type = mf.OCI_LAYER
        now = rfc3339(time.time())
        config: dict[str, Any] = {
            "architecture": wanted["architecture"],
            "os": wanted["os"],
            "created": now,
            "config": container_config,
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
            "history": [{"created": now, "comment": message or f"Imported from {source}"}],
        }
        if "variant" in wanted:
            config["variant"] = wanted["variant"]
        config_bytes = mf.canonical_json(config)
        config_digest = images.content.put_bytes(config_bytes, lease=lease)
        layer_descriptor = mf.Descriptor(media_type, blob_digest, images.content.size(blob_digest))
        manifest_digest = images.content.put_bytes(
            mf.build_manifest(config_digest, len(config_bytes), [layer_descriptor]), lease=lease
        )
        image, _ = images.register(manifest_digest, lease, [target] if target else [])
    images.events.publish("image", "import", image.id, name=image.id)
    return image


def _store_uncompressed(images: ImageStore, blob: BinaryIO, lease: Any) -> str:
    stream, _ = open_decompressed(blob)
    return images.content.ingest(stream, lease=lease)
