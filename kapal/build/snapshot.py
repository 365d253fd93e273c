"""A build step's writable root filesystem, and turning what the step changed into a layer.

A step works on an overlayfs mount: the state's layers below, a fresh upper
directory above. The upper dir is made inside the layer store (``tmp-*``, which
start-up removes after a crash), so committing it is writing its layer tar once
(for the diff ID and the blob) and renaming the directory into place: the layer
is never unpacked a second time.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kapal.build.cache import LayerRef
from kapal.container.filesystem import _LowerView, _runtime_entries
from kapal.content.lease import Lease
from kapal.content.store import ContentStore
from kapal.image.layer_tar import write_layer
from kapal.image.layers import LayerStore
from kapal.image.manifest import OCI_LAYER
from kapal.runtime import rootfs


class _Counted:
    """The layer tar on its way into the blob writer (which hashes it), counted."""

    def __init__(self, writer: Any) -> None:
        self._writer = writer
        self.size = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._writer.write(data)
        self.size += len(data)
        return len(data)

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
        """The upper dir as a layer (None when the step changed nothing), moved into the layer store.

        The layer tar is written while the overlay is being unmounted: an unmount waits for an
        RCU grace period (tens of milliseconds on a busy machine), and nothing writes through
        the overlay any more, so its upper dir can be read meanwhile.
        """
        unmounted = self._unmount_in_background()
        try:
            if not os.listdir(self.upper):
                unmounted()
                shutil.rmtree(self.tree, ignore_errors=True)
                return None
            # Stored uncompressed, as dockerd keeps a built layer: the blob is the tar, its digest the
            # diff ID, and a build pays for no compression (a push may compress).
            with self.content.writer(lease=lease) as writer:
                sink = _Counted(writer)
                write_layer(self.upper, sink, source_date_epoch=source_date_epoch)  # type: ignore[arg-type]
                blob = writer.commit()
        finally:
            unmounted()
        shutil.rmtree(self.work, ignore_errors=True)
        self.layers.adopt(self.tree, blob, sink.size, lease)
        return LayerRef(blob, blob, sink.size, OCI_LAYER)

    def _unmount_in_background(self) -> Callable[[], None]:
        """Start unmounting on another thread; returns the wait for it (raising what it raised)."""
        if not self.mounted:
            return lambda: None
        errors: list[BaseException] = []

        def unmount() -> None:
            try:
                self.unmount()
            except BaseException as error:  # noqa: BLE001 - raised by the waiter
                errors.append(error)

        thread = threading.Thread(target=unmount, name="unmount", daemon=True)
        thread.start()

        def wait() -> None:
            thread.join()
            if errors:
                raise errors.pop()

        return wait
