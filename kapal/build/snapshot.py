"""A build step's writable root filesystem, and turning what the step changed into a layer.

A step works on an overlayfs mount: the state's layers below, a fresh upper
directory above. The upper dir is made inside the layer store (``tmp-*``, which
start-up removes after a crash), so committing it is writing its layer tar once
(for the diff ID and the blob) and renaming the directory into place: the layer
is never unpacked a second time.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from kapal.build.cache import LayerRef
from kapal.container.filesystem import _LowerView, _runtime_entries
from kapal.content.lease import Lease
from kapal.content.store import ContentStore
from kapal.image.compression import Compression, compress_writer
from kapal.image.layer_tar import write_layer
from kapal.image.layers import LayerStore
from kapal.runtime import rootfs


class _Tee:
    """The layer tar on its way: hashed (diff ID), counted, and compressed into the blob."""

    def __init__(self, out: Any) -> None:
        self._out = out
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._hash.update(data)
        self._out.write(data)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        pass

    def diff_id(self) -> str:
        return "sha256:" + self._hash.hexdigest()


class _BlobSink:
    def __init__(self, writer: Any) -> None:
        self._writer = writer

    def write(self, data: bytes | bytearray | memoryview) -> int:
        return self._writer.write(data)

    def flush(self) -> None:
        pass


class Snapshot:
    """An overlay of *lowers* (layer directories, topmost first) with a new upper, mounted at *target*."""

    def __init__(
        self, layers: LayerStore, content: ContentStore, lowers: list[str], target: Path, empty: Path
    ) -> None:
        self.layers = layers
        self.content = content
        self.lowers = lowers
        self.target = target
        self.tree = Path(tempfile.mkdtemp(prefix="tmp-build-", dir=layers.root))
        self.upper = self.tree / "diff"
        self.work = self.tree / "work"
        self._empty = empty
        self.mounted = False

    def mount(self) -> Path:
        empty = [str(self._empty)] if not self.lowers else []
        self._empty.mkdir(parents=True, exist_ok=True)
        rootfs.mount_overlay(self.lowers or empty, self.upper, self.work, self.target)
        self.mounted = True
        return self.target

    def unmount(self) -> None:
        if self.mounted:
            rootfs.unmount(self.target)
            self.mounted = False

    def discard(self) -> None:
        self.unmount()
        shutil.rmtree(self.tree, ignore_errors=True)

    def drop_runtime_entries(self) -> None:
        """Remove what only the runtime put in the upper dir (mount points of /etc/hosts, /proc…)."""
        upper = str(self.upper)
        for rel in sorted(_runtime_entries(upper, _LowerView(self.lowers)), key=len, reverse=True):
            path = os.path.join(upper, rel)
            try:
                if os.path.isdir(path) and not os.path.islink(path):
                    os.rmdir(path)
                else:
                    os.unlink(path)
            except OSError:
                pass

    def commit(self, lease: Lease, source_date_epoch: int | None) -> LayerRef | None:
        """The upper dir as a layer (None when the step changed nothing), moved into the layer store."""
        self.unmount()
        shutil.rmtree(self.work, ignore_errors=True)
        if not os.listdir(self.upper):
            shutil.rmtree(self.tree, ignore_errors=True)
            return None
        content = self.content
        with content.writer(lease=lease) as writer:
            gzip = compress_writer(_BlobSink(writer), Compression.GZIP)  # type: ignore[arg-type]
            tee = _Tee(gzip)
            write_layer(self.upper, tee, source_date_epoch=source_date_epoch)  # type: ignore[arg-type]
            gzip.close()
            blob = writer.commit()
        diff_id = tee.diff_id()
        self.layers.adopt(self.tree, diff_id, tee.size, lease)
        return LayerRef(diff_id, blob, content.size(blob))
