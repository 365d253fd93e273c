"""``kapal-mkimage``: base images made offline from the host's Debian packages.

Nothing is pulled from a registry: ``busybox`` is the host's busybox-static
binary with its applets as hard links (the layout of Docker's official busybox
image), ``debian`` is a debootstrap minbase tree. The root filesystem tarball
is deterministic (sorted entries, fixed times), so the same package version
always gives the same image ID.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from typing import BinaryIO

BUSYBOX_PATHS = ("/bin/busybox", "/usr/bin/busybox")

PASSWD = """\
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
sys:x:3:3:sys:/dev:/bin/false
sync:x:4:100:sync:/bin:/bin/sync
mail:x:8:8:mail:/var/spool/mail:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
operator:x:37:37:Operator:/var:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
"""
GROUP = """\
root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
adm:x:4:
tty:x:5:
disk:x:6:
wheel:x:10:root
mail:x:12:
www-data:x:33:
operator:x:37:
staff:x:50:
users:x:100:
nogroup:x:65534:
"""
DIRECTORIES = {
    "bin": 0o755,
    "dev": 0o755,
    "etc": 0o755,
    "home": 0o755,
    "proc": 0o755,
    "root": 0o700,
    "sys": 0o755,
    "tmp": 0o1777,
    "usr": 0o755,
    "usr/sbin": 0o755,
    "var": 0o755,
    "var/spool": 0o755,
    "var/spool/mail": 0o755,
    "var/www": 0o755,
}


def find_busybox() -> str:
    for path in BUSYBOX_PATHS:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise SystemExit("kapal-mkimage: busybox not found; install the busybox-static package")


def busybox_applets(busybox: str) -> list[str]:
    output = subprocess.run([busybox, "--list"], check=True, capture_output=True, text=True).stdout
    return sorted({name for name in output.split() if name and "/" not in name and name != "busybox"})


def write_busybox_rootfs(out: BinaryIO, busybox: str | None = None) -> None:
    busybox = busybox or find_busybox()
    mtime = int(os.stat(busybox).st_mtime)
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:

        def add(info: tarfile.TarInfo, data: bytes | None = None) -> None:
            info.mtime = mtime
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)

        for name, mode in sorted(DIRECTORIES.items()):
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            info.mode = mode
            add(info)
        info = tarfile.TarInfo("bin/busybox")
        info.mode = 0o755
        with open(busybox, "rb") as binary:
            add(info, binary.read())
        for applet in busybox_applets(busybox):
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type = tarfile.LNKTYPE
            link.linkname = "bin/busybox"
            link.mode = 0o755
            add(link)
        for name, text in (("etc/group", GROUP), ("etc/passwd", PASSWD)):
            info = tarfile.TarInfo(name)
            info.mode = 0o644
            add(info, text.encode())
        info = tarfile.TarInfo("etc/nsswitch.conf")
        info.mode = 0o644
        add(info, b"hosts: files dns\nnetworks: files\n")


_DEBIAN_EMPTY = ("dev", "proc", "sys", "run", "tmp", "var/lib/apt/lists", "var/cache/apt/archives", "var/log")


def _debian_entries(root: str) -> Iterator[str]:
    for directory, subdirs, files in os.walk(root):
        subdirs.sort()
        rel = os.path.relpath(directory, root)
        for name in sorted(subdirs + files):
            path = name if rel == "." else f"{rel}/{name}"
            if any(path.startswith(prefix + "/") for prefix in _DEBIAN_EMPTY):
                continue
            yield path


def write_debian_rootfs(out: BinaryIO, suite: str, mirror: str) -> None:
    if shutil.which("debootstrap") is None:
        raise SystemExit("kapal-mkimage: debootstrap not found; install the debootstrap package")
    workdir = tempfile.mkdtemp(prefix="kapal-debootstrap-")
    try:
        subprocess.run(
            ["debootstrap", "--variant=minbase", suite, workdir, mirror],
            check=True,
            stdout=sys.stderr,
        )
        epoch = int(os.environ.get("SOURCE_DATE_EPOCH", "0")) or None
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            for path in _debian_entries(workdir):
                info = tar.gettarinfo(os.path.join(workdir, path), arcname=path)
                info.uname = info.gname = ""
                if epoch is not None:
                    info.mtime = min(int(info.mtime), epoch)
                if info.isreg():
                    with open(os.path.join(workdir, path), "rb") as data:
                        tar.addfile(info, data)
                else:
                    tar.addfile(info)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def import_through_daemon(tarball: BinaryIO, tag: str, command: str, host: str | None) -> str:
    from kapal.cli.client import Client

    query = [
        ("fromSrc", "-"),
        ("repo", tag),
        ("changes", "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
        ("changes", f"CMD {command}"),
        ("message", "kapal-mkimage"),
    ]
    image_id = ""
    for message in Client(host).stream("POST", "/images/create", query, body=tarball):
        if "error" in message or "errorDetail" in message:
            raise SystemExit(
                f"kapal-mkimage: {message.get('error') or message['errorDetail'].get('message')}"
            )
        image_id = message.get("status", image_id)
    return image_id


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="kapal-mkimage", description=__doc__.splitlines()[0])
    p.add_argument("kind", choices=["busybox", "debian"])
    p.add_argument("-o", "--output", help="write the root filesystem tarball here instead of importing it")
    p.add_argument("-t", "--tag", help="image name (default busybox:latest / debian:SUITE)")
    p.add_argument("-H", "--host", help="kapald socket (default $KAPAL_HOST or unix:///run/kapal/kapal.sock)")
    p.add_argument("--suite", default="bookworm", help="Debian suite for debootstrap")
    p.add_argument("--mirror", default="http://deb.debian.org/debian", help="Debian mirror for debootstrap")
    opts = p.parse_args(argv)
    with tempfile.TemporaryFile() as tarball:
        if opts.kind == "busybox":
            write_busybox_rootfs(tarball)
            tag, command = opts.tag or "busybox:latest", '["sh"]'
        else:
            write_debian_rootfs(tarball, opts.suite, opts.mirror)
            tag, command = opts.tag or f"debian:{opts.suite}", '["bash"]'
        tarball.seek(0)
        if opts.output:
            with open(opts.output, "wb") as out:
                shutil.copyfileobj(tarball, out, 1 << 20)
            return 0
        print(import_through_daemon(tarball, tag, command, opts.host))
    return 0


if __name__ == "__main__":
    sys.exit(main())
