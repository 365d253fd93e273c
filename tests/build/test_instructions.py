# ruff: noqa: E501 - Dockerfiles and expected messages are kept on one line, as written
"""Every Dockerfile instruction through a real kapald: the image config and the filesystem it makes."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import json
import tarfile
import threading
from pathlib import Path

from build_helpers import build, inspect, sh, write_context
from conftest import Daemon


def test_metadata_instructions_set_the_config(daemon: Daemon, busybox: str, scratch: Path) -> None:
    context = write_context(
        scratch / "ctx",
        {
            "Dockerfile": """
                FROM busybox
                MAINTAINER someone@example.com
                ENV A=1 B="two words"
                ENV C $A-x
                LABEL com.example.a="x y" b=$B
                EXPOSE 80 53/udp 8000-8001
                USER nobody
                VOLUME ["/data", "/logs"]
                STOPSIGNAL SIGQUIT
                HEALTHCHECK --interval=5s --timeout=3s --retries=2 CMD wget -q localhost || exit 1
                SHELL ["/bin/sh", "-e", "-c"]
                ONBUILD RUN echo triggered > /tmp/triggered
                WORKDIR /srv/app
                WORKDIR sub
                ENTRYPOINT ["/bin/echo"]
                CMD hello
            """
        },
    )
    image_id, log = build(daemon, context, "-t", "meta:1")
    assert "Step 16/16 : CMD hello" in log
    info = inspect(daemon, "meta:1")
    assert info["Id"] == image_id
    config = info["Config"]
    assert {"A=1", "B=two words", "C=1-x"} <= set(config["Env"])
    assert config["Labels"] == {"com.example.a": "x y", "b": "two words"}
    assert set(config["ExposedPorts"]) == {"80/tcp", "53/udp", "8000/tcp", "8001/tcp"}
    assert config["User"] == "nobody"
    assert set(config["Volumes"]) == {"/data", "/logs"}
    assert config["StopSignal"] == "SIGQUIT"
    assert config["Healthcheck"] == {
        "Test": ["CMD-SHELL", "wget -q localhost || exit 1"],
        "Interval": 5_000_000_000,
        "Timeout": 3_000_000_000,
        "Retries": 2,
    }
    assert config["Shell"] == ["/bin/sh", "-e", "-c"]
    assert config["OnBuild"] == ["RUN echo triggered > /tmp/triggered"]
    assert config["WorkingDir"] == "/srv/app/sub"
    assert config["Entrypoint"] == ["/bin/echo"]
    assert config["Cmd"] == ["/bin/sh", "-e", "-c", "hello"]
    assert info["Author"] == "someone@example.com"

    history = json.loads(
        daemon.kapal("history", "--no-trunc", "--format", "{{json .}}", "meta:1")
        .stdout.decode()
        .splitlines()[0]
    )
    assert history["CreatedBy"] == '/bin/sh -c #(nop)  CMD ["/bin/sh" "-e" "-c" "hello"]'
    # the two WORKDIRs made directories: one layer each; every other instruction only the config
    assert len(info["RootFS"]["Layers"]) == 3
    output = daemon.kapal("run", "--rm", "meta:1").stdout.decode()
    assert output.strip() == "/bin/sh -e -c hello"
    assert sh(daemon, "meta:1", "pwd; test -d /srv/app/sub && echo dir") == "/srv/app/sub\ndir\n"

    # ONBUILD: the trigger runs in the child build, and the child does not inherit it
    child = write_context(scratch / "child", {"Dockerfile": "FROM meta:1\nUSER root\n"})
    _, log = build(daemon, child, "-t", "child:1")
    assert "# Executing 1 build trigger" in log
    assert sh(daemon, "child:1", "cat /tmp/triggered") == "triggered\n"
    assert inspect(daemon, "child:1")["Config"]["OnBuild"] is None


def test_run_shell_exec_args_user_and_workdir(daemon: Daemon, busybox: str, scratch: Path) -> None:
    context = write_context(
        scratch / "ctx",
        {
            "Dockerfile": """
                ARG BASE=busybox
                FROM $BASE
                ARG GREETING=hello
                ENV WHO=world
                RUN echo "$GREETING $WHO" > /greeting
                RUN ["/bin/sh", "-c", "echo exec > /exec"]
                SHELL ["/bin/sh", "-eu", "-c"]
                RUN echo "$GREETING" > /shell-arg
                USER 65534:65534
                RUN id -u > /tmp/uid
                USER root
                WORKDIR /w
                RUN pwd > pwd && rm /exec
                RUN <<EOF
                echo heredoc > /heredoc
                EOF
            """
        },
    )
    image_id, log = build(daemon, context, "--build-arg", "GREETING=hi", "-t", "runs:1")
    assert "hi world" not in log  # RUN output is the command's, and it printed nothing
    out = sh(
        daemon, "runs:1", "cat /greeting /shell-arg /tmp/uid /w/pwd /heredoc; test -e /exec || echo gone"
    )
    assert out == "hi world\nhi\n65534\n/w\nheredoc\ngone\n"
    info = inspect(daemon, image_id)
    assert not any(item.startswith("GREETING=") for item in info["Config"]["Env"])
    history = daemon.kapal("history", "--no-trunc", "--format", "{{.CreatedBy}}", "runs:1").stdout.decode()
    assert '|1 GREETING=hi /bin/sh -c echo "$GREETING $WHO" > /greeting' in history
    assert "/bin/sh -c echo exec > /exec" in history


def test_copy_and_add_follow_dockers_rules(daemon: Daemon, busybox: str, scratch: Path) -> None:
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        for name, data in (("top.txt", b"top\n"), ("nested/deep.txt", b"deep\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.uid = 1000
            tar.addfile(info, io.BytesIO(data))
    context = write_context(
        scratch / "ctx",
        {
            "Dockerfile": """
                FROM busybox
                COPY a.txt /file-as-name
                COPY a.txt /into/
                COPY dir /copied-dir
                COPY dir/ /copied-dir2/
                COPY *.md /docs/
                COPY --chown=bin:bin a.txt /owned
                COPY --chown=1234 a.txt /owned-num
                COPY --chmod=0600 exec.sh /modes/
                COPY exec.sh /modes/kept.sh
                ADD archive.tar.gz /unpacked/
                COPY archive.tar.gz /not-unpacked/
                WORKDIR /rel
                COPY a.txt here.txt
                COPY <<EOF /heredoc.txt
                inline
                EOF
            """,
            "a.txt": "A\n",
            "dir/x": "X\n",
            "dir/sub/y": "Y\n",
            "one.md": "1\n",
            "two.md": "2\n",
            "exec.sh": "#!/bin/sh\n",
            "archive.tar.gz": gzip.compress(archive.getvalue()),
        },
    )
    (context / "exec.sh").chmod(0o755)
    build(daemon, context, "-t", "copies:1")
    script = (
        "cat /file-as-name /into/a.txt /copied-dir/x /copied-dir/sub/y /copied-dir2/x /docs/one.md /docs/two.md;"
        "stat -c '%n %u:%g %a' /owned /owned-num /modes/exec.sh /modes/kept.sh /unpacked/top.txt;"
        "cat /unpacked/nested/deep.txt /rel/here.txt /heredoc.txt; ls /not-unpacked; test -e /copied-dir/dir || echo no-dir"
    )
    assert sh(daemon, "copies:1", script) == (
        "A\nA\nX\nY\nX\n1\n2\n"
        "/owned 2:2 644\n/owned-num 1234:1234 644\n/modes/exec.sh 0:0 600\n/modes/kept.sh 0:0 755\n"
        "/unpacked/top.txt 1000:0 644\n"
        "deep\nA\ninline\narchive.tar.gz\nno-dir\n"
    )


def test_add_url_with_checksum(daemon: Daemon, busybox: str, scratch: Path) -> None:
    payload = b"downloaded over loopback\n"

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/files/data.txt"
        digest = "sha256:" + hashlib.sha256(payload).hexdigest()
        good = write_context(
            scratch / "good",
            {"Dockerfile": f"FROM busybox\nADD --checksum={digest} {url} /dl/\nADD {url} /named.txt\n"},
        )
        build(daemon, good, "-t", "url:1")
        assert sh(daemon, "url:1", "cat /dl/data.txt; stat -c %a /dl/data.txt /named.txt") == (
            "downloaded over loopback\n600\n600\n"
        )
        bad = write_context(
            scratch / "bad", {"Dockerfile": f"FROM busybox\nADD --checksum=sha256:{'0' * 64} {url} /dl/\n"}
        )
        _, log = build(daemon, bad, check=False)
        assert f"digest mismatch {digest}" in log
    finally:
        server.shutdown()


def test_build_errors_are_dockers(daemon: Daemon, busybox: str, scratch: Path) -> None:
    cases = {
        "FROM busybox\nRUN false\n": "The command '/bin/sh -c false' returned a non-zero code: 1",
        "FROM busybox\nCOPY missing.txt /\n": (
            "COPY failed: file not found in build context or excluded by .dockerignore: "
            "stat missing.txt: file does not exist"
        ),
        "FROM busybox\nCOPY ../outside /\n": "COPY failed: forbidden path outside the build context: ../outside ()",
        "FROM busybox\nCOPY a.txt b.txt /dest\n": (
            "When using COPY with more than one source file, the destination must be a directory and end with a /"
        ),
        "FROM busybox\nCOPY nomatch* /\n": "COPY failed: no source files were specified",
        "FROM busybox\nBOGUS x\n": "unknown instruction: BOGUS",
        # a missing base is pulled: here from a closed port on loopback
        "FROM 127.0.0.1:9/nosuchimage\n": "127.0.0.1:9",
        "FROM busybox\nCOPY --chown=nosuchuser a.txt /\n": "unable to convert uid/gid chown string to host mapping",
    }
    for index, (dockerfile, message) in enumerate(cases.items()):
        context = write_context(
            scratch / f"ctx{index}", {"Dockerfile": dockerfile, "a.txt": "a", "b.txt": "b"}
        )
        _, log = build(daemon, context, check=False)
        assert message in log, (dockerfile, log)
    missing = write_context(scratch / "nodockerfile", {"a.txt": "a"})
    result = daemon.kapal("build", str(missing), check=False)
    assert result.returncode == 1
    assert b"Dockerfile" in result.stderr


def test_predefined_args_network_and_flags(daemon: Daemon, busybox: str, scratch: Path) -> None:
    import platform as host_platform

    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(host_platform.machine(), host_platform.machine())
    context = write_context(
        scratch / "ctx",
        {
            "Dockerfile": """
                FROM busybox
                ARG TARGETARCH
                ARG TARGETPLATFORM
                RUN echo "$TARGETARCH $TARGETPLATFORM" > /platform
                RUN echo "proxy=$http_proxy" > /proxy
                RUN --network=none sh -c 'echo $(ls /sys/class/net) > /net-none'
                RUN --network=host sh -c 'ls /sys/class/net | wc -l > /net-host'
                HEALTHCHECK NONE
                ADD --unpack=false archive.tar /kept/
                ADD archive.tar /unpacked/
            """,
            "archive.tar": _tar_of({"inside.txt": b"in\n"}),
        },
    )
    image_id, _ = build(daemon, context, "--build-arg", "http_proxy=http://proxy.invalid:3128")
    out = sh(daemon, image_id, "cat /platform /proxy /net-none /net-host; ls /kept; ls /unpacked")
    lines = out.splitlines()
    assert lines[0] == f"{arch} linux/{arch}"
    assert lines[1] == "proxy=http://proxy.invalid:3128"
    assert lines[2] == "lo"  # a network namespace of its own, nothing but loopback
    assert int(lines[3]) > 1  # the host's interfaces
    assert lines[4:] == ["archive.tar", "inside.txt"]
    info = inspect(daemon, image_id)
    assert info["Config"]["Healthcheck"] == {"Test": ["NONE"]}
    history = daemon.kapal("history", "--no-trunc", "--format", "{{.CreatedBy}}", image_id).stdout.decode()
    assert "proxy.invalid" not in history  # proxy args reach RUN but never the image
    assert "|2 TARGETARCH=" in history

    refused = write_context(scratch / "refused", {"Dockerfile": "FROM busybox\nCOPY --exclude=*.md . /\n"})
    _, log = build(daemon, refused, check=False)
    assert "dockerfile parse error on line 2: unknown flag: --exclude" in log
    refused = write_context(
        scratch / "parents", {"Dockerfile": "FROM busybox\nRUN true\nCOPY --parents a/b /\n", "a/b": "b"}
    )
    _, log = build(daemon, refused, check=False)
    # refused before any step runs, as the legacy builder's parser refuses it
    assert "Step 1" not in log and "dockerfile parse error on line 3: unknown flag: --parents" in log
    bad_signal = write_context(scratch / "signal", {"Dockerfile": "FROM busybox\nSTOPSIGNAL SIGNOPE\n"})
    _, log = build(daemon, bad_signal, check=False)
    assert "Invalid signal: SIGNOPE" in log


def _tar_of(files: dict[str, bytes]) -> bytes:
    body = io.BytesIO()
    with tarfile.open(fileobj=body, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return body.getvalue()
