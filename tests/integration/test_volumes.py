"""Volumes and container mounts: -v, --mount, image VOLUMEs, copy-up, prune (kapal, docker, docker-py).

The first tests drive the volume service and the mount parser directly (no
daemon); the rest run real containers under a test daemon.
"""

from __future__ import annotations

import io
import json
import os
import socket
import stat
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
from archives import add_file, add_symlink, docker_archive, layer_tar
from conftest import Daemon

from kapal.container.model import Container
from kapal.container.mounts import copy_tree, parse_bind, parse_mount, plan_mounts
from kapal.errors import Conflict, InvalidArgument, NotFound
from kapal.events import EventBus
from kapal.metadata import Database
from kapal.volume.service import ANONYMOUS_LABEL, MountPoint, VolumeService


def out(result: subprocess.CompletedProcess) -> str:
    return result.stdout.decode()


def err(result: subprocess.CompletedProcess) -> str:
    return result.stderr.decode()


# -- the service and the parser, without a daemon ---------------------------------------------------


@pytest.fixture
def service(scratch: Path) -> VolumeService:
    db = Database(scratch / "kapal.db")
    return VolumeService(scratch, db, EventBus())


def _container(db: Database, container_id: str, host_config: dict, config: dict | None = None) -> Container:
    db.query(
        "INSERT INTO containers (id, name, image_id, created, record) VALUES (?, ?, 'img', 0, '{}')",
        (container_id, container_id),
    )
    return Container(
        id=container_id,
        name=container_id,
        image="img",
        image_id="img",
        created="",
        config=config or {},
        host_config=host_config,
        args=[],
        runtime="crun",
    )


def test_service_creates_lists_and_refuses_as_dockerd(service: VolumeService, scratch: Path) -> None:
    events: list[tuple[str, str]] = []
    service.events.subscribe(lambda e: events.append((e.action, e.actor_id)))
    volume = service.create("data", labels={"k": "v"})
    assert volume.mountpoint == scratch / "volumes" / "data" / "_data"
    assert stat.S_IMODE(os.stat(scratch / "volumes").st_mode) == 0o701
    assert stat.S_IMODE(os.stat(scratch / "volumes" / "data").st_mode) == 0o701
    assert stat.S_IMODE(os.stat(volume.mountpoint).st_mode) == 0o755
    assert service.create("data") is volume  # idempotent, no second event
    anonymous = service.create(None)
    assert len(anonymous.name) == 64 and anonymous.labels == {ANONYMOUS_LABEL: ""}
    assert events == [("create", "data"), ("create", anonymous.name)]
    with pytest.raises(InvalidArgument, match="volume name is too short"):
        service.create("x")
    with pytest.raises(InvalidArgument, match=r'"a\*b" includes invalid characters for a local volume name'):
        service.create("a*b")
    with pytest.raises(InvalidArgument, match='invalid option: "bogus"'):
        service.create("opts", options={"bogus": "1"})
    with pytest.raises(InvalidArgument, match='missing required option: "device"'):
        service.create("opts", options={"type": "tmpfs"})
    with pytest.raises(NotFound, match='plugin "nfs" not found'):
        service.create("remote", driver="nfs")
    with pytest.raises(NotFound, match="get nope: no such volume"):
        service.get("nope")
    assert [v.name for v in service.list({"name": ["^da"]})] == ["data"]
    assert [v.name for v in service.list({"label": ["k=v"]})] == ["data"]
    assert [v.name for v in service.list({"label": [ANONYMOUS_LABEL]})] == [anonymous.name]
    with pytest.raises(InvalidArgument, match="invalid filter 'until'"):
        service.list({"until": ["1h"]})


def test_service_references_removal_and_prune(service: VolumeService) -> None:
    container = _container(service.db, "c1", {"Binds": ["named:/n", "/anon"]}, {"Volumes": {"/image": {}}})
    points = service.record_mounts(container.id, plan_mounts(container, service))
    names = {p.destination: p.name for p in points}
    assert names["/n"] == "named" and len(names["/anon"]) == 64 and len(names["/image"]) == 64
    assert service.users("named") == ["c1"]
    assert {v.name for v in service.list({"dangling": ["false"]})} == set(names.values())
    with pytest.raises(Conflict, match=r"^remove named: volume is in use - \[c1\]$"):
        service.remove("named")
    service.create("spare")
    assert service.prune() == ([], 0)  # in use, or not anonymous
    (service.path("spare") / "f").write_bytes(b"12345")
    assert service.prune({"all": ["true"]}) == (["spare"], 5)
    service.release("c1", remove_anonymous=True)
    assert [v.name for v in service.list()] == ["named"]
    service.remove("named")
    service.remove("named", force=True)  # gone already: no error with force
    with pytest.raises(NotFound):
        service.remove("named")


def test_bind_and_mount_specs_parse_as_dockerd(service: VolumeService, scratch: Path) -> None:
    bind = parse_bind("/host/dir:/ctr:ro,rslave")
    assert (bind.type, bind.source, bind.destination, bind.rw, bind.propagation, bind.mode) == (
        "bind",
        "/host/dir",
        "/ctr",
        False,
        "rslave",
        "ro,rslave",
    )
    volume = parse_bind("name:/data:nocopy")
    assert (volume.type, volume.name, volume.copy_data) == ("volume", "name", False)
    assert parse_bind("/only").anonymous
    for spec, message in [
        ("/foo:rw", "invalid volume specification: '/foo:rw'"),
        ("/a:/b:xx", "invalid mode: xx"),
        ("a:b:c:d:e", "invalid volume specification: 'a:b:c:d:e'"),
        ("name:relative", "mount path must be absolute"),
        ("/a:/b:nocopy", 'invalid mount config for type "bind": field VolumeOptions must not be specified'),
        ("/a:/", "destination can't be '/'"),
    ]:
        with pytest.raises(InvalidArgument) as caught:
            parse_bind(spec)
        assert message in str(caught.value), spec
    missing = str(scratch / "missing")
    with pytest.raises(InvalidArgument) as caught:
        parse_mount({"Type": "bind", "Source": missing, "Target": "/x"})
    assert (
        str(caught.value)
        == f'invalid mount config for type "bind": bind source path does not exist: {missing}'
    )
    tmpfs = parse_mount(
        {"Type": "tmpfs", "Target": "/t", "TmpfsOptions": {"SizeBytes": 1 << 20, "Mode": 0o1777}}
    )
    assert tmpfs.tmpfs_data == "mode=1777,size=1m"
    with pytest.raises(InvalidArgument, match='type "tmpfs": field Source must not be specified'):
        parse_mount({"Type": "tmpfs", "Source": "x", "Target": "/t"})
    with pytest.raises(InvalidArgument, match='type "nope": mount type unknown'):
        parse_mount({"Type": "nope", "Target": "/t"})
    container = _container(service.db, "dup", {"Binds": ["/a:/x", "/b:/x"]})
    with pytest.raises(InvalidArgument, match="^Duplicate mount point: /x$"):
        plan_mounts(container, service)


def test_copy_tree_keeps_owners_modes_links_and_times(scratch: Path) -> None:
    source, target = scratch / "src", scratch / "dst"
    (source / "sub").mkdir(parents=True)
    target.mkdir()
    (source / "file").write_text("content")
    os.chown(source / "file", 1234, 5678)
    os.chmod(source / "file", 0o4750)
    os.link(source / "file", source / "hardlink")
    os.symlink("file", source / "link")
    os.mkfifo(source / "sub" / "fifo")
    os.chmod(source, 0o710)
    os.chown(source, 42, 43)
    os.utime(source / "sub", ns=(1_000_000_000, 2_000_000_000))
    copy_tree(str(source), str(target))
    info = os.stat(target / "file")
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (1234, 5678, 0o4750)
    assert info.st_ino == os.stat(target / "hardlink").st_ino
    assert os.readlink(target / "link") == "file"
    assert stat.S_ISFIFO(os.lstat(target / "sub" / "fifo").st_mode)
    assert os.stat(target / "sub").st_mtime_ns == 2_000_000_000
    root = os.stat(target)
    assert (root.st_uid, root.st_gid, stat.S_IMODE(root.st_mode)) == (42, 43, 0o710)


# -- with a daemon ----------------------------------------------------------------------------------


def test_volume_cli_round_trip(daemon: Daemon) -> None:
    assert out(daemon.kapal("volume", "create", "first")) == "first\n"
    assert out(daemon.docker("volume", "create", "--label", "tier=db", "second")) == "second\n"
    anonymous = out(daemon.kapal("volume", "create")).strip()
    assert len(anonymous) == 64
    listing = "DRIVER    VOLUME NAME\n" + "".join(f"local     {n}\n" for n in (anonymous, "first", "second"))
    assert out(daemon.kapal("volume", "ls")) == out(daemon.docker("volume", "ls")) == listing
    assert out(daemon.kapal("volume", "ls", "-q", "-f", "label=tier=db")) == "second\n"
    assert (
        out(daemon.docker("volume", "ls", "--filter", "label=tier"))
        == "DRIVER    VOLUME NAME\nlocal     second\n"
    )
    for client in (daemon.kapal, daemon.docker):
        inspected = json.loads(out(client("volume", "inspect", "second")))
        assert inspected[0]["Labels"] == {"tier": "db"} and inspected[0]["Scope"] == "local"
        assert inspected[0]["Mountpoint"] == str(daemon.data_root / "volumes" / "second" / "_data")
        assert list(inspected[0]) == [
            "CreatedAt",
            "Driver",
            "Labels",
            "Mountpoint",
            "Name",
            "Options",
            "Scope",
        ]
        assert out(client("volume", "inspect", "-f", "{{.Name}} {{.Driver}}", "first")) == "first local\n"
        missing = client("volume", "inspect", "nope", check=False)
        assert missing.returncode == 1 and "get nope: no such volume" in err(missing)
    kapal_inspect = out(daemon.kapal("volume", "inspect", "first", "second"))
    assert kapal_inspect == out(daemon.docker("volume", "inspect", "first", "second"))
    template = '{{.Name}}|{{.Labels}}|{{.Label "tier"}}'
    assert out(daemon.kapal("volume", "ls", "--format", template)) == out(
        daemon.docker("volume", "ls", "--format", template)
    )
    bad = daemon.kapal("volume", "create", "a*b", check=False)
    assert bad.returncode == 1 and "includes invalid characters for a local volume name" in err(bad)
    assert out(daemon.kapal("volume", "rm", "first", anonymous)) == f"first\n{anonymous}\n"
    assert out(daemon.docker("volume", "rm", "second")) == "second\n"
    gone = daemon.kapal("volume", "rm", "second", check=False)
    assert gone.returncode == 1 and err(gone) == "Error response from daemon: get second: no such volume\n"
    assert daemon.kapal("volume", "rm", "-f", "second").returncode == 0
    assert out(daemon.kapal("volume", "ls", "-q")) == ""


def test_named_volume_persists_across_containers(daemon: Daemon, busybox: str) -> None:
    started = time.time()
    daemon.kapal(
        "run", "--name", "writer", "-v", "shared:/data", "busybox", "sh", "-c", "echo kept > /data/f"
    )
    assert out(daemon.kapal("run", "--rm", "-v", "shared:/data:ro", "busybox", "cat", "/data/f")) == "kept\n"
    assert out(daemon.docker("run", "--rm", "-v", "shared:/data", "busybox", "cat", "/data/f")) == "kept\n"
    mounts = json.loads(out(daemon.kapal("inspect", "--format", "{{json .Mounts}}", "writer")))
    assert mounts == [
        {
            "Type": "volume",
            "Name": "shared",
            "Source": str(daemon.data_root / "volumes" / "shared" / "_data"),
            "Destination": "/data",
            "Driver": "local",
            "Mode": "z",
            "RW": True,
            "Propagation": "",
        }
    ]
    assert out(daemon.docker("ps", "-a", "--filter", "volume=shared", "--format", "{{.Names}}")) == "writer\n"
    assert out(daemon.kapal("ps", "-a", "--format", "{{.Mounts}} {{.LocalVolumes}}")) == "shared 1\n"
    window = ("--since", f"{started - 1:.0f}", "--until", f"{time.time() + 1:.0f}")
    events = daemon.docker(
        "events", *window, "--filter", "volume=shared", "--format", "{{.Type}} {{.Action}}"
    )
    assert out(events).split("\n")[:3] == ["volume create", "volume mount", "volume unmount"]
    in_use = daemon.kapal("volume", "rm", "shared", check=False)
    writer_id = out(daemon.kapal("inspect", "--format", "{{.Id}}", "writer")).strip()
    assert in_use.returncode == 1
    assert err(in_use) == f"Error response from daemon: remove shared: volume is in use - [{writer_id}]\n"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(daemon.socket))
        sock.sendall(b"DELETE /v1.47/volumes/shared HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    assert response.startswith(b"HTTP/1.1 409")
    assert json.loads(response.split(b"\r\n\r\n", 1)[1]) == {
        "message": f"remove shared: volume is in use - [{writer_id}]"
    }
    daemon.kapal("rm", "-v", "writer")  # -v removes anonymous volumes only
    assert out(daemon.kapal("volume", "ls", "-q")) == "shared\n"
    assert out(daemon.kapal("volume", "rm", "shared")) == "shared\n"


def _seeded_image(daemon: Daemon, busybox_rootfs: Path) -> None:
    """An image with content at /seed (owned by 1000, mode 0750) declared as a VOLUME."""

    def build(tar: tarfile.TarFile) -> None:
        directory = tarfile.TarInfo("seed")
        directory.type, directory.mode, directory.uid, directory.gid = tarfile.DIRTYPE, 0o750, 1000, 1000
        tar.addfile(directory)
        data = b"from the image\n"
        info = tarfile.TarInfo("seed/hello.txt")
        info.size, info.mode, info.uid, info.gid = len(data), 0o640, 1000, 1000
        tar.addfile(info, io.BytesIO(data))
        add_symlink(tar, "seed/link", "hello.txt")
        add_file(tar, "seed/sub/deep.txt", b"deep\n")
        add_file(tar, "afile", b"a file\n")

    config = {
        "config": {
            "Cmd": ["sh"],
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Volumes": {"/seed": {}},
        }
    }
    archive = docker_archive([busybox_rootfs.read_bytes(), layer_tar(build)], ["seeded:latest"], config)
    daemon.kapal("load", input=archive)


def test_copy_up_and_anonymous_volumes(daemon: Daemon, busybox_rootfs: Path) -> None:
    _seeded_image(daemon, busybox_rootfs)
    listing = "cat /seed/link /seed/sub/deep.txt; stat -c '%u:%g %a' /seed /seed/hello.txt"
    expected = "from the image\ndeep\n1000:1000 750\n1000:1000 640\n"
    # The image's VOLUME gets an anonymous volume, filled from the image.
    assert out(daemon.kapal("run", "--name", "anon", "seeded", "sh", "-c", listing)) == expected
    mounts = json.loads(out(daemon.kapal("inspect", "--format", "{{json .Mounts}}", "anon")))
    assert len(mounts) == 1 and mounts[0]["Mode"] == "" and mounts[0]["Destination"] == "/seed"
    anonymous = mounts[0]["Name"]
    volume = json.loads(out(daemon.kapal("volume", "inspect", anonymous)))[0]
    assert volume["Labels"] == {"com.docker.volume.anonymous": ""}
    # A named volume is filled too, once: what a container changes stays.
    assert out(daemon.kapal("run", "--rm", "-v", "named:/seed", "seeded", "sh", "-c", listing)) == expected
    daemon.kapal("run", "--rm", "-v", "named:/seed", "seeded", "rm", "/seed/hello.txt")
    assert out(daemon.kapal("run", "--rm", "-v", "named:/seed", "seeded", "ls", "/seed")) == "link\nsub\n"
    # nocopy leaves it empty; a volume over a file of the image is refused.
    assert out(daemon.docker("run", "--rm", "-v", "empty:/seed:nocopy", "seeded", "ls", "-A", "/seed")) == ""
    no_copy = "type=volume,src=empty,dst=/seed,volume-nocopy"
    assert out(daemon.kapal("run", "--rm", "--mount", no_copy, "seeded", "ls", "-A", "/seed")) == ""
    over_file = daemon.kapal("run", "--rm", "-v", "named:/afile", "seeded", "true", check=False)
    assert over_file.returncode != 0 and "cannot mount volume over existing file" in err(over_file)
    # rm -v removes the anonymous volume, never a named one; run --rm does the same.
    daemon.kapal("rm", "-v", "anon")
    names = out(daemon.kapal("volume", "ls", "-q")).split()
    assert anonymous not in names and "named" in names
    daemon.docker("run", "--rm", "-v", "/scratch-anon", "seeded", "true")
    assert sorted(out(daemon.kapal("volume", "ls", "-q")).split()) == ["empty", "named"]


def test_bind_mounts_both_ways_and_read_only(daemon: Daemon, busybox: str, scratch: Path) -> None:
    host = scratch / "host"
    host.mkdir()
    (host / "in.txt").write_text("from the host\n")
    assert (
        out(daemon.kapal("run", "--rm", "-v", f"{host}:/x", "busybox", "cat", "/x/in.txt"))
        == "from the host\n"
    )
    daemon.docker("run", "--rm", "-v", f"{host}:/x", "busybox", "sh", "-c", "echo back > /x/out.txt")
    assert (host / "out.txt").read_text() == "back\n"
    refused = daemon.kapal("run", "--rm", "-v", f"{host}:/x:ro", "busybox", "touch", "/x/no", check=False)
    assert refused.returncode == 1 and "Read-only file system" in err(refused)
    assert not (host / "no").exists()
    # -v creates a missing host directory; --mount refuses a missing source.
    created = scratch / "created" / "deep"
    daemon.kapal("run", "--rm", "-v", f"{created}:/c", "busybox", "touch", "/c/made")
    assert (created / "made").exists()
    missing = scratch / "missing"
    for client in (daemon.kapal, daemon.docker):
        result = client(
            "run", "--rm", "--mount", f"type=bind,source={missing},target=/m", "busybox", check=False
        )
        assert result.returncode == 125
        assert f'invalid mount config for type "bind": bind source path does not exist: {missing}' in err(
            result
        )
    created_id = out(daemon.kapal("create", "-v", f"{host}:/x:ro", "busybox")).strip()
    mounts = json.loads(out(daemon.kapal("inspect", "--format", "{{json .Mounts}}", created_id)))
    assert mounts == [
        {
            "Type": "bind",
            "Source": str(host),
            "Destination": "/x",
            "Mode": "ro",
            "RW": False,
            "Propagation": "rprivate",
        }
    ]
    daemon.kapal("rm", created_id)


def test_volumes_from(daemon: Daemon, busybox: str, scratch: Path) -> None:
    host = scratch / "from-host"
    host.mkdir()
    daemon.kapal("create", "--name", "source", "-v", "vf:/vf", "-v", f"{host}:/h", "-v", "/anon", "busybox")
    for client in (daemon.kapal, daemon.docker):
        client(
            "run", "--rm", "--volumes-from", "source", "busybox", "sh", "-c", "echo x > /vf/x; echo h > /h/h"
        )
        read_only = client(
            "run", "--rm", "--volumes-from", "source:ro", "busybox", "touch", "/vf/y", check=False
        )
        assert read_only.returncode == 1 and "Read-only file system" in err(read_only)
    assert (host / "h").read_text() == "h\n"
    copied = json.loads(out(daemon.kapal("inspect", "--format", "{{json .Mounts}}", "source")))
    assert [m["Destination"] for m in copied] == ["/anon", "/h", "/vf"]
    missing = daemon.docker("run", "--rm", "--volumes-from", "nothere", "busybox", check=False)
    assert missing.returncode == 125 and "No such container: nothere" in err(missing)
    daemon.kapal("rm", "-v", "source")
    assert out(daemon.kapal("volume", "ls", "-q")) == "vf\n"


def test_tmpfs_mounts(daemon: Daemon, busybox: str) -> None:
    line = out(
        daemon.kapal(
            "run", "--rm", "--mount", "type=tmpfs,target=/t", "busybox", "grep", " /t ", "/proc/mounts"
        )
    )
    assert line.startswith("tmpfs /t tmpfs rw,nosuid,nodev,noexec")
    sized = out(
        daemon.docker(
            "run",
            "--rm",
            "--mount",
            "type=tmpfs,target=/t,tmpfs-size=1m",
            "busybox",
            "grep",
            " /t ",
            "/proc/mounts",
        )
    )
    assert "size=1024k" in sized
    sized = out(
        daemon.kapal("run", "--rm", "--mount", "type=tmpfs,dst=/t,tmpfs-size=2m", "busybox", "df", "/t")
    )
    assert sized.splitlines()[1].split()[1] == "2048"
    mixed = daemon.kapal(
        "run", "--rm", "--mount", "type=bind,volume-nocopy,target=/t", "busybox", check=False
    )
    assert mixed.returncode == 125
    assert "cannot mix 'volume-*' options with mount type 'bind'" in err(mixed)
    created_id = out(daemon.kapal("create", "--mount", "type=tmpfs,target=/t", "busybox")).strip()
    mounts = json.loads(out(daemon.kapal("inspect", "--format", "{{json .Mounts}}", created_id)))
    assert mounts == [
        {"Type": "tmpfs", "Source": "", "Destination": "/t", "Mode": "", "RW": True, "Propagation": ""}
    ]
    daemon.kapal("rm", created_id)


def test_volume_prune(daemon: Daemon, busybox: str) -> None:
    daemon.kapal("volume", "create", "named")
    daemon.kapal("volume", "create", "--label", "keep=1", "labelled")
    anonymous = out(daemon.kapal("volume", "create")).strip()
    daemon.kapal("create", "--name", "user", "-v", "used:/u", "busybox")
    declined = daemon.kapal("volume", "prune", input=b"n\n")
    assert out(declined) == (
        "WARNING! This will remove anonymous local volumes not used by at least one container.\n"
        "Are you sure you want to continue? [y/N] "
    )
    assert out(daemon.kapal("volume", "prune", "-f")) == (
        f"Deleted Volumes:\n{anonymous}\n\nTotal reclaimed space: 0B\n"
    )
    assert out(daemon.docker("volume", "prune", "-f")) == "Total reclaimed space: 0B\n"
    assert out(daemon.kapal("volume", "prune", "-af", "--filter", "label!=keep")) == (
        "Deleted Volumes:\nnamed\n\nTotal reclaimed space: 0B\n"
    )
    assert sorted(out(daemon.kapal("volume", "ls", "-q")).split()) == ["labelled", "used"]
    assert "Deleted Volumes:\nlabelled\n" in out(daemon.docker("volume", "prune", "--all", "--force"))
    assert out(daemon.kapal("volume", "ls", "-q")) == "used\n"


def test_local_driver_bind_device_keeps_host_data(daemon: Daemon, busybox: str, scratch: Path) -> None:
    device = scratch / "device"
    device.mkdir()
    (device / "kept.txt").write_text("host data\n")
    daemon.kapal(
        "volume", "create", "--opt", "type=none", "--opt", "o=bind", "--opt", f"device={device}", "bound"
    )
    result = daemon.kapal(
        "run", "--rm", "-v", "bound:/b", "busybox", "sh", "-c", "cat /b/kept.txt; echo new > /b/new"
    )
    assert out(result) == "host data\n"
    assert (device / "new").read_text() == "new\n"
    daemon.kapal("volume", "rm", "bound")
    assert sorted(os.listdir(device)) == ["kept.txt", "new"]  # removing the volume left the device alone
    with open("/proc/self/mountinfo") as table:
        assert str(daemon.data_root / "volumes") not in table.read()


def test_docker_py_volumes(daemon: Daemon, busybox: str) -> None:
    docker = pytest.importorskip("docker")
    client = docker.DockerClient(base_url=daemon.host, version="auto")

    def run(command: list[str], volumes: object) -> bytes:
        # detach, wait, logs: run(remove=True) follows the logs and races the exit (not a volume matter)
        container = client.containers.run("busybox", command, volumes=volumes, detach=True)
        assert container.wait(timeout=30)["StatusCode"] == 0
        output = container.logs()
        container.remove()
        return output

    volume = client.volumes.create("pyvol", labels={"made": "by-py"})
    assert client.volumes.get("pyvol").attrs["Labels"] == {"made": "by-py"}
    assert [v.name for v in client.volumes.list(filters={"label": "made=by-py"})] == ["pyvol"]
    assert run(["sh", "-c", "echo py > /v/f; cat /v/f"], {"pyvol": {"bind": "/v", "mode": "rw"}}) == b"py\n"
    assert run(["cat", "/v/f"], ["pyvol:/v:ro"]) == b"py\n"
    with pytest.raises(docker.errors.NotFound):
        client.volumes.get("nope")
    volume.remove()
    assert client.volumes.list() == []
    client.volumes.create("named-too")
    assert client.volumes.prune() == {"VolumesDeleted": [], "SpaceReclaimed": 0}
    old = docker.APIClient(base_url=daemon.host, version="1.41")  # before 1.42 prune took named volumes too
    assert old.prune_volumes()["VolumesDeleted"] == ["named-too"]
    old.close()
    client.close()


def test_mount_point_record_survives_a_daemon_restart(daemon: Daemon, busybox: str) -> None:
    daemon.kapal("run", "--name", "keeper", "-v", "durable:/d", "busybox", "sh", "-c", "echo 1 > /d/f")
    daemon.stop()
    daemon.start()
    assert daemon.kapal("volume", "rm", "durable", check=False).returncode == 1
    assert out(daemon.kapal("start", "-a", "keeper")) == ""
    assert out(daemon.kapal("run", "--rm", "-v", "durable:/d", "busybox", "cat", "/d/f")) == "1\n"
    daemon.kapal("rm", "keeper")
    assert out(daemon.kapal("volume", "rm", "durable")) == "durable\n"


def test_container_created_before_mount_points_gets_them_at_start(daemon: Daemon, busybox: str) -> None:
    import sqlite3

    daemon.kapal("create", "--name", "older", "-v", "legacy:/l", "busybox", "sh", "-c", "echo ok > /l/f")
    daemon.stop()
    with sqlite3.connect(daemon.data_root / "kapal.db") as db:  # as a kapal without volumes left it
        db.execute("DELETE FROM mount_points")
    daemon.start()
    assert out(daemon.kapal("inspect", "--format", "{{json .Mounts}}", "older")) == "[]\n"
    daemon.kapal("start", "-a", "older")
    assert (
        out(daemon.kapal("inspect", "--format", "{{range .Mounts}}{{.Name}}{{end}}", "older")) == "legacy\n"
    )
    assert out(daemon.kapal("run", "--rm", "-v", "legacy:/l", "busybox", "cat", "/l/f")) == "ok\n"
    daemon.kapal("rm", "older")


def test_mount_point_dataclass_round_trips() -> None:
    point = MountPoint(type="volume", destination="/d", name="n", anonymous=True, volume_labels={"a": "b"})
    assert MountPoint.from_record(point.to_record()) == point
