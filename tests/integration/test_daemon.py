"""kapald itself: API versions, errors, events, filters, restarts, crashes, side-by-side daemons."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from archives import add_file, docker_archive, layer_tar
from conftest import KAPAL, KAPALD, Daemon


class _Conn(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=30)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(30)
        self.sock.connect(self._path)


def api(daemon: Daemon, method: str, path: str, body: bytes | None = None) -> tuple[int, dict, bytes]:
    conn = _Conn(str(daemon.socket))
    conn.request(method, path, body=body)
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, dict(response.getheaders()), data


def test_ping_version_and_prefixes(daemon: Daemon) -> None:
    status, headers, body = api(daemon, "GET", "/_ping")
    assert (status, body) == (200, b"OK")
    assert headers["Api-Version"] == "1.47"
    assert headers["Ostype"] == "linux"
    assert headers["Swarm"] == "inactive"
    status, headers, body = api(daemon, "HEAD", "/_ping")
    assert status == 200 and body == b""
    for prefix in ("", "/v1.24", "/v1.40", "/v1.47"):
        status, _, body = api(daemon, "GET", f"{prefix}/version")
        assert status == 200
        assert json.loads(body)["ApiVersion"] == "1.47"
        assert json.loads(body)["MinAPIVersion"] == "1.24"
    status, _, body = api(daemon, "GET", "/v1.23/version")
    assert status == 400 and b"too old" in body
    status, _, body = api(daemon, "GET", "/v1.99/version")
    assert status == 400 and b"too new" in body
    status, _, body = api(daemon, "GET", "/v1.47/nothing/here")
    assert status == 404 and json.loads(body) == {"message": "page not found"}


def test_errors_are_json_with_docker_status(daemon: Daemon) -> None:
    status, _, body = api(daemon, "GET", "/v1.47/images/nothere/json")
    assert status == 404
    assert json.loads(body) == {"message": "No such image: nothere:latest"}
    status, _, body = api(daemon, "GET", "/v1.47/images/json?filters=" + quote('{"bogus":["x"]}'))
    assert status == 400
    assert json.loads(body)["message"] == "invalid filter 'bogus'"
    status, _, body = api(daemon, "POST", "/v1.47/images/busybox/tag?repo=UPPER")
    assert status in (400, 404)


def test_old_api_versions_get_old_shapes(daemon: Daemon, busybox: str) -> None:
    _, _, body = api(daemon, "GET", "/v1.43/images/json")
    assert json.loads(body)[0]["VirtualSize"] > 0
    _, _, body = api(daemon, "GET", "/v1.47/images/json")
    assert "VirtualSize" not in json.loads(body)[0]
    _, _, body = api(daemon, "GET", "/v1.24/images/busybox/json")
    assert "ContainerConfig" in json.loads(body)


def test_both_filter_encodings(daemon: Daemon, busybox: str, busybox_rootfs: Path) -> None:
    daemon.kapal("import", str(busybox_rootfs))
    for encoded in ('{"dangling":["true"]}', '{"dangling":{"true":true}}'):
        _, _, body = api(daemon, "GET", "/images/json?filters=" + quote(encoded))
        images = json.loads(body)
        assert len(images) == 1 and images[0]["RepoTags"] == []
    _, _, body = api(daemon, "GET", "/images/json?filters=" + quote('{"reference":{"busybox":true}}'))
    assert [i["Id"] for i in json.loads(body)] == [busybox]


def test_events_stream_image_actions(daemon: Daemon, busybox: str) -> None:
    since = time.time() - 60
    daemon.kapal("tag", "busybox", "events/test:1")
    daemon.kapal("rmi", "events/test:1")
    until = time.time() + 1
    lines = (
        daemon.kapal(
            "events",
            "--since",
            f"{since:.3f}",
            "--until",
            f"{until:.3f}",
            "--format",
            "{{.Type}} {{.Action}} {{.Actor.Attributes.name}}",
        )
        .stdout.decode()
        .splitlines()
    )
    assert "image tag events/test:1" in lines
    assert "image untag events/test:1" in lines
    assert any(line.startswith("image import") for line in lines)
    # Live: a subscriber sees an event published after it connected.
    watcher = subprocess.Popen(
        [
            KAPAL,
            "-H",
            daemon.host,
            "events",
            "--filter",
            "event=tag",
            "--format",
            "{{.Actor.Attributes.name}}",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        time.sleep(0.5)
        daemon.kapal("tag", "busybox", "live/event:2")
        assert watcher.stdout is not None
        assert watcher.stdout.readline().decode().strip() == "live/event:2"
    finally:
        watcher.kill()
        watcher.wait()
    docker_lines = daemon.docker(
        "events", "--since", f"{since:.0f}", "--until", f"{time.time():.0f}", "--filter", "type=image"
    ).stdout.decode()
    assert "image tag" in docker_lines


def test_cli_without_daemon_says_so(scratch: Path) -> None:
    result = subprocess.run([KAPAL, "-H", f"unix://{scratch}/none.sock", "images"], capture_output=True)
    assert result.returncode == 1
    assert result.stderr.decode() == (
        f"Cannot connect to the kapal daemon at unix://{scratch}/none.sock. Is the kapal daemon running?\n"
    )
    usage = subprocess.run([KAPAL, "images", "--bogus"], capture_output=True)
    assert usage.returncode == 125
    assert b"unrecognized arguments: --bogus" in usage.stderr
    unknown = subprocess.run([KAPAL, "frobnicate"], capture_output=True)
    assert unknown.returncode == 1 and b"'frobnicate' is not a kapal command" in unknown.stderr


def test_state_survives_restart_and_data_root_is_exclusive(daemon: Daemon, busybox: str) -> None:
    second = Daemon(daemon.base / "second")
    second.base.mkdir()
    second.data_root = daemon.data_root
    with pytest.raises(RuntimeError, match="in use by another kapald"):
        second.start()
    daemon.stop()
    daemon.start()
    assert daemon.kapal("images", "-q", "--no-trunc").stdout.decode() == busybox + "\n"


def test_two_daemons_side_by_side(daemon: Daemon, busybox: str, scratch: Path) -> None:
    other = Daemon(scratch / "other")
    other.base.mkdir()
    other.start()
    try:
        assert other.kapal("images", "-q").stdout == b""
        assert daemon.kapal("images", "-q").stdout.decode().strip() == busybox[7:19]
    finally:
        other.stop()


def test_config_file_and_flag_conflict_is_an_error(scratch: Path) -> None:
    config = scratch / "daemon.json"
    config.write_text(json.dumps({"data-root": str(scratch / "a")}))
    result = subprocess.run(
        [
            KAPALD,
            "--config-file",
            str(config),
            "--data-root",
            str(scratch / "b"),
            "-H",
            f"unix://{scratch}/s.sock",
        ],
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert b"specified both as a flag and in the configuration file: data-root" in result.stderr
    config.write_text('{"no-such-option": 1}')
    result = subprocess.run([KAPALD, "--config-file", str(config)], capture_output=True, timeout=30)
    assert result.returncode == 1 and b"don't match any configuration option: no-such-option" in result.stderr


def test_sigkill_during_load_leaves_a_store_that_recovers(daemon: Daemon, busybox: str) -> None:
    big = layer_tar(lambda tar: [add_file(tar, f"f{i}", os.urandom(8 << 20)) for i in range(24)])
    archive = docker_archive([big], ["big/image:1"])
    sender = threading.Thread(
        target=lambda: subprocess.run([KAPAL, "-H", daemon.host, "load"], input=archive, capture_output=True)
    )
    sender.start()
    ingest = daemon.data_root / "content" / "ingest"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any(ingest.iterdir()):
        time.sleep(0.005)
    assert daemon.process is not None
    daemon.process.send_signal(signal.SIGKILL)
    daemon.process.wait()
    sender.join()
    daemon.process = None
    daemon.start()
    assert daemon.kapal("images", "-q", "--no-trunc").stdout.decode() == busybox + "\n"
    assert list(ingest.iterdir()) == []
    assert not [p for p in (daemon.data_root / "layers").iterdir() if p.name.startswith("tmp-")]
    blobs = list((daemon.data_root / "content" / "blobs" / "sha256").iterdir())
    assert len(blobs) == 3  # busybox's layer, config and manifest: nothing half-loaded survived
    loaded = daemon.kapal("load", input=archive)
    assert loaded.stdout.decode() == "Loaded image: big/image:1\n"
    daemon.kapal("rmi", "big/image:1")
    assert len(list((daemon.data_root / "content" / "blobs" / "sha256").iterdir())) == 3


def test_docker_py_against_kapald(daemon: Daemon, busybox: str, scratch: Path) -> None:
    docker = pytest.importorskip("docker")
    client = docker.DockerClient(base_url=daemon.host, version="auto")
    assert client.version()["ApiVersion"] == "1.47"
    assert client.ping() is True
    image = client.images.get("busybox")
    assert image.id == busybox
    assert image.tags == ["busybox:latest"]
    assert image.tag("py/tagged", "v2") is True
    assert sorted(client.images.get(busybox).tags) == ["busybox:latest", "py/tagged:v2"]
    archive = b"".join(image.save(named=True))
    client.images.remove("py/tagged:v2")
    client.images.remove("busybox", force=True)
    assert client.images.list() == []
    loaded = client.images.load(archive)
    assert [i.id for i in loaded] == [busybox]
    with pytest.raises(docker.errors.ImageNotFound):
        client.images.get("nothere")
    layer = layer_tar(lambda tar: add_file(tar, "x", b"x"))
    client.images.load(docker_archive([layer], ["py/loaded:1"]))
    assert client.images.get("py/loaded:1").attrs["Config"]["Cmd"] == ["sh"]
    client.close()
