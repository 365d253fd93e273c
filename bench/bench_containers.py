"""Container lifecycle, side by side: kapald and dockerd on the same machine, image and filesystem.

Run as root: ``.venv/bin/python bench/bench_containers.py [--runs 20] [--many 50]``.
Measures ``run --rm --network none busybox true`` (docker CLI against each daemon, and the kapal
CLI against kapald), a ``run -d`` + ``rm -f`` cycle, ``ps`` with --many running containers, and
the daemons' resident memory idle and with those containers. Prints medians and ratios.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import KAPAL, Dockerd, Kapald, Peer, bench_root, docker_cli, timed  # noqa: E402

from kapal.image.bases import write_busybox_rootfs  # noqa: E402

TARGETS = {
    "docker run --rm": 0.3,  # docker CLI against kapald, as a fraction of dockerd
    "run -d + rm -f": 0.35,
}


def load_busybox(peer: Peer, docker: str, base: Path) -> None:
    rootfs = base / "busybox.tar"
    if not rootfs.exists():
        with open(rootfs, "wb") as out:
            write_busybox_rootfs(out)
    subprocess.run(
        [docker, "-H", peer.host, "import", "-c", 'CMD ["sh"]', str(rootfs), "busybox:latest"],
        check=True,
        capture_output=True,
    )


def cycle(docker: str, host: str, runs: int) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        cid = subprocess.run(
            [docker, "-H", host, "run", "-d", "--network", "none", "busybox", "sleep", "60"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        subprocess.run([docker, "-H", host, "rm", "-f", cid], check=True, capture_output=True)
        samples.append(time.perf_counter() - start)
    samples.sort()
    return samples[len(samples) // 2]


def measure(peer: Peer, docker: str, runs: int, many: int) -> dict[str, float]:
    host = peer.host
    results: dict[str, float] = {}
    time.sleep(1)
    results["rss idle MB"] = peer.rss_kib() / 1024
    results["docker run --rm"] = timed(
        [docker, "-H", host, "run", "--rm", "--network", "none", "busybox", "true"], runs
    )
    if isinstance(peer, Kapald):
        results["kapal run --rm"] = timed(
            [KAPAL, "-H", host, "run", "--rm", "--network", "none", "busybox", "true"], runs
        )
    results["run -d + rm -f"] = cycle(docker, host, runs)
    ids = []
    for _ in range(many):
        ids.append(
            subprocess.run(
                [docker, "-H", host, "run", "-d", "--network", "none", "busybox", "sleep", "600"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.strip()
        )
    time.sleep(1)
    results[f"docker ps ({many} running)"] = timed([docker, "-H", host, "ps"], runs)
    daemon = peer.rss_kib()
    count, monitors = peer.monitors_rss_kib()
    results[f"rss with {many}, daemon MB"] = daemon / 1024
    results[f"rss with {many}, monitors MB"] = monitors / 1024
    results[f"rss with {many}, total MB"] = (daemon + monitors) / 1024
    results[f"monitor processes ({many})"] = count
    subprocess.run([docker, "-H", host, "rm", "-f", *ids], check=True, capture_output=True)
    return results


def _is_time(name: str) -> bool:
    return not name.startswith(("rss", "monitor"))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--many", type=int, default=50)
    opts = p.parse_args()
    docker = docker_cli()
    if docker is None:
        print("the docker CLI is needed (it drives both daemons)")
        return 1
    base = bench_root()
    table: dict[str, dict[str, float]] = {}
    for cls in (Kapald, Dockerd):
        if cls is Dockerd and not Dockerd.available():
            print("dockerd is not installed (apt-get install docker.io): kapald only")
            continue
        peer = cls(base / cls.name).start()
        try:
            load_busybox(peer, docker, base)
            table[cls.name] = measure(peer, docker, opts.runs, opts.many)
        finally:
            peer.stop()
    (base / "busybox.tar").unlink(missing_ok=True)
    base.rmdir()
    names = sorted({key for results in table.values() for key in results}, key=lambda k: (not _is_time(k), k))
    print(f"{'measure':<26}" + "".join(f"{peer:>12}" for peer in table))
    for name in names:
        cells = "".join(
            f"{table[peer][name] * (1000 if _is_time(name) else 1):>12.1f}"
            if name in table[peer]
            else f"{'':>12}"
            for peer in table
        )
        unit = " (ms)" if _is_time(name) else ""
        print(f"{name + unit:<26}{cells}")
    if "dockerd" in table:
        kapald, dockerd = table["kapald"], table["dockerd"]
        for name, target in TARGETS.items():
            ratio = kapald[name] / dockerd[name]
            verdict = "met" if ratio <= target else "NOT met"
            print(f"{name}: kapald/dockerd = {ratio:.2f} (target <= {target}): {verdict}")
        ratio = kapald["kapal run --rm"] / kapald["docker run --rm"]
        print(f"kapal run --rm vs docker run --rm against kapald: {ratio:.2f} (target <= 1.2)")
        total = f"rss with {opts.many}, total MB"
        verdict = "met" if kapald[total] < dockerd[total] else "NOT met"
        print(
            f"rss with {opts.many}: kapald + conmons {kapald[total]:.0f} MB, dockerd + containerd + shims "
            f"{dockerd[total]:.0f} MB: {verdict}"
        )
    if "kapald" in table:
        idle = table["kapald"]["rss idle MB"]
        print(f"kapald rss idle {idle:.1f} MB (target <= 60): {'met' if idle <= 60 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
