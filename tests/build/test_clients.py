"""Real clients build against kapald: the docker CLI (legacy builder), docker-py, and kapal's own CLI."""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

import pytest
from build_helpers import build, docker_env, inspect, sh, steps_cached, write_context
from conftest import KAPAL, Daemon

APP_DOCKERFILE = """
    FROM busybox
    ARG VERSION=0
    LABEL org.example.version=$VERSION
    WORKDIR /app
    COPY src/ ./
    RUN sed -i "s/VERSION/$VERSION/" greeting.txt && chmod 0640 greeting.txt
    EXPOSE 8080
    CMD ["cat", "/app/greeting.txt"]
"""


def _app(directory: Path) -> Path:
    return write_context(
        directory,
        {
            "Dockerfile": APP_DOCKERFILE,
            "src/greeting.txt": "hello VERSION\n",
            "src/lib/util.sh": "echo util\n",
        },
    )


def test_docker_cli_legacy_builder(daemon: Daemon, busybox: str, scratch: Path) -> None:
    import shutil

    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("the docker CLI is not installed")
    context = _app(scratch / "ctx")
    kapal_id, _ = build(daemon, context, "--build-arg", "VERSION=7", "-t", "app:kapal")

    def docker_build(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [docker, "-H", daemon.host, "build", *args],
            capture_output=True,
            timeout=120,
            env={**docker_env(), "DOCKER_CONFIG": str(scratch / "docker-config")},
        )

    result = docker_build("--build-arg", "VERSION=7", "-t", "app:docker", str(context))
    assert result.returncode == 0, result.stderr.decode()
    log = result.stdout.decode()
    # the docker CLI's context tar has other mtimes and owners: the cache keys on content only
    assert steps_cached(log) == (7, 7)
    assert f"Successfully built {kapal_id[7:19]}" in log
    assert "Successfully tagged app:docker" in log
    assert daemon.docker("run", "--rm", "app:docker").stdout == b"hello 7\n"

    fresh = docker_build("-q", "--no-cache", "--build-arg", "VERSION=8", str(context))
    assert fresh.returncode == 0, fresh.stderr.decode()
    image_id = fresh.stdout.decode().strip()
    assert image_id.startswith("sha256:")
    info = inspect(daemon, image_id)
    assert info["Config"]["Labels"] == {"org.example.version": "8"}
    assert info["Config"]["WorkingDir"] == "/app"
    assert info["Config"]["ExposedPorts"] == {"8080/tcp": {}}
    assert sh(daemon, image_id, "stat -c '%a %n' /app/greeting.txt; cat /app/lib/util.sh") == (
        "640 /app/greeting.txt\necho util\n"
    )

    failed = docker_build(str(write_context(scratch / "bad", {"Dockerfile": "FROM busybox\nRUN exit 2\n"})))
    assert failed.returncode == 2  # the failed RUN's code, as with dockerd
    assert "The command '/bin/sh -c exit 2' returned a non-zero code: 2" in failed.stderr.decode()


def test_docker_py_images_build(daemon: Daemon, busybox: str, scratch: Path) -> None:
    docker = pytest.importorskip("docker")
    context = _app(scratch / "ctx")
    client = docker.DockerClient(base_url=daemon.host, version="auto")
    try:
        image, logs = client.images.build(
            path=str(context), tag="app:py", buildargs={"VERSION": "9"}, rm=True, labels={"via": "docker-py"}
        )
        text = "".join(chunk.get("stream", "") for chunk in logs)
        assert "Step 1/9 : FROM busybox" in text and 'Step 9/9 : LABEL "via"="docker-py"' in text
        assert image.tags == ["app:py"]
        assert image.labels == {"org.example.version": "9", "via": "docker-py"}
        assert client.containers.run("app:py", remove=True) == b"hello 9\n"

        single = io.BytesIO(b"FROM busybox\nENV FROM_FILEOBJ=1\n")
        image, _ = client.images.build(fileobj=single, tag="app:fileobj")
        assert "FROM_FILEOBJ=1" in image.attrs["Config"]["Env"]

        with pytest.raises(docker.errors.BuildError) as raised:
            client.images.build(fileobj=io.BytesIO(b"FROM busybox\nRUN false\n"))
        assert "returned a non-zero code: 1" in str(raised.value)
    finally:
        client.close()


def test_kapal_cli_contexts_and_flags(daemon: Daemon, busybox: str, scratch: Path) -> None:
    context = _app(scratch / "ctx")
    outside = scratch / "elsewhere.Dockerfile"
    outside.write_text("FROM busybox\nCOPY src/greeting.txt /g\n")
    image_id, _ = build(daemon, context, "-f", str(outside), "-t", "cli:outside", "--label", "a=b")
    assert sh(daemon, "cli:outside", "cat /g") == "hello VERSION\n"
    assert inspect(daemon, image_id)["Config"]["Labels"] == {"a": "b"}

    inside = context / "docker" / "Alt.Dockerfile"
    inside.parent.mkdir()
    inside.write_text("FROM busybox\nCOPY src/lib /lib2\n")
    build(daemon, context, "-f", str(inside), "-t", "cli:inside")
    assert sh(daemon, "cli:inside", "cat /lib2/util.sh") == "echo util\n"

    # a Dockerfile on stdin, no context
    quiet = daemon.kapal("build", "-q", "-", input=b"FROM busybox\nENV STDIN=1\n")
    image_id = quiet.stdout.decode().strip()
    assert image_id.startswith("sha256:") and len(quiet.stdout.splitlines()) == 1
    assert "STDIN=1" in inspect(daemon, image_id)["Config"]["Env"]

    # a context tar on stdin
    body = io.BytesIO()
    with tarfile.open(fileobj=body, mode="w:gz") as tar:
        for name, data in (("Dockerfile", b"FROM busybox\nCOPY f /f\n"), ("f", b"from tar\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    daemon.kapal("build", "-t", "cli:tar", "-", input=body.getvalue())
    assert sh(daemon, "cli:tar", "cat /f") == "from tar\n"

    # errors: a one-line message and exit 1
    bad = write_context(scratch / "bad", {"Dockerfile": "FROM busybox\nRUN exit 5\n"})
    result = subprocess.run([KAPAL, "-H", daemon.host, "build", str(bad)], capture_output=True, timeout=120)
    assert result.returncode == 5  # the RUN's code, as docker build exits
    assert result.stderr.decode().strip().splitlines()[-1] == (
        "The command '/bin/sh -c exit 5' returned a non-zero code: 5"
    )
    result = daemon.kapal("build", str(scratch / "nowhere"), check=False)
    assert result.returncode == 1 and b"nowhere" in result.stderr


def test_kapal_build_live_view_on_a_terminal(daemon: Daemon, busybox: str, scratch: Path) -> None:
    import os
    import pty

    context = write_context(scratch / "ctx", {"Dockerfile": "FROM busybox\nRUN echo from-the-run\nENV A=1\n"})
    primary, secondary = pty.openpty()
    process = subprocess.Popen(
        [KAPAL, "-H", daemon.host, "build", "-t", "live:1", str(context)],
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
        env={**os.environ, "TERM": "xterm", "COLUMNS": "100"},
    )
    os.close(secondary)
    output = b""
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    os.close(primary)
    assert process.wait(timeout=60) == 0
    text = output.decode(errors="replace")
    assert "\x1b[" in text  # drawn in place, not the plain log
    assert "Step 3/3 : ENV A=1" in text and "Successfully tagged live:1" in text
    assert "from-the-run" in text
    assert daemon.kapal("image", "inspect", "live:1").returncode == 0
