"""``docker push``: what the registry lacks is sent, once, in the form it was stored.

Layers go compressed. A layer stored uncompressed (an import) is gzipped once;
the compressed blob is kept and the diff ID → compressed digest mapping
recorded, so later pushes send the same bytes under the same digest. Blobs the
registry has are skipped (HEAD); blobs known to live in another repository of
the same registry are mounted from there instead of uploaded.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from kapal import reference
from kapal.content.lease import Lease
from kapal.distribution.client import Registries, Repository
from kapal.distribution.credentials import Credentials
from kapal.distribution.pull import Emit, record_sources
from kapal.errors import InvalidArgument, KapalError, NotFound
from kapal.image import manifest as mf
from kapal.image.compression import Compression, compress_writer, detect
from kapal.image.store import Image, ImageStore
from kapal.metadata import Database

# Blobs above this size go up in chunks of this size (PATCH … PUT); smaller ones in one PUT.
CHUNK = 64 << 20
_READ = 4 << 20
_PROGRESS_INTERVAL = 0.1

_COMPRESSED_TYPES = {mf.OCI_LAYER_GZIP, mf.OCI_LAYER_ZSTD, mf.DOCKER_LAYER_GZIP}


@dataclass
class _Layer:
    diff_id: str
    descriptor: mf.Descriptor
    changed: bool  # the pushed descriptor differs from the stored manifest's


def short(digest: str) -> str:
    return digest.partition(":")[2][:12]


class Pusher:
    def __init__(self, images: ImageStore, db: Database, registries: Registries) -> None:
        self.images = images
        self.db = db
        self.registries = registries
        self._slots = asyncio.Semaphore(registries.options.max_concurrent_uploads)
        self._compressing: dict[str, asyncio.Task[mf.Descriptor]] = {}

    def _targets(self, name: str, tag: str | None) -> list[tuple[reference.Reference, Image]]:
        ref = reference.parse(name, default_tag=False)
        if ref.digest:
            raise InvalidArgument("cannot push a digest reference")
        if tag:
            ref = reference.Reference(ref.domain, ref.path, tag)
        if ref.tag:
            try:
                image = self.images.get(str(ref))
            except NotFound:
                raise NotFound(
                    f"An image does not exist locally with the tag: {ref.familiar_repository}"
                ) from None
            return [(ref, image)]
        rows = self.db.query(
            "SELECT name, image_id FROM tags WHERE name LIKE ? ORDER BY name", (f"{ref.repository}:%",)
        )
        targets = [
            (reference.parse(row["name"]), self.images.get_by_id(row["image_id"]))
            for row in rows
            if row["name"].rsplit(":", 1)[0] == ref.repository
        ]
        if not targets:
            raise NotFound(f"An image does not exist locally with the tag: {ref.familiar_repository}")
        return targets

    async def push(self, name: str, tag: str | None, credentials: Credentials, emit: Emit) -> None:
        targets = await asyncio.to_thread(self._targets, name, tag)
        ref = targets[0][0]
        repo = await self.registries.open(ref.domain, ref.path, credentials, ["pull", "push"])
        emit({"status": f"The push refers to repository [{ref.repository}]"})
        for target, image in targets:
            await self._push_image(repo, target, image, emit)

    async def _push_image(self, repo: Repository, ref: reference.Reference, image: Image, emit: Emit) -> None:
        content = self.images.content
        manifest_bytes = await asyncio.to_thread(content.read_bytes, image.manifest_digest)
        manifest = mf.Manifest.parse(manifest_bytes)
        docker_types = manifest.media_type == mf.DOCKER_MANIFEST
        with content.leases.lease() as lease:
            for diff_id, _ in image.layers:
                emit({"status": "Preparing", "progressDetail": {}, "id": short(diff_id)})
            layers = await asyncio.gather(
                *[
                    self._compressed(diff_id, descriptor, docker_types, lease)
                    for (diff_id, _), descriptor in zip(image.layers, manifest.layers)
                ]
            )
            jobs = [self._push_layer(repo, ref, layer, emit) for layer in layers]
            results = await asyncio.gather(*jobs, return_exceptions=True)
            errors = [r for r in results if isinstance(r, BaseException)]
            if errors:
                raise next((e for e in errors if isinstance(e, KapalError)), errors[0])
            config = manifest.config
            if not await repo.blob_exists(config.digest):
                await self._upload(repo, config.digest, config.size, None, emit)
            if any(layer.changed for layer in layers):
                document = json.loads(manifest_bytes)
                document["layers"] = [layer.descriptor.to_json() for layer in layers]
                manifest_bytes = json.dumps(document, indent=3).encode()
            pushed = await asyncio.to_thread(content.put_bytes, manifest_bytes, None, lease)
            what = f"manifest for {ref.familiar()}"
            answered = await repo.put_manifest(ref.tag or "latest", manifest_bytes, manifest.media_type, what)
            if answered and answered != pushed:
                raise InvalidArgument(f"{what}: registry stored it as {answered}, expected {pushed}")
            await asyncio.to_thread(
                self.images.register, image.manifest_digest, lease, [], (f"{ref.repository}@{pushed}", pushed)
            )
            await asyncio.to_thread(
                record_sources,
                self.db,
                [
                    (
                        layer.descriptor.digest,
                        layer.diff_id,
                        layer.descriptor.media_type,
                        layer.descriptor.size,
                        ref.domain,
                        ref.path,
                    )
                    for layer in layers
                ],
            )
        tag = ref.tag or "latest"
        emit({"status": f"{tag}: digest: {pushed} size: {len(manifest_bytes)}"})
        emit({"progressDetail": {}, "aux": {"Tag": tag, "Digest": pushed, "Size": len(manifest_bytes)}})
        self.images.events.publish("image", "push", image.id, name=ref.familiar())

    # -- compression -----------------------------------------------------------------------------

    async def _compressed(
        self, diff_id: str, stored: mf.Descriptor, docker_types: bool, lease: Lease
    ) -> _Layer:
        content = self.images.content
        if stored.media_type in _COMPRESSED_TYPES and content.exists(stored.digest):
            return _Layer(diff_id, stored, False)
        if not content.exists(stored.digest):
            raise NotFound(
                f"layer blob {stored.digest} of {diff_id} is not in the store; it cannot be pushed"
            )
        media_type = mf.DOCKER_LAYER_GZIP if docker_types else mf.OCI_LAYER_GZIP
        rows = self.db.query(
            "SELECT digest, size FROM distribution_blobs"
            " WHERE diff_id = ? AND registry = '' AND media_type IN (?, ?)",
            (diff_id, mf.OCI_LAYER_GZIP, mf.DOCKER_LAYER_GZIP),
        )
        for row in rows:
            if content.exists(row["digest"]):
                lease.add(row["digest"])
                return _Layer(diff_id, mf.Descriptor(media_type, row["digest"], row["size"]), True)
        task = self._compressing.get(diff_id)
        if task is None:
            task = asyncio.ensure_future(asyncio.to_thread(self._gzip, diff_id, stored.digest, lease))
            self._compressing[diff_id] = task
            task.add_done_callback(lambda _: self._compressing.pop(diff_id, None))
        descriptor = await asyncio.shield(task)
        lease.add(descriptor.digest)
        return _Layer(diff_id, mf.Descriptor(media_type, descriptor.digest, descriptor.size), True)

    def _gzip(self, diff_id: str, blob: str, lease: Lease) -> mf.Descriptor:
        """Compress a stored uncompressed layer once, and remember the result for every later push."""
        content = self.images.content
        with content.open(blob) as source:
            head = source.read(16)
            if detect(head) is not Compression.NONE:
                raise InvalidArgument(f"layer blob {blob} has an unsupported compression for a push")
            with content.writer(lease=lease) as writer:
                gzip = compress_writer(writer, Compression.GZIP)  # type: ignore[arg-type]
                gzip.write(head)
                while chunk := source.read(_READ):
                    gzip.write(chunk)
                gzip.close()
                digest = writer.commit()
                size = writer.size
        record_sources(self.db, [(digest, diff_id, mf.OCI_LAYER_GZIP, size, "", "")])
        return mf.Descriptor(mf.OCI_LAYER_GZIP, digest, size)

    # -- transfer --------------------------------------------------------------------------------

    async def _push_layer(
        self, repo: Repository, ref: reference.Reference, layer: _Layer, emit: Emit
    ) -> None:
        layer_id = short(layer.diff_id)
        digest = layer.descriptor.digest
        if self._slots.locked():
            emit({"status": "Waiting", "progressDetail": {}, "id": layer_id})
        async with self._slots:
            if await repo.blob_exists(digest):
                emit({"status": "Layer already exists", "progressDetail": {}, "id": layer_id})
                return
            location = None
            for source in await asyncio.to_thread(self._mount_sources, digest, ref):
                try:
                    location = await repo.mount(digest, source)
                except KapalError:
                    continue
                if location is None:
                    emit({"status": f"Mounted from {source}", "progressDetail": {}, "id": layer_id})
                    return
                break
            await self._upload(repo, digest, layer.descriptor.size, layer_id, emit, location)
            emit({"status": "Pushed", "progressDetail": {}, "id": layer_id})

    def _mount_sources(self, digest: str, ref: reference.Reference) -> list[str]:
        rows = self.db.query(
            "SELECT repository FROM distribution_blobs WHERE digest = ? AND registry = ? AND repository != ?",
            (digest, ref.domain, ref.path),
        )
        return [row["repository"] for row in rows][:3]

    async def _upload(
        self,
        repo: Repository,
        digest: str,
        size: int,
        layer_id: str | None,
        emit: Emit,
        location: str | None = None,
    ) -> None:
        location = location or await repo.start_upload()
        what = f"uploading blob {digest}"
        progress = _Progress(emit, layer_id, size)
        blob = await asyncio.to_thread(self.images.content.open, digest)
        try:
            if size <= CHUNK:
                await repo.finish_upload(location, digest, what, _read(blob, 0, size, progress), size)
                return
            for start in range(0, size, CHUNK):
                length = min(CHUNK, size - start)
                location = await repo.upload_chunk(
                    location, _read(blob, start, length, progress), start, length, what
                )
            await repo.finish_upload(location, digest, what)
        finally:
            blob.close()


class _Progress:
    def __init__(self, emit: Emit, layer_id: str | None, total: int) -> None:
        self._emit = emit
        self._id = layer_id
        self._total = total
        self._current = 0
        self._last = 0.0

    def advance(self, n: int) -> None:
        self._current += n
        now = time.monotonic()
        if self._id and (now - self._last >= _PROGRESS_INTERVAL or self._current == self._total):
            self._last = now
            self._emit(
                {
                    "status": "Pushing",
                    "progressDetail": {"current": self._current, "total": self._total},
                    "id": self._id,
                }
            )


async def _read(blob: Any, start: int, length: int, progress: _Progress) -> AsyncIterator[bytes]:
    """*length* bytes of *blob* from *start*, read in a thread, as an upload body."""
    offset = start
    end = start + length
    while offset < end:
        chunk = await asyncio.to_thread(_pread, blob, offset, min(_READ, end - offset))
        if not chunk:
            raise InvalidArgument("blob shrank while it was being pushed")
        offset += len(chunk)
        progress.advance(len(chunk))
        yield chunk


def _pread(blob: Any, offset: int, n: int) -> bytes:
    import os

    return os.pread(blob.fileno(), n, offset)
