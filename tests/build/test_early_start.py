"""A build starts on its Dockerfile while the rest of the context is still arriving.

The body is sent by hand (chunked, in parts) so a test can hold the rest of the context
back until the daemon shows it ran a step: the build cache (``/system/df``) gains that
step's record while the request body is still incomplete.
"""

from __future__ import annotations

import http.client
import io
import json
import socket
import tarfile
import time
import urllib.parse
from pathlib import Path

from build_helpers import sh
from conftest import Daemon

from kapal.cli.client import Client


def member(name: str, data: bytes) -> bytes:
    """One tar member (header and padded content), no end-of-archive blocks."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 1_600_000_000
    return info.tobuf(tarfile.PAX_FORMAT) + data + b"\0" * (-len(data) % tarfile.BLOCKSIZE)


END = b"\0" * (2 * tarfile.BLOCKSIZE)


class ChunkedBuild:
    """``POST /build`` whose body goes out part by part."""

    def __init__(self, daemon: Daemon, query: dict[str, str] | None = None) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(str(daemon.socket))
        path = "/build?" + urllib.parse.urlencode(query or {})
        self.sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: kapal\r\nConnection: close\r\n"
            "Content-Type: application/x-tar\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        )

    def send(self, data: bytes) -> None:
        self.sock.sendall(b"%x\r\n%s\r\n" % (len(data), data))

    def finish(self) -> tuple[int, list[dict]]:
        """The end of the body; returns the status and the JSON messages (or the error document)."""
        try:
            self.sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):  # answered already (an error)
            pass
        response = http.client.HTTPResponse(self.sock)
        response.begin()
        body = response.read().decode()
        self.sock.close()
        return response.status, [json.loads(line) for line in body.splitlines() if line.strip()]


def cache_records(daemon: Daemon) -> int:
    return len(Client(daemon.host).json("GET", "/system/df")["BuildCache"] or [])


def wait_for_cache_records(daemon: Daemon, count: int) -> None:
    """Until the daemon has *count* build cache records (a liveness deadline, not a speed check)."""
    deadline = time.monotonic() + 60
    while cache_records(daemon) < count:
        assert time.monotonic() < deadline, "the build did not start before the context was complete"
        time.sleep(0.05)


def test_steps_run_while_the_context_arrives(daemon: Daemon, busybox: str, scratch: Path) -> None:
    dockerfile = b"FROM busybox\nRUN echo early > /early\nCOPY late.txt /late.txt\nRUN cat /late.txt\n"
    request = ChunkedBuild(daemon, {"t": "early:1"})
    request.send(member("Dockerfile", dockerfile))
    wait_for_cache_records(daemon, 1)  # the first RUN ran; the COPY waits for late.txt
    request.send(member("late.txt", b"arrived late\n") + END)
    status, messages = request.finish()
    assert status == 200
    streams = "".join(m.get("stream", "") for m in messages)
    steps = [line for line in streams.splitlines() if line.startswith("Step ")]
    assert steps == [
        "Step 1/4 : FROM busybox",
        "Step 2/4 : RUN echo early > /early",
        "Step 3/4 : COPY late.txt /late.txt",
        "Step 4/4 : RUN cat /late.txt",
    ]
    assert "arrived late\n" in streams and "Successfully tagged early:1\n" in streams
    assert sh(daemon, "early:1", "cat /early /late.txt") == "early\narrived late\n"


def test_a_context_that_breaks_after_the_dockerfile_tags_nothing(
    daemon: Daemon, busybox: str, scratch: Path
) -> None:
    request = ChunkedBuild(daemon, {"t": "broken:1"})
    request.send(member("Dockerfile", b"FROM busybox\nRUN echo done > /done\n"))
    wait_for_cache_records(daemon, 1)  # every step ran: only registering the image is left
    bad = bytearray(member("next.txt", b"x"))
    bad[148:156] = b"0000000\0"  # a wrong header checksum
    request.send(bytes(bad) + END)
    status, document = request.finish()
    assert status == 400
    assert "not a valid tar archive" in document[0]["message"]
    assert daemon.kapal("image", "inspect", "broken:1", check=False).returncode != 0
    # the daemon goes on building: the same Dockerfile, whole this time, hits the cache
    again = ChunkedBuild(daemon, {"t": "broken:1"})
    again.send(member("Dockerfile", b"FROM busybox\nRUN echo done > /done\n") + END)
    status, messages = again.finish()
    assert status == 200 and any(m.get("stream") == " ---> Using cache\n" for m in messages)


def test_a_later_entry_of_the_dockerfile_wins(daemon: Daemon, busybox: str, scratch: Path) -> None:
    """A tar may name a file twice; the last one is the file, so the early build is dropped."""
    request = ChunkedBuild(daemon, {"t": "twice:1"})
    request.send(member("Dockerfile", b"FROM busybox\nRUN echo first > /which\n"))
    wait_for_cache_records(daemon, 1)
    request.send(member("Dockerfile", b"FROM busybox\nRUN echo second > /which\n") + END)
    status, messages = request.finish()
    assert status == 200
    streams = "".join(m.get("stream", "") for m in messages)
    assert "first" not in streams and "Step 2/2 : RUN echo second > /which\n" in streams
    assert sh(daemon, "twice:1", "cat /which") == "second\n"


def test_a_dockerfile_that_does_not_parse_is_still_an_http_error(
    daemon: Daemon, busybox: str, scratch: Path
) -> None:
    body = io.BytesIO()
    body.write(member("Dockerfile", b"FROM busybox\nNOPE x\n") + member("f", b"f") + END)
    status, document = _post(daemon, body.getvalue())
    assert status == 400 and "unknown instruction: NOPE" in document[0]["message"]


def _post(daemon: Daemon, body: bytes) -> tuple[int, list[dict]]:
    request = ChunkedBuild(daemon)
    request.send(body)
    return request.finish()
