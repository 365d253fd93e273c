# ruff: noqa: E501 - Dockerfiles and expected messages are kept on one line, as written
"""The layer cache, reproducible layers, multi-stage builds and RUN --mount, through a real kapald."""

from __future__ import annotations

import io
import json
import os
import tarfile
import time
from pathlib import Path

from build_helpers import build, inspect, sh, steps_cached, write_context
from conftest import Daemon

from kapal.cli.client import Client

CACHED_DOCKERFILE = """
    FROM busybox
    ENV MODE=test
    COPY a.txt /a.txt
    RUN cat /a.txt > /copy-of-a
    COPY b.txt /b.txt
    RUN cat /b.txt > /copy-of-b
    LABEL done=yes
"""


def test_rebuild_hits_the_cache_and_a_changed_file_rebuilds_from_its_copy(
    daemon: Daemon, busybox: str, scratch: Path
) -> None:
    context = write_context(
        scratch / "ctx", {"Dockerfile": CACHED_DOCKERFILE, "a.txt": "a1\n", "b.txt": "b1\n"}
    )
    first, log = build(daemon, context, "-t", "cached:1")
    assert steps_cached(log) == (6, 0)
    second, log = build(daemon, context, "-t", "cached:1")
    assert second == first
    assert steps_cached(log) == (6, 6)

    # a new mtime alone is no change (content and metadata are, mtimes are not)
    later = time.time() + 100
    os.utime(context / "a.txt", (later, later))
    assert build(daemon, context)[0] == first

    (context / "b.txt").write_text("b2\n")
    third, log = build(daemon, context, "-t", "cached:2")
    assert third != first
    lines = log.splitlines()
    copy_b = lines.index("Step 5/7 : COPY b.txt /b.txt")
    assert all(line != " ---> Using cache" for line in lines[copy_b:])
    assert steps_cached(log) == (6, 3)
    assert sh(daemon, "cached:2", "cat /copy-of-a /copy-of-b") == "a1\nb2\n"

    # a mode change is a change
    (context / "a.txt").chmod(0o600)
    _, log = build(daemon, context)
    assert steps_cached(log) == (6, 1)

    _, log = build(daemon, context, "--no-cache")
    assert steps_cached(log) == (6, 0)

    # the cache lives in the database: a new daemon on the same data root still has it
    daemon.stop()
    daemon.start()
    _, log = build(daemon, context)
    assert steps_cached(log) == (6, 6)


def test_source_date_epoch_gives_the_same_image(daemon: Daemon, busybox: str, scratch: Path) -> None:
    context = write_context(
        scratch / "ctx",
        {
            "Dockerfile": "FROM busybox\nCOPY . /src\nRUN date > /built-at && mkdir -p /var/made\nENV X=1\n",
            "f.txt": "content\n",
        },
    )
    epoch = ("--build-arg", "SOURCE_DATE_EPOCH=1700000000")
    first, _ = build(daemon, context, "--no-cache", *epoch)
    info = inspect(daemon, first)
    assert info["Created"].startswith("2023-11-14T22:13:20")
    # the RUN writes the time: only SOURCE_DATE_EPOCH's clamping of mtimes makes layers match
    context.joinpath("Dockerfile").write_text("FROM busybox\nCOPY . /src\nRUN mkdir -p /var/made\nENV X=1\n")
    a, _ = build(daemon, context, "--no-cache", *epoch)
    time.sleep(1.1)
    b, _ = build(daemon, context, "--no-cache", *epoch)
    assert a == b
    assert inspect(daemon, a)["RootFS"]["Layers"] == inspect(daemon, b)["RootFS"]["Layers"]
    without, _ = build(daemon, context, "--no-cache")
    assert without != a


def test_multi_stage_target_and_copy_from(daemon: Daemon, busybox: str, scratch: Path) -> None:
    context = write_context(
        scratch / "ctx",
        {
            "Dockerfile": """
                FROM busybox AS base
                RUN echo base > /base

                FROM busybox AS unused
                RUN echo this stage is not needed && false

                FROM base AS builder
                ARG FLAVOUR=plain
                RUN echo "built $FLAVOUR" > /artifact

                FROM scratch AS files
                COPY --from=builder /artifact /from-builder

                FROM busybox
                COPY --from=builder /artifact /artifact
                COPY --from=0 /base /base
                COPY --from=files /from-builder /via-scratch
                COPY --from=busybox /bin/busybox /copied-busybox
                CMD ["cat", "/artifact"]
            """
        },
    )
    image_id, log = build(daemon, context, "-t", "stages:1", "--build-arg", "FLAVOUR=fancy")
    assert "this stage is not needed" not in log
    # stages build in parallel, but their steps print in order, numbered over the stages built
    numbers = [int(line.split()[1].split("/")[0]) for line in log.splitlines() if line.startswith("Step ")]
    assert numbers == list(range(1, 14))
    assert sh(daemon, "stages:1", "cat /artifact /base /via-scratch; test -x /copied-busybox && echo bb") == (
        "built fancy\nbase\nbuilt fancy\nbb\n"
    )
    _, log = build(daemon, context, "-t", "stages:builder", "--target", "builder")
    assert "Step 1/5 : FROM busybox AS base" in log and "Step 5/5 : RUN" in log
    assert sh(daemon, "stages:builder", "cat /artifact /base") == "built plain\nbase\n"
    _, log = build(daemon, context, "--target", "nosuchstage", check=False)
    assert "failed to reach build target nosuchstage in Dockerfile" in log
    _, log = build(daemon, context, "--target", "unused", check=False)
    assert "returned a non-zero code: 1" in log


def test_run_mounts(daemon: Daemon, busybox: str, scratch: Path) -> None:
    context = write_context(
        scratch / "ctx",
        {
            "Dockerfile": """
                FROM busybox AS other
                RUN echo from-stage > /stage-file

                FROM busybox
                RUN --mount=type=cache,target=/cache sh -c 'echo run >> /cache/log; wc -l < /cache/log > /count'
                RUN --mount=type=tmpfs,target=/scratchpad sh -c 'touch /scratchpad/x && grep -q " /scratchpad tmpfs" /proc/mounts && echo tmpfs > /tmpfs-seen'
                RUN --mount=type=bind,source=data,target=/mnt cat /mnt/in.txt > /from-bind
                RUN --mount=type=bind,from=other,source=/stage-file,target=/sf cat /sf > /from-stage
                RUN --mount=type=secret,id=token sh -c 'cat /run/secrets/token 2>/dev/null > /secret-state || echo no-secret > /secret-state'
            """,
            "data/in.txt": "bound\n",
        },
    )
    build(daemon, context, "-t", "mounts:1")
    secret = scratch / "token.txt"
    secret.write_text("s3cret")
    build(daemon, context, "-t", "mounts:2", "--no-cache", "--secret", f"id=token,src={secret}")
    script = (
        "cat /count /tmpfs-seen /from-bind /from-stage /secret-state;"
        "for p in /cache /scratchpad /mnt /sf /run/secrets; do test -e $p && echo left $p; done; true"
    )
    assert sh(daemon, "mounts:1", script) == "1\ntmpfs\nbound\nfrom-stage\nno-secret\n"
    # the cache mount kept what the first build wrote; the secret was there, and is not in the image
    assert sh(daemon, "mounts:2", "cat /count /secret-state; test -e /run/secrets/token || echo gone") == (
        "2\ns3cretgone\n"
    )


def test_dockerignore_applies_on_both_sides(daemon: Daemon, busybox: str, scratch: Path) -> None:
    files = {
        "Dockerfile": "FROM busybox\nCOPY . /ctx\n",
        ".dockerignore": "*.log\nsecret/\n!keep.log\n**/*.tmp\n",
        "a.txt": "a",
        "x.log": "x",
        "keep.log": "k",
        "secret/key": "s",
        "deep/dir/junk.tmp": "j",
        "deep/dir/ok.txt": "o",
    }
    context = write_context(scratch / "ctx", files)
    build(daemon, context, "-t", "ignored:1")
    listing = sh(daemon, "ignored:1", "cd /ctx && find . -type f | sort")
    assert listing == "./.dockerignore\n./Dockerfile\n./a.txt\n./deep/dir/ok.txt\n./keep.log\n"

    # a client that sends everything (the tar below ignores nothing): the daemon applies the file
    body = io.BytesIO()
    with tarfile.open(fileobj=body, mode="w") as tar:
        for name, content in files.items():
            data = content.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    messages = list(Client(daemon.host).stream("POST", "/build", {"t": "ignored:2"}, body=body.getvalue()))
    assert not [m for m in messages if "error" in m], messages
    assert sh(daemon, "ignored:2", "cd /ctx && find . -type f | sort") == listing


def test_build_api_stream_and_options(daemon: Daemon, busybox: str, scratch: Path) -> None:
    body = io.BytesIO()
    with tarfile.open(fileobj=body, mode="w") as tar:
        data = b"FROM busybox\nARG A\nRUN echo out-$A\n"
        info = tarfile.TarInfo("custom.Dockerfile")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    client = Client(daemon.host)
    query = [
        ("t", "api:1"),
        ("t", "api:2"),
        ("dockerfile", "custom.Dockerfile"),
        ("buildargs", json.dumps({"A": "x", "UNUSED": "y"})),
        ("labels", json.dumps({"built.by": "test"})),
    ]
    messages = list(client.stream("POST", "/build", query, body=body.getvalue()))
    streams = "".join(m.get("stream", "") for m in messages)
    assert "Step 1/4 : FROM busybox\n" in streams
    assert "out-x\n" in streams
    assert 'Step 4/4 : LABEL "built.by"="test"' in streams
    assert "[Warning] One or more build-args [UNUSED] were not consumed" in streams
    image_id = next(m["aux"]["ID"] for m in messages if "aux" in m)
    assert f"Successfully built {image_id[7:19]}\n" in streams
    assert "Successfully tagged api:1\n" in streams and "Successfully tagged api:2\n" in streams
    assert inspect(daemon, "api:2")["Config"]["Labels"] == {"built.by": "test"}

    quiet = list(client.stream("POST", "/build", [("q", "1"), *query[2:]], body=body.getvalue()))
    assert [m for m in quiet if "stream" in m] == [{"stream": f"{image_id}\n"}]

    failed = list(
        client.stream("POST", "/build", {}, body=_single("Dockerfile", b"FROM busybox\nRUN exit 3\n"))
    )
    assert failed[-1]["errorDetail"] == {
        "message": "The command '/bin/sh -c exit 3' returned a non-zero code: 3",
        "code": 3,
    }
    assert failed[-1]["error"] == "The command '/bin/sh -c exit 3' returned a non-zero code: 3"

    prune = client.json("POST", "/build/prune")
    assert prune["SpaceReclaimed"] >= 0 and prune["CachesDeleted"]
    assert daemon.kapal("run", "--rm", "api:1", "true").returncode == 0


def _single(name: str, data: bytes) -> bytes:
    body = io.BytesIO()
    with tarfile.open(fileobj=body, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return body.getvalue()


def test_cache_from_an_image_loaded_elsewhere(daemon: Daemon, busybox: str, scratch: Path) -> None:
    context = write_context(
        scratch / "ctx", {"Dockerfile": CACHED_DOCKERFILE, "a.txt": "a\n", "b.txt": "b\n"}
    )
    original, _ = build(daemon, context, "-t", "source:1")
    archive = scratch / "source.tar"
    daemon.kapal("save", "-o", str(archive), "source:1")
    daemon.kapal("rmi", "source:1")
    daemon.kapal("builder", "prune", "-f")
    daemon.kapal("load", "-i", str(archive))
    # the local cache is gone: only the loaded image can make the steps cached
    rebuilt, log = build(daemon, context, "--cache-from", "source:1")
    assert steps_cached(log) == (6, 6)
    assert rebuilt == original
    daemon.kapal("builder", "prune", "-f")
    _, log = build(daemon, context)
    assert steps_cached(log) == (6, 0)
