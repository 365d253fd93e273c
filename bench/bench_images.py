"""Image commands, side by side: ``kapal`` and ``docker`` against kapald, and ``docker`` against dockerd.

Run: ``.venv/bin/python bench/bench_images.py [--images 20] [--runs 30]`` as root.
It prints one table of medians and the ratios that matter, and checks the
CLI start-up target (``kapal version`` ≤ 60 ms median).
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import KAPAL, Dockerd, Kapald, bench_root, docker_cli, timed  # noqa: E402

from kapal.image.bases import write_busybox_rootfs  # noqa: E402


def populate(host: str, docker: str | None, count: int, use_docker: bool) -> None:
    """*count* images: busybox imported once, plus *count*-1 more tags and imports."""
    rootfs = io.BytesIO()
    write_busybox_rootfs(rootfs)
    data = rootfs.getvalue()
    for index in range(count):
        change = f"LABEL bench.index={index}"
        if use_docker:
            assert docker is not None
            cmd = [docker, "-H", host, "import", "-c", change, "-", f"bench/image{index}:latest"]
        else:
            cmd = [KAPAL, "-H", host, "import", "-c", change, "-", f"bench/image{index}:latest"]
        subprocess.run(cmd, input=data, check=True, capture_output=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=20)
    p.add_argument("--runs", type=int, default=30)
    opts = p.parse_args()
    docker = docker_cli()
    base = bench_root()
    kapald = Kapald(base / "kapald").start()
    dockerd = None
    results: dict[str, float] = {}
    try:
        populate(kapald.host, docker, opts.images, use_docker=False)
        results["kapal version"] = timed([KAPAL, "-H", kapald.host, "version"], opts.runs)
        results["kapal images (kapald)"] = timed([KAPAL, "-H", kapald.host, "images"], opts.runs)
        if docker:
            results["docker images (kapald)"] = timed([docker, "-H", kapald.host, "images"], opts.runs)
        if docker and Dockerd.available():
            dockerd = Dockerd(base / "dockerd").start()
            populate(dockerd.host, docker, opts.images, use_docker=True)
            time.sleep(1)
            results["docker images (dockerd)"] = timed([docker, "-H", dockerd.host, "images"], opts.runs)
    finally:
        kapald.stop()
        if dockerd:
            dockerd.stop()
        base.rmdir() if base.exists() and not any(base.iterdir()) else None
    width = max(len(name) for name in results)
    print(f"{'command':<{width}}  median")
    for name, seconds in results.items():
        print(f"{name:<{width}}  {seconds * 1000:7.1f} ms")
    if "docker images (dockerd)" in results:
        reference = results["docker images (dockerd)"]
        for name in ("kapal images (kapald)", "docker images (kapald)"):
            print(f"{name} / docker images (dockerd): {results[name] / reference:.2f}x")
    target = results["kapal version"] * 1000
    print(f"kapal version: {target:.1f} ms median (target <= 60 ms): {'met' if target <= 60 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
