"""Registry transfers side by side: cold ``pull`` and ``push`` of a large image, kapald vs dockerd.

Run: ``.venv/bin/python bench/bench_pull.py [--runs 3]`` as root.

The image is generated offline: six layers (the busybox rootfs, files of this
machine's /usr, and incompressible random files), about 300 MB gzipped and
560 MB unpacked, pushed to a local docker-registry on 127.0.0.1. Each daemon
then pulls it cold (nothing of it present) and pushes it to an empty registry.
Both daemons and the registry keep their data under the same directory
(/var/tmp unless KAPAL_BENCH_ROOT says otherwise). Targets (issue #5): pull in
at most 1/3 of dockerd's time, push in at most 1/4.

File creation on ext4 without a journal slows down for minutes after big
deletions on the same filesystem (it scans past every inode freed in the last
1-6 minutes), this bench's own clean-up included: GNU tar's time, printed as a
floor, shows how much a run suffered from it.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import io
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import KAPAL, Dockerd, Kapald, bench_root, docker_cli  # noqa: E402

from kapal.image.bases import write_busybox_rootfs  # noqa: E402
from kapal.image.compression import Compression, compress_writer  # noqa: E402

MB = 1 << 20
REPOSITORY = "bench/big"
# (source directory or "random:<files>", unpacked bytes, smallest file taken)
LAYERS = [
    ("/usr/lib/x86_64-linux-gnu", 150 * MB, 0),
    ("/usr/share", 130 * MB, 0),
    ("/usr/bin", 120 * MB, 0),
    ("random:8", 80 * MB, 0),
    ("random:80", 80 * MB, 0),
]
# The same volume in few, large files (~500 instead of ~11 000): what transfer and decompression
# cost when creating inodes does not dominate.
LAYERS_FEW_FILES = [
    ("/usr/lib/x86_64-linux-gnu", 150 * MB, 256 << 10),
    ("/usr/share", 130 * MB, 256 << 10),
    ("/usr/bin", 120 * MB, 256 << 10),
    ("random:8", 80 * MB, 0),
    ("random:80", 80 * MB, 0),
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Registry:
    def __init__(self, base: Path) -> None:
        base.mkdir(parents=True, exist_ok=True)
        self.base = base
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        config = {
            "version": 0.1,
            "log": {"level": "error", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": str(base / "storage")}},
            "http": {"addr": self.host, "secret": "bench"},
        }
        (base / "config.yml").write_text(json.dumps(config))
        self.process = subprocess.Popen(
            ["/usr/bin/docker-registry", "serve", str(base / "config.yml")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("docker-registry did not start")

    def request(self, method: str, path: str, body: object = None, headers: dict | None = None) -> tuple:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, response.headers, response.read()
        finally:
            connection.close()

    def put_blob(self, path: Path | bytes) -> tuple[str, int]:
        data = path if isinstance(path, bytes) else None
        hasher = hashlib.sha256()
        if data is None:
            with open(path, "rb") as source:
                while chunk := source.read(4 * MB):
                    hasher.update(chunk)
            size = os.path.getsize(path)
        else:
            hasher.update(data)
            size = len(data)
        digest = "sha256:" + hasher.hexdigest()
        status, headers, _ = self.request("POST", f"/v2/{REPOSITORY}/blobs/uploads/")
        assert status == 202, status
        location = headers["Location"].split(self.host, 1)[-1]
        body = data if data is not None else open(path, "rb")  # noqa: SIM115 - closed below
        try:
            status, _, text = self.request(
                "PUT",
                f"{location}&digest={digest}",
                body,
                {"Content-Length": str(size), "Content-Type": "application/octet-stream"},
            )
        finally:
            if data is None:
                body.close()  # type: ignore[union-attr]
        assert status == 201, (status, text)
        return digest, size

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(30)


def _files(directory: str, budget: int, smallest: int = 0) -> list[Path]:
    chosen, total = [], 0
    for root, dirs, files in os.walk(directory):
        dirs.sort()
        for name in sorted(files):
            path = Path(root) / name
            try:
                st = path.lstat()
            except OSError:
                continue
            if not (path.is_symlink() or path.is_file()):
                continue
            if st.st_size < smallest or (smallest and path.is_symlink()):
                continue
            if total + st.st_size > budget:
                continue
            chosen.append(path)
            total += st.st_size
            if total >= budget * 0.98:
                return chosen
    return chosen


class _Hashing(io.RawIOBase):
    def __init__(self, out: io.BufferedWriter) -> None:
        self.out = out
        self.hash = hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.hash.update(data)
        self.out.write(data)
        return len(data)


def make_layer(spec: str, budget: int, out: Path, smallest: int = 0) -> str:
    """Write a gzipped layer to *out*; returns its diff ID."""
    with open(out, "wb") as sink:
        gzip = compress_writer(sink, Compression.GZIP)
        hashing = _Hashing(gzip)  # type: ignore[arg-type]
        with tarfile.open(fileobj=hashing, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            if spec.startswith("random:"):
                count = int(spec.split(":")[1])
                info = tarfile.TarInfo("data")
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
                for index in range(count):
                    info = tarfile.TarInfo(f"data/random-{len(spec)}-{index:04d}.bin")
                    info.size = budget // count
                    info.mode = 0o644
                    tar.addfile(info, io.BytesIO(os.urandom(info.size)))
            else:
                seen: set[str] = set()
                for path in _files(spec, budget, smallest):
                    parents = []
                    for parent in reversed(path.relative_to("/").parents[:-1]):
                        if str(parent) not in seen:
                            seen.add(str(parent))
                            parents.append(parent)
                    for parent in parents:
                        tar.add(Path("/") / parent, arcname=str(parent), recursive=False)
                    tar.add(path, arcname=str(path.relative_to("/")), recursive=False)
        gzip.close()
    return "sha256:" + hashing.hash.hexdigest()


def busybox_layer(out: Path) -> str:
    raw = io.BytesIO()
    write_busybox_rootfs(raw)
    data = raw.getvalue()
    with open(out, "wb") as sink:
        gzip = compress_writer(sink, Compression.GZIP)
        gzip.write(data)
        gzip.close()
    return "sha256:" + hashlib.sha256(data).hexdigest()


def publish_image(
    registry: Registry, work: Path, specs: list[tuple[str, int, int]]
) -> tuple[int, int, list[str]]:
    """Generate the image and push it with plain HTTP; returns (compressed, unpacked) sizes and layers."""
    work.mkdir(parents=True, exist_ok=True)
    layers, diff_ids, unpacked = [], [], 0
    for index, (spec, budget, smallest) in enumerate([("busybox", 0, 0), *specs]):
        path = work / f"layer{index}.tar.gz"
        diff_id = busybox_layer(path) if spec == "busybox" else make_layer(spec, budget, path, smallest)
        digest, size = registry.put_blob(path)
        layers.append(
            {"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": digest, "size": size}
        )
        diff_ids.append(diff_id)
        unpacked += budget
        path.unlink()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "2026-01-01T00:00:00Z",
        "config": {
            "Cmd": ["sh"],
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [
            {"created": "2026-01-01T00:00:00Z", "created_by": f"layer {i}"} for i in range(len(layers))
        ],
    }
    config_bytes = json.dumps(config).encode()
    config_digest, _ = registry.put_blob(config_bytes)
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "digest": config_digest,
            "size": len(config_bytes),
        },
        "layers": layers,
    }
    status, _, text = registry.request(
        "PUT",
        f"/v2/{REPOSITORY}/manifests/latest",
        json.dumps(manifest).encode(),
        {"Content-Type": manifest["mediaType"]},
    )
    assert status == 201, (status, text)
    return sum(layer["size"] for layer in layers), unpacked, [layer["digest"] for layer in layers]


def run(command: list[str]) -> float:
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {result.stderr.decode()}")
    return elapsed


def halt(peer: Kapald | Dockerd) -> None:
    """Stop a daemon but keep its files: deleting them now would slow the next peer's file creation."""
    if peer.process and peer.process.poll() is None:
        peer.process.send_signal(signal.SIGTERM)
        peer.process.wait(60)


def measure_once(cli: str, make_peer: type[Kapald] | type[Dockerd], source: Registry, base: Path, index: int):
    """(cold pull, push to an empty registry) in seconds, on a fresh daemon and data root."""
    name = f"{source.host}/{REPOSITORY}:latest"
    peer = make_peer(base / f"{make_peer.name}-{index}")
    if make_peer is Kapald:
        (peer.base / "daemon.json").write_text("{}")
    peer.start()
    target = Registry(base / f"push-{make_peer.name}-{index}")
    try:
        subprocess.run(["sync"])
        pull = run([cli, "-H", peer.host, "pull", "-q", name])
        pushed = f"{target.host}/{REPOSITORY}:latest"
        subprocess.run([cli, "-H", peer.host, "tag", name, pushed], check=True, capture_output=True)
        subprocess.run(["sync"])
        push = run([cli, "-H", peer.host, "push", "-q", pushed])
    finally:
        target.stop()
        halt(peer)
    return pull, push


def untar_floor(source: Registry, layers: list[str], target: Path) -> float:
    """What unpacking alone costs on this filesystem: GNU tar over the registry's blob files."""
    target.mkdir(parents=True)
    storage = source.base / "storage/docker/registry/v2/blobs/sha256"
    subprocess.run(["sync"])
    start = time.perf_counter()
    for digest in layers:
        hexpart = digest.partition(":")[2]
        subprocess.run(
            ["tar", "-xzf", str(storage / hexpart[:2] / hexpart / "data"), "-C", str(target)], check=True
        )
    return time.perf_counter() - start


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--no-dockerd", action="store_true", help="measure kapald only")
    p.add_argument("--few-files", action="store_true", help="the same volume in ~500 large files")
    opts = p.parse_args()
    base = bench_root()
    source = Registry(base / "registry")
    results: dict[str, tuple[float, float]] = {}
    floor: list[float] = []
    try:
        # Layers are generated on tmpfs: deleting them from the data filesystem right before the
        # first measurement would slow its file creation (see halt()).
        work = Path(tempfile.mkdtemp(prefix="kapal-bench-layers-", dir="/dev/shm"))
        try:
            specs = LAYERS_FEW_FILES if opts.few_files else LAYERS
            compressed, unpacked, layer_digests = publish_image(source, work, specs)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        layers = len(LAYERS) + 1
        print(
            f"image: {layers} layers, {compressed / MB:.0f} MB compressed, ~{unpacked / MB:.0f} MB unpacked"
        )
        peers: list[tuple[str, type[Kapald] | type[Dockerd]]] = [(KAPAL, Kapald)]
        docker = docker_cli()
        if docker and Dockerd.available() and not opts.no_dockerd:
            peers.append((docker, Dockerd))
        samples: dict[str, list[tuple[float, float]]] = {}
        floor: list[float] = []
        for index in range(opts.runs):
            # Interleaved, first one then the other going first, so drift in the host's load and
            # the filesystem's state hit both alike.
            for cli, peer in peers if index % 2 == 0 else list(reversed(peers)):
                samples.setdefault(peer.name, []).append(measure_once(cli, peer, source, base, index))
            floor.append(untar_floor(source, layer_digests, base / f"tar-{index}"))
        for name, values in samples.items():
            results[name] = (statistics.median(v[0] for v in values), statistics.median(v[1] for v in values))
    finally:
        source.stop()
        shutil.rmtree(base, ignore_errors=True)
    if floor:
        print(f"GNU tar -xzf of the layers (no download, no checks): {statistics.median(floor):.2f} s")
    print(f"{'daemon':<8}  {'pull (s)':>9}  {'push (s)':>9}")
    for name, (pull, push) in results.items():
        print(f"{name:<8}  {pull:9.2f}  {push:9.2f}")
    if "dockerd" in results:
        kp, ku = results["kapald"]
        dp, du = results["dockerd"]
        for what, ratio, target in (("pull", kp / dp, 1 / 3), ("push", ku / du, 1 / 4)):
            verdict = "met" if ratio <= target else "NOT met"
            print(f"{what} kapald/dockerd: {ratio:.3f} (target <= {target:.3f}): {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
