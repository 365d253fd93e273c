"""Docker's connection hijack for attach and exec start, on aiohttp.

dockerd answers ``POST /containers/{id}/attach`` and ``POST /exec/{id}/start``
by taking the raw connection away from its HTTP server: it writes
``HTTP/1.1 101 UPGRADED`` (or ``200 OK`` for a client that sent no ``Upgrade``
header), and from then on the socket carries stdin one way and stdout/stderr
the other. The output is raw bytes for a TTY, or Docker's multiplexed frames:
an 8-byte header ``[stream, 0, 0, 0, size as big-endian uint32]`` and then the
payload. Both directions can be half-closed. The docker CLI calls
``CloseWrite()`` when its stdin ends and keeps reading, and the daemon
half-closes its own side when the output ends (``httputils.CloseStreams``).

aiohttp has no public hijack, so this module is the only place in kapal that
touches aiohttp internals. Each one is named and checked by ``_check_aiohttp``
at import, so a different aiohttp fails with a RuntimeError at start-up rather
than with a broken stream at run time:

* ``web_protocol.HttpRequestParser``, the name ``RequestHandler.__init__`` uses
  to build each connection's parser. We rebind it to the pure-Python parser
  (``http_parser.HttpRequestParserPy``) because aiohttp's C parser (3.14) only
  treats ``Upgrade: websocket`` as an upgrade. For ``Upgrade: tcp`` it silently
  drops the bytes that came in the same read as the request headers, then parses
  what comes next as HTTP. The Python parser accepts ``tcp``
  (``http_parser._is_supported_upgrade``) and keeps those bytes in the
  protocol's ``_message_tail``. It costs about 9 µs more per request's headers
  and is no slower on bodies. The rebinding happens when this module is
  imported, so import it before the server accepts connections. ``hijack()``
  refuses a connection whose parser predates that import.
* ``RequestHandler._message_tail``: bytes received after an accepted upgrade,
  which ``RequestHandler.set_parser`` hands to a WebSocket reader. We take them
  directly, because an asyncio protocol of our own replaces aiohttp's on the
  transport (public ``transport.set_protocol``). aiohttp's protocol cannot keep
  a half-closed connection open: its ``eof_received`` returns None, so asyncio
  closes the transport when the client calls CloseWrite. It also uses
  ``__slots__``, so that method cannot be overridden on the instance.
* ``RequestHandler._parser``: read only to verify which parser this connection
  has.
* ``StreamResponse._length_check``: set to False, as ``WebSocketResponse``
  does, so a ``200 OK`` stream gets neither ``Transfer-Encoding: chunked`` nor
  ``Content-Length``.

Our protocol forwards ``connection_lost`` and the write flow-control calls to
aiohttp's protocol. That keeps aiohttp's bookkeeping (server connection set,
graceful shutdown, access log) unchanged. The response is an aiohttp
``StreamResponse`` prepared in the usual way, so the app's
``on_response_prepare`` headers (``Api-Version``, ``Server``, ``Ostype``) are
sent with the 101. The response is marked ``force_close``, so aiohttp closes the
connection when the handler returns and never reads another request from it.

Known limit: a client that half-closes before the hijack (while the handler is
still deciding) gets its connection closed by aiohttp, as described above. The
docker CLI and docker-py both read the 101 before they send stdin, so they never
do this.
"""

from __future__ import annotations

import asyncio
import struct

import aiohttp
from aiohttp import http_parser, web, web_protocol
from multidict import CIMultiDict, CIMultiDictProxy

STDIN, STDOUT, STDERR = 0, 1, 2
MULTIPLEXED_STREAM = "application/vnd.docker.multiplexed-stream"
RAW_STREAM = "application/vnd.docker.raw-stream"
_HEADER = struct.Struct(">BxxxL")
# dockerd labels multiplexed hijacked streams as such from API 1.42 on
# (container_routes.go postContainersAttach, exec.go postContainerExecStart).
_MULTIPLEXED_CONTENT_TYPE_SINCE = (1, 42)


def frame(stream: int, data: bytes) -> bytes:
    """One multiplexed frame: the 8-byte header docker-py and Go's stdcopy parse, then *data*."""
    return _HEADER.pack(stream, len(data)) + data


def _check_aiohttp() -> type:
    """Verify the aiohttp internals listed in the module docstring, and return the Python parser class."""
    problems = []
    if not hasattr(web_protocol, "HttpRequestParser"):
        problems.append("aiohttp.web_protocol.HttpRequestParser")
    python_parser = getattr(http_parser, "HttpRequestParserPy", None)
    if python_parser is None:
        problems.append("aiohttp.http_parser.HttpRequestParserPy")
    supported = getattr(http_parser, "_is_supported_upgrade", None)
    if supported is None or not supported(CIMultiDictProxy(CIMultiDict({"Upgrade": "tcp"}))):
        problems.append("aiohttp.http_parser._is_supported_upgrade accepting 'Upgrade: tcp'")
    for slot in ("_message_tail", "_parser", "_upgraded"):
        if not hasattr(web_protocol.RequestHandler, slot):
            problems.append(f"aiohttp.web_protocol.RequestHandler.{slot}")
    if not hasattr(web_protocol.RequestHandler, "writing_paused"):
        problems.append("aiohttp.base_protocol.BaseProtocol.writing_paused")
    if not hasattr(web.StreamResponse, "_length_check"):
        problems.append("aiohttp.web.StreamResponse._length_check")
    if problems:
        raise RuntimeError(
            f"kapal.daemon.hijack cannot hijack connections with aiohttp {aiohttp.__version__}: "
            f"missing {', '.join(problems)}"
        )
    assert python_parser is not None
    return python_parser


_PYTHON_PARSER = _check_aiohttp()
# RequestHandler.__init__ looks this name up for every new connection: see the module docstring.
web_protocol.HttpRequestParser = _PYTHON_PARSER  # type: ignore[misc]


class _StreamingResponse(web.StreamResponse):
    """A response whose body is an unframed stream: no chunked encoding, no Content-Length.

    aiohttp's ``WebSocketResponse`` switches aiohttp's length bookkeeping off
    the same way.
    """

    _length_check = False


class _HijackProtocol(asyncio.Protocol):
    """The transport's protocol after the hijack: stdin to a StreamReader, half-close kept open."""

    def __init__(self, connection: HijackedConnection, previous: web_protocol.RequestHandler) -> None:
        self._connection = connection
        self._previous = previous
        self._eof = False
        self.paused = previous.writing_paused
        self.waiters: list[asyncio.Future[None]] = []

    def data_received(self, data: bytes) -> None:
        if not self._eof:
            self._connection.reader.feed_data(data)

    def eof_received(self) -> bool:
        """The client called CloseWrite: stdin ends, but keep the transport open for output."""
        self._eof = True
        self._connection.reader.feed_eof()
        return True

    def pause_writing(self) -> None:
        self.paused = True
        # aiohttp's protocol saw the calls before the swap; keep its state in step.
        self._previous.pause_writing()

    def resume_writing(self) -> None:
        self.paused = False
        self._previous.resume_writing()
        self._wake()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._connection.closed = True
        if not self._eof:
            self._eof = True
            self._connection.reader.feed_eof()
        self._wake()
        # aiohttp removes the connection from its server and wakes its own waiters.
        self._previous.connection_lost(exc)

    def _wake(self) -> None:
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)


class HijackedConnection:
    """The client's connection after the hijack: stdin in ``reader``, output through ``write``.

    ``closed`` means the connection is gone: the client disconnected, or
    ``close()`` was called. After that, writes are dropped silently. A
    container's output has nobody left to read it, which is not an error.
    """

    def __init__(
        self, reader: asyncio.StreamReader, transport: asyncio.Transport | None, multiplexed: bool
    ) -> None:
        self.reader = reader
        self.multiplexed = multiplexed
        self.closed = transport is None or transport.is_closing()
        self._transport = transport
        self._protocol: _HijackProtocol | None = None
        self._write_closed = False

    async def write(self, data: bytes, stream: int = STDOUT) -> None:
        """Send *data*: one frame on *stream* when multiplexed, raw bytes otherwise.

        Waits while the client reads slowly. Never raises because the client is
        gone (that sets ``closed``). Writes after ``close_write()`` are dropped.
        """
        transport = self._transport
        if not data or self.closed or self._write_closed or transport is None:
            return
        if transport.is_closing():
            self.closed = True
            return
        transport.write(frame(stream, data) if self.multiplexed else data)
        await self._drain()

    async def _drain(self) -> None:
        protocol = self._protocol
        loop = asyncio.get_running_loop()
        while protocol is not None and protocol.paused and not self.closed:
            waiter: asyncio.Future[None] = loop.create_future()
            protocol.waiters.append(waiter)
            await waiter

    async def close_write(self) -> None:
        """Half-close our side once the output is flushed, as moby's ``CloseStreams`` does.

        The client sees EOF on its reads. ``reader`` keeps delivering what the
        client sends until it half-closes too.
        """
        transport = self._transport
        if self.closed or self._write_closed or transport is None:
            return
        self._write_closed = True
        if transport.is_closing():
            self.closed = True
            return
        try:
            if transport.can_write_eof():
                transport.write_eof()
            else:
                transport.close()
        except OSError:
            # shutdown(SHUT_WR) on a socket whose peer already went away.
            self.closed = True

    async def close(self) -> None:
        """Close the connection, after flushing what was written. aiohttp would close it anyway at return."""
        self._write_closed = True
        self.closed = True
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()


def _wants_multiplexed_content_type(request: web.Request) -> bool:
    """Whether the request's API version is one dockerd labels multiplexed streams for (>= 1.42)."""
    version = request.match_info.get("api_version")
    if not version:
        return True
    try:
        return tuple(int(part) for part in version.split(".")) >= _MULTIPLEXED_CONTENT_TYPE_SINCE
    except ValueError:
        return True


def _take_over(request: web.Request, connection: HijackedConnection) -> None:
    """Replace aiohttp's protocol on the transport with ours and hand over the buffered bytes.

    This runs synchronously, with no await, so no byte can arrive between
    taking the message tail and installing our protocol.
    """
    transport = request.transport
    previous = request.protocol
    tail = previous._message_tail
    previous._message_tail = b""
    if transport is None or transport.is_closing():
        # Gone before the hijack (or half-closed, which aiohttp treats as gone): what
        # the client sent is still its stdin, but nothing can be sent back.
        connection.closed = True
        if tail:
            connection.reader.feed_data(tail)
        connection.reader.feed_eof()
        return
    protocol = _HijackProtocol(connection, previous)
    connection._protocol = protocol
    transport.set_protocol(protocol)
    connection.reader.set_transport(transport)
    # aiohttp may have paused reading while the tail grew; from now on the reader's own
    # flow control pauses and resumes the transport.
    transport.resume_reading()
    if tail:
        connection.reader.feed_data(tail)


async def hijack(request: web.Request, multiplexed: bool) -> tuple[web.StreamResponse, HijackedConnection]:
    """Answer *request* as dockerd does for attach and exec start, and return the raw connection.

    With an ``Upgrade`` header (any value, as dockerd checks only that it is
    there), the answer is ``101 UPGRADED`` with ``Connection: Upgrade`` and
    ``Upgrade: tcp``. Without one it is ``200 OK``. The Content-Type is the
    multiplexed stream type when *multiplexed* (for API >= 1.42, and only with
    the upgrade), otherwise the raw stream type. Any request body not read yet
    is read first, so that the upgrade takes effect. The handler streams through
    the returned connection and then returns the response. aiohttp then closes
    the connection.
    """
    upgrade = "Upgrade" in request.headers
    if request.body_exists and request.can_read_body:
        await request.read()
    protocol = request.protocol
    if upgrade and protocol._parser is not None and not isinstance(protocol._parser, _PYTHON_PARSER):
        raise RuntimeError(
            "this connection's HTTP parser cannot hand over an 'Upgrade: tcp' stream; "
            "import kapal.daemon.hijack before the server starts accepting connections"
        )

    if upgrade:
        response = _StreamingResponse(status=101, reason="UPGRADED")
        multiplexed_type = multiplexed and _wants_multiplexed_content_type(request)
        response.headers["Content-Type"] = MULTIPLEXED_STREAM if multiplexed_type else RAW_STREAM
        response.headers["Connection"] = "Upgrade"
        response.headers["Upgrade"] = "tcp"
    else:
        response = _StreamingResponse(status=200, reason="OK")
        response.headers["Content-Type"] = RAW_STREAM
    response.force_close()

    connection = HijackedConnection(asyncio.StreamReader(), request.transport, multiplexed)
    _take_over(request, connection)
    try:
        await response.prepare(request)
    except ConnectionError:
        connection.closed = True
    return response, connection
