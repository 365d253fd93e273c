"""The content store: verified, atomic, safe under concurrency, swept only when unreferenced."""

from __future__ import annotations

import hashlib
import io
import os
import threading
from pathlib import Path

import pytest

from kapal.content import digest as digests
from kapal.content.store import ContentStore
from kapal.errors import DigestMismatch, InvalidArgument, NotFound


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def store(scratch: Path) -> ContentStore:
    return ContentStore(scratch / "content")


def test_ingest_names_blob_by_digest_and_reads_back(store: ContentStore) -> None:
    data = os.urandom(3 << 20)
    digest = store.ingest(io.BytesIO(data))
    assert digest == sha256(data)
    assert store.exists(digest)
    assert store.size(digest) == len(data)
    with store.open(digest) as blob:
        assert blob.read() == data
    assert store.path(digest).stat().st_mode & 0o777 == 0o444


def test_expected_digest_mismatch_leaves_no_blob_and_no_temp(store: ContentStore) -> None:
    wrong = sha256(b"something else")
    with pytest.raises(DigestMismatch, match="digest mismatch"):
        store.ingest(io.BytesIO(b"actual content"), expected=wrong)
    assert not store.exists(wrong)
    assert not store.exists(sha256(b"actual content"))
    assert list(store.ingest_dir.iterdir()) == []


def test_sha512_blobs_are_verified(store: ContentStore) -> None:
    data = b"hello sha512"
    expected = "sha512:" + hashlib.sha512(data).hexdigest()
    assert store.put_bytes(data, expected=expected) == expected
    assert store.read_bytes(expected) == data


def test_invalid_digests_are_refused(store: ContentStore) -> None:
    for bad in ("sha256:abc", "md5:" + "0" * 32, "sha256:" + "G" * 64, "nonsense"):
        with pytest.raises(InvalidArgument):
            store.path(bad)
    assert not digests.is_digest("sha256:" + "0" * 63)


def test_missing_blob_is_not_found(store: ContentStore) -> None:
    with pytest.raises(NotFound):
        store.open(sha256(b"absent"))


def test_corruption_on_disk_is_detected_on_read(store: ContentStore) -> None:
    digest = store.put_bytes(b'{"a": 1}')
    path = store.path(digest)
    os.chmod(path, 0o644)
    path.write_bytes(b'{"a": 2}')
    with pytest.raises(DigestMismatch, match="corrupt"):
        store.read_bytes(digest)


def test_concurrent_writers_of_one_blob(store: ContentStore) -> None:
    data = os.urandom(1 << 20)
    results: list[str] = []
    errors: list[BaseException] = []

    def write() -> None:
        try:
            results.append(store.ingest(io.BytesIO(data)))
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=write) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert set(results) == {sha256(data)}
    assert store.read_bytes(sha256(data)) == data
    assert list(store.ingest_dir.iterdir()) == []


def test_abandoned_ingest_is_removed_but_live_one_is_kept(store: ContentStore) -> None:
    abandoned = store.ingest_dir / "blob-dead"
    abandoned.write_bytes(b"half a blob")
    live = store.writer()
    live.write(b"in progress")
    assert store.remove_abandoned_ingests() == 1
    assert not abandoned.exists()
    digest = live.commit()
    assert store.read_bytes(digest) == b"in progress"


def test_sweep_keeps_referenced_and_leased(store: ContentStore) -> None:
    keep = store.put_bytes(b"referenced")
    drop = store.put_bytes(b"garbage")
    with store.leases.lease() as lease:
        leased = store.put_bytes(b"being written", lease=lease)
        removed = store.sweep({keep})
        assert removed == [drop]
        assert store.exists(leased)
    assert store.sweep({keep}) == [leased]
    assert store.exists(keep)


def test_full_disk_is_a_storage_error_and_stores_nothing(scratch: Path) -> None:
    """A tiny tmpfs stands in for a full disk."""
    import subprocess

    mountpoint = scratch / "tiny"
    mountpoint.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mountpoint)], check=True)
    try:
        store = ContentStore(mountpoint / "content")
        small = store.put_bytes(b"fits")
        from kapal.errors import StorageError

        with pytest.raises(StorageError, match="no space left on device"):
            store.ingest(io.BytesIO(os.urandom(4 << 20)))
        assert [d for d, _ in store.walk()] == [small]
        assert list(store.ingest_dir.iterdir()) == []
        assert store.read_bytes(small) == b"fits"
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True)
