"""A container's files and processes: cp, diff, commit, export, top, stats and update.

Driven through the kapal CLI, the docker CLI and docker-py against a real
kapald, with real containers (crun under conmon on an overlayfs rootfs).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
from conftest import KAPAL, Daemon


def out(result: subprocess.CompletedProcess) -> str:
    return result.stdout.decode()


def err(result: subprocess.CompletedProcess) -> str:
    return result.stderr.decode()


def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def container_id(daemon: Daemon, name: str) -> str:
    return out(daemon.kapal("inspect", "--format", "{{.Id}}", name)).strip()


def tar_names(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return tar.getnames()


def tar_of(files: dict[str, bytes | None], links: dict[str, str] | None = None) -> bytes:
    """A tar with regular files (None: a directory) and then symlinks, in that order."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            entry = tarfile.TarInfo(name)
            if data is None:
                entry.type = tarfile.DIRTYPE
                entry.mode = 0o755
                tar.addfile(entry)
            else:
                entry.size = len(data)
                entry.mode = 0o644
                tar.addfile(entry, io.BytesIO(data))
        for name, target in (links or {}).items():
            entry = tarfile.TarInfo(name)
            entry.type = tarfile.SYMTYPE
            entry.linkname = target
            tar.addfile(entry)
    return buffer.getvalue()


def cgroup_file(ident: str, v1_controller: str, v1_name: str, v2_name: str) -> Path:
    if Path("/sys/fs/cgroup/cgroup.controllers").exists():
        return Path("/sys/fs/cgroup/kapal") / ident / v2_name
    return Path("/sys/fs/cgroup") / v1_controller / "kapal" / ident / v1_name


def make_tree(base: Path) -> Path:
    source = base / "src"
    (source / "sub").mkdir(parents=True)
    (source / "a.txt").write_text("alpha\n")
    (source / "sub" / "b.txt").write_text("beta\n")
    return source


def test_cp_both_directions_with_the_kapal_cli(daemon: Daemon, busybox: str, scratch: Path) -> None:
    source = make_tree(scratch)
    daemon.kapal("run", "-d", "--name", "files", "busybox", "sleep", "60")

    # Into the container: a directory, a directory's contents (/.), a file under a new name.
    daemon.kapal("cp", str(source), "files:/tmp/")
    daemon.kapal("cp", f"{source}/.", "files:/tmp/contents")
    daemon.kapal("cp", str(source / "a.txt"), "files:/tmp/renamed.txt")
    listing = out(daemon.kapal("exec", "files", "find", "/tmp")).split()
    assert sorted(listing) == sorted(
        [
            "/tmp",
            "/tmp/src",
            "/tmp/src/a.txt",
            "/tmp/src/sub",
            "/tmp/src/sub/b.txt",
            "/tmp/contents",
            "/tmp/contents/a.txt",
            "/tmp/contents/sub",
            "/tmp/contents/sub/b.txt",
            "/tmp/renamed.txt",
        ]
    )
    assert out(daemon.kapal("exec", "files", "cat", "/tmp/renamed.txt")) == "alpha\n"
    missing_dir = daemon.kapal("cp", str(source / "a.txt"), "files:/tmp/nodir/", check=False)
    assert missing_dir.returncode == 1 and "no such directory" in err(missing_dir)

    # Out of the container: a directory to a new name, its contents into an existing one, a file.
    daemon.kapal("cp", "files:/tmp/src", str(scratch / "back"))
    assert (scratch / "back" / "sub" / "b.txt").read_text() == "beta\n"
    (scratch / "existing").mkdir()
    daemon.kapal("cp", "files:/tmp/src/.", str(scratch / "existing"))
    assert sorted(os.listdir(scratch / "existing")) == ["a.txt", "sub"]
    daemon.kapal("cp", "files:/tmp/src", str(scratch / "existing"))
    assert (scratch / "existing" / "src" / "a.txt").read_text() == "alpha\n"
    daemon.kapal("cp", "files:/etc/passwd", str(scratch / "passwd"))
    assert (scratch / "passwd").read_text().startswith("root:")

    # "-": a tar on stdout, a tar from stdin.
    assert tar_names(daemon.kapal("cp", "files:/tmp/src", "-").stdout) == [
        "src",
        "src/a.txt",
        "src/sub",
        "src/sub/b.txt",
    ]
    assert tar_names(daemon.kapal("cp", "files:/tmp/src/.", "-").stdout)[:2] == [".", "./a.txt"]
    daemon.kapal("cp", "-", "files:/tmp", input=tar_of({"piped": None, "piped/p.txt": b"piped\n"}))
    assert out(daemon.kapal("exec", "files", "cat", "/tmp/piped/p.txt")) == "piped\n"
    refused = daemon.kapal("cp", "-", "files:/tmp/renamed.txt", input=b"", check=False)
    assert refused.returncode == 1 and 'destination "files:/tmp/renamed.txt" must be a directory' in err(
        refused
    )

    # The per-container /etc files are what the container sees, not the empty mount points.
    with tarfile.open(fileobj=io.BytesIO(daemon.kapal("cp", "files:/etc/hosts", "-").stdout)) as tar:
        hosts = tar.extractfile("hosts")
        assert hosts is not None and b"localhost" in hosts.read()

    missing = daemon.kapal("cp", "files:/nope", str(scratch / "x"), check=False)
    assert missing.returncode == 1
    assert "Could not find the file /nope in container files" in err(missing)

    # A stopped container: a directory and a file in, then they are there when it runs again.
    daemon.kapal("stop", "-t", "0", "files")
    daemon.kapal("cp", str(source), "files:/opt")
    daemon.kapal("cp", str(source / "a.txt"), "files:/stopped.txt")
    assert tar_names(daemon.kapal("cp", "files:/stopped.txt", "-").stdout) == ["stopped.txt"]
    rootfs = daemon.data_root / "containers" / container_id(daemon, "files") / "rootfs"
    assert not os.path.ismount(rootfs)  # mounted for the copy only
    daemon.kapal("start", "files")
    assert out(daemon.kapal("exec", "files", "cat", "/opt/sub/b.txt", "/stopped.txt")) == "beta\nalpha\n"
    daemon.kapal("rm", "-f", "files")


def test_cp_with_the_docker_cli(daemon: Daemon, busybox: str, scratch: Path) -> None:
    source = make_tree(scratch)
    daemon.docker("run", "-d", "--name", "dockercp", "busybox", "sh", "-c", "ln -s /tmp /tmplink; sleep 60")
    daemon.docker("cp", str(source), "dockercp:/tmp/")
    daemon.docker("cp", f"{source}/.", "dockercp:/tmp/contents")
    daemon.docker("cp", str(source / "a.txt"), "dockercp:/tmplink/viasymlink.txt")
    assert out(daemon.docker("exec", "dockercp", "cat", "/tmp/src/sub/b.txt", "/tmp/contents/a.txt")) == (
        "beta\nalpha\n"
    )
    assert out(daemon.docker("exec", "dockercp", "cat", "/tmp/viasymlink.txt")) == "alpha\n"
    daemon.docker("cp", "dockercp:/tmp/src", str(scratch / "fromdocker"))
    assert (scratch / "fromdocker" / "a.txt").read_text() == "alpha\n"
    daemon.docker("cp", "-L", "dockercp:/tmplink", str(scratch / "followed"))
    assert (scratch / "followed" / "viasymlink.txt").read_text() == "alpha\n"
    daemon.docker("cp", "dockercp:/tmplink", str(scratch / "link"))
    assert os.readlink(scratch / "link") == "/tmp"
    assert tar_names(daemon.docker("cp", "dockercp:/tmp/contents/.", "-").stdout)[:2] == [".", "./a.txt"]

    daemon.docker("stop", "-t", "0", "dockercp")
    daemon.docker("cp", str(source), "dockercp:/stopped-dir")
    daemon.docker("cp", str(source / "a.txt"), "dockercp:/stopped.txt")
    daemon.docker("cp", "dockercp:/stopped-dir/sub/b.txt", str(scratch / "b-from-stopped"))
    assert (scratch / "b-from-stopped").read_text() == "beta\n"
    daemon.docker("start", "dockercp")
    assert (
        out(daemon.docker("exec", "dockercp", "cat", "/stopped-dir/a.txt", "/stopped.txt"))
        == "alpha\nalpha\n"
    )
    missing = daemon.docker("cp", "dockercp:/nope", str(scratch / "nope"), check=False)
    assert missing.returncode != 0 and "Could not find the file /nope in container dockercp" in err(missing)
    daemon.docker("rm", "-f", "dockercp")


def test_cp_cannot_escape_the_container_through_symlinks(daemon: Daemon, busybox: str, scratch: Path) -> None:
    canary_dir = scratch / "canary"
    canary_dir.mkdir()
    canary = canary_dir / "secret.txt"
    canary.write_text("host secret\n")
    payload = scratch / "payload.txt"
    payload.write_text("overwritten\n")
    daemon.kapal(
        "run",
        "-d",
        "--name",
        "escape",
        "busybox",
        "sh",
        "-c",
        f"ln -s / /root-link; ln -s ../../../../../../../.. /up; ln -s {canary} /direct; "
        f"ln -s {canary_dir} /dirlink; sleep 60",
    )
    wait_for(lambda: daemon.kapal("exec", "escape", "test", "-L", "/dirlink", check=False).returncode == 0)
    ident = container_id(daemon, "escape")

    # Writing through symlinks: each lands inside the container, or is refused.
    for target in (f"escape:/root-link{canary}", f"escape:/up{canary}", "escape:/direct", "escape:/dirlink/"):
        daemon.kapal("cp", str(payload), target, check=False)
        daemon.docker("cp", str(payload), target, check=False)
    assert canary.read_text() == "host secret\n"
    assert sorted(os.listdir(canary_dir)) == ["secret.txt"]

    # A tar whose symlink entry points at the host and whose next entry goes through it.
    hostile = tar_of({}, {"evil": str(canary_dir)})
    hostile_2 = tar_of({f"evil/{canary.name}": b"pwned\n", "evil/new.txt": b"pwned\n"})
    daemon.kapal("cp", "-", "escape:/tmp", input=hostile)
    daemon.kapal("cp", "-", "escape:/tmp", input=hostile_2)
    assert canary.read_text() == "host secret\n"
    assert sorted(os.listdir(canary_dir)) == ["secret.txt"]
    # Docker resolves an entry's symlinks inside the extraction directory: /tmp/evil -> /tmp/<canary dir>.
    inside = daemon.data_root / "containers" / ident / "upper" / "tmp" / str(canary_dir).lstrip("/")
    assert (inside / canary.name).read_text() == "pwned\n"
    climbing = daemon.kapal("cp", "-", "escape:/tmp", input=tar_of({"../../../x": b"x"}), check=False)
    assert climbing.returncode == 1 and "outside of" in err(climbing)

    # Reading through symlinks: the host file is never what comes back.
    for source in (f"escape:/root-link{canary}", f"escape:/up{canary}"):
        for cli in (daemon.kapal, daemon.docker):
            leaked = cli("cp", source, "-", check=False)
            assert b"host secret" not in leaked.stdout
    followed = daemon.kapal("cp", "-L", "escape:/direct", str(scratch / "followed"), check=False)
    assert not (scratch / "followed").exists() or b"host secret" not in (scratch / "followed").read_bytes()
    assert followed.returncode == 0 or "Could not find the file" in err(followed)
    as_link = daemon.kapal("cp", "escape:/direct", "-").stdout
    with tarfile.open(fileobj=io.BytesIO(as_link)) as tar:
        (entry,) = tar.getmembers()
        assert entry.issym() and entry.linkname == str(canary)
    assert canary.read_text() == "host secret\n"
    daemon.kapal("rm", "-f", "escape")


def test_cp_reaches_volumes_and_binds_as_the_container_sees_them(
    daemon: Daemon, busybox: str, scratch: Path
) -> None:
    bind = scratch / "bind"
    bind.mkdir()
    (bind / "host.txt").write_text("from the host\n")
    read_only = scratch / "read-only"
    read_only.mkdir()
    payload = scratch / "payload.txt"
    payload.write_text("payload\n")
    daemon.kapal(
        "run",
        "-d",
        "--name",
        "mounted",
        "-v",
        "filesvol:/data",
        "-v",
        f"{bind}:/bind",
        "-v",
        f"{read_only}:/ro:ro",
        "busybox",
        "sh",
        "-c",
        "echo inside > /data/in.txt; sleep 60",
    )
    wait_for(
        lambda: daemon.kapal("exec", "mounted", "test", "-f", "/data/in.txt", check=False).returncode == 0
    )

    daemon.kapal("cp", str(payload), "mounted:/data/")
    assert out(daemon.kapal("exec", "mounted", "cat", "/data/payload.txt")) == "payload\n"
    assert tar_names(daemon.kapal("cp", "mounted:/data", "-").stdout) == [
        "data",
        "data/in.txt",
        "data/payload.txt",
    ]
    daemon.docker("cp", str(payload), "mounted:/bind/copied.txt")
    assert (bind / "copied.txt").read_text() == "payload\n"
    daemon.docker("cp", "mounted:/bind/host.txt", str(scratch / "back.txt"))
    assert (scratch / "back.txt").read_text() == "from the host\n"
    refused = daemon.kapal("cp", str(payload), "mounted:/ro/", check=False)
    assert refused.returncode == 1 and "mounted volume is marked read-only" in err(refused)
    assert os.listdir(read_only) == []

    # A stopped container's volumes are reached too; export and diff leave them out, as Docker's do.
    daemon.kapal("stop", "-t", "0", "mounted")
    daemon.kapal("cp", str(payload), "mounted:/data/while-stopped.txt")
    exported = tar_names(daemon.kapal("export", "mounted").stdout)
    assert "data" in exported and not any(name.startswith("data/") for name in exported)
    assert not any(
        line.startswith(("A /data/", "C /data/")) for line in out(daemon.kapal("diff", "mounted")).split("\n")
    )
    daemon.kapal("start", "mounted")
    assert out(daemon.kapal("exec", "mounted", "cat", "/data/while-stopped.txt")) == "payload\n"
    daemon.kapal("rm", "-f", "mounted")


def test_docker_py_archives(daemon: Daemon, busybox: str) -> None:
    docker = pytest.importorskip("docker")
    client = docker.DockerClient(base_url=daemon.host, version="auto")
    container = client.containers.run("busybox", ["sleep", "60"], detach=True, name="pyfiles")
    assert container.put_archive("/tmp", tar_of({"py": None, "py/hello.txt": b"from python\n"})) is True
    bits, path_stat = container.get_archive("/tmp/py/hello.txt")
    assert path_stat["name"] == "hello.txt" and path_stat["size"] == 12
    assert path_stat["mode"] == 0o644 and path_stat["linkTarget"] == ""
    with tarfile.open(fileobj=io.BytesIO(b"".join(bits))) as tar:
        data = tar.extractfile("hello.txt")
        assert data is not None and data.read() == b"from python\n"
    _, dir_stat = container.get_archive("/tmp/py")
    assert dir_stat["mode"] & (1 << 31) and dir_stat["name"] == "py"
    with pytest.raises(docker.errors.NotFound):
        container.get_archive("/no/such/file")
    with pytest.raises(docker.errors.APIError) as not_dir:
        container.put_archive("/tmp/py/hello.txt", tar_of({"x": b"x"}))
    assert "extraction point is not a directory" in str(not_dir.value)
    container.remove(force=True)
    client.close()


def test_diff_after_add_modify_delete(daemon: Daemon, busybox: str) -> None:
    daemon.kapal(
        "run",
        "--name",
        "changed",
        "busybox",
        "sh",
        "-c",
        "echo more >> /etc/passwd; mkdir /newdir; touch /newdir/file; rm /bin/ls; "
        "rm -rf /var/spool; mkdir /var/spool; touch /var/spool/fresh",
    )
    lines = out(daemon.kapal("diff", "changed")).splitlines()
    assert lines == [
        "C /bin",
        "D /bin/ls",
        "C /etc",
        "C /etc/passwd",
        "A /newdir",
        "A /newdir/file",
        "C /var",
        "C /var/spool",
        "A /var/spool/fresh",
        "D /var/spool/mail",
    ]
    assert out(daemon.docker("diff", "changed")).splitlines() == lines
    docker = pytest.importorskip("docker")
    client = docker.DockerClient(base_url=daemon.host, version="auto")
    changes = client.containers.get("changed").diff()
    assert {"Path": "/newdir", "Kind": 1} in changes and {"Path": "/bin/ls", "Kind": 2} in changes
    client.close()
    daemon.kapal("create", "--name", "untouched", "busybox")
    assert out(daemon.kapal("diff", "untouched")) == ""
    daemon.kapal("rm", "-f", "changed", "untouched")


def test_commit_then_run_the_new_image(daemon: Daemon, busybox: str) -> None:
    daemon.kapal(
        "run", "-d", "--name", "tocommit", "busybox", "sh", "-c", "echo hi > /hello; rm /bin/ls; sleep 60"
    )
    wait_for(lambda: daemon.kapal("exec", "tocommit", "test", "-f", "/hello", check=False).returncode == 0)
    image_id = out(
        daemon.kapal(
            "commit",
            "-c",
            'CMD ["cat", "/hello"]',
            "-c",
            "ENV COMMITTED=yes",
            "-m",
            "my message",
            "-a",
            "Me <me@example.com>",
            "tocommit",
            "committed:v1",
        )
    ).strip()
    assert image_id.startswith("sha256:") and len(image_id) == 71
    assert out(daemon.kapal("inspect", "--format", "{{.State.Status}}", "tocommit")).strip() == "running"
    assert out(daemon.kapal("run", "--rm", "committed:v1")) == "hi\n"
    assert out(daemon.kapal("run", "--rm", "committed:v1", "sh", "-c", "echo $COMMITTED")) == "yes\n"
    assert (
        daemon.kapal("run", "--rm", "committed:v1", "ls", check=False).returncode == 127
    )  # deleted stays deleted
    info = json.loads(out(daemon.kapal("image", "inspect", "committed:v1")))[0]
    assert info["Id"] == image_id and info["Config"]["Cmd"] == ["cat", "/hello"]
    assert info["Author"] == "Me <me@example.com>"
    parent = json.loads(out(daemon.kapal("image", "inspect", "busybox")))[0]
    assert info["RootFS"]["Layers"][:-1] == parent["RootFS"]["Layers"]
    layer = daemon.data_root / "layers" / info["RootFS"]["Layers"][-1].split(":")[1] / "diff"
    assert (layer / "hello").read_text() == "hi\n"
    assert not (layer / "etc" / "hosts").exists() and not (layer / "etc").exists()  # mount points left out
    history = out(
        daemon.kapal("history", "--no-trunc", "--format", "{{.Comment}}", "committed:v1")
    ).splitlines()
    assert history[0] == "my message"

    # The docker CLI and docker-py, and a commit without changes adds no layer.
    docker_id = out(daemon.docker("commit", "--change", "WORKDIR /tmp", "tocommit", "viadocker")).strip()
    assert out(daemon.docker("run", "--rm", "viadocker", "pwd")) == "/tmp\n"
    docker = pytest.importorskip("docker")
    client = docker.DockerClient(base_url=daemon.host, version="auto")
    image = client.containers.get("tocommit").commit(repository="viapy", tag="t", changes=["LABEL via=py"])
    assert image.labels.get("via") == "py" and "viapy:t" in image.tags
    fresh = client.containers.create("busybox", ["true"], name="fresh")
    empty = fresh.commit(repository="unchanged")
    assert empty.attrs["RootFS"]["Layers"] == parent["RootFS"]["Layers"]
    client.close()
    assert docker_id.startswith("sha256:")
    daemon.kapal("rm", "-f", "tocommit", "fresh")


def test_export_then_tar_t(daemon: Daemon, busybox: str, scratch: Path) -> None:
    daemon.kapal("run", "--name", "exported", "busybox", "sh", "-c", "echo data > /exported.txt")
    target = scratch / "export.tar"
    daemon.kapal("export", "-o", str(target), "exported")
    names = subprocess.run(
        ["tar", "tf", str(target)], capture_output=True, check=True, text=True
    ).stdout.split()
    assert "exported.txt" in names and "bin/busybox" in names and "etc/passwd" in names
    assert not any(name.startswith(("/", "./")) for name in names)
    with tarfile.open(target) as tar:
        data = tar.extractfile("exported.txt")
        assert data is not None and data.read() == b"data\n"
    piped = subprocess.run([KAPAL, "-H", daemon.host, "export", "exported"], capture_output=True, check=True)
    assert "exported.txt" in tar_names(piped.stdout)
    daemon.docker("export", "-o", str(scratch / "docker.tar"), "exported")
    assert "exported.txt" in tar_names((scratch / "docker.tar").read_bytes())
    daemon.kapal("rm", "exported")


def test_top_shows_the_container_process(daemon: Daemon, busybox: str) -> None:
    daemon.kapal("run", "-d", "--name", "topped", "busybox", "sleep", "61")
    lines = out(daemon.kapal("top", "topped")).splitlines()
    assert lines[0].split()[:3] == ["UID", "PID", "PPID"] and lines[0].rstrip().endswith("CMD")
    assert len(lines) == 2 and lines[1].rstrip().endswith("sleep 61")
    custom = out(daemon.kapal("top", "topped", "-o", "pid,comm")).splitlines()
    assert custom[0].split() == ["PID", "COMMAND"] and custom[1].split()[1] == "sleep"
    assert "sleep 61" in out(daemon.docker("top", "topped"))
    docker = pytest.importorskip("docker")
    client = docker.DockerClient(base_url=daemon.host, version="auto")
    listing = client.containers.get("topped").top()
    assert "PID" in listing["Titles"] and listing["Processes"][0][-1] == "sleep 61"
    client.close()
    daemon.kapal("stop", "-t", "0", "topped")
    stopped = daemon.kapal("top", "topped", check=False)
    assert stopped.returncode == 1 and "is not running" in err(stopped)
    daemon.kapal("rm", "topped")


def test_stats_samples(daemon: Daemon, busybox: str) -> None:
    daemon.kapal(
        "run",
        "-d",
        "--name",
        "measured",
        "--network",
        "none",
        "-m",
        "64m",
        "busybox",
        "sh",
        "-c",
        "sleep 60 & sleep 60 & wait",
    )
    docker = pytest.importorskip("docker")
    client = docker.DockerClient(base_url=daemon.host, version="auto")
    sample = client.containers.get("measured").stats(stream=False)
    assert sample["name"] == "/measured" and len(sample["id"]) == 64
    memory = sample["memory_stats"]
    assert 0 < memory["usage"] < 64 * 1024 * 1024 and memory["limit"] == 64 * 1024 * 1024
    assert sample["pids_stats"]["current"] == 3
    cpu, precpu = sample["cpu_stats"], sample["precpu_stats"]
    assert cpu["online_cpus"] >= 1 and cpu["cpu_usage"]["total_usage"] > 0
    assert 0 < precpu["system_cpu_usage"] < cpu["system_cpu_usage"]
    assert sample["preread"] < sample["read"] and "networks" not in sample
    stream = client.api.stats("measured", decode=True, stream=True)
    first, second = next(stream), next(stream)
    assert second["precpu_stats"] == first["cpu_stats"]
    client.close()

    header, row = out(daemon.kapal("stats", "--no-stream", "measured")).splitlines()
    columns = ["CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "NET I/O", "BLOCK I/O", "PIDS"]
    assert [title.strip() for title in header.split("   ") if title.strip()] == columns
    assert row.startswith(container_id(daemon, "measured")[:12]) and " measured " in row
    assert "/ 64MiB" in row and row.split()[-1] == "3"
    fmt = out(daemon.kapal("stats", "--no-stream", "--format", "{{.Name}} {{.PIDs}}", "measured"))
    assert fmt == "measured 3\n"
    docker_row = out(daemon.docker("stats", "--no-stream", "measured")).splitlines()[1]
    assert "measured" in docker_row and "/ 64MiB" in docker_row
    daemon.kapal("rm", "-f", "measured")


def test_update_changes_limits_live_and_for_the_next_start(daemon: Daemon, busybox: str) -> None:
    daemon.kapal(
        "run", "-d", "--name", "updated", "-m", "64m", "--pids-limit", "30", "busybox", "sleep", "60"
    )
    ident = container_id(daemon, "updated")
    limit = cgroup_file(ident, "memory", "memory.limit_in_bytes", "memory.max")
    pids = cgroup_file(ident, "pids", "pids.max", "pids.max")
    assert int(limit.read_text()) == 64 * 1024 * 1024
    assert out(daemon.kapal("update", "--memory", "100m", "updated")) == "updated\n"
    assert int(limit.read_text()) == 100 * 1024 * 1024
    daemon.kapal("update", "--memory", "256m", "--memory-swap", "512m", "--pids-limit", "50", "updated")
    assert int(limit.read_text()) == 256 * 1024 * 1024 and pids.read_text().strip() == "50"
    daemon.kapal("update", "--pids-limit", "-1", "--restart", "on-failure:2", "updated")
    assert pids.read_text().strip() == "max"
    host_config = json.loads(out(daemon.kapal("inspect", "--format", "{{json .HostConfig}}", "updated")))
    assert host_config["Memory"] == 256 * 1024 * 1024 and host_config["MemorySwap"] == 512 * 1024 * 1024
    assert host_config["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 2}
    too_big = daemon.kapal("update", "-m", "1g", "updated", check=False)
    assert too_big.returncode == 1 and "Memory limit should be smaller than already set memoryswap" in err(
        too_big
    )
    assert "you must provide one or more flags" in err(daemon.kapal("update", "updated", check=False))
    daemon.docker("update", "--memory", "300m", "--memory-swap", "600m", "updated")
    assert int(limit.read_text()) == 300 * 1024 * 1024

    # A stopped container keeps the new limits for its next start.
    daemon.kapal("stop", "-t", "0", "updated")
    daemon.kapal("update", "--memory", "200m", "--memory-swap", "400m", "updated")
    daemon.kapal("start", "updated")
    assert int(limit.read_text()) == 200 * 1024 * 1024
    docker = pytest.importorskip("docker")
    client = docker.DockerClient(base_url=daemon.host, version="auto")
    assert client.containers.get("updated").update(mem_limit="150m") == {"Warnings": []}
    assert int(limit.read_text()) == 150 * 1024 * 1024
    client.close()
    daemon.kapal("rm", "-f", "updated")
