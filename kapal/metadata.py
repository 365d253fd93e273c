"""The metadata database: the single source of truth for what the engine holds.

SQLite in WAL mode, one file under the data root. Every change that must be
seen whole (an image with its tags and layers) is one transaction. Blobs and
unpacked layers live on the filesystem; a row only ever points at content that
was committed before the row, so a crash between the two leaves garbage for the
collector, never a row that points at nothing.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Each entry migrates the schema from version i to i + 1; append, never edit.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE images (
        id TEXT PRIMARY KEY,              -- sha256 of the config blob
        manifest_digest TEXT NOT NULL,    -- the manifest blob kept for save/push
        size INTEGER NOT NULL,            -- unpacked bytes of all layers
        added REAL NOT NULL,              -- when it entered this store
        last_tag_time REAL
    );
    CREATE TABLE image_layers (
        image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
        position INTEGER NOT NULL,
        diff_id TEXT NOT NULL,
        blob_digest TEXT NOT NULL,
        PRIMARY KEY (image_id, position)
    );
    CREATE INDEX image_layers_diff ON image_layers(diff_id);
    CREATE INDEX image_layers_blob ON image_layers(blob_digest);
    CREATE TABLE tags (
        name TEXT PRIMARY KEY,            -- full reference: docker.io/library/busybox:latest
        image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE
    );
    CREATE INDEX tags_image ON tags(image_id);
    CREATE TABLE repo_digests (
        name TEXT PRIMARY KEY,            -- docker.io/library/busybox@sha256:...
        image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
        index_digest TEXT                 -- the index blob when the digest names one
    );
    CREATE INDEX repo_digests_image ON repo_digests(image_id);
    CREATE TABLE layers (
        diff_id TEXT PRIMARY KEY,         -- sha256 of the uncompressed layer tar
        size INTEGER NOT NULL,
        added REAL NOT NULL
    );
    """,
    """
    CREATE TABLE containers (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,        -- without the leading slash
        image_id TEXT NOT NULL,
        created REAL NOT NULL,
        record TEXT NOT NULL              -- the container's JSON record (config, host config, state)
    );
    CREATE INDEX containers_image ON containers(image_id);
    """,
    """
    CREATE TABLE volumes (
        name TEXT PRIMARY KEY,
        driver TEXT NOT NULL,             -- always 'local' (no volume plugins)
        labels TEXT,                      -- JSON object, or NULL when none were given
        options TEXT,                     -- JSON object of driver options, or NULL
        created REAL NOT NULL
    );
    -- A container's mount points (Docker's MountPoints): what it mounts where. A volume named
    -- here is in use; rows go when the container is removed (no foreign key: the containers
    -- table is written with INSERT OR REPLACE, which would cascade a delete on every save).
    CREATE TABLE mount_points (
        container_id TEXT NOT NULL,
        destination TEXT NOT NULL,
        name TEXT NOT NULL DEFAULT '',    -- the volume's name; '' for bind and tmpfs mounts
        record TEXT NOT NULL,             -- the mount point (JSON)
        PRIMARY KEY (container_id, destination)
    );
    CREATE INDEX mount_points_name ON mount_points(name);
    """,
    """
    CREATE TABLE networks (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        driver TEXT NOT NULL,             -- bridge, host, null
        subnet TEXT NOT NULL,             -- '' for host and null
        gateway TEXT NOT NULL,
        bridge TEXT NOT NULL,             -- the Linux bridge's name, '' for host and null
        created TEXT NOT NULL,
        last_address TEXT NOT NULL DEFAULT '',  -- round-robin cursor of the allocator
        record TEXT NOT NULL              -- labels, options, internal, attachable (JSON)
    );
    CREATE TABLE endpoints (
        id TEXT PRIMARY KEY,
        network_id TEXT NOT NULL REFERENCES networks(id),
        container_id TEXT NOT NULL,
        address TEXT NOT NULL,
        mac TEXT NOT NULL,
        host_ifname TEXT NOT NULL,        -- the host end of the container's veth
        ifname TEXT NOT NULL,             -- its name inside the container (eth0, eth1, ...)
        ports TEXT NOT NULL DEFAULT '[]', -- published ports (JSON list of PortMapping)
        UNIQUE (network_id, container_id),
        UNIQUE (network_id, address)
    );
    CREATE INDEX endpoints_container ON endpoints(container_id);
    """,
    """
    -- The builder's cache: one row per step result, keyed as Docker keys a step (the parent,
    -- the instruction after expansion, the checksums of what it copies). A row holds the
    -- image config after the step and the layers under it; the layers are GC roots.
    CREATE TABLE build_cache (
        key TEXT PRIMARY KEY,             -- sha256 of the step's cache key
        config TEXT NOT NULL,             -- the image config (JSON) after the step
        layers TEXT NOT NULL,             -- JSON list of [diff_id, blob digest, size, media type]
        size INTEGER NOT NULL,            -- bytes of the layer the step added (0: none)
        created REAL NOT NULL,
        last_used REAL NOT NULL
    );
    """,
    """
    -- Where layer blobs came from or went (registry, repository), for cross-repository mounts on
    -- push; registry '' marks a compressed blob kapal made from an uncompressed layer, so a layer
    -- is compressed once and every push sends the same bytes under the same digest.
    CREATE TABLE distribution_blobs (
        digest TEXT NOT NULL,             -- the (compressed) blob
        diff_id TEXT NOT NULL,            -- the uncompressed layer it carries
        media_type TEXT NOT NULL,
        size INTEGER NOT NULL,
        registry TEXT NOT NULL,           -- docker.io, 127.0.0.1:5000; '' for local compression
        repository TEXT NOT NULL,         -- library/busybox; ''
        PRIMARY KEY (digest, registry, repository)
    );
    CREATE INDEX distribution_blobs_diff ON distribution_blobs(diff_id);
    """,
]


class Database:
    """A thread-safe handle on the metadata database.

    One connection, one lock: kapal's transactions are small and the lock keeps
    SQLite's own locking out of the picture (no SQLITE_BUSY retries).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._migrate()

    def _migrate(self) -> None:
        with self._lock:
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
            for index in range(version, len(MIGRATIONS)):
                # One script, one transaction: a migration lands whole or not at all.
                self._conn.executescript(
                    f"BEGIN IMMEDIATE; {MIGRATIONS[index]}; PRAGMA user_version={index + 1}; COMMIT;"
                )

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def query(self, sql: str, params: tuple | dict = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def close(self) -> None:
        with self._lock:
            self._conn.close()
