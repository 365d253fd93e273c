"""Networking, side by side: kapald and dockerd on the same machine, image and filesystem.

Run as root: ``.venv/bin/python bench/bench_network.py [--runs 20] [--megabytes 512]``.
Measures ``docker run --rm busybox true`` on each daemon's default bridge (veth, address, and
for dockerd its bridge driver; for kapald its nftables table too), and the throughput of an HTTP
download from 127.0.0.1 through a published port (kapald: nftables DNAT, no proxy; dockerd: its
userland proxy, which is what serves 127.0.0.1 in Docker). dockerd runs without iptables (see
peers.Dockerd): that only spares it work, so the ratios are conservative for kapald.
"""

from __future__ import annotations

import argparse
import json
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_containers import load_busybox  # noqa: E402
from peers import Dockerd, Kapald, Peer, bench_root, docker_cli, timed  # noqa: E402

TARGETS = {"docker run --rm (bridge)": 0.3}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def download_rate(port: int, megabytes: int, rounds: int = 3) -> float:
    """Best MB/s of *rounds* downloads of the container's file (loopback only)."""
    url = f"http://127.0.0.1:{port}/big"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url.replace("/big", "/small"), timeout=2).read()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    best = 0.0
    for _ in range(rounds):
        start = time.perf_counter()
        received = 0
        with urllib.request.urlopen(url, timeout=60) as response:
            while chunk := response.read(1 << 20):
                received += len(chunk)
        elapsed = time.perf_counter() - start
        assert received == megabytes << 20, received
        best = max(best, megabytes / elapsed)
    return best


def measure(peer: Peer, docker: str, runs: int, megabytes: int) -> dict[str, float]:
    host = peer.host
    results = {
        "docker run --rm (bridge)": timed([docker, "-H", host, "run", "--rm", "busybox", "true"], runs)
    }
    port = free_port()
    serve = (
        f"mkdir -p /srv && echo ok > /srv/small && dd if=/dev/zero of=/srv/big bs=1M count={megabytes} "
        "2>/dev/null && httpd -f -p 80 -h /srv"
    )
    cid = subprocess.run(
        [docker, "-H", host, "run", "-d", "-p", f"127.0.0.1:{port}:80", "busybox", "sh", "-c", serve],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    try:
        results["published port MB/s"] = download_rate(port, megabytes)
    finally:
        subprocess.run([docker, "-H", host, "rm", "-f", cid], capture_output=True)
    return results


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--megabytes", type=int, default=512)
    opts = p.parse_args()
    docker = docker_cli()
    if docker is None:
        print("the docker CLI is needed (it drives both daemons)")
        return 1
    base = bench_root()
    table: dict[str, dict[str, float]] = {}
    peers: list[tuple[str, type]] = [("kapald", Kapald)]
    if Dockerd.available():
        peers.append(("dockerd", Dockerd))
    else:
        print("dockerd is not installed (apt-get install docker.io): kapald only")
    for name, cls in peers:
        directory = base / name
        directory.mkdir(parents=True)
        if cls is Kapald:
            bridge = "kb" + secrets.token_hex(4)
            (directory / "daemon.json").write_text(json.dumps({"bridge": bridge}))
            peer: Peer = Kapald(directory)
        else:
            peer = Dockerd(directory, network=True)
        peer.start()
        try:
            load_busybox(peer, docker, base)
            table[name] = measure(peer, docker, opts.runs, opts.megabytes)
        finally:
            peer.stop()
    (base / "busybox.tar").unlink(missing_ok=True)
    base.rmdir()
    print(f"{'measure':<30}" + "".join(f"{name:>12}" for name in table))
    for key in next(iter(table.values())):
        scale = 1000 if "MB/s" not in key else 1
        unit = " (ms)" if scale == 1000 else ""
        print(f"{key + unit:<30}" + "".join(f"{table[name][key] * scale:>12.1f}" for name in table))
    if "dockerd" in table:
        kapald, dockerd = table["kapald"], table["dockerd"]
        for key, target in TARGETS.items():
            ratio = kapald[key] / dockerd[key]
            verdict = "met" if ratio <= target else "NOT met"
            print(f"{key}: kapald/dockerd = {ratio:.2f} (target <= {target}): {verdict}")
        ratio = kapald["published port MB/s"] / dockerd["published port MB/s"]
        verdict = "met" if ratio >= 1 else "NOT met"
        print(f"published port throughput: kapald/dockerd = {ratio:.2f} (target >= 1): {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
