"""kapal-registry against the CNCF registry (Debian ``docker-registry``), same data, same filesystem.

Run: ``.venv/bin/python bench/bench_registry.py [--blob-mib 64] [--workers 1 2]``.
Measures, for each registry:

* push: parallel clients uploading distinct blobs (POST + PUT), MiB/s;
* blob GET: ``ab`` with many keep-alive clients fetching a large blob, MiB/s;
* manifest HEAD by tag: ``ab -i`` with 32 keep-alive clients, requests/s;

and prints the medians of ``--rounds`` rounds and the ratios kapal/CNCF. Both registries keep
their root under the same directory (``KAPAL_BENCH_ROOT``, default /var/tmp) and run with access
logs off.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urljoin

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import bench_root  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CNCF = "/usr/bin/docker-registry"
AB = shutil.which("ab")
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, process: subprocess.Popen) -> None:
    import urllib.request

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer")


class Server:
    def __init__(self, name: str, command: list[str], port: int, env: dict | None = None) -> None:
        self.name = name
        self.url = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        wait_http(f"{self.url}/v2/", self.process)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def start_kapal(root: Path, workers: int) -> Server:
    port = free_port()
    command = [sys.executable, "-m", "kapal.registry.main", "serve", "--listen", f"127.0.0.1:{port}"]
    command += ["--root", str(root), "--no-access-log", "--workers", str(workers), "--log-level", "error"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return Server(f"kapal-registry x{workers}", command, port, env)


def start_cncf(root: Path) -> Server:
    port = free_port()
    config = root.parent / f"{root.name}.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: error\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    return Server("docker-registry", [CNCF, "serve", str(config)], port)


async def push_blob(session: aiohttp.ClientSession, base: str, name: str, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    async with session.post(f"{base}/v2/{name}/blobs/uploads/") as response:
        assert response.status == 202, await response.text()
        location = urljoin(base + "/", response.headers["Location"])
    separator = "&" if "?" in location else "?"
    async with session.put(f"{location}{separator}digest={digest}", data=data) as response:
        assert response.status == 201, await response.text()
    return digest


async def push_phase(base: str, blobs: list[bytes], clients: int) -> float:
    """Push *blobs* with *clients* parallel uploads; MiB/s."""
    queue = list(enumerate(blobs))
    async with aiohttp.ClientSession() as session:
        started = time.perf_counter()

        async def worker() -> None:
            while queue:
                index, data = queue.pop()
                await push_blob(session, base, f"bench/push{index % 4}", data)

        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.perf_counter() - started
    return sum(len(blob) for blob in blobs) / elapsed / (1 << 20)


async def seed(base: str, large: bytes) -> tuple[str, str]:
    """One image whose layer is *large*; returns the blob URL and manifest URL (by tag)."""
    async with aiohttp.ClientSession() as session:
        config = b'{"architecture":"amd64","os":"linux"}'
        config_digest = await push_blob(session, base, "bench/image", config)
        layer_digest = await push_blob(session, base, "bench/image", large)
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": config_digest,
                    "size": len(config),
                },
                "layers": [
                    {
                        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": layer_digest,
                        "size": len(large),
                    }
                ],
            }
        ).encode()
        async with session.put(
            f"{base}/v2/bench/image/manifests/latest", data=manifest, headers={"Content-Type": OCI_MANIFEST}
        ) as response:
            assert response.status == 201, await response.text()
    return f"{base}/v2/bench/image/blobs/{layer_digest}", f"{base}/v2/bench/image/manifests/latest"


def ab(url: str, requests: int, clients: int, head: bool = False) -> dict[str, float]:
    command = [AB, "-q", "-k", "-n", str(requests), "-c", str(clients)]
    if head:
        command += ["-i", "-H", f"Accept: {OCI_MANIFEST}"]
    result = subprocess.run([*command, url], capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise RuntimeError(f"ab failed: {result.stderr}")
    out = result.stdout

    def number(pattern: str) -> float:
        match = re.search(pattern, out)
        return float(match.group(1)) if match else 0.0

    failed = number(r"Failed requests:\s+(\d+)") + number(r"Non-2xx responses:\s+(\d+)")
    if failed:
        raise RuntimeError(f"ab saw {failed:g} failed requests against {url}")
    return {
        "rps": number(r"Requests per second:\s+([\d.]+)"),
        "mib_s": number(r"Transfer rate:\s+([\d.]+)") / 1024,
    }


def measure(
    server: Server, opts: argparse.Namespace, urls: tuple[str, str], pushes: list[bytes]
) -> dict[str, float]:
    blob_url, manifest_url = urls
    results = {"push MiB/s": asyncio.run(push_phase(server.url, pushes, opts.push_clients))}
    results["blob GET MiB/s"] = ab(blob_url, opts.blob_requests, opts.blob_clients)["mib_s"]
    results["manifest HEAD req/s"] = ab(manifest_url, opts.head_requests, 32, head=True)["rps"]
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blob-mib", type=int, default=64, help="size of the blob pulled")
    parser.add_argument("--blob-clients", type=int, default=16)
    parser.add_argument("--blob-requests", type=int, default=160)
    parser.add_argument("--head-requests", type=int, default=20000)
    parser.add_argument("--push-blobs", type=int, default=32)
    parser.add_argument("--push-mib", type=int, default=8)
    parser.add_argument("--push-clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="measurements per registry (median kept)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="kapal-registry worker counts")
    opts = parser.parse_args()
    if not os.path.exists(CNCF) or AB is None:
        print("needs /usr/bin/docker-registry and ab (apache2-utils)")
        return 1
    base = bench_root()
    large = os.urandom(opts.blob_mib << 20)
    pushes = [os.urandom(opts.push_mib << 20) for _ in range(opts.push_blobs)]
    samples: dict[str, list[dict[str, float]]] = {}
    servers: list[Server] = []
    try:
        # All registries up at once, measured in turns, round after round: a machine whose load
        # changes during the run then skews every registry alike; the median of the rounds is kept.
        servers.append(start_cncf(base / "cncf"))
        servers += [start_kapal(base / f"kapal{workers}", workers) for workers in opts.workers]
        urls = {}
        for server in servers:
            urls[server.name] = asyncio.run(seed(server.url, large))
            ab(urls[server.name][0], 4, 2)  # warm the page cache
            ab(urls[server.name][1], 500, 32, head=True)
        for _ in range(opts.rounds):
            for server in servers:
                samples.setdefault(server.name, []).append(measure(server, opts, urls[server.name], pushes))
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(base, ignore_errors=True)
    table = {
        name: {metric: statistics.median(run[metric] for run in runs) for metric in runs[0]}
        for name, runs in samples.items()
    }
    metrics = ["push MiB/s", "blob GET MiB/s", "manifest HEAD req/s"]
    names = list(table)
    print(f"{'':24}" + "".join(f"{name:>22}" for name in names))
    for metric in metrics:
        print(f"{metric:24}" + "".join(f"{table[name][metric]:>22.1f}" for name in names))
    print("\nratios kapal / CNCF (>= 1.0 means kapal is at least as fast)")
    for name in names[1:]:
        ratios = ", ".join(
            f"{metric} {table[name][metric] / table['docker-registry'][metric]:.2f}" for metric in metrics
        )
        print(f"  {name}: {ratios}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
