"""The image store: images, their names, and what may be thrown away.

An image is its config blob (its ID is the config's digest, as in Docker), the
manifest kept beside it for ``save`` and ``push``, and its unpacked layers.
Names (tags and repo digests) are rows that point at an image ID.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from kapal import reference
from kapal.content.lease import Lease
from kapal.content.store import ContentStore
from kapal.errors import Conflict, InvalidArgument, NotFound
from kapal.events import EventBus
from kapal.image.layers import LayerStore
from kapal.image.manifest import Manifest
from kapal.metadata import Database

# (container ID, running) pairs that use an image; filled in by the container service.
ImageUsers = Callable[[str], list[tuple[str, bool]]]


@dataclass
class Image:
    id: str
    manifest_digest: str
    size: int
    added: float
    last_tag_time: float | None
    config: dict[str, Any]
    tags: list[str] = field(default_factory=list)  # full references, sorted
    repo_digests: list[str] = field(default_factory=list)
    layers: list[tuple[str, str]] = field(default_factory=list)  # (diff_id, blob digest)

    @property
    def short_id(self) -> str:
        return self.id.partition(":")[2][:12]

    @property
    def created(self) -> str:
        return str(self.config.get("created") or "")

    @property
    def labels(self) -> dict[str, str]:
        return (self.config.get("config") or {}).get("Labels") or {}


def chain_ids(diff_ids: list[str]) -> list[str]:
    """Docker's chain IDs: each layer named together with everything below it."""
    chain: list[str] = []
    for diff_id in diff_ids:
        if not chain:
            chain.append(diff_id)
        else:
            chain.append("sha256:" + hashlib.sha256(f"{chain[-1]} {diff_id}".encode()).hexdigest())
    return chain


def familiar(name: str) -> str:
    return reference.parse(name, default_tag=False).familiar()


class ImageStore:
    def __init__(self, db: Database, content: ContentStore, layers: LayerStore, events: EventBus) -> None:
        self.db = db
        self.content = content
        self.layers = layers
        self.events = events
        self.image_users: ImageUsers = lambda image_id: []

    # -- reading -------------------------------------------------------------------------------

    def _load(self, row: Any) -> Image:
        image_id = row["id"]
        config = json.loads(self.content.read_bytes(image_id))
        tags = [
            r["name"]
            for r in self.db.query("SELECT name FROM tags WHERE image_id = ? ORDER BY name", (image_id,))
        ]
        repo_digests = [
            r["name"]
            for r in self.db.query(
                "SELECT name FROM repo_digests WHERE image_id = ? ORDER BY name", (image_id,)
            )
        ]
        layers = [
            (r["diff_id"], r["blob_digest"])
            for r in self.db.query(
                "SELECT diff_id, blob_digest FROM image_layers WHERE image_id = ? ORDER BY position",
                (image_id,),
            )
        ]
        return Image(
            id=image_id,
            manifest_digest=row["manifest_digest"],
            size=row["size"],
            added=row["added"],
            last_tag_time=row["last_tag_time"],
            config=config,
            tags=tags,
            repo_digests=repo_digests,
            layers=layers,
        )

    def list(self) -> list[Image]:
        rows = self.db.query("SELECT * FROM images ORDER BY added DESC")
        return [self._load(row) for row in rows]

    def get_by_id(self, image_id: str) -> Image:
        rows = self.db.query("SELECT * FROM images WHERE id = ?", (image_id,))
        if not rows:
            raise NotFound(f"No such image: {image_id}")
        return self._load(rows[0])

    def resolve(self, name: str) -> str:
        """The image ID *name* refers to: a reference, a repo digest, a full or short ID."""
        return self.resolve_detail(name)[0]

    def resolve_detail(self, name: str) -> tuple[str, bool]:
        """The image ID, and whether *name* named it by ID (names win over ID prefixes, as in Docker)."""
        if not name:
            raise NotFound("No such image: ")
        hexpart = name[7:] if name.startswith("sha256:") else name
        if name.startswith("sha256:") or reference.is_full_image_id(name):
            return self._by_id_prefix(name, hexpart), True
        try:
            ref = reference.parse(name)
        except InvalidArgument:
            ref = None
        if ref is not None:
            if ref.digest:
                rows = self.db.query(
                    "SELECT image_id FROM repo_digests WHERE name = ?", (f"{ref.repository}@{ref.digest}",)
                )
                if rows:
                    return rows[0]["image_id"], False
            else:
                rows = self.db.query("SELECT image_id FROM tags WHERE name = ?", (str(ref),))
                if rows:
                    return rows[0]["image_id"], False
        if _is_hex(hexpart):
            return self._by_id_prefix(name, hexpart), True
        raise NotFound(f"No such image: {ref.familiar() if ref else name}")

    def _by_id_prefix(self, name: str, hexpart: str) -> str:
        if not _is_hex(hexpart):
            raise NotFound(f"No such image: {name}")
        rows = self.db.query("SELECT id FROM images WHERE id LIKE ?", (f"sha256:{hexpart}%",))
        if not rows:
            raise NotFound(f"No such image: {name}")
        if len(rows) > 1:
            raise InvalidArgument(f"ambiguous image ID prefix {name!r}: it matches {len(rows)} images")
        return rows[0]["id"]

    def get(self, name: str) -> Image:
        return self.get_by_id(self.resolve(name))

    # -- writing -------------------------------------------------------------------------------

    def register(
        self,
        manifest_digest: str,
        lease: Lease,
        tags: Iterable[str] = (),
        repo_digest: tuple[str, str | None] | None = None,
    ) -> tuple[Image, list[str]]:
        """Record an image whose blobs and layers are already stored (under *lease*).

        Returns the image and the tags that moved to it from another image.
        """
        manifest = Manifest.parse(self.content.read_bytes(manifest_digest))
        config = json.loads(self.content.read_bytes(manifest.config.digest))
        diff_ids = list((config.get("rootfs") or {}).get("diff_ids") or [])
        if len(diff_ids) != len(manifest.layers):
            raise InvalidArgument(
                f"invalid image: config lists {len(diff_ids)} layers, manifest {len(manifest.layers)}"
            )
        sizes = [self.layers.require(diff_id).size for diff_id in diff_ids]
        image_id = manifest.config.digest
        now = time.time()
        moved: list[str] = []
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO images (id, manifest_digest, size, added) VALUES (?, ?, ?, ?)",
                (image_id, manifest_digest, sum(sizes), now),
            )
            conn.executemany(
                "INSERT OR IGNORE INTO image_layers (image_id, position, diff_id, blob_digest)"
                " VALUES (?, ?, ?, ?)",
                [
                    (image_id, i, d, layer.digest)
                    for i, (d, layer) in enumerate(zip(diff_ids, manifest.layers))
                ],
            )
            for tag in tags:
                row = conn.execute("SELECT image_id FROM tags WHERE name = ?", (tag,)).fetchone()
                if row and row["image_id"] != image_id:
                    moved.append(row["image_id"])
                conn.execute("INSERT OR REPLACE INTO tags (name, image_id) VALUES (?, ?)", (tag, image_id))
                conn.execute("UPDATE images SET last_tag_time = ? WHERE id = ?", (now, image_id))
            if repo_digest:
                conn.execute(
                    "INSERT OR REPLACE INTO repo_digests (name, image_id, index_digest) VALUES (?, ?, ?)",
                    (repo_digest[0], image_id, repo_digest[1]),
                )
        return self.get_by_id(image_id), moved

    def tag(self, source: str, repo: str, tag: str | None) -> str:
        image_id = self.resolve(source)
        if not repo:
            raise InvalidArgument("repository name must not be empty")
        target_repo = reference.parse_repository(repo)
        tag = tag or "latest"
        if not reference.valid_tag(tag):
            raise InvalidArgument(f"invalid tag format: {tag!r}")
        target = f"{target_repo}:{tag}"
        with self.db.transaction() as conn:
            conn.execute("INSERT OR REPLACE INTO tags (name, image_id) VALUES (?, ?)", (target, image_id))
            conn.execute("UPDATE images SET last_tag_time = ? WHERE id = ?", (time.time(), image_id))
        self.events.publish("image", "tag", image_id, name=familiar(target))
        return target

    def delete(self, name: str, force: bool = False) -> list[dict[str, str]]:
        """``docker rmi``: untag, and delete the image when its last name is gone.

        By name, only that name goes unless it was the last. By ID, every name
        goes, which needs *force* when they span several repositories.
        """
        image_id, by_id = self.resolve_detail(name)
        image = self.get_by_id(image_id)
        names = image.tags + image.repo_digests
        if by_id:
            if len({_repository_of(n) for n in names}) > 1 and not force:
                raise Conflict(
                    f"conflict: unable to delete {image.short_id} (must be forced) - "
                    "image is referenced in multiple repositories"
                )
            to_untag = names
        else:
            ref = reference.parse(name)
            key = f"{ref.repository}@{ref.digest}" if ref.digest else str(ref)
            to_untag = [key]
            if not ref.digest and not any(
                _repository_of(n) == ref.repository for n in image.tags if n != key
            ):
                # Docker drops a repository's digest references together with its last tag.
                to_untag += [n for n in image.repo_digests if _repository_of(n) == ref.repository]
        deleting = len(set(to_untag)) >= len(names)
        if deleting:
            self._check_users(image, force, name, by_id)
        report = []
        for untag in to_untag:
            self._untag(untag)
            report.append({"Untagged": familiar(untag)})
        if deleting:
            report += self._delete_image(image)
        return report

    def _check_users(self, image: Image, force: bool, name: str, by_id: bool) -> None:
        for container_id, running in self.image_users(image.id):
            if running:
                raise Conflict(
                    f"conflict: unable to delete {image.short_id} (cannot be forced) - "
                    f"image is being used by running container {container_id[:12]}"
                )
            if not force:
                if by_id:
                    raise Conflict(
                        f"conflict: unable to delete {image.short_id} (must be forced) - "
                        f"image is being used by stopped container {container_id[:12]}"
                    )
                raise Conflict(
                    f'conflict: unable to remove repository reference "{name}" (must force) - '
                    f"container {container_id[:12]} is using its referenced image {image.short_id}"
                )

    def _untag(self, name: str) -> None:
        with self.db.transaction() as conn:
            row = conn.execute("SELECT image_id FROM tags WHERE name = ?", (name,)).fetchone()
            conn.execute("DELETE FROM tags WHERE name = ?", (name,))
            if row is None:
                row = conn.execute("SELECT image_id FROM repo_digests WHERE name = ?", (name,)).fetchone()
                conn.execute("DELETE FROM repo_digests WHERE name = ?", (name,))
        if row is not None:
            self.events.publish("image", "untag", row["image_id"], name=familiar(name))

    def _delete_image(self, image: Image) -> list[dict[str, str]]:
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM tags WHERE image_id = ?", (image.id,))
            conn.execute("DELETE FROM repo_digests WHERE image_id = ?", (image.id,))
            conn.execute("DELETE FROM images WHERE id = ?", (image.id,))
        report = [{"Deleted": image.id}]
        removed_layers = set(self.collect_garbage()[1])
        diff_ids = [diff_id for diff_id, _ in image.layers]
        for diff_id, chain_id in reversed(list(zip(diff_ids, chain_ids(diff_ids)))):
            if diff_id in removed_layers:
                report.append({"Deleted": chain_id})
        self.events.publish("image", "delete", image.id, name=image.id)
        return report

    def prune(self, all_unused: bool, keep: Callable[[Image], bool]) -> tuple[list[dict[str, str]], int]:
        """Remove dangling images (or, with *all_unused*, all images no container uses)."""
        before = self.content.usage() + self.layers.usage()
        report: list[dict[str, str]] = []
        for image in self.list():
            if keep(image) or self.image_users(image.id):
                continue
            if image.tags and not all_unused:
                continue
            for name in image.tags + image.repo_digests:
                self._untag(name)
                report.append({"Untagged": familiar(name)})
            report += self._delete_image(image)
        reclaimed = before - (self.content.usage() + self.layers.usage())
        if report:
            self.events.publish("image", "prune", "", reclaimed=str(max(reclaimed, 0)))
        return report, max(reclaimed, 0)

    # -- garbage -------------------------------------------------------------------------------

    def collect_garbage(self) -> tuple[list[str], list[str]]:
        """Mark from the database, sweep blobs and layers; returns what was removed."""
        leases = self.content.leases
        with leases.collecting:
            blobs: set[str] = set()
            for row in self.db.query("SELECT id, manifest_digest FROM images"):
                blobs.update((row["id"], row["manifest_digest"]))
            blobs.update(r["blob_digest"] for r in self.db.query("SELECT blob_digest FROM image_layers"))
            blobs.update(
                r["index_digest"]
                for r in self.db.query("SELECT index_digest FROM repo_digests")
                if r["index_digest"]
            )
            layers = {r["diff_id"] for r in self.db.query("SELECT DISTINCT diff_id FROM image_layers")}
            # Compressed forms of stored layers, made once for push (kapal.distribution.push).
            blobs.update(
                r["digest"]
                for r in self.db.query(
                    "SELECT digest FROM distribution_blobs WHERE registry = '' AND diff_id IN"
                    " (SELECT diff_id FROM image_layers)"
                )
            )
            layers.update(self.extra_layer_roots())
            blobs.update(self.extra_blob_roots())
            removed_blobs = self.content.sweep(blobs)
            removed_layers = self.layers.sweep(layers)
        return removed_blobs, removed_layers

    def extra_layer_roots(self) -> set[str]:
        """Layers held by something other than an image (containers, build cache); set by later services."""
        return set()

    def extra_blob_roots(self) -> set[str]:
        """Blobs held by something other than an image (the build cache); set by later services."""
        return set()

    def usage(self) -> dict[str, int]:
        return {"layers": self.layers.usage(), "blobs": self.content.usage()}


def _is_hex(text: str) -> bool:
    return bool(text) and all(c in "0123456789abcdef" for c in text)


def _repository_of(name: str) -> str:
    """``repo`` of a stored name ``repo:tag`` or ``repo@digest``."""
    return name.split("@", 1)[0] if "@" in name else name.rsplit(":", 1)[0]
