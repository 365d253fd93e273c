"""The CLI's connection to kapald: a small HTTP/1.1 client over the Unix socket.

No third-party HTTP stack: the CLI must start in a few tens of milliseconds. Even the
stdlib's ``socket`` module is left out: it imports ``enum`` and ``selectors`` (3 ms) for
what ``_socket`` does alone.
"""

from __future__ import annotations

import _socket
import os

from kapal.cli import jsonlite as json

TYPE_CHECKING = False  # typing costs milliseconds of start-up; annotations are strings here
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any, BinaryIO


API_VERSION = "1.47"
DEFAULT_HOST = "unix:///run/kapal/kapal.sock"


class DaemonError(Exception):
    """The daemon answered with an error; ``status`` is its HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ConnectError(Exception):
    pass


def default_host() -> str:
    return os.environ.get("KAPAL_HOST") or os.environ.get("DOCKER_HOST") or DEFAULT_HOST


class SocketReader:
    """Buffered reads from a socket, as ``socket.makefile("rb")`` gives them."""

    def __init__(self, sock: _socket.socket) -> None:
        self._sock = sock
        self._buffer = b""

    def readline(self, limit: int = 65537) -> bytes:
        while b"\n" not in self._buffer and len(self._buffer) < limit:
            data = self._sock.recv(65536)
            if not data:
                break
            self._buffer += data
        end = self._buffer.find(b"\n") + 1 or len(self._buffer)
        line, self._buffer = self._buffer[: min(end, limit)], self._buffer[min(end, limit) :]
        return line

    def read1(self, n: int = 65536) -> bytes:
        """Up to *n* bytes, waiting only when none are buffered; b"" at the end of the stream."""
        if not self._buffer:
            return self._sock.recv(min(n, 1 << 20))
        data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data

    def read(self, n: int = -1) -> bytes:
        chunks = []
        while n < 0 or n > 0:
            data = self.read1(n if n > 0 else 1 << 20)
            if not data:
                break
            chunks.append(data)
            n -= len(data) if n > 0 else 0
        return b"".join(chunks)

    def close(self) -> None:
        self._buffer = b""


class Response:
    """An HTTP/1.1 response read from a socket: just what the Engine API needs.

    The stdlib's ``http.client`` drags in the ``email`` package and ``ssl``,
    a third of the CLI's start-up time; this reader handles status, headers,
    Content-Length, chunked and read-to-close bodies, and nothing else.
    """

    def __init__(self, sock: _socket.socket) -> None:
        self._sock = sock
        self._file = SocketReader(sock)
        status_line = self._file.readline(65537).decode("latin-1")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/"):
            raise ConnectError(f"invalid response from the daemon: {status_line.strip()!r}")
        self.status = int(parts[1])
        self.reason = parts[2].strip() if len(parts) > 2 else ""
        self.headers: dict[str, str] = {}
        while True:
            line = self._file.readline(65537)
            if line in (b"\r\n", b"\n", b""):
                break
            key, _, value = line.decode("latin-1").partition(":")
            self.headers[key.strip().lower()] = value.strip()
        self.sock = sock
        self.raw = self._file  # after a 101: the rest of the stream, starting right after the headers
        self._chunked = self.headers.get("transfer-encoding", "").lower() == "chunked"
        length = self.headers.get("content-length")
        self._remaining = int(length) if length is not None and not self._chunked else None
        self._chunk_left = 0
        self._done = self.status in (204, 304)

    def read1(self, n: int = 65536) -> bytes:
        """Up to *n* bytes of body, as soon as some are there; b"" at the end."""
        if self._done:
            return b""
        if self._chunked:
            if self._chunk_left == 0:
                size_line = self._file.readline(65537)
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self._file.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    self._done = True
                    return b""
                self._chunk_left = size
            data = self._file.read1(min(n, self._chunk_left))
            self._chunk_left -= len(data)
            if self._chunk_left == 0:
                self._file.readline(65537)
        elif self._remaining is not None:
            data = self._file.read1(min(n, self._remaining)) if self._remaining else b""
            self._remaining -= len(data)
        else:
            data = self._file.read1(n)
        if not data:
            self._done = True
        return data

    def read(self, n: int = -1) -> bytes:
        if n >= 0:
            out = bytearray()
            while len(out) < n and (data := self.read1(n - len(out))):
                out += data
            return bytes(out)
        chunks = []
        while data := self.read1(1 << 20):
            chunks.append(data)
        return b"".join(chunks)

    def close(self) -> None:
        self._file.close()
        self._sock.close()


class Client:
    def __init__(self, host: str | None = None) -> None:
        self.host = host or default_host()
        if self.host.startswith("unix://"):
            self._path = self.host[len("unix://") :]
        elif self.host.startswith("/"):
            self._path = self.host
        else:
            raise ConnectError(f"unsupported host {self.host!r}: kapal speaks to unix:// sockets")

    def _connect_error(self) -> ConnectError:
        return ConnectError(
            f"Cannot connect to the kapal daemon at {self.host}. Is the kapal daemon running?"
        )

    def request(
        self,
        method: str,
        path: str,
        query: dict[str, Any] | list[tuple[str, Any]] | None = None,
        body: bytes | BinaryIO | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        """Send a request; returns the response, raising DaemonError for 4xx/5xx."""
        url = f"/v{API_VERSION}{path}"
        if query:
            items = query.items() if isinstance(query, dict) else query
            pairs = [(k, _query_value(v)) for k, v in items if v is not None]
            if pairs:
                url += "?" + urlencode(pairs)
        head = {"Host": "localhost", "User-Agent": "kapal-cli", **(headers or {})}
        if isinstance(body, bytes):
            head["Content-Length"] = str(len(body))
        elif body is not None:
            head.setdefault("Content-Type", "application/x-tar")
            head["Transfer-Encoding"] = "chunked"
        request = f"{method} {_quote(url, safe=b'/?=&%:@+,;')} HTTP/1.1\r\n"
        request += "".join(f"{key}: {value}\r\n" for key, value in head.items()) + "\r\n"
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            sock.connect(self._path)
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            raise self._connect_error() from None
        except PermissionError:
            sock.close()
            raise ConnectError(
                f"permission denied while trying to connect to the kapal daemon socket at {self.host}"
            ) from None
        try:
            sock.sendall(request.encode("latin-1") + (body if isinstance(body, bytes) else b""))
            if body is not None and not isinstance(body, bytes):
                while chunk := body.read(1 << 20):
                    sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the daemon answered early (an error); its response says why
        response = Response(sock)
        if response.status >= 400:
            data = response.read()
            response.close()
            try:
                message = json.loads(data)["message"]
            except (ValueError, KeyError, TypeError):
                message = data.decode(errors="replace").strip() or response.reason
            raise DaemonError(response.status, message)
        return response

    def upgrade(self, method: str, path: str, query: Any = None, body: Any = None) -> Response:
        """A request answered with ``101 UPGRADED`` (attach, exec start): the socket becomes a raw stream.

        Read the stream from the returned response's ``raw`` file (it may hold bytes that
        arrived with the headers); write stdin to its ``sock``.
        """
        data = json.dumps(body).encode() if body is not None else b""
        content_type = "application/json" if body is not None else "text/plain"
        response = self.request(
            method,
            path,
            query,
            data,
            {"Connection": "Upgrade", "Upgrade": "tcp", "Content-Type": content_type},
        )
        if response.status not in (101, 200):
            response.close()
            raise DaemonError(response.status, f"unexpected status {response.status} for an attach")
        return response

    def json(self, method: str, path: str, query: Any = None, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None and not isinstance(body, bytes) else body
        headers = {"Content-Type": "application/json"} if data is not None else None
        response = self.request(method, path, query, data, headers)
        raw = response.read()
        return json.loads(raw) if raw else None

    def get(self, path: str, query: Any = None) -> Any:
        return self.json("GET", path, query)

    def stream(
        self,
        method: str,
        path: str,
        query: Any = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Decode a JSON message stream (newline- or concatenation-separated objects)."""
        response = self.request(method, path, query, body, headers)
        buffer = ""
        while True:
            chunk = response.read1(65536)
            if not chunk:
                break
            buffer += chunk.decode(errors="replace")
            while True:
                buffer = buffer.lstrip()
                if not buffer:
                    break
                try:
                    value, end = json.raw_decode(buffer)
                except ValueError:
                    break
                buffer = buffer[end:]
                yield value


_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~")


def _quote(text: str, safe: bytes = b"") -> str:
    """Percent-encoding as urllib.parse.quote, without importing it (start-up time)."""
    return "".join(chr(byte) if byte in _SAFE or byte in safe else f"%{byte:02X}" for byte in text.encode())


def urlencode(pairs: list[tuple[str, str]]) -> str:
    return "&".join(f"{_quote(key)}={_quote(value)}" for key, value in pairs)


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)
