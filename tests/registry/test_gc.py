"""`kapal-registry gc`: removes only what nothing refers to, also while pushes go on."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import requests

from tests.registry.conftest import REPO
from tests.registry.helpers import OCI_INDEX, OCI_MANIFEST, push_blob, push_image, push_index, sha256


def gc(root, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "kapal.registry.main", "gc", "--root", str(root), *args],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def blob_file(root, digest: str):
    return root / "blobs" / "sha256" / digest.split(":")[1]


def assert_pullable(session: requests.Session, base: str, name: str, reference: str) -> None:
    """The manifest and everything it names (recursively) can be fetched and is intact."""
    response = session.get(
        f"{base}/v2/{name}/manifests/{reference}", headers={"Accept": f"{OCI_MANIFEST},{OCI_INDEX}"}
    )
    assert response.status_code == 200, (name, reference)
    document = response.json()
    for child in document.get("manifests", []):
        assert_pullable(session, base, name, child["digest"])
    for descriptor in [document.get("config"), *document.get("layers", [])]:
        if descriptor:
            blob = session.get(f"{base}/v2/{name}/blobs/{descriptor['digest']}")
            assert blob.status_code == 200 and sha256(blob.content) == descriptor["digest"]


def test_gc_removes_only_unreferenced_blobs(registry):
    session = requests.Session()
    base = registry.url
    kept, kept_bytes = push_image(session, base, "app", "v1", [b"shared layer", b"app layer"])
    child, child_bytes = push_image(session, base, "app", "arm", [b"arm layer"])
    push_index(session, base, "app", "multi", [(child, child_bytes)])
    session.delete(f"{base}/v2/app/manifests/arm")  # the child now has no tag of its own
    subject = {"mediaType": OCI_MANIFEST, "digest": kept, "size": len(kept_bytes)}
    signature, _ = push_image(
        session, base, "app", "sig", [b"signature"], subject=subject, artifact_type="application/x-sig"
    )
    session.delete(f"{base}/v2/app/manifests/sig")  # reachable only through the referrers API
    doomed, _ = push_image(session, base, "old", "v1", [b"shared layer", b"old layer"])
    session.delete(f"{base}/v2/old/manifests/{doomed}")
    orphan = push_blob(session, base, "app", b"pushed, never used")

    dry = gc(registry.root, "--dry-run", "--grace", "0")
    assert f"would delete blob {sha256(b'old layer')}" in dry
    assert f"would delete blob {orphan}" in dry
    assert blob_file(registry.root, orphan).exists()
    # Young blobs are kept: the default grace period protects uploads whose manifest is still coming.
    assert "deleted blob" not in gc(registry.root)
    assert blob_file(registry.root, orphan).exists()

    out = gc(registry.root, "--grace", "0")
    deleted = {line.split()[-1] for line in out.splitlines() if line.startswith("deleted blob")}
    # The old image's config is the same bytes as app:v1's, so it stays.
    assert deleted == {sha256(b"old layer"), orphan, doomed}
    for reference in ("v1", "multi", child, signature):
        assert_pullable(session, base, "app", reference)
    referrers = session.get(f"{base}/v2/app/referrers/{kept}").json()["manifests"]
    assert [item["digest"] for item in referrers] == [signature]
    assert session.head(f"{base}/v2/app/blobs/{orphan}").status_code == 404
    assert session.get(f"{base}/v2/old/blobs/{sha256(b'old layer')}").status_code == 404


def test_gc_delete_untagged_keeps_index_children_and_referrers(registry):
    session = requests.Session()
    base = registry.url
    tagged, tagged_bytes = push_image(session, base, "u", "v1", [b"one"])
    child, child_bytes = push_image(session, base, "u", "child", [b"child"])
    push_index(session, base, "u", "idx", [(child, child_bytes)])
    session.delete(f"{base}/v2/u/manifests/child")
    subject = {"mediaType": OCI_MANIFEST, "digest": tagged, "size": len(tagged_bytes)}
    signature, _ = push_image(session, base, "u", "sig", [b"sig"], subject=subject)
    session.delete(f"{base}/v2/u/manifests/sig")
    stale, _ = push_image(session, base, "u", "stale", [b"stale"])
    session.delete(f"{base}/v2/u/manifests/stale")

    out = gc(registry.root, "--grace", "0", "--delete-untagged")
    assert f"deleted manifest u@{stale}" in out
    assert "deleted manifest u@" + child not in out
    assert "deleted manifest u@" + signature not in out
    for reference in ("v1", "idx", child, signature):
        assert_pullable(session, base, "u", reference)
    assert session.get(f"{base}/v2/u/manifests/{stale}").status_code == 404


def test_gc_while_pushing_removes_nothing_live(registry):
    """Pushes run while gc runs again and again: every accepted manifest stays whole."""
    stop = threading.Event()
    accepted: list[tuple[str, str]] = []
    failures: list[str] = []

    def pusher(number: int) -> None:
        session = requests.Session()
        round_ = 0
        while not stop.is_set():
            name = f"p{number}"
            tag = f"t{round_}"
            layers = [os.urandom(20_000), b"common layer"]
            try:
                push_image(session, registry.url, name, tag, layers)
                accepted.append((name, tag))
            except AssertionError as error:
                failures.append(str(error))
            round_ += 1

    threads = [threading.Thread(target=pusher, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(4):
            gc(registry.root, "--grace", "30")
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    assert accepted
    assert failures == []
    session = requests.Session()
    for name, tag in accepted:
        assert_pullable(session, registry.url, name, tag)
    # Once the pushes are over even grace 0 keeps everything the manifests name.
    gc(registry.root, "--grace", "0")
    for name, tag in accepted:
        assert_pullable(session, registry.url, name, tag)
