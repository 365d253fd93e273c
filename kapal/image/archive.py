"""``docker load`` and ``docker save``: image archives in and out.

kapal reads every archive Docker and skopeo write: the legacy ``docker save``
format (``manifest.json`` with ``<id>/layer.tar``), Docker 25+'s combined
format (``manifest.json`` beside an OCI layout) and plain OCI image layouts
(``index.json``, as ``skopeo copy … oci-archive:`` writes them). It writes the
combined format, so both Docker and OCI tools read what it saves, and it writes
the stored blobs byte for byte, so digests survive save → load → save.

The archive is read in one streaming pass: every file is ingested into the
content store as it goes by (under a lease), and only once the index files
have been seen is it decided which blobs are configs, manifests and layers.
"""

from __future__ import annotations

import io
import json
import posixpath
import tarfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from kapal import reference
from kapal.content import digest as digests
from kapal.content.lease import Lease
from kapal.errors import InvalidArgument, NotFound
from kapal.image import manifest as mf
from kapal.image.compression import Compression, detect, open_decompressed
from kapal.image.store import Image, ImageStore, familiar

# Files that describe an archive rather than carry a layer; read into memory.
_SMALL_LIMIT = 32 << 20
BUFFER = 1 << 20

Progress = Callable[[dict[str, Any]], None]


@dataclass
class _ArchiveFiles:
    blobs: dict[str, str] = field(default_factory=dict)  # path in archive -> digest in store
    small: dict[str, bytes] = field(default_factory=dict)  # index files kept in memory
    links: dict[str, str] = field(default_factory=dict)  # path -> target path

    def resolve(self, path: str, depth: int = 0) -> str:
        path = _normalise_path(path)
        if path in self.links and depth < 16:
            return self.resolve(self.links[path], depth + 1)
        return path

    def digest_of(self, path: str) -> str:
        resolved = self.resolve(path)
        if resolved not in self.blobs:
            raise InvalidArgument(f"invalid archive: {path} is referenced but not present")
        return self.blobs[resolved]

    def read(self, images: ImageStore, path: str) -> bytes:
        resolved = self.resolve(path)
        if resolved in self.small:
            return self.small[resolved]
        return images.content.read_bytes(self.digest_of(path))


def _normalise_path(path: str) -> str:
    return posixpath.normpath(path[2:] if path.startswith("./") else path)


def _is_small_metadata(name: str) -> bool:
    return "/" not in name and (name.endswith(".json") or name in ("repositories", "oci-layout"))


def _read_archive(stream: BinaryIO, images: ImageStore, lease: Lease) -> _ArchiveFiles:
    files = _ArchiveFiles()
    raw, _ = open_decompressed(stream)
    try:
        tar = tarfile.open(fileobj=raw, mode="r|", bufsize=BUFFER)  # noqa: SIM115 - closed below
    except tarfile.TarError as error:
        raise InvalidArgument(f"invalid archive: {error}") from None
    try:
        for member in tar:
            name = _normalise_path(member.name)
            if name.startswith("/") or name == ".." or name.startswith("../"):
                raise InvalidArgument(f"invalid archive: entry {member.name!r} escapes the archive")
            if member.issym() or member.islnk():
                base = posixpath.dirname(name) if member.issym() else ""
                files.links[name] = posixpath.normpath(posixpath.join(base, member.linkname))
                continue
            if not member.isfile():
                continue
            data = tar.extractfile(member)
            assert data is not None
            if _is_small_metadata(name) and member.size <= _SMALL_LIMIT:
                files.small[name] = data.read()
                continue
            expected = None
            parts = name.split("/")
            if len(parts) == 3 and parts[0] == "blobs" and digests.is_digest(f"{parts[1]}:{parts[2]}"):
                expected = f"{parts[1]}:{parts[2]}"
            files.blobs[name] = images.content.ingest(data, expected=expected, lease=lease)
    except tarfile.TarError as error:
        raise InvalidArgument(f"invalid archive: {error}") from None
    except EOFError:
        raise InvalidArgument("invalid archive: unexpected end of file") from None
    return files


def _layer_media_type(images: ImageStore, digest: str) -> str:
    with images.content.open(digest) as blob:
        compression = detect(blob.read(8))
    if compression is Compression.GZIP:
        return mf.OCI_LAYER_GZIP
    if compression is Compression.ZSTD:
        return mf.OCI_LAYER_ZSTD
    if compression is Compression.NONE:
        return mf.OCI_LAYER
    raise InvalidArgument(f"layer {digest}: unsupported compression {compression.name.lower()}")


def _index_manifests(files: _ArchiveFiles, images: ImageStore, lease: Lease) -> list[tuple[str, str | None]]:
    """(manifest digest, image name) for each image an OCI layout names, for this platform."""
    out: list[tuple[str, str | None]] = []

    def visit(entries: list[mf.Descriptor], name: str | None, depth: int) -> None:
        if depth > 4:
            raise InvalidArgument("invalid archive: image indexes nested too deep")
        platform_specific = [e for e in entries if e.media_type in mf.MANIFEST_TYPES and e.platform]
        if len(platform_specific) > 1:
            entries = [mf.select_platform(entries)]
        for entry in entries:
            entry_name = name or _name_from_annotations(entry.annotations or {})
            if not images.content.exists(entry.digest):
                raise InvalidArgument(f"invalid archive: blob {entry.digest} is missing")
            lease.add(entry.digest)
            data = images.content.read_bytes(entry.digest)
            media_type = entry.media_type or mf.media_type_of(mf.parse_json(data, "manifest"))
            if media_type in mf.INDEX_TYPES:
                visit(mf.parse_index(data), entry_name, depth + 1)
            elif media_type in mf.MANIFEST_TYPES:
                out.append((entry.digest, entry_name))
            # Other artifacts (signatures, attestations) are not images: skip them.

    visit(mf.parse_index(files.small["index.json"]), None, 0)
    return out


def _name_from_annotations(annotations: dict[str, str]) -> str | None:
    name = annotations.get(mf.ANNOTATION_IMAGE_NAME)
    if name:
        return name
    ref_name = annotations.get(mf.ANNOTATION_REF_NAME, "")
    # A bare tag ("latest") names no repository; only a full reference does.
    if ref_name and ("/" in ref_name or ":" in ref_name):
        return ref_name
    return None


def _normalise_tag(name: str) -> str:
    ref = reference.parse(name)
    if ref.digest:
        raise InvalidArgument(f"invalid archive: image name {name!r} has a digest; a tag is needed")
    return str(ref)


def load(stream: BinaryIO, images: ImageStore, progress: Progress | None = None) -> list[Image]:
    """Load every image of an archive; returns them. Progress messages are Docker's texts."""
    emit = progress or (lambda message: None)
    loaded: list[Image] = []
    with images.content.leases.lease() as lease:
        files = _read_archive(stream, images, lease)
        plans: list[tuple[str, list[str]]] = []  # (manifest digest, tags)
        index_by_config: dict[str, str] = {}
        if "index.json" in files.small:
            for manifest_digest, name in _index_manifests(files, images, lease):
                manifest = mf.Manifest.parse(images.content.read_bytes(manifest_digest))
                index_by_config[manifest.config.digest] = manifest_digest
                if "manifest.json" not in files.small:
                    plans.append((manifest_digest, [_normalise_tag(name)] if name else []))
        if "manifest.json" in files.small:
            try:
                entries = json.loads(files.small["manifest.json"])
            except (UnicodeDecodeError, json.JSONDecodeError) as error:
                raise InvalidArgument(f"invalid archive: manifest.json: {error}") from None
            if not isinstance(entries, list):
                raise InvalidArgument("invalid archive: manifest.json is not a list")
            for entry in entries:
                plans.append(_plan_from_docker_entry(entry, files, images, lease, index_by_config))
        if not plans and "manifest.json" not in files.small and "index.json" not in files.small:
            raise InvalidArgument("invalid archive: it has neither manifest.json nor index.json")
        for manifest_digest, tags in plans:
            loaded.append(_unpack_and_register(manifest_digest, tags, images, lease, emit))
    images.collect_garbage()
    return loaded


def _plan_from_docker_entry(
    entry: Any, files: _ArchiveFiles, images: ImageStore, lease: Lease, index_by_config: dict[str, str]
) -> tuple[str, list[str]]:
    if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str):
        raise InvalidArgument("invalid archive: manifest.json entry without Config")
    config_bytes = files.read(images, entry["Config"])
    config = mf.parse_json(config_bytes, "image config")
    config_digest = images.content.put_bytes(config_bytes, lease=lease)
    tags = [_normalise_tag(tag) for tag in entry.get("RepoTags") or []]
    if config_digest in index_by_config:
        return index_by_config[config_digest], tags
    layer_paths = entry.get("Layers") or []
    diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
    if len(layer_paths) != len(diff_ids):
        raise InvalidArgument("invalid archive: layer count in manifest.json does not match the config")
    descriptors = []
    for path in layer_paths:
        blob = files.digest_of(path)
        descriptors.append(mf.Descriptor(_layer_media_type(images, blob), blob, images.content.size(blob)))
    manifest_bytes = mf.build_manifest(config_digest, len(config_bytes), descriptors)
    return images.content.put_bytes(manifest_bytes, lease=lease), tags


def _unpack_and_register(
    manifest_digest: str, tags: list[str], images: ImageStore, lease: Lease, emit: Progress
) -> Image:
    manifest = mf.Manifest.parse(images.content.read_bytes(manifest_digest))
    config = mf.parse_json(images.content.read_bytes(manifest.config.digest), "image config")
    lease.add(manifest.config.digest)
    diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
    if len(diff_ids) != len(manifest.layers):
        raise InvalidArgument("invalid image: config and manifest disagree on the number of layers")
    for layer, diff_id in zip(manifest.layers, diff_ids):
        if not images.content.exists(layer.digest):
            raise InvalidArgument(f"invalid archive: layer blob {layer.digest} is missing")
        lease.add(layer.digest)
        short = digests.split(diff_id)[1][:12]
        emit({"status": "Loading layer", "id": short, "progressDetail": {}})
        with images.content.open(layer.digest) as blob:
            images.layers.unpack(blob, diff_id, lease)
    image, moved = images.register(manifest_digest, lease, tags)
    for tag, old in zip(tags, moved):
        emit(
            {
                "stream": f"The image {familiar(tag)} already exists, renaming the old one with ID "
                f"{old} to empty string\n"
            }
        )
    for tag in tags:
        emit({"stream": f"Loaded image: {familiar(tag)}\n"})
    if not tags:
        emit({"stream": f"Loaded image ID: {image.id}\n"})
    images.events.publish("image", "load", image.id, name=image.id)
    return image


# -- save ------------------------------------------------------------------------------------------


def select_for_save(images: ImageStore, names: Iterable[str]) -> list[tuple[Image, list[str]]]:
    """The images *names* pick, each with the tags the archive should carry (as ``docker save``)."""
    chosen: dict[str, list[str]] = {}
    for name in names:
        try:
            ref = reference.parse(name, default_tag=False)
        except InvalidArgument:
            ref = None
        image_id, by_id = images.resolve_detail(name)
        tags = chosen.setdefault(image_id, [])
        if ref is None or by_id or ref.digest:
            continue
        image = images.get_by_id(image_id)
        if ref.tag is None:
            # `docker save busybox` saves every tag of the repository.
            for row in images.db.query("SELECT name, image_id FROM tags ORDER BY name"):
                if row["name"].rsplit(":", 1)[0] == ref.repository:
                    chosen.setdefault(row["image_id"], [])
                    if row["name"] not in chosen[row["image_id"]]:
                        chosen[row["image_id"]].append(row["name"])
        elif str(ref) in image.tags and str(ref) not in tags:
            tags.append(str(ref))
    return [(images.get_by_id(image_id), tags) for image_id, tags in chosen.items()]


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def _add_dir(tar: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    tar.addfile(info)


def save(images: ImageStore, names: Iterable[str], out: BinaryIO) -> None:
    """Write the images *names* pick to *out* as a Docker + OCI archive."""
    selection = select_for_save(images, list(names))
    if not selection:
        raise InvalidArgument("no images to save")
    tar = tarfile.open(fileobj=out, mode="w|", bufsize=BUFFER, format=tarfile.PAX_FORMAT)  # noqa: SIM115
    written: set[str] = set()
    index_entries: list[dict[str, Any]] = []
    docker_entries: list[dict[str, Any]] = []
    _add_dir(tar, "blobs/")
    _add_dir(tar, "blobs/sha256/")

    def add_blob(digest: str) -> str:
        path = "blobs/" + digest.replace(":", "/")
        if digest not in written:
            written.add(digest)
            size = images.content.size(digest)
            info = tarfile.TarInfo(path)
            info.size = size
            info.mode = 0o644
            with images.content.open(digest) as blob:
                tar.addfile(info, blob)
        return path

    for image, tags in selection:
        manifest_bytes = images.content.read_bytes(image.manifest_digest)
        manifest = mf.Manifest.parse(manifest_bytes)
        layer_paths = []
        for layer in manifest.layers:
            if not images.content.exists(layer.digest):
                raise NotFound(f"layer blob {layer.digest} of image {image.id} is not in the store")
            layer_paths.append(add_blob(layer.digest))
        config_path = add_blob(image.id)
        add_blob(image.manifest_digest)
        descriptor = {
            "mediaType": manifest.media_type,
            "digest": image.manifest_digest,
            "size": len(manifest_bytes),
        }
        if tags:
            for tag in tags:
                annotated = dict(descriptor)
                annotated["annotations"] = {
                    mf.ANNOTATION_IMAGE_NAME: tag,
                    mf.ANNOTATION_REF_NAME: reference.parse(tag).tag or "latest",
                }
                index_entries.append(annotated)
        else:
            index_entries.append(descriptor)
        docker_entries.append(
            {"Config": config_path, "RepoTags": [familiar(t) for t in tags] or None, "Layers": layer_paths}
        )
        images.events.publish("image", "save", image.id, name=image.id)
    _add_bytes(
        tar,
        "index.json",
        mf.canonical_json({"schemaVersion": 2, "mediaType": mf.OCI_INDEX, "manifests": index_entries}),
    )
    _add_bytes(tar, "manifest.json", mf.canonical_json(docker_entries))
    _add_bytes(tar, "oci-layout", mf.canonical_json({"imageLayoutVersion": "1.0.0"}))
    tar.close()
