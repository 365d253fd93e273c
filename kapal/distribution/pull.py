"""``docker pull``: manifests resolved and verified, layers fetched, unpacked while they stream.

Each layer is downloaded once however many pulls want it at the same time;
its bytes are hashed, written to a partial blob and decompressed and unpacked
in a worker thread as they arrive, so when the last byte lands the layer is
ready and its digest checked (no second pass). A dropped connection is
resumed with ``Range``; a failed pull leaves no image, no layer and no blob —
only the partial file a retry continues from.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from kapal import reference
from kapal.content import digest as digests
from kapal.content.lease import Lease
from kapal.distribution.client import Registries, Repository
from kapal.distribution.credentials import Credentials
from kapal.distribution.errors import RegistryUnreachable
from kapal.distribution.ingest import Feed, FeedAbandoned, LayerSource, PartialBlob
from kapal.errors import DigestMismatch, InvalidArgument, KapalError
from kapal.image import manifest as mf
from kapal.image.store import ImageStore
from kapal.metadata import Database

Emit = Callable[[dict[str, Any]], None]
RETRIES = 5
_PROGRESS_INTERVAL = 0.1


def short(digest: str) -> str:
    return digest.partition(":")[2][:12]


def schema1_error(ref: reference.Reference) -> InvalidArgument:
    return InvalidArgument(
        "Docker Image Format v1 and Docker Image manifest version 2, schema 1 support has been removed. "
        f"Suggest the author of {ref.familiar()} to upgrade the image to the OCI Format or "
        "Docker Image manifest v2, schema 2."
    )


def verify_bytes(data: bytes, expected: str, what: str) -> None:
    actual = digests.of_bytes(data, expected.partition(":")[0])
    if actual != expected:
        raise DigestMismatch(f"{what}: digest mismatch: expected {expected}, got {actual}")


def record_sources(db: Database, rows: list[tuple[str, str, str, int, str, str]]) -> None:
    """Remember where blobs came from or went (digest, diff_id, media type, size, registry, repository)."""
    with db.transaction() as conn:
        conn.executemany(
            "INSERT OR REPLACE INTO distribution_blobs"
            " (digest, diff_id, media_type, size, registry, repository) VALUES (?, ?, ?, ?, ?, ?)",
            rows,
        )


class Puller:
    def __init__(self, images: ImageStore, db: Database, registries: Registries) -> None:
        self.images = images
        self.db = db
        self.registries = registries
        self._slots = asyncio.Semaphore(registries.options.max_concurrent_downloads)
        self._downloads: dict[str, asyncio.Task[None]] = {}

    async def pull(
        self,
        ref: reference.Reference,
        credentials: Credentials,
        emit: Emit,
        platform: dict[str, str] | None = None,
        all_tags: bool = False,
    ) -> None:
        repo = await self.registries.open(ref.domain, ref.path, credentials, ["pull"])
        if all_tags:
            tags = sorted(await repo.tags())
            if not tags:
                raise InvalidArgument(f"repository {ref.familiar_repository} has no tags")
            fresh = False
            for tag in tags:
                fresh |= await self._pull_one(
                    repo, reference.Reference(ref.domain, ref.path, tag), emit, platform
                )
            name = ref.familiar_repository
        else:
            fresh = await self._pull_one(repo, ref, emit, platform)
            name = ref.familiar()
        if fresh:
            emit({"status": f"Status: Downloaded newer image for {name}"})
        else:
            emit({"status": f"Status: Image is up to date for {name}"})

    async def _resolve(
        self, repo: Repository, ref: reference.Reference, platform: dict[str, str] | None
    ) -> tuple[bytes, str, bytes | None, str | None]:
        """(manifest, its digest, index or None, index digest or None), all verified."""
        ident = ref.digest or ref.tag or reference.DEFAULT_TAG
        what = f"manifest for {ref.familiar()}"
        data, media_type = await repo.get_manifest(ident, what)
        digest = digests.of_bytes(data)
        if ref.digest:
            verify_bytes(data, ref.digest, what)
            digest = ref.digest
        if media_type not in mf.MANIFEST_TYPES | mf.INDEX_TYPES:
            try:
                media_type = mf.media_type_of(mf.parse_json(data, "manifest"))
            except InvalidArgument:
                if media_type in (mf.DOCKER_SCHEMA1, mf.DOCKER_SCHEMA1_SIGNED):
                    raise schema1_error(ref) from None
                raise
        if media_type in (mf.DOCKER_SCHEMA1, mf.DOCKER_SCHEMA1_SIGNED):
            raise schema1_error(ref)
        if media_type not in mf.INDEX_TYPES:
            return data, digest, None, None
        entry = mf.select_platform(mf.parse_index(data), platform)
        manifest, child_type = await repo.get_manifest(entry.digest, what)
        verify_bytes(manifest, entry.digest, what)
        if child_type in (mf.DOCKER_SCHEMA1, mf.DOCKER_SCHEMA1_SIGNED):
            raise schema1_error(ref)
        return manifest, entry.digest, data, digest

    async def _pull_one(
        self, repo: Repository, ref: reference.Reference, emit: Emit, platform: dict[str, str] | None
    ) -> bool:
        """Pull one tag or digest; True when the name now points at a different image."""
        manifest_bytes, manifest_digest, index_bytes, index_digest = await self._resolve(repo, ref, platform)
        manifest = mf.Manifest.parse(manifest_bytes)
        config_bytes = await self._small_blob(repo, manifest.config.digest, f"config of {ref.familiar()}")
        config = mf.parse_json(config_bytes, "image config")
        if platform and index_bytes is None and not mf.config_platform_matches(config, platform):
            found = "/".join(str(config.get(k)) for k in ("os", "architecture", "variant") if config.get(k))
            wanted = "/".join(platform[k] for k in ("os", "architecture", "variant") if k in platform)
            raise InvalidArgument(
                f"image with reference {ref.familiar()} was found but its platform ({found}) "
                f"does not match the specified platform ({wanted})"
            )
        diff_ids = list((config.get("rootfs") or {}).get("diff_ids") or [])
        if len(diff_ids) != len(manifest.layers):
            raise InvalidArgument(
                f"invalid image {ref.familiar()}: config lists {len(diff_ids)} layers, "
                f"manifest {len(manifest.layers)}"
            )
        emit({"status": f"Pulling from {ref.familiar_repository}", "id": ref.digest or ref.tag})
        content = self.images.content
        tags = [str(ref)] if ref.tag and not ref.digest else []
        repo_digest = f"{ref.repository}@{index_digest or manifest_digest}"
        failed = False
        try:
            with content.leases.lease() as lease:
                await asyncio.to_thread(
                    self._store_small,
                    lease,
                    manifest_bytes,
                    manifest_digest,
                    config_bytes,
                    index_bytes,
                    index_digest,
                )
                for layer in manifest.layers:
                    if layer.media_type == mf.DOCKER_LAYER_FOREIGN or "nondistributable" in layer.media_type:
                        raise InvalidArgument(
                            f"layer {layer.digest} is foreign (nondistributable); kapal cannot fetch it"
                        )
                jobs = [
                    self._layer(repo, layer, diff_id, lease, emit)
                    for layer, diff_id in zip(manifest.layers, diff_ids)
                ]
                results = await asyncio.gather(*jobs, return_exceptions=True)
                errors = [r for r in results if isinstance(r, BaseException)]
                if errors:
                    raise _most_telling(errors)
                before = await asyncio.to_thread(self._tag_target, tags[0] if tags else None, repo_digest)
                image, _ = await asyncio.to_thread(
                    self.images.register, manifest_digest, lease, tags, (repo_digest, index_digest)
                )
                await asyncio.to_thread(
                    record_sources,
                    self.db,
                    [
                        (layer.digest, diff_id, layer.media_type, layer.size, ref.domain, ref.path)
                        for layer, diff_id in zip(manifest.layers, diff_ids)
                    ],
                )
        except BaseException:
            failed = True
            raise
        finally:
            if failed:
                # Nothing of a failed pull may stay: what it stored was held only by its lease.
                await asyncio.to_thread(self.images.collect_garbage)
        emit({"status": f"Digest: {index_digest or manifest_digest}"})
        if before != image.id:
            for tag in tags:
                self.images.events.publish("image", "pull", image.id, name=reference.parse(tag).familiar())
            if not tags:
                self.images.events.publish("image", "pull", image.id, name=ref.familiar())
        return before != image.id

    def _tag_target(self, tag: str | None, repo_digest: str) -> str | None:
        name = tag or repo_digest
        table = "tags" if tag else "repo_digests"
        rows = self.db.query(f"SELECT image_id FROM {table} WHERE name = ?", (name,))  # noqa: S608
        return rows[0]["image_id"] if rows else None

    def _store_small(
        self,
        lease: Lease,
        manifest: bytes,
        manifest_digest: str,
        config: bytes,
        index: bytes | None,
        index_digest: str | None,
    ) -> None:
        content = self.images.content
        content.put_bytes(manifest, manifest_digest, lease)
        content.put_bytes(config, None, lease)
        if index is not None and index_digest:
            content.put_bytes(index, index_digest, lease)

    async def _small_blob(self, repo: Repository, digest: str, what: str) -> bytes:
        if self.images.content.exists(digest):
            try:
                return await asyncio.to_thread(self.images.content.read_bytes, digest)
            except DigestMismatch:
                pass
        response = await repo.get_blob(digest)
        try:
            data = await response.read()
        except (TimeoutError, aiohttp.ClientError, OSError) as error:
            raise RegistryUnreachable(f"{what}: {error}") from None
        finally:
            response.release()
        verify_bytes(data, digest, what)
        return data

    # -- layers ----------------------------------------------------------------------------------

    async def _layer(
        self, repo: Repository, layer: mf.Descriptor, diff_id: str, lease: Lease, emit: Emit
    ) -> None:
        layer_id = short(layer.digest)
        lease.add(layer.digest)
        lease.add(diff_id)
        content, layers = self.images.content, self.images.layers
        if content.exists(layer.digest) and layers.get(diff_id) is not None:
            emit({"status": "Already exists", "progressDetail": {}, "id": layer_id})
            return
        emit({"status": "Pulling fs layer", "progressDetail": {}, "id": layer_id})
        task = self._downloads.get(layer.digest)
        if task is None:
            task = asyncio.ensure_future(self._download(repo, layer, diff_id, emit))
            self._downloads[layer.digest] = task
            task.add_done_callback(lambda _: self._downloads.pop(layer.digest, None))
        else:
            emit({"status": "Waiting", "progressDetail": {}, "id": layer_id})
        await asyncio.shield(task)
        emit({"status": "Pull complete", "progressDetail": {}, "id": layer_id})

    async def _download(self, repo: Repository, layer: mf.Descriptor, diff_id: str, emit: Emit) -> None:
        if self._slots.locked():
            emit({"status": "Waiting", "progressDetail": {}, "id": short(layer.digest)})
        async with self._slots:
            # The download's own lease keeps its results until the waiting pulls have registered.
            with self.images.content.leases.lease() as lease:
                lease.add(layer.digest)
                lease.add(diff_id)
                await self._transfer(repo, layer, diff_id, lease, emit)

    async def _transfer(
        self, repo: Repository, layer: mf.Descriptor, diff_id: str, lease: Lease, emit: Emit
    ) -> None:
        content, layers = self.images.content, self.images.layers
        layer_id = short(layer.digest)
        unpack = layers.get(diff_id) is None
        if content.exists(layer.digest):
            emit({"status": "Extracting", "progressDetail": {}, "id": layer_id})
            await asyncio.to_thread(self._unpack_stored, layer.digest, diff_id, lease)
            return
        partial = await asyncio.to_thread(PartialBlob, content, layer.digest)
        if partial.size > layer.size:
            partial.reset()
        received = partial.size
        if received:
            emit(
                {
                    "status": "Resuming download",
                    "progressDetail": {"current": received, "total": layer.size},
                    "id": layer_id,
                }
            )
        feed = Feed(asyncio.get_running_loop())
        worker = asyncio.ensure_future(
            asyncio.to_thread(self._consume, partial, feed, layer, diff_id if unpack else None, lease)
        )
        try:
            await self._receive(repo, layer, feed, received, emit)
        except BaseException as error:
            feed.close(error if isinstance(error, Exception) else RegistryUnreachable("pull cancelled"))
            try:
                await worker
            except BaseException:  # noqa: S110 - the download's own error is the one to report
                pass
            raise
        feed.close()
        emit({"status": "Verifying Checksum", "progressDetail": {}, "id": layer_id})
        await worker
        emit({"status": "Download complete", "progressDetail": {}, "id": layer_id})
        if unpack:
            emit(
                {
                    "status": "Extracting",
                    "progressDetail": {"current": layer.size, "total": layer.size},
                    "id": layer_id,
                }
            )

    async def _receive(
        self, repo: Repository, layer: mf.Descriptor, feed: Feed, received: int, emit: Emit
    ) -> None:
        layer_id = short(layer.digest)
        failures = 0
        last = 0.0
        while received < layer.size or layer.size == 0:
            try:
                response = await repo.get_blob(layer.digest, received)
                try:
                    skip = received if response.status == 200 else 0
                    async for chunk in response.content.iter_chunked(1 << 20):
                        if skip:
                            if len(chunk) <= skip:
                                skip -= len(chunk)
                                continue
                            chunk, skip = chunk[skip:], 0
                        received += len(chunk)
                        if received > layer.size:
                            raise DigestMismatch(
                                f"layer {layer.digest}: registry sent more than {layer.size} bytes"
                            )
                        await feed.put(chunk)
                        now = time.monotonic()
                        if now - last >= _PROGRESS_INTERVAL:
                            last = now
                            emit(
                                {
                                    "status": "Downloading",
                                    "progressDetail": {"current": received, "total": layer.size},
                                    "id": layer_id,
                                }
                            )
                finally:
                    response.release()
                if layer.size == 0 or received == layer.size:
                    return
                raise RegistryUnreachable(f"layer {layer.digest}: connection closed after {received} bytes")
            except FeedAbandoned:
                return  # the worker failed; its error is reported
            except (TimeoutError, RegistryUnreachable, aiohttp.ClientError, OSError) as error:
                failures += 1
                if failures > RETRIES:
                    if isinstance(error, KapalError):
                        raise
                    raise RegistryUnreachable(
                        f"downloading layer {layer.digest}: {error or type(error).__name__}"
                    ) from None
                delay = min(0.2 * 2 ** (failures - 1), 3.0)
                emit({"status": f"Retrying in {delay:.1f} seconds", "progressDetail": {}, "id": layer_id})
                await asyncio.sleep(delay)

    def _consume(
        self, partial: PartialBlob, feed: Feed, layer: mf.Descriptor, diff_id: str | None, lease: Lease
    ) -> None:
        """Worker thread: store, hash and (when *diff_id* is given) unpack the layer as it streams."""
        algorithm = layer.digest.partition(":")[0]
        source = LayerSource(partial, feed, algorithm)
        try:
            try:
                if diff_id is not None:
                    self.images.layers.unpack(source, diff_id, lease)
                source.drain()
            except (InvalidArgument, DigestMismatch) as error:
                # A corrupt stream often breaks the decompressor first: the digest says whose fault it was.
                source.drain()
                if source.digest() != layer.digest:
                    partial.discard()
                    raise DigestMismatch(
                        f"filesystem layer verification failed for digest {layer.digest}: "
                        f"got {source.digest()}"
                    ) from None
                raise error
            if source.digest() != layer.digest or source.count != layer.size:
                partial.discard()
                raise DigestMismatch(
                    f"filesystem layer verification failed for digest {layer.digest}: got {source.digest()}"
                    f" ({source.count} of {layer.size} bytes)"
                )
            partial.commit(lease)
        except BaseException:
            feed.abandon()
            partial.close()
            raise

    def _unpack_stored(self, digest: str, diff_id: str, lease: Lease) -> None:
        with self.images.content.open(digest) as blob:
            reader = digests.DigestingReader(blob, digest.partition(":")[0])
            self.images.layers.unpack(reader, diff_id, lease)
            reader.drain()
        if reader.digest() != digest:
            raise DigestMismatch(f"blob {digest} is corrupt on disk")


def _most_telling(errors: list[BaseException]) -> BaseException:
    """Of several layers' failures, the one to report: a verification failure beats a network one."""
    for kind in (DigestMismatch, KapalError):
        for error in errors:
            if isinstance(error, kind):
                return error
    return errors[0]
