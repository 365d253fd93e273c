"""Container lifecycle, side by side: kapald and dockerd on the same machine, image and filesystem.

Run as root: ``.venv/bin/python bench/bench_containers.py [--runs 20] [--many 50]``.
Measures ``run --rm --network none busybox true`` (docker CLI against each daemon, and the kapal
CLI against kapald), a ``run -d`` + ``rm -f`` cycle, ``ps`` with --many running containers, and
the daemons' resident memory idle and with those containers, counting the per-container monitors
(kapald's conmons, dockerd's containerd shims) as well. Both daemons run at once and the timed
commands take turns, so a changing machine load falls on both alike. Prints medians and ratios.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import CHILD_ENV, KAPAL, Dockerd, Kapald, Peer, bench_root, docker_cli, timed  # noqa: E402

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


def _run(command: list[str]) -> str:
    return subprocess.run(command, check=True, capture_output=True, text=True, env=CHILD_ENV).stdout


def interleaved(commands: dict[str, list[list[str]]], runs: int) -> dict[str, float]:
    """Median wall time of each named command sequence, the sequences' runs taken in turn.

    Taking one sample of each in turn (not all of one, then all of the other) keeps the
    ratios honest on a machine whose load changes while the benchmark runs.
    """
    samples: dict[str, list[float]] = {name: [] for name in commands}
    for round_number in range(runs + 1):  # the first round warms up
        for name, sequence in commands.items():
            start = time.perf_counter()
            previous = ""
            for command in sequence:
                previous = _run([part.replace("{}", previous.strip()) for part in command])
            if round_number:
                samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


def measure(peers: list[Peer], docker: str, runs: int, many: int) -> dict[str, dict[str, float]]:
    table: dict[str, dict[str, float]] = {peer.name: {} for peer in peers}
    time.sleep(1)
    for peer in peers:
        table[peer.name]["rss idle MB"] = peer.rss_kib() / 1024
    commands: dict[tuple[str, str], list[list[str]]] = {}
    for peer in peers:
        host = peer.host
        run_rm = ["run", "--rm", "--network", "none", "busybox", "true"]
        commands[(peer.name, "docker run --rm")] = [[docker, "-H", host, *run_rm]]
        if isinstance(peer, Kapald):
            commands[(peer.name, "kapal run --rm")] = [[KAPAL, "-H", host, *run_rm]]
        commands[(peer.name, "run -d + rm -f")] = [
            [docker, "-H", host, "run", "-d", "--network", "none", "busybox", "sleep", "60"],
            [docker, "-H", host, "rm", "-f", "{}"],
        ]
    keys = list(commands)
    medians = interleaved({f"{peer}\0{name}": commands[(peer, name)] for peer, name in keys}, runs)
    for peer_name, name in keys:
        table[peer_name][name] = medians[f"{peer_name}\0{name}"]
    for peer in peers:
        host = peer.host
        ids = [
            _run([docker, "-H", host, "run", "-d", "--network", "none", "busybox", "sleep", "600"]).strip()
            for _ in range(many)
        ]
        time.sleep(1)
        results = table[peer.name]
        results[f"docker ps ({many} running)"] = timed([docker, "-H", host, "ps"], runs)
        daemon = peer.rss_kib()
        count, monitors = peer.monitors_rss_kib()
        results[f"rss with {many}, daemon MB"] = daemon / 1024
        results[f"rss with {many}, monitors MB"] = monitors / 1024
        results[f"rss with {many}, total MB"] = (daemon + monitors) / 1024
        results[f"monitor processes ({many})"] = count
        _run([docker, "-H", host, "rm", "-f", *ids])
    return table


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
    peers: list[Peer] = []
    try:
        for cls in (Kapald, Dockerd):
            if cls is Dockerd and not Dockerd.available():
                print("dockerd is not installed (apt-get install docker.io): kapald only")
                continue
            peers.append(cls(base / cls.name).start())
            load_busybox(peers[-1], docker, base)
        table = measure(peers, docker, opts.runs, opts.many)
    finally:
        for peer in peers:
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
