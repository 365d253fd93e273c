"""Images through real clients: the kapal CLI and the docker CLI against a real kapald."""

from __future__ import annotations

import json
import re
import subprocess
import tarfile
from pathlib import Path

import pytest
from archives import add_file, add_symlink, docker_archive, layer_tar, sha256
from conftest import Daemon


def out(result: subprocess.CompletedProcess) -> str:
    return result.stdout.decode()


def err(result: subprocess.CompletedProcess) -> str:
    return result.stderr.decode()


def test_import_then_list_inspect_history(daemon: Daemon, busybox: str) -> None:
    assert busybox.startswith("sha256:")
    listing = out(daemon.kapal("images"))
    header, row = listing.splitlines()
    assert header.split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    assert row.split()[:3] == ["busybox", "latest", busybox[7:19]]
    assert re.search(r"\d+(\.\d+)?MB$", row)
    inspected = json.loads(out(daemon.kapal("image", "inspect", "busybox")))
    assert inspected[0]["Id"] == busybox
    assert inspected[0]["Config"]["Cmd"] == ["sh"]
    assert inspected[0]["RepoTags"] == ["busybox:latest"]
    assert len(inspected[0]["RootFS"]["Layers"]) == 1
    assert out(daemon.kapal("inspect", "--format", "{{.Config.Cmd}} {{.Os}}", "busybox")) == "[sh] linux\n"
    history = out(daemon.kapal("history", "busybox")).splitlines()
    assert history[0].split()[:2] == ["IMAGE", "CREATED"]
    assert history[1].startswith(busybox[7:19])


def test_images_output_options(daemon: Daemon, busybox: str) -> None:
    daemon.kapal("tag", "busybox", "localhost:5000/team/app:v1")
    assert out(daemon.kapal("images", "-q")) == busybox[7:19] + "\n"
    assert out(daemon.kapal("images", "-q", "--no-trunc")) == busybox + "\n"
    rows = [json.loads(line) for line in out(daemon.kapal("images", "--format", "json")).splitlines()]
    assert {(r["Repository"], r["Tag"]) for r in rows} == {
        ("busybox", "latest"),
        ("localhost:5000/team/app", "v1"),
    }
    assert rows[0]["Digest"] == "<none>"
    custom = out(daemon.kapal("images", "--format", "{{.Repository}}:{{.Tag}}", "localhost:5000/team/app"))
    assert custom == "localhost:5000/team/app:v1\n"
    digests = out(daemon.kapal("images", "--digests")).splitlines()[0]
    assert "DIGEST" in digests
    filtered = out(daemon.kapal("images", "--filter", "reference=busy*", "--format", "{{.Repository}}"))
    assert filtered == "busybox\n"


def test_docker_cli_manages_images(daemon: Daemon, busybox: str) -> None:
    version = out(daemon.docker("version"))
    assert "Server: kapal Engine" in version
    assert "API version:      1.47" in version
    info = out(daemon.docker("info"))
    assert "Images: 1" in info
    assert "Storage Driver: overlay2" in info
    daemon.docker("tag", "busybox", "example/app:1.0")
    images = out(daemon.docker("images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"))
    assert sorted(images.splitlines()) == sorted(
        [f"busybox:latest {busybox[7:19]}", f"example/app:1.0 {busybox[7:19]}"]
    )
    inspected = json.loads(out(daemon.docker("inspect", "example/app:1.0")))
    assert inspected[0]["Id"] == busybox
    history = out(daemon.docker("history", "--format", "{{.ID}} {{.Comment}}", "busybox"))
    assert history.startswith(busybox[7:19])
    removed = out(daemon.docker("rmi", "example/app:1.0"))
    assert removed == "Untagged: example/app:1.0\n"
    df = out(daemon.docker("system", "df"))
    assert re.search(r"^Images\s+1\s+0\s+", df, re.M)
    missing = daemon.docker("rmi", "nothere", check=False)
    assert missing.returncode == 1
    assert "No such image: nothere:latest" in err(missing)


def test_rmi_rules(daemon: Daemon, busybox: str) -> None:
    daemon.kapal("tag", "busybox", "other/repo:1")
    conflict = daemon.kapal("rmi", busybox[7:19], check=False)
    assert conflict.returncode == 1
    assert "image is referenced in multiple repositories" in err(conflict)
    forced = out(daemon.kapal("rmi", "-f", busybox[7:19])).splitlines()
    assert "Untagged: busybox:latest" in forced
    assert "Untagged: other/repo:1" in forced
    assert f"Deleted: {busybox}" in forced
    assert out(daemon.kapal("images", "-q")) == ""


def test_image_prune_removes_dangling_only(daemon: Daemon, busybox: str, busybox_rootfs: Path) -> None:
    dangling = out(daemon.kapal("import", "--change", 'CMD ["true"]', str(busybox_rootfs))).strip()
    assert dangling != busybox
    listing = out(daemon.kapal("images"))
    assert "<none>" in listing
    pruned = out(daemon.kapal("image", "prune", "-f"))
    assert f"deleted: {dangling}" in pruned
    assert "Total reclaimed space:" in pruned
    assert out(daemon.kapal("images", "-q", "--no-trunc")) == busybox + "\n"
    pruned_all = out(daemon.docker("image", "prune", "-a", "-f"))
    assert f"deleted: {busybox}" in pruned_all
    assert out(daemon.kapal("images", "-q")) == ""


def _manifest_digests(archive: Path) -> tuple[list[str], set[str]]:
    with tarfile.open(archive) as tar:
        index = json.load(tar.extractfile("index.json"))
        blobs = {m.name for m in tar.getmembers() if m.name.startswith("blobs/sha256/") and m.isfile()}
    return [m["digest"] for m in index["manifests"]], blobs


def test_save_load_save_keeps_digests(daemon: Daemon, busybox: str, scratch: Path) -> None:
    first = scratch / "first.tar"
    second = scratch / "second.tar"
    daemon.kapal("save", "-o", str(first), "busybox")
    daemon.kapal("rmi", "busybox")
    loaded = out(daemon.kapal("load", "-i", str(first)))
    assert loaded == "Loaded image: busybox:latest\n"
    daemon.docker("save", "-o", str(second), "busybox:latest")
    assert _manifest_digests(first) == _manifest_digests(second)
    assert first.read_bytes() == second.read_bytes()
    # Other tools read the archive both as docker-archive and as an OCI layout.
    inspected = json.loads(
        subprocess.run(
            ["skopeo", "inspect", f"docker-archive:{first}"], check=True, capture_output=True
        ).stdout
    )
    assert inspected["Layers"] == json.loads(out(daemon.kapal("inspect", "busybox")))[0]["RootFS"]["Layers"]
    layout = scratch / "layout"
    layout.mkdir()
    with tarfile.open(first) as tar:
        tar.extractall(layout, filter="data")
    raw = subprocess.run(
        ["skopeo", "inspect", "--raw", f"oci:{layout}:latest"], check=True, capture_output=True
    )
    assert sha256(raw.stdout) == _manifest_digests(first)[0][0]
    umoci = subprocess.run(["umoci", "ls", "--layout", str(layout)], capture_output=True, text=True)
    assert umoci.returncode == 0, umoci.stderr
    assert "latest" in umoci.stdout.split()


def test_save_to_terminal_refused_and_missing_image_is_404(daemon: Daemon, busybox: str) -> None:
    missing = daemon.kapal("save", "-o", "/dev/null", "nothere", check=False)
    assert missing.returncode == 1
    assert "No such image: nothere:latest" in err(missing)


def test_load_skopeo_archives_of_a_foreign_image(daemon: Daemon, shared_busybox: Path, scratch: Path) -> None:
    docker_tar = scratch / "docker.tar"
    oci_tar = scratch / "oci.tar"
    subprocess.run(
        ["skopeo", "copy", "-q", f"oci:{shared_busybox}", f"docker-archive:{docker_tar}:shared/busybox:1"],
        check=True,
    )
    subprocess.run(["skopeo", "copy", "-q", f"oci:{shared_busybox}", f"oci-archive:{oci_tar}"], check=True)
    assert out(daemon.docker("load", "-i", str(docker_tar))) == "Loaded image: shared/busybox:1\n"
    image_id = json.loads(out(daemon.kapal("inspect", "shared/busybox:1")))[0]["Id"]
    # The OCI archive carries the same config: the same image, now also untagged-loadable.
    assert out(daemon.kapal("load", "-i", str(oci_tar))) == f"Loaded image ID: {image_id}\n"
    config = json.loads((shared_busybox / "blobs" / "sha256" / image_id[7:]).read_bytes())
    assert (
        json.loads(out(daemon.kapal("inspect", image_id)))[0]["RootFS"]["Layers"]
        == config["rootfs"]["diff_ids"]
    )


def test_load_gzip_compressed_archive_from_stdin(daemon: Daemon) -> None:
    import gzip

    layer = layer_tar(lambda tar: add_file(tar, "hello.txt", b"hello"))
    archive = gzip.compress(docker_archive([layer], ["gz/image:1"]))
    loaded = daemon.kapal("load", input=archive)
    assert out(loaded) == "Loaded image: gz/image:1\n"


@pytest.mark.parametrize(
    "name,build,message",
    [
        ("dotdot", lambda t: add_file(t, "../escaped", b"x"), "escapes"),
        ("absolute", lambda t: add_file(t, "/tmp/kapal-absolute-escape", b"x"), "absolute"),
        (
            "symlink",
            lambda t: (add_symlink(t, "evil", "/tmp"), add_file(t, "evil/kapal-symlink-escape", b"x")),
            "through symlink",
        ),
        (
            "relative-symlink",
            lambda t: (
                add_symlink(t, "up", "../../../../../../tmp"),
                add_file(t, "up/kapal-rel-escape", b"x"),
            ),
            "through symlink",
        ),
    ],
)
def test_hostile_layer_is_refused_and_store_is_unchanged(
    daemon: Daemon, busybox: str, name: str, build, message: str
) -> None:
    listing = ("images", "--no-trunc", "--format", "{{.Repository}}:{{.Tag}} {{.ID}} {{.Size}}")
    before = out(daemon.kapal(*listing))
    layer = layer_tar(build)
    result = daemon.kapal("load", input=docker_archive([layer], [f"hostile/{name}:1"]), check=False)
    assert result.returncode == 1
    assert "invalid layer" in err(result) and message in err(result), err(result)
    for leaked in ("/tmp/kapal-absolute-escape", "/tmp/kapal-symlink-escape", "/tmp/kapal-rel-escape"):
        assert not Path(leaked).exists()
    assert not (daemon.data_root / "escaped").exists()
    assert not (daemon.data_root / "layers" / "escaped").exists()
    assert out(daemon.kapal(*listing)) == before
    layers = [p.name for p in (daemon.data_root / "layers").iterdir()]
    assert len(layers) == 1 and not any(n.startswith("tmp-") for n in layers)


def test_load_rejects_garbage_and_diff_id_mismatch(daemon: Daemon) -> None:
    garbage = daemon.kapal("load", input=b"this is not a tar archive" * 100, check=False)
    assert garbage.returncode == 1
    assert "invalid archive" in err(garbage)
    layer = layer_tar(lambda tar: add_file(tar, "a", b"a"))
    lying = docker_archive(
        [layer], ["liar:1"], {"rootfs": {"type": "layers", "diff_ids": [sha256(b"other")]}}
    )
    mismatch = daemon.kapal("load", input=lying, check=False)
    assert mismatch.returncode == 1
    assert "diff ID mismatch" in err(mismatch)
    assert out(daemon.kapal("images", "-q")) == ""


def test_import_with_changes_and_compression(daemon: Daemon, busybox_rootfs: Path, scratch: Path) -> None:
    import zstandard

    compressed = scratch / "rootfs.tar.zst"
    compressed.write_bytes(zstandard.ZstdCompressor().compress(busybox_rootfs.read_bytes()))
    image_id = out(
        daemon.kapal(
            "import",
            "-c",
            'ENTRYPOINT ["/bin/sh", "-c"]',
            "-c",
            "ENV A=1 B=two",
            "-c",
            "WORKDIR /srv",
            "-c",
            "EXPOSE 80 53/udp",
            "-c",
            "LABEL org.example=yes",
            "-c",
            "USER nobody",
            "-m",
            "from zstd",
            str(compressed),
            "zstd/busybox:1",
        )
    ).strip()
    config = json.loads(out(daemon.kapal("inspect", image_id)))[0]
    assert config["Config"]["Entrypoint"] == ["/bin/sh", "-c"]
    assert config["Config"]["Env"] == ["A=1", "B=two"]
    assert config["Config"]["WorkingDir"] == "/srv"
    assert config["Config"]["ExposedPorts"] == {"80/tcp": {}, "53/udp": {}}
    assert config["Config"]["Labels"] == {"org.example": "yes"}
    assert config["Config"]["User"] == "nobody"
    assert config["Comment"] == "from zstd"
    # Same content as the plain tarball: the same diff ID, one layer directory.
    plain = out(daemon.kapal("import", str(busybox_rootfs), "plain/busybox:1")).strip()
    plain_layers = json.loads(out(daemon.kapal("inspect", plain)))[0]["RootFS"]["Layers"]
    assert config["RootFS"]["Layers"] == plain_layers
    bad = daemon.kapal("import", "-c", "RUN echo no", str(busybox_rootfs), check=False)
    assert bad.returncode == 1 and "not a valid change command" in err(bad)


def test_layer_content_is_kept_exactly(daemon: Daemon, busybox: str) -> None:
    inspected = json.loads(out(daemon.kapal("inspect", "busybox")))[0]
    layer_dir = Path(inspected["GraphDriver"]["Data"]["UpperDir"])
    busybox_bin = layer_dir / "bin" / "busybox"
    assert busybox_bin.stat().st_mode & 0o777 == 0o755
    assert (layer_dir / "bin" / "sh").stat().st_ino == busybox_bin.stat().st_ino
    assert (layer_dir / "tmp").stat().st_mode & 0o7777 == 0o1777
    assert (layer_dir / "etc" / "passwd").read_text().startswith("root:x:0:0:")


def test_system_df_counts_the_build_cache(daemon: Daemon, busybox: str, scratch: Path) -> None:
    context = scratch / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM busybox\nRUN echo cached > /cached\nLABEL step=two\n")
    daemon.kapal("build", "-q", "-t", "cached", str(context))
    rows = {line.split()[0]: line for line in out(daemon.kapal("system", "df")).splitlines()}
    assert re.match(r"^Build Cache\s+2\s+0\s+\S+kB", rows["Build"]), rows["Build"]
    assert out(daemon.kapal("system", "df")) == out(daemon.docker("system", "df"))
