"""Real clients against the registry: skopeo both ways, many at once, and a push killed mid-way."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.registry.conftest import SHARED_BUSYBOX
from tests.registry.helpers import OCI_MANIFEST, absolute, push_image, sha256

SKOPEO = shutil.which("skopeo")
needs_skopeo = pytest.mark.skipif(SKOPEO is None, reason="skopeo not installed")


def skopeo(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([SKOPEO, *args], capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"skopeo {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def assert_store_intact(root) -> None:
    """Every stored blob hashes to its name."""
    for algorithm_dir in (root / "blobs").iterdir():
        for blob in algorithm_dir.iterdir():
            digest = hashlib.new(algorithm_dir.name, blob.read_bytes()).hexdigest()
            assert digest == blob.name, f"corrupt blob {blob}"


@needs_skopeo
def test_skopeo_copy_both_ways_inspect_list_delete(registry, scratch, busybox_tag):
    source = json.loads((SHARED_BUSYBOX / "index.json").read_text())["manifests"][0]["digest"]
    target = f"docker://{registry.host}/x/busybox:1"
    skopeo("copy", "--dest-tls-verify=false", f"oci:{SHARED_BUSYBOX}:{busybox_tag}", target)
    raw = skopeo("inspect", "--tls-verify=false", "--raw", target).stdout
    assert sha256(raw.encode()) == source
    inspected = json.loads(skopeo("inspect", "--tls-verify=false", target).stdout)
    assert inspected["Digest"] == source
    tags = json.loads(skopeo("list-tags", "--tls-verify=false", f"docker://{registry.host}/x/busybox").stdout)
    assert tags["Tags"] == ["1"]
    # Back into an OCI layout: the same manifest, byte for byte, and the same blobs.
    out = scratch / "out"
    skopeo("copy", "--src-tls-verify=false", target, f"oci:{out}:copy")
    copied = json.loads((out / "index.json").read_text())["manifests"][0]["digest"]
    assert copied == source
    for blob in (out / "blobs" / "sha256").iterdir():
        assert (SHARED_BUSYBOX / "blobs" / "sha256" / blob.name).read_bytes() == blob.read_bytes()
    # A second repository shares the blobs; skopeo mounts or re-uploads, either way same digest.
    skopeo(
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        target,
        f"docker://{registry.host}/y/bb:2",
    )
    assert (
        json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{registry.host}/y/bb:2").stdout)[
            "Digest"
        ]
        == source
    )
    skopeo("delete", "--tls-verify=false", target)
    gone = skopeo("inspect", "--tls-verify=false", target, check=False)
    assert gone.returncode != 0 and "manifest unknown" in gone.stderr
    assert_store_intact(registry.root)


def test_32_clients_pushing_and_pulling(registry):
    shared_layer = os.urandom(300_000)
    errors: list[str] = []

    def client(number: int) -> None:
        session = requests.Session()
        own_layer = os.urandom(50_000 + number)
        # Half push the same image (same blobs, same tag) and half their own.
        name = "shared/app" if number % 2 else f"own/app{number}"
        layers = [shared_layer] if number % 2 else [shared_layer, own_layer]
        digest, manifest = push_image(session, registry.url, name, "v1", layers)
        for _ in range(3):
            got = session.get(
                f"{registry.url}/v2/{name}/manifests/{digest}", headers={"Accept": OCI_MANIFEST}
            )
            if got.content != manifest:
                errors.append(f"{name}: manifest differs")
            for layer in layers:
                blob = session.get(f"{registry.url}/v2/{name}/blobs/{sha256(layer)}")
                if blob.status_code != 200 or blob.content != layer:
                    errors.append(f"{name}: layer {sha256(layer)} status {blob.status_code}")

    with ThreadPoolExecutor(32) as pool:
        for future in [pool.submit(client, number) for number in range(32)]:
            future.result()
    assert errors == []
    names = requests.get(f"{registry.url}/v2/_catalog").json()["repositories"]
    assert len(names) == 17
    assert_store_intact(registry.root)
    assert list((registry.root / "uploads").iterdir()) == []


def test_kill_9_mid_push_then_retry_completes(registry):
    data = os.urandom(8 << 20)
    digest = sha256(data)
    location = absolute(
        registry.url, requests.post(f"{registry.url}/v2/k/blobs/uploads/").headers["Location"]
    )
    requests.patch(location, data=data[: 1 << 20], headers={"Content-Range": f"0-{(1 << 20) - 1}"})
    sent_half = threading.Event()

    def slow_body():
        # The second chunk: half of it goes out, then the server is killed under the client.
        chunk = data[1 << 20 :]
        for start in range(0, len(chunk), 256 << 10):
            if start >= len(chunk) // 2:
                sent_half.set()
                # Wait until the server is gone; the rest fails to send.
                registry_killed.wait(10)
            yield chunk[start : start + (256 << 10)]

    registry_killed = threading.Event()
    outcome: dict[str, object] = {}

    def push() -> None:
        try:
            outcome["response"] = requests.patch(location, data=slow_body())
        except requests.RequestException as error:
            outcome["error"] = error

    pusher = threading.Thread(target=push)
    pusher.start()
    assert sent_half.wait(30)
    registry.stop(signal.SIGKILL)
    registry_killed.set()
    pusher.join(30)
    assert "error" in outcome or outcome["response"].status_code >= 400
    registry.start()
    # The client resumes from what the registry says it has…
    status = requests.get(location)
    assert status.status_code == 204
    offset = int(status.headers["Range"].split("-")[1]) + 1
    assert 1 << 20 <= offset <= len(data)
    resumed = requests.patch(
        location, data=data[offset:], headers={"Content-Range": f"{offset}-{len(data) - 1}"}
    )
    assert resumed.status_code == 202, resumed.text
    assert requests.put(location, params={"digest": digest}).status_code == 201
    assert requests.get(f"{registry.url}/v2/k/blobs/{digest}").content == data
    # …or simply starts again: both end with the same blob, and nothing half-written is visible.
    digest2, _ = push_image(requests.Session(), registry.url, "k", "v1", [data])
    assert requests.head(f"{registry.url}/v2/k/manifests/v1").headers["Docker-Content-Digest"] == digest2
    assert_store_intact(registry.root)


@needs_skopeo
def test_skopeo_push_killed_and_retried(registry, scratch, busybox_tag):
    """kill -9 while skopeo pushes, restart, push again: the image arrives whole."""
    source = json.loads((SHARED_BUSYBOX / "index.json").read_text())["manifests"][0]["digest"]
    target = f"docker://{registry.host}/kill/busybox:1"
    push = subprocess.Popen(
        [SKOPEO, "copy", "--dest-tls-verify=false", f"oci:{SHARED_BUSYBOX}:{busybox_tag}", target],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # Kill as soon as the first upload session exists.
    for _ in range(2000):
        if any((registry.root / "uploads").iterdir()) or push.poll() is not None:
            break
        threading.Event().wait(0.005)
    registry.stop(signal.SIGKILL)
    push.wait(60)
    registry.start()
    skopeo("copy", "--dest-tls-verify=false", f"oci:{SHARED_BUSYBOX}:{busybox_tag}", target)
    assert json.loads(skopeo("inspect", "--tls-verify=false", target).stdout)["Digest"] == source
    assert_store_intact(registry.root)


def test_sigterm_finishes_in_flight_request_then_exits(registry):
    """Graceful shutdown: a request being received when SIGTERM arrives still completes."""
    data = os.urandom(2 << 20)
    location = absolute(
        registry.url, requests.post(f"{registry.url}/v2/g/blobs/uploads/").headers["Location"]
    )
    halfway = threading.Event()
    signalled = threading.Event()

    def body():
        for start in range(0, len(data), 256 << 10):
            if start == 1 << 20:
                halfway.set()
                signalled.wait(10)
            yield data[start : start + (256 << 10)]

    outcome: dict[str, requests.Response] = {}
    sender = threading.Thread(target=lambda: outcome.setdefault("r", requests.patch(location, data=body())))
    sender.start()
    assert halfway.wait(30)
    # Signal only once the server is inside the request (it has stored part of the body).
    for _ in range(1000):
        if int(requests.get(location).headers["Range"].split("-")[1]) > 0:
            break
        threading.Event().wait(0.01)
    process = registry.process
    process.send_signal(signal.SIGTERM)
    signalled.set()
    sender.join(30)
    assert outcome["r"].status_code == 202
    assert outcome["r"].headers["Range"] == f"0-{len(data) - 1}"
    assert process.wait(30) == 0
    registry.process = None
    registry.start()
    assert requests.put(location, params={"digest": sha256(data)}).status_code == 201
