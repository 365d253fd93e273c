"""The attach/exec connection hijack, driven over a real Unix socket by raw and docker-py clients.

A small aiohttp app, served by a background event loop, hijacks
``POST /vX.Y/containers/{name}/attach``. Its handler echoes stdin back
upper-cased as stdout, reports each chunk's size on stderr, and on stdin EOF
writes "bye" and half-closes. The clients are plain blocking sockets, so every
byte on the wire is what the test sends and asserts, as with the docker CLI.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from kapal.daemon.hijack import (
    MULTIPLEXED_STREAM,
    RAW_STREAM,
    STDERR,
    STDOUT,
    HijackedConnection,
    frame,
    hijack,
)

ATTACH_QUERY = "stream=1&stdin=1&stdout=1&stderr=1"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def echo(connection: HijackedConnection) -> None:
    """Upper-cased stdin on stdout and its size on stderr, then "bye" and EOF once stdin ends."""
    while chunk := await connection.reader.read(65536):
        await connection.write(chunk.upper(), STDOUT)
        await connection.write(b"got %d\n" % len(chunk), STDERR)
    await connection.write(b"bye\n", STDOUT)
    await connection.close_write()


class Server:
    """The test app on a Unix socket, run by an event loop in a thread of its own.

    Each handler records how it ended in ``outcome[name]`` and sets
    ``done[name]``. An exception that escapes a handler goes to ``errors``, and
    the test fails on it.
    """

    def __init__(self, directory: Path) -> None:
        self.path = str(directory / "hijack.sock")
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="hijack-server", daemon=True)
        self.done: dict[str, threading.Event] = {
            name: threading.Event() for name in ("attach", "exec", "flood", "halfclose")
        }
        self.outcome: dict[str, Any] = {}
        self.errors: list[BaseException] = []
        self.runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.on_response_prepare.append(self._add_headers)
        prefix = r"/v{api_version:[0-9]+(?:\.[0-9]+)*}"
        routes = (
            ("/containers/flood/attach", "flood", self.flood),
            ("/containers/halfclose/attach", "halfclose", self.halfclose),
            ("/containers/{name}/attach", "attach", self.attach),
            ("/exec/{name}/start", "exec", self.exec_start),
        )
        for path, name, handler in routes:
            app.router.add_post(prefix + path, self._recorded(name, handler))
        return app

    @staticmethod
    async def _add_headers(request: web.Request, response: web.StreamResponse) -> None:
        """What kapal's app adds to every response; the 101 must carry them too."""
        response.headers["Api-Version"] = "1.47"
        response.headers["Ostype"] = "linux"
        response.headers["Server"] = "Docker/test (linux)"

    def _recorded(self, name: str, handler: Handler) -> Handler:
        async def run(request: web.Request) -> web.StreamResponse:
            try:
                return await handler(request)
            except BaseException as error:
                self.errors.append(error)
                raise
            finally:
                self.done[name].set()

        return run

    async def attach(self, request: web.Request) -> web.StreamResponse:
        response, connection = await hijack(request, multiplexed=request.query.get("tty") != "1")
        await echo(connection)
        self.outcome["attach"] = "finished"
        return response

    async def exec_start(self, request: web.Request) -> web.StreamResponse:
        options = await request.json()
        self.outcome["exec options"] = options
        response, connection = await hijack(request, multiplexed=not options.get("Tty"))
        await echo(connection)
        return response

    async def flood(self, request: web.Request) -> web.StreamResponse:
        """Writes until the client goes away; the test then checks this ended quietly."""
        response, connection = await hijack(request, multiplexed=True)
        block = b"x" * 65536
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while not connection.closed and loop.time() < deadline:
            await connection.write(block)
        self.outcome["flood"] = "client gone" if connection.closed else "timed out"
        return response

    async def halfclose(self, request: web.Request) -> web.StreamResponse:
        """Half-closes first, then still reads what the client sends."""
        response, connection = await hijack(request, multiplexed=True)
        await connection.write(b"ready\n")
        await connection.close_write()
        self.outcome["halfclose"] = await connection.reader.read()
        return response

    def start(self) -> None:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)

    async def _start(self) -> None:
        self.runner = web.AppRunner(self.app(), shutdown_timeout=1)
        await self.runner.setup()
        await web.UnixSite(self.runner, self.path).start()

    def stop(self) -> None:
        if self.runner is not None:
            asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    instance = Server(tmp_path)
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()
    assert instance.errors == []


def connect(server: Server) -> socket.socket:
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.settimeout(10)
    client.connect(server.path)
    return client


def request(path: str, *headers: str, body: bytes = b"") -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: docker", *headers]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


UPGRADE = ("Connection: Upgrade", "Upgrade: tcp")


def read_head(client: socket.socket) -> tuple[bytes, list[tuple[str, str]]]:
    """The status line and headers, read byte by byte so no stream byte is consumed."""
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        byte = client.recv(1)
        assert byte, f"EOF inside the response head: {head!r}"
        head += byte
    status, *lines = head[:-4].split(b"\r\n")
    headers = []
    for line in lines:
        name, _, value = line.decode().partition(":")
        headers.append((name.lower(), value.strip()))
    return status, headers


def read_exactly(client: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = client.recv(size - len(data))
        assert chunk, f"EOF after {data!r}"
        data += chunk
    return data


def read_frame(client: socket.socket) -> tuple[int, bytes]:
    stream, size = struct.unpack(">BxxxL", read_exactly(client, 8))
    return stream, read_exactly(client, size)


def read_to_eof(client: socket.socket) -> bytes:
    data = b""
    while chunk := client.recv(65536):
        data += chunk
    return data


def test_frame_header() -> None:
    assert frame(STDERR, b"abc") == b"\x02\x00\x00\x00\x00\x00\x00\x03abc"
    assert frame(STDOUT, b"x" * 70000)[:8] == bytes([1, 0, 0, 0]) + (70000).to_bytes(4, "big")


def test_upgrade_with_stdin_in_the_same_send(server: Server) -> None:
    # The stdin bytes even look like an HTTP request: they must reach the handler, not aiohttp's parser.
    stdin = b"GET /v1.47/_ping HTTP/1.1\r\nHost: docker\r\n\r\n"
    with connect(server) as client:
        client.sendall(request(f"/v1.47/containers/x/attach?{ATTACH_QUERY}", *UPGRADE) + stdin)
        status, headers = read_head(client)
        assert status == b"HTTP/1.1 101 UPGRADED"
        fields = dict(headers)
        assert fields["content-type"] == MULTIPLEXED_STREAM
        assert fields["connection"] == "Upgrade"
        assert fields["upgrade"] == "tcp"
        assert fields["api-version"] == "1.47"
        assert fields["ostype"] == "linux"
        assert "content-length" not in fields
        assert "transfer-encoding" not in fields

        assert read_frame(client) == (STDOUT, stdin.upper())
        assert read_frame(client) == (STDERR, b"got %d\n" % len(stdin))
        client.sendall(b"more")
        assert read_frame(client) == (STDOUT, b"MORE")
        assert read_frame(client) == (STDERR, b"got 4\n")

        client.shutdown(socket.SHUT_WR)
        assert read_frame(client) == (STDOUT, b"bye\n")
        assert client.recv(1) == b""
    assert server.done["attach"].wait(10)
    assert server.outcome["attach"] == "finished"


def test_exec_start_body_then_stdin_in_the_same_send(server: Server) -> None:
    body = b'{"Detach":false,"Tty":false}'
    with connect(server) as client:
        client.sendall(
            request("/v1.47/exec/abc/start", "Content-Type: application/json", *UPGRADE, body=body)
            + b"stdin after the body"
        )
        status, headers = read_head(client)
        assert status == b"HTTP/1.1 101 UPGRADED"
        assert dict(headers)["content-type"] == MULTIPLEXED_STREAM
        assert read_frame(client) == (STDOUT, b"STDIN AFTER THE BODY")
        assert read_frame(client) == (STDERR, b"got 20\n")
        client.shutdown(socket.SHUT_WR)
        assert read_frame(client) == (STDOUT, b"bye\n")
        assert client.recv(1) == b""
    assert server.outcome["exec options"] == {"Detach": False, "Tty": False}


def test_docker_py_attach_socket(server: Server) -> None:
    docker = pytest.importorskip("docker")
    from docker.utils.socket import frames_iter

    api = docker.APIClient(base_url=f"unix://{server.path}", version="1.47", timeout=10)
    try:
        attached = api.attach_socket("x", params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
        raw = attached._sock
        raw.sendall(b"from docker-py")
        raw.shutdown(socket.SHUT_WR)
        streams: dict[int, bytes] = {STDOUT: b"", STDERR: b""}
        for stream, data in frames_iter(attached, tty=False):
            streams[stream] += data
        # Close in http.client's order: the socket, then the response that owns the SocketIO
        # (docker-py keeps it on the socket as _response).
        raw.close()
        attached._response.close()
    finally:
        api.close()
    assert streams == {STDOUT: b"FROM DOCKER-PY" + b"bye\n", STDERR: b"got 14\n"}


def test_without_upgrade_header_answers_200_and_streams(server: Server) -> None:
    with connect(server) as client:
        client.sendall(request(f"/v1.47/containers/x/attach?{ATTACH_QUERY}", "Content-Length: 0"))
        status, headers = read_head(client)
        assert status == b"HTTP/1.1 200 OK"
        fields = dict(headers)
        assert fields["content-type"] == RAW_STREAM
        assert fields["connection"] == "close"
        assert fields["api-version"] == "1.47"
        assert "content-length" not in fields
        assert "transfer-encoding" not in fields
        assert "upgrade" not in fields

        client.sendall(b"abc")
        assert read_frame(client) == (STDOUT, b"ABC")
        assert read_frame(client) == (STDERR, b"got 3\n")
        client.shutdown(socket.SHUT_WR)
        assert read_frame(client) == (STDOUT, b"bye\n")
        assert client.recv(1) == b""


def test_old_api_version_gets_the_raw_content_type(server: Server) -> None:
    """Before API 1.42 dockerd labels even multiplexed streams raw; the frames stay."""
    with connect(server) as client:
        client.sendall(request(f"/v1.41/containers/x/attach?{ATTACH_QUERY}", *UPGRADE) + b"q")
        status, headers = read_head(client)
        assert status == b"HTTP/1.1 101 UPGRADED"
        assert dict(headers)["content-type"] == RAW_STREAM
        assert read_frame(client) == (STDOUT, b"Q")


def test_tty_stream_is_raw(server: Server) -> None:
    with connect(server) as client:
        client.sendall(request(f"/v1.47/containers/x/attach?tty=1&{ATTACH_QUERY}", *UPGRADE))
        status, headers = read_head(client)
        assert status == b"HTTP/1.1 101 UPGRADED"
        assert dict(headers)["content-type"] == RAW_STREAM
        client.sendall(b"hi")
        assert read_exactly(client, 8) == b"HIgot 2\n"
        client.shutdown(socket.SHUT_WR)
        assert read_to_eof(client) == b"bye\n"


def test_server_half_close_still_reads_stdin(server: Server) -> None:
    with connect(server) as client:
        client.sendall(request(f"/v1.47/containers/halfclose/attach?{ATTACH_QUERY}", *UPGRADE))
        assert read_head(client)[0] == b"HTTP/1.1 101 UPGRADED"
        assert read_frame(client) == (STDOUT, b"ready\n")
        assert client.recv(1) == b"", "the server's close_write() must reach the client as EOF"
        client.sendall(b"late stdin")
        client.shutdown(socket.SHUT_WR)
        assert server.done["halfclose"].wait(10)
        assert client.recv(1) == b""
    assert server.outcome["halfclose"] == b"late stdin"


def test_client_disconnect_mid_stream_is_quiet(server: Server, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    with connect(server) as client:
        client.sendall(request(f"/v1.47/containers/flood/attach?{ATTACH_QUERY}", *UPGRADE))
        assert read_head(client)[0] == b"HTTP/1.1 101 UPGRADED"
        assert read_frame(client)[0] == STDOUT
        read_exactly(client, 200000)
    assert server.done["flood"].wait(15)
    assert server.outcome["flood"] == "client gone"
    assert [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING] == []
