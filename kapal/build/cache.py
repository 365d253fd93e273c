"""The build cache: a step's result found again by what produced it.

A step's key is Docker's: the state it started from (its config digest, which
names every layer below and the whole config), the instruction after
variable expansion, and for COPY/ADD the checksums of the sources' content and
metadata (never their mtimes). A hit gives back the state after the step: its
config and its layers. Rows live in the metadata database, so the cache
survives a daemon restart; their layers and blobs are roots for the garbage
collector until the row is pruned.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

from kapal.metadata import Database

OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


@dataclass(frozen=True)
class LayerRef:
    """A layer of a build state: what the manifest and the config need to name it."""

    diff_id: str
    blob: str
    size: int  # the blob's size
    media_type: str = OCI_LAYER_GZIP

    def to_json(self) -> list[Any]:
        return [self.diff_id, self.blob, self.size, self.media_type]

    @classmethod
    def from_json(cls, value: list[Any]) -> LayerRef:
        return cls(str(value[0]), str(value[1]), int(value[2]), str(value[3]))


def cache_key(parent: str, *parts: Any) -> str:
    text = json.dumps([parent, *parts], sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


@dataclass
class CacheRecord:
    config: dict[str, Any]
    layers: list[LayerRef]


class BuildCache:
    def __init__(self, db: Database) -> None:
        self.db = db

    def get(self, key: str) -> CacheRecord | None:
        rows = self.db.query("SELECT config, layers FROM build_cache WHERE key = ?", (key,))
        if not rows:
            return None
        return CacheRecord(
            json.loads(rows[0]["config"]), [LayerRef.from_json(v) for v in json.loads(rows[0]["layers"])]
        )

    def put(self, key: str, config: dict[str, Any], layers: list[LayerRef], size: int) -> None:
        now = time.time()
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO build_cache (key, config, layers, size, created, last_used)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    key,
                    json.dumps(config, separators=(",", ":")),
                    json.dumps([layer.to_json() for layer in layers]),
                    size,
                    now,
                    now,
                ),
            )

    def roots(self) -> tuple[set[str], set[str]]:
        """(layer diff IDs, blob digests) the cache holds."""
        diff_ids: set[str] = set()
        blobs: set[str] = set()
        for row in self.db.query("SELECT layers FROM build_cache"):
            for value in json.loads(row["layers"]):
                diff_ids.add(value[0])
                blobs.add(value[1])
        return diff_ids, blobs

    def entries(self) -> list[dict[str, Any]]:
        rows = self.db.query("SELECT key, size, created, last_used FROM build_cache ORDER BY created")
        return [dict(row) for row in rows]

    def remove(self, keys: list[str]) -> None:
        with self.db.transaction() as conn:
            conn.executemany("DELETE FROM build_cache WHERE key = ?", [(key,) for key in keys])
