"""The image store without the daemon: OCI layouts with indexes, names, deletion, garbage."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

import pytest
import zstandard
from archives import add_file, layer_tar, sha256

from kapal.engine import Engine
from kapal.errors import Conflict, InvalidArgument, NotFound
from kapal.image import archive
from kapal.image import manifest as mf


@pytest.fixture
def engine(scratch: Path):
    instance = Engine(scratch / "root")
    yield instance
    instance.close()


def _blob(files: dict[str, bytes], data: bytes) -> dict:
    files[f"blobs/sha256/{sha256(data)[7:]}"] = data
    return {"digest": sha256(data), "size": len(data)}


def oci_layout(platform_layers: dict[str, bytes], ref_name: str | None, compress: str = "gzip") -> bytes:
    """An OCI layout archive with an index of one manifest per platform ("os/arch": layer tar)."""
    files: dict[str, bytes] = {}
    entries = []
    for platform, layer in platform_layers.items():
        os_name, arch = platform.split("/")
        blob = gzip.compress(layer) if compress == "gzip" else zstandard.ZstdCompressor().compress(layer)
        layer_desc = _blob(files, blob)
        config = json.dumps(
            {
                "architecture": arch,
                "os": os_name,
                "rootfs": {"type": "layers", "diff_ids": [sha256(layer)]},
                "config": {"Cmd": [f"/bin/{arch}"]},
            }
        ).encode()
        config_desc = _blob(files, config)
        media = mf.OCI_LAYER_GZIP if compress == "gzip" else mf.OCI_LAYER_ZSTD
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": mf.OCI_MANIFEST,
                "config": {"mediaType": mf.OCI_CONFIG, **config_desc},
                "layers": [{"mediaType": media, **layer_desc}],
            }
        ).encode()
        entries.append(
            {
                "mediaType": mf.OCI_MANIFEST,
                **_blob(files, manifest),
                "platform": {"os": os_name, "architecture": arch},
            }
        )
    index = json.dumps({"schemaVersion": 2, "mediaType": mf.OCI_INDEX, "manifests": entries}).encode()
    top = {"mediaType": mf.OCI_INDEX, **_blob(files, index)}
    if ref_name:
        top["annotations"] = {mf.ANNOTATION_REF_NAME: ref_name}
    files["index.json"] = json.dumps({"schemaVersion": 2, "manifests": [top]}).encode()
    files["oci-layout"] = b'{"imageLayoutVersion":"1.0.0"}'
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in files.items():
            add_file(tar, name, data)
    return out.getvalue()


def test_multi_platform_index_loads_the_host_platform(engine: Engine) -> None:
    amd = layer_tar(lambda t: add_file(t, "arch", b"amd64"))
    arm = layer_tar(lambda t: add_file(t, "arch", b"arm64"))
    wanted = mf.host_platform()["architecture"]
    other = "arm64" if wanted == "amd64" else "amd64"
    layers = {f"linux/{wanted}": amd, f"linux/{other}": arm}
    messages: list[dict] = []
    loaded = archive.load(
        io.BytesIO(oci_layout(layers, "example.com/multi:1")), engine.images, messages.append
    )
    assert len(loaded) == 1
    image = loaded[0]
    assert image.config["architecture"] == wanted
    assert image.tags == ["example.com/multi:1"]
    assert (engine.layers.path(image.layers[0][0]) / "arch").read_bytes() == b"amd64"
    assert {"stream": "Loaded image: example.com/multi:1\n"} in messages
    # The other platform's blobs and the index were not kept.
    blobs = {digest for digest, _ in engine.content.walk()}
    assert blobs == {image.id, image.manifest_digest, image.layers[0][1]}


def test_zstd_layers_and_bare_tag_ref_names(engine: Engine) -> None:
    layer = layer_tar(lambda t: add_file(t, "hello", b"zstd"))
    wanted = mf.host_platform()["architecture"]
    loaded = archive.load(io.BytesIO(oci_layout({f"linux/{wanted}": layer}, "latest", "zstd")), engine.images)
    assert loaded[0].tags == []  # "latest" names no repository: loaded untagged, as docker does


def test_names_and_deletion(engine: Engine) -> None:
    layer = layer_tar(lambda t: add_file(t, "f", b"x"))
    wanted = mf.host_platform()["architecture"]
    (image,) = archive.load(io.BytesIO(oci_layout({f"linux/{wanted}": layer}, "app:1")), engine.images)
    images = engine.images
    assert images.resolve("app:1") == image.id
    assert images.resolve("docker.io/library/app:1") == image.id
    assert images.resolve(image.id[7:19]) == image.id
    assert images.resolve(image.id) == image.id
    with pytest.raises(NotFound, match="No such image: app:latest"):
        images.resolve("app")
    images.tag("app:1", "localhost:5000/app", "2")
    assert images.get(image.id).tags == ["docker.io/library/app:1", "localhost:5000/app:2"]
    with pytest.raises(InvalidArgument):
        images.tag("app:1", "Bad/Repo", "x")
    with pytest.raises(Conflict, match="referenced in multiple repositories"):
        images.delete(image.id)
    assert images.delete("app:1") == [{"Untagged": "app:1"}]
    report = images.delete("localhost:5000/app:2")
    assert report[0] == {"Untagged": "localhost:5000/app:2"}
    assert {"Deleted": image.id} in report
    assert list(engine.content.walk()) == []
    assert engine.layers.all() == []


def test_in_use_images_are_protected(engine: Engine) -> None:
    layer = layer_tar(lambda t: add_file(t, "f", b"y"))
    wanted = mf.host_platform()["architecture"]
    (image,) = archive.load(io.BytesIO(oci_layout({f"linux/{wanted}": layer}, "used:1")), engine.images)
    engine.images.image_users = lambda image_id: [("c" * 64, False)] if image_id == image.id else []
    with pytest.raises(Conflict, match="must force"):
        engine.images.delete("used:1")
    engine.images.image_users = lambda image_id: [("c" * 64, True)]
    with pytest.raises(Conflict, match="cannot be forced"):
        engine.images.delete(image.id, force=True)
    assert engine.images.prune(True, lambda i: False) == ([], 0)


def test_gc_spares_leased_content(engine: Engine) -> None:
    with engine.leases.lease() as lease:
        digest = engine.content.put_bytes(b"in flight", lease=lease)
        engine.images.collect_garbage()
        assert engine.content.exists(digest)
    engine.images.collect_garbage()
    assert not engine.content.exists(digest)


def test_second_engine_on_same_root_is_refused(engine: Engine) -> None:
    with pytest.raises(Conflict, match="in use by another kapald"):
        Engine(engine.root)
